"""A small DiT (Peebles & Xie 2023) on MNIST-sized images, class-conditional with guidance.

On the latents of an autoencoder trained here, as the paper's DiT on Stable Diffusion's
(draws clean digits of every class in ~15 minutes on 2 CPU cores, all three steps;
docs/results.md, "DiT on mnist_5k"):

  python launch.py --config=configs/autoencoder.py --workdir=runs/autoencoder    # ~2 min
  python launch.py --workdir=runs/autoencoder --mode=latents                     # seconds
  python launch.py --config=configs/dit.py:latents --workdir=runs/dit_latents \
      --config.data.latents_dir=runs/autoencoder/latents/mnist_5k               # ~13 min

On pixels (the default; it does not yet draw recognizable digits in its 2,500 steps):

  python launch.py --config=configs/dit.py --workdir=/tmp/dit        # mnist_5k, conditional
  python launch.py --config=configs/dit.py:smoke --workdir=/tmp/x    # seconds; what tests run
  python launch.py --config=configs/dit.py:edm --workdir=/tmp/dit_edm
  python launch.py --config=configs/dit.py --workdir=/tmp/dit --mode=summary   # parameters

The network is gen_jax/models/dit.py (model.architecture='dit'); everything else is the
diffusion family of configs/ddpm.py, whose groups this file starts from: the same processes,
samplers, guidance and evaluation. By default it trains as the authors do on ImageNet: the
DDPM process (T = 1000, linear betas) with learned sigma (diffusion.variance='learned_range',
out channels 2C) and the hybrid objective L_simple + 0.001 L_vlb (their improved-diffusion
losses), labels dropped to the null class with p = 0.1, and samples drawn with classifier-
free guidance from the model's variance (ancestral DDIM steps, sample.ddim_sigma='model').
The image's shape comes from the dataset (the patch size must divide its side).

`get_config(arg)`: `arg` is a comma-separated list of variants: `smoke`, `dataset=<name>`,
`unconditional` (model.num_classes=0), `latents` (on the autoencoder latents of
`data.latents_dir`, as the paper's DiT on Stable Diffusion's; patch size 1 for the 7x7x4
latents of configs/autoencoder.py's digits: 49 tokens, as 4x4 patches of the pixels give),
and the continuous processes of configs/ddpm.py's
`PROCESS_VARIANTS` (`vp`, `edm`, `flow`, `sit`, `gvp`), which train with a fixed variance
(out channels C), e.g. `configs/dit.py:flow,smoke`.

Paper-size models: `--config.model.dit_size=DiT-XL/2` (gen_jax/models/dit.py DIT_SIZES)
replaces patch_size, hidden_size, depth and num_heads.
"""
from __future__ import annotations

import ml_collections

from gen_jax.configs import common, ddpm

VARIANTS = ("smoke", "dataset", "unconditional", "latents", *ddpm.PROCESS_VARIANTS)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  variants = common.parse_variants("configs/dit.py", arg, VARIANTS)
  base = [f"dataset={common.variant_value(variants, 'dataset', 'mnist_5k')}",
          *(name for name in (*ddpm.PROCESS_VARIANTS, "latents") if name in variants)]
  if "unconditional" not in variants:
    base.append("conditional")
  config = ddpm.get_config(",".join(base))

  config.model = ml_collections.ConfigDict()
  # gen_jax/models/dit.py.
  config.model.architecture = "dit"
  # A paper model ('DiT-S/2', ..., 'DiT-XL/8': DIT_SIZES), or '' for the four fields below.
  config.model.dit_size = ""
  # p: each p x p patch of the image is one token ((28 / 4)^2 = 49 for digits).
  config.model.patch_size = 4
  # D, the number of blocks and of attention heads: a DiT-S/4 narrowed and made shallower
  # for a CPU.
  config.model.hidden_size = 128
  config.model.depth = 4
  config.model.num_heads = 4
  # The MLP's hidden width over D (the paper: 4).
  config.model.mlp_ratio = 4.0
  # Recompute each block's activations in the backward pass (less memory).
  config.model.remat = False
  # jax.nn.dot_product_attention's implementation: '' (JAX's choice), 'xla', 'cudnn' (GPU).
  config.model.attention_impl = ""
  # Classes of the label embedding: 10 for digits (0: unconditional). The null class is
  # the table's extra row (diffusion.p_uncond > 0).
  config.model.num_classes = 0 if "unconditional" in variants else 10

  if config.diffusion.process == "ddpm":
    # Learned sigma, as the authors' DiT: L_simple + 0.001 L_vlb (Nichol & Dhariwal 2021).
    config.diffusion.variance = "learned_range"
    config.diffusion.loss = "hybrid"
    # Ancestral steps with the learned variance over a strided chain (the authors sample
    # 250 respaced DDPM steps).
    config.sample.ddim_sigma = "model"

  if "latents" in variants:
    config.model.patch_size = 1

  # The paper trains with AdamW at 1e-4 (no weight decay, no warmup) at batch 256; a larger
  # rate with a short warmup suits this small model and batch on a CPU budget.
  config.train = common.train_group(
      batch_size=64, num_steps=2500, optimizer="adam", lr=1e-3, warmup_steps=100,
      grad_clip=1.0, ema_decay=0.995, sample_every=1250)
  config.eval.every = 1250
  if "latents" in variants:
    # Digits by step 2,500, cleaner strokes by 3,500 (docs/results.md: ~13 minutes).
    config.train.update(num_steps=3500, sample_every=1750)
    config.eval.every = 1750

  if "smoke" in variants:
    config.model.hidden_size = 16
    config.model.depth = 1
    config.model.num_heads = 2
    config.diffusion.num_timesteps = 20
    config.inpaint.steps = 0              # all T = 20
    common.apply_smoke(config, eval=dict(bpd_num_images=0, bpd_batch_size=8,
                                         bpd_timestep_batch=5), sample=dict(steps=5))
  return config
