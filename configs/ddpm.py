"""DDPM (Ho et al. 2020) on MNIST-sized images.

  python launch.py --config=configs/ddpm.py                  # embedded mnist_5k, ~10 min on 2 CPU cores
  python launch.py --config=configs/ddpm.py:smoke            # seconds; what the tests run
  python launch.py --config=configs/ddpm.py:dataset=mnist --config.data.manual_dir=/path/to/mnist

`get_config(arg)`: `arg` is a comma-separated list of variants: `smoke`, `dataset=<name>`.
Paper-exact recipes live in experiments/ (e.g. experiments/ho2020_ddpm/cifar10.py).
"""
from __future__ import annotations

import ml_collections

from configs import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  variants = common.parse_variants("configs/ddpm.py", arg, ("smoke", "dataset"))

  config = common.base_config("diffusion", variants.get("dataset", "mnist_5k"))

  # U-Net of Ho et al. App. B, scaled down for 28x28 digits on a CPU.
  config.model = ml_collections.ConfigDict()
  config.model.ch = 16
  config.model.ch_mult = (1, 2, 2)
  config.model.num_res_blocks = 1
  config.model.attn_resolutions = (7,)
  config.model.dropout = 0.0
  config.model.num_groups = 8
  # Recompute each ResBlock/attention block in the backward pass (less memory, ~1/3 more FLOPs).
  config.model.remat = False

  config.diffusion = ml_collections.ConfigDict()
  # T: number of diffusion steps.
  config.diffusion.num_timesteps = 1000
  # 'linear' (Ho et al.) or 'cosine' (Nichol & Dhariwal).
  config.diffusion.schedule = "linear"
  config.diffusion.beta_start = 1e-4
  config.diffusion.beta_end = 0.02
  # What the network predicts: 'eps' (Eq. 14), 'x0' or 'v'.
  config.diffusion.target = "eps"

  config.train = ml_collections.ConfigDict()
  config.train.batch_size = 64          # global batch, split over the mesh
  # The batch is split into this many micro-batches whose gradients are averaged before
  # one update (the same update as the whole batch; activations of one micro-batch in memory).
  config.train.grad_accum_steps = 1
  config.train.num_steps = 1500
  # Updates fused into one compiled call (lax.scan); >1 helps tiny MLPs on CPU, but keep 1
  # for conv nets there (XLA:CPU runs convolutions in loops far slower). Step intervals
  # below must be multiples of it.
  config.train.steps_per_call = 1
  config.train.optimizer = "adam"
  config.train.lr = 2e-3
  config.train.lr_decay = "constant"    # 'constant' or 'cosine'
  config.train.min_lr_ratio = 0.1       # cosine decays to lr * min_lr_ratio
  config.train.warmup_steps = 100
  config.train.b1 = 0.9
  config.train.b2 = 0.999
  config.train.eps = 1e-8
  config.train.weight_decay = 0.0       # adamw only; matrices only
  config.train.grad_clip = 1.0          # global-norm clipping; 0 disables
  config.train.ema_decay = 0.995
  config.train.ema_warmup = True        # decay = min(ema_decay, (1+step)/(10+step))
  config.train.log_every = 50
  config.train.checkpoint_every = 500
  config.train.max_checkpoints = 3
  config.train.async_checkpointing = True
  config.train.sample_every = 500       # 0 disables periodic sample grids

  config.eval = ml_collections.ConfigDict()
  config.eval.every = 500               # 0 disables periodic evaluation
  config.eval.batch_size = 128
  config.eval.num_batches = 4           # 0 = the whole eval split
  config.eval.step = -1                 # checkpoint for --mode=eval/sample (-1 = newest)
  # Bits/dim (variational bound, Ho et al. Eq. 5) of the first N eval images in --mode=eval
  # (0 = off); each image costs T network calls. Breakdown in eval/step_<N>.json.
  config.eval.bpd_num_images = 100
  config.eval.bpd_batch_size = 50       # images per compiled call
  config.eval.bpd_timestep_batch = 10   # timesteps per network call (x bpd_batch_size images)
  common.add_sample_metrics(config.eval, config.data.dataset, num_samples=1000,
                            sample_batch_size=250)

  config.sample = ml_collections.ConfigDict()
  config.sample.sampler = "ddim"        # 'ddpm' (Alg. 2, all T steps) or 'ddim'
  config.sample.steps = 100             # DDIM steps (0 = all T)
  # DDIM eta: 0 deterministic, 1 = ancestral-like noise. For this small CPU model eta=1 gives
  # far cleaner digits than eta=0 (README, "Results").
  config.sample.eta = 1.0
  config.sample.variance = "beta"       # DDPM sigma^2: 'beta' or 'beta_tilde'
  config.sample.clip_x0 = True          # clip predicted x0 to [-1, 1] at each step
  config.sample.num = 64
  config.sample.use_ema = True
  config.sample.seed = 0                # for --mode=sample


  if config.data.dataset == "cifar10":
    config.data.random_flip = True
    config.model.attn_resolutions = (8,)

  if "smoke" in variants:
    config.model.ch = 8
    config.model.ch_mult = (1, 2)
    config.model.attn_resolutions = (14,)
    config.model.num_groups = 4
    config.diffusion.num_timesteps = 20
    config.train.batch_size = 16
    config.train.num_steps = 4
    config.train.warmup_steps = 2
    config.train.log_every = 1
    config.train.checkpoint_every = 2
    config.train.sample_every = 4
    config.train.async_checkpointing = False
    config.eval.every = 4
    config.eval.batch_size = 16
    config.eval.num_batches = 2
    config.eval.bpd_num_images = 0
    config.eval.bpd_batch_size = 8
    config.eval.bpd_timestep_batch = 5
    common.disable_sample_metrics_for_smoke(config.eval)
    config.sample.steps = 5
    config.sample.num = 4
  return config
