"""Writes tests/fixtures/autoencoder_kl_tiny/: a randomly initialized tiny diffusers
`AutoencoderKL` and its outputs, so tests/models/test_autoencoder_kl.py can check
gen_jax/models/autoencoder_kl.py and gen_jax/interop/diffusers_vae.py against diffusers
without PyTorch.

  /path/to/venv-with-torch-and-diffusers/bin/python tools/make_autoencoder_fixture.py
  .../python tools/make_autoencoder_fixture.py \
      --check_export=<workdir>/export/step_<N>_diffusers_vae --ours=<ours.npz>

The first form, with a fixed torch seed, writes

  diffusion_pytorch_model.safetensors, config.json
      the model as `save_pretrained` writes it: 3 -> 3 channels, block_out_channels (8, 16)
      (f = 2), layers_per_block 1, latent_channels 4, norm_num_groups 4 (Stable Diffusion's
      layout at a toy width: quant convs and the mid-block attention included)
  outputs.npz
      x [2, 16, 12, 3] in [-1, 1]; the posterior `mean`, `logvar` [2, 8, 6, 4] of x; a
      latent `z` [2, 8, 6, 4] and its decoding `decoded` [2, 16, 12, 3] (all NHWC, float32)

Every parameter, GroupNorm scales and all biases included, is perturbed off its
initialization, so a swapped or transposed tensor changes the outputs. It also prints the
parameter count of `AutoencoderKL` with Stable Diffusion's config (the test pins it).

The second form loads a gen_jax `--mode=export --config.export.format=diffusers_vae` folder
with `AutoencoderKL.from_pretrained` and prints the largest differences of its posterior
mean, log-variance and decoding of the posterior mean from gen_jax's, given as `--ours`: an
.npz of `x` (uint8 images [N, H, W, C]) and gen_jax's `mean`, `logvar` and `decoded` of them
(docs/interop.md shows how to write it). Needs torch, diffusers and safetensors (none of
them gen_jax dependencies).
"""
from __future__ import annotations

import argparse
import os

import diffusers
import numpy as np
import torch

OUT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                   "tests", "fixtures", "autoencoder_kl_tiny")
TINY = dict(in_channels=3, out_channels=3, block_out_channels=(8, 16), layers_per_block=1,
            latent_channels=4, norm_num_groups=4,
            down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2)
SD = dict(in_channels=3, out_channels=3, block_out_channels=(128, 256, 512, 512),
          layers_per_block=2, latent_channels=4, norm_num_groups=32,
          down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4)


def nhwc(t: torch.Tensor) -> np.ndarray:
  return t.permute(0, 2, 3, 1).float().numpy()


def main() -> None:
  torch.manual_seed(0)
  model = diffusers.AutoencoderKL(**TINY).eval()
  with torch.no_grad():   # off the initialization: GroupNorm scales != 1, biases != 0
    for name, p in model.named_parameters():
      p.add_(torch.randn_like(p) * (0.2 if "norm" in name else 0.05))
  g = torch.Generator().manual_seed(1)
  x = torch.rand((2, 3, 16, 12), generator=g) * 2 - 1
  z = torch.randn((2, 4, 8, 6), generator=g)
  with torch.no_grad():
    posterior = model.encode(x).latent_dist
    decoded = model.decode(z).sample
  os.makedirs(OUT, exist_ok=True)
  model.save_pretrained(OUT, safe_serialization=True)
  np.savez(os.path.join(OUT, "outputs.npz"), x=nhwc(x), mean=nhwc(posterior.mean),
           logvar=nhwc(posterior.logvar), z=nhwc(z), decoded=nhwc(decoded))
  sizes = {f: os.path.getsize(os.path.join(OUT, f)) for f in sorted(os.listdir(OUT))}
  print(f"wrote {OUT}: {sizes} (diffusers {diffusers.__version__}, torch {torch.__version__})")
  with torch.device("meta"):
    sd = diffusers.AutoencoderKL(**SD)
  print("parameters of AutoencoderKL with Stable Diffusion's config:",
        sum(p.numel() for p in sd.parameters()))


def check_export(path: str, ours_path: str) -> None:
  vae = diffusers.AutoencoderKL.from_pretrained(path).eval()
  ours = np.load(ours_path)
  x = torch.from_numpy(ours["x"].astype(np.float32) / 127.5 - 1).permute(0, 3, 1, 2)
  with torch.no_grad():
    posterior = vae.encode(x).latent_dist
    decoded = vae.decode(posterior.mean).sample
  for name, value in (("mean", posterior.mean), ("logvar", posterior.logvar),
                      ("decoded", decoded)):
    print(f"{name}: max |diffusers - gen_jax| = {np.abs(nhwc(value) - ours[name]).max():.3g}")
  mse = np.mean(((nhwc(decoded).clip(-1, 1) - nhwc(x)) / 2) ** 2)
  print(f"diffusers' reconstruction PSNR of the {len(x)} images: {-10 * np.log10(mse):.2f} dB")


if __name__ == "__main__":
  parser = argparse.ArgumentParser()
  parser.add_argument("--check_export", default="")
  parser.add_argument("--ours", default="")
  args = parser.parse_args()
  if args.check_export:
    check_export(args.check_export, args.ours)
  else:
    main()
