"""A small MNIST classifier: the feature extractor of the sample-quality metrics.

  python launch.py --config=configs/classifier.py        # mnist_5k, a few minutes on 2 CPU cores
  python launch.py --config=configs/classifier.py:smoke  # seconds; what the tests run
  python launch.py --config=configs/classifier.py:dataset=mnist \
      --config.data.manual_dir=/path/to/mnist --workdir=runs/classifier_mnist

Its workdir (default runs/classifier) is what `eval.classifier_workdir` of the ddpm/dcgan
configs points at: `--mode=eval` of a generator restores the newest checkpoint there (with
the config.json the run wrote) and caches the reference statistics of a dataset split next
to the checkpoints. The checkpoint is made by this command, never committed.

`get_config(arg)`: `arg` is a comma-separated list of variants: `smoke`, `dataset=<name>`.
"""
from __future__ import annotations

import ml_collections

from gen_jax.configs import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  variants = common.parse_variants("configs/classifier.py", arg, ("smoke", "dataset"))

  config = common.base_config("classifier", common.variant_value(variants, "dataset", "mnist_5k"))

  config.model = ml_collections.ConfigDict()
  config.model.num_classes = 10
  # Channels of the first convolution (the second has twice as many).
  config.model.features = 32
  # Width of the penultimate layer: the feature dimension of FID/KID/precision/recall.
  config.model.feature_dim = 128

  # No sample group, and train.sample_every stays 0: the classifier cannot sample.
  config.train = common.train_group(
      batch_size=128,
      num_steps=1000,         # ~28 epochs of mnist_5k's 4,500 training digits
      grad_accum_steps=None,  # the classifier does not accumulate gradients
      optimizer="adamw",
      lr=1e-3,
      lr_decay="cosine",
      min_lr_ratio=0.05,
      warmup_steps=50,
      weight_decay=1e-4,
      ema_decay=0.99,         # evaluation (and feature extraction) use the EMA weights
      max_checkpoints=1)

  # num_batches=0: the whole eval split (500 digits for mnist_5k).
  config.eval = common.eval_group(every=500, batch_size=100, num_batches=0)

  if config.data.dataset == "mnist":
    config.train.num_steps = 3000       # ~6 epochs of 60,000 digits

  if "smoke" in variants:
    config.model.update(features=4, feature_dim=16)
    common.apply_smoke(config, train=dict(num_steps=8, checkpoint_every=8, sample_every=0),
                       eval=dict(every=8, batch_size=100, num_batches=0))
  return config
