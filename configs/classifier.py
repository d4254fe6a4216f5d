"""A small MNIST classifier: the feature extractor of the sample-quality metrics.

  python launch.py --config=configs/classifier.py          # embedded mnist_5k, a few minutes on 2 CPU cores
  python launch.py --config=configs/classifier.py:smoke    # seconds; what the tests run
  python launch.py --config=configs/classifier.py:dataset=mnist --config.data.manual_dir=/path/to/mnist \
      --workdir=runs/classifier_mnist

Its workdir (default runs/classifier) is what `eval.classifier_workdir` of the ddpm/dcgan
configs points at: `--mode=eval` of a generator restores the newest checkpoint there (with
the config.json the run wrote) and caches the reference statistics of a dataset split next
to the checkpoints. The checkpoint is made by this command, never committed.

`get_config(arg)`: `arg` is a comma-separated list of variants: `smoke`, `dataset=<name>`.
"""
from __future__ import annotations

import ml_collections

from configs import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  variants = common.parse_variants("configs/classifier.py", arg, ("smoke", "dataset"))

  config = common.base_config("classifier", variants.get("dataset", "mnist_5k"))

  config.model = ml_collections.ConfigDict()
  config.model.num_classes = 10
  # Channels of the first convolution (the second has twice as many).
  config.model.features = 32
  # Width of the penultimate layer: the feature dimension of FID/KID/precision/recall.
  config.model.feature_dim = 128

  config.train = ml_collections.ConfigDict()
  config.train.batch_size = 128         # global batch, split over the mesh
  config.train.num_steps = 1000         # ~28 epochs of mnist_5k's 4,500 training digits
  config.train.steps_per_call = 1       # keep 1 for conv nets on CPU (see configs/ddpm.py)
  config.train.optimizer = "adamw"
  config.train.lr = 1e-3
  config.train.lr_decay = "cosine"      # 'constant' or 'cosine'
  config.train.min_lr_ratio = 0.05      # cosine decays to lr * min_lr_ratio
  config.train.warmup_steps = 50
  config.train.b1 = 0.9
  config.train.b2 = 0.999
  config.train.eps = 1e-8
  config.train.weight_decay = 1e-4      # adamw only; matrices only
  config.train.grad_clip = 0.0          # global-norm clipping; 0 disables
  # EMA of the weights; evaluation (and feature extraction) use the EMA weights.
  config.train.ema_decay = 0.99
  config.train.ema_warmup = True
  config.train.log_every = 50
  config.train.checkpoint_every = 500
  config.train.max_checkpoints = 1
  config.train.async_checkpointing = True
  config.train.sample_every = 0         # a classifier has nothing to sample

  config.eval = ml_collections.ConfigDict()
  config.eval.every = 500               # 0 disables periodic evaluation
  config.eval.batch_size = 100
  config.eval.num_batches = 0           # 0 = the whole eval split (500 digits for mnist_5k)
  config.eval.step = -1                 # checkpoint for --mode=eval (-1 = newest)

  # Unused (the classifier cannot sample); present because the engine's modes share it.
  config.sample = ml_collections.ConfigDict()
  config.sample.num = 0
  config.sample.use_ema = True
  config.sample.seed = 0

  if config.data.dataset == "mnist":
    config.train.num_steps = 3000       # ~6 epochs of 60,000 digits

  if "smoke" in variants:
    config.model.update(features=4, feature_dim=16)
    config.train.batch_size = 16
    config.train.num_steps = 8
    config.train.warmup_steps = 2
    config.train.log_every = 1
    config.train.checkpoint_every = 8
    config.train.async_checkpointing = False
    config.eval.every = 8
    config.eval.batch_size = 100
    config.eval.num_batches = 0
  return config
