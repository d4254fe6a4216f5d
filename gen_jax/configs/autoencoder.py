"""Latent diffusion's KL autoencoder (Rombach et al. 2022; Stable Diffusion's VAE) on digits.

  python launch.py --config=configs/autoencoder.py           # mnist_5k (time: docs/results.md)
  python launch.py --config=configs/autoencoder.py --mode=eval     # recon, KL, PSNR
  python launch.py --config=configs/autoencoder.py --mode=sample   # reconstructions grid
  python launch.py --config=configs/autoencoder.py:smoke     # seconds; what the tests run
  python launch.py --workdir=<run> --mode=latents            # encode the splits once
  python launch.py --config=configs/autoencoder.py:sd,dataset=image_folder \\
      --config.data.image_folder=... --config.data.image_size=256 \\
      --config.init_from=diffusers_vae:/path/to/sd-vae-ft-mse    # fine-tune SD's VAE

`get_config(arg)`: `arg` is a comma-separated list of variants: `smoke`, `dataset=<name>`,
`sd` (Stable Diffusion's network, f = 8, 83.65M params, and ldm's kl_weight 1e-6 and Adam
betas; RGB images whose side is a multiple of 8).

The digits network. 28 = 4 * 7, so f = 4 (three levels: 28 -> 14 -> 7) is the largest
power of two that divides the image; with c = 4 latent channels a digit becomes a 7x7x4
latent (196 numbers for 784 pixels; SD's f = 8, c = 4 keeps 1/48 of a 256^2 RGB image, but a
7x7 digit latent is already as coarse as strokes allow). Widths (16, 32, 32) and one
ResnetBlock per level (0.24M params, 7.3 GFLOPs per update of 32 images) keep a step cheap on
a CPU; 600 updates reconstruct the test digits at 25 dB PSNR (docs/results.md).

The KL weight. ldm sums the reconstruction over pixels and the KL over latent entries
(gen_jax/methods/autoencoder.py, Eq. (1)) and uses kl_weight 1e-6 at 256^2: so small that
the latents are not unit-scale (hence SD's scaling_factor 0.18215). For digits we take
1e-3: measured against 1e-4 (docs/results.md, 600 updates each), it reconstructs as well
(25.25 vs 25.27 dB PSNR) with a third less KL and posterior means of std 1.56 instead of
2.12, closer to the unit scale latent diffusion wants.
"""
from __future__ import annotations

import ml_collections

from gen_jax.configs import common

VARIANTS = ("smoke", "dataset", "sd")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  variants = common.parse_variants("configs/autoencoder.py", arg, VARIANTS)
  config = common.base_config("autoencoder",
                              common.variant_value(variants, "dataset", "mnist_5k"))

  config.model = ml_collections.ConfigDict()
  # Widths of the levels (diffusers' block_out_channels); f = 2 ** (levels - 1) must divide
  # the image side. Stable Diffusion: (128, 256, 512, 512), f = 8.
  config.model.block_out_channels = (16, 32, 32)
  # ResnetBlocks per encoder level; the decoder has one more (SD: 2).
  config.model.layers_per_block = 1
  # c, the latent's channels (SD: 4).
  config.model.latent_channels = 4
  # GroupNorm groups; divides every width (SD: 32).
  config.model.norm_num_groups = 8
  # What latent diffusion multiplies z by (SD: 0.18215 = 1 / the latents' std); kept with
  # the model for its users. Set it to 1 / eval's latent_std of a trained run.
  config.model.scaling_factor = 1.0

  config.autoencoder = ml_collections.ConfigDict()
  # Reconstruction term of Eq. (1), summed over pixels: 'l1' (ldm) or 'mse'.
  config.autoencoder.recon_loss = "l1"
  # beta of Eq. (1): the KL to N(0, I), summed over latent entries (ldm at 256^2: 1e-6).
  config.autoencoder.kl_weight = 1e-3
  # Which weights the eval reports ('ema', 'raw'); metric names say which.
  config.autoencoder.eval_weights = ("ema", "raw")

  config.train = common.train_group(
      batch_size=32,
      num_steps=600,
      lr=1e-3,
      b1=0.5,                 # ldm / taming's autoencoder Adam betas (0.5, 0.9)
      b2=0.9,
      warmup_steps=100,
      ema_decay=0.999,
      log_every=50,
      checkpoint_every=300,
      sample_every=300)

  # num_batches=0: the whole eval split (mnist_5k: 500 images).
  config.eval = common.eval_group(every=600, batch_size=100, num_batches=0)
  # Images per compiled sampling call of --mode=sample's dumps (with sample.batch_size=0).
  config.eval.sample_batch_size = 100

  # Decodings of N(0, I) latents, and reconstructions of the first `num` test images.
  config.sample = common.sample_group(num=64)

  config.latents = latents_group()

  if "sd" in variants:
    config.model.block_out_channels = (128, 256, 512, 512)
    config.model.layers_per_block = 2
    config.model.norm_num_groups = 32
    config.model.scaling_factor = 0.18215
    config.autoencoder.kl_weight = 1e-6
    config.data.image_size = 256
    config.data.channels = 3
    config.train.batch_size = 4
    config.train.lr = 4.5e-6 * config.train.batch_size   # ldm: base_learning_rate * batch
    config.eval.batch_size = 4
    config.eval.sample_batch_size = 4
    config.sample.num = 4
    config.latents.scaling_factor = 0.18215   # Stable Diffusion's
    config.latents.batch_size = 4

  if "smoke" in variants:
    config.model.block_out_channels = (8, 8)
    config.model.norm_num_groups = 4
    config.model.latent_channels = 2
    common.apply_smoke(config)
  return config


def latents_group() -> ml_collections.ConfigDict:
  """`--mode=latents` (gen_jax/methods/latents_mode.py): the latents folder it writes."""
  group = ml_collections.ConfigDict()
  # The dataset to encode ('' = the run's data.dataset, with its data_dir and options).
  group.dataset = ""
  # Its splits, encoded in this order; the first one's z give the scaling factor.
  group.splits = ("train", "test")
  # The folder to write ('' = <workdir>/latents/<dataset>).
  group.output_dir = ""
  # Examples per array_record shard (the unit a rerun resumes at) and per encoder call.
  group.shard_size = 1000
  group.batch_size = 100
  # s of z = s * (mean + std * eps): > 0 fixed (Stable Diffusion: 0.18215), 0 = 1 / std of
  # the first split's z (Rombach et al. 2022, §4.3.2 and App. D.1).
  group.scaling_factor = 0.0
  return group
