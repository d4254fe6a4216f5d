"""Writes the EDM augmentation parity fixture, so tests/data/test_edm_augment.py can check
gen_jax.data.edm_augment against the authors' `AugmentPipe` without PyTorch.

  /work/torchvenv/bin/python tools/make_edm_augment_fixture.py --edm=<NVlabs/edm checkout or
      git directory> [--out=tests/fixtures/edm_augment/parity.npz]

Needs torch (not a gen_jax dependency) and a copy of NVlabs/edm (training/augment.py is read
from there, not committed here). It runs the authors' pipeline with EDM's CIFAR-10 arguments
(train.py `--augment`: xflip=1e8, yflip=1, scale=1, rotate_frac=1, aniso=1, translate_frac=1)
on random 16x16 images with its random numbers replaced by given ones (torch.rand / randn /
randint return, call by call, the fields of gen_jax's `AugmentDraws`), and saves the draws,
the images and the augmented images and labels. Three cases: random draws at p = 0.75;
zoom-outs that sample beyond the batch's padding (where the authors' code reads zeros);
random draws at p = 1 with strong zooms and translations, whose padding is the widest the
authors' code allows.
"""
from __future__ import annotations

import argparse
import os

import numpy as np
import torch
from make_song_unet_fixture import ROOT, load_reference_module

OUT = os.path.join(ROOT, "tests", "fixtures", "edm_augment", "parity.npz")
CIFAR10_ARGS = dict(xflip=1e8, yflip=1, scale=1, rotate_frac=1, aniso=1, translate_frac=1)
# The order in which AugmentPipe draws its random numbers (gen_jax's AugmentDraws fields).
DRAWS = ["xflip_bit", "xflip_gate_u", "yflip_bit", "yflip_gate_u", "scale_z", "scale_gate_u",
         "rotate_u", "rotate_gate_u", "aniso_z", "aniso_axis_u", "aniso_gate_u",
         "aniso_axis_gate_u", "translate_z", "translate_gate_u"]


def run_with_draws(pipe, images: torch.Tensor, draws: dict) -> tuple[np.ndarray, np.ndarray]:
  """Runs `pipe(images)` with torch.rand / randn / randint returning `draws[DRAWS[i]]` at
  their i-th call (in the shape asked for); returns the images and labels."""
  calls = iter(DRAWS)
  originals = {name: getattr(torch, name) for name in ("rand", "randn", "randint")}

  def preset(name):
    def draw(*args, **kwargs):
      field = next(calls)
      shape = args[1] if name == "randint" else args[0]
      assert (field.endswith("_bit")) == (name == "randint"), (field, name)
      dtype = torch.int64 if name == "randint" else torch.float32
      return torch.as_tensor(draws[field], dtype=dtype).reshape(shape)
    return draw

  for name in originals:
    setattr(torch, name, preset(name))
  try:
    out, labels = pipe(images)
  finally:
    for name, original in originals.items():
      setattr(torch, name, original)
  assert next(calls, None) is None, "AugmentPipe drew fewer numbers than DRAWS lists"
  return out.numpy(), labels.numpy()


def random_draws(rng: np.random.Generator, batch: int) -> dict:
  """Draws of the distributions AugmentPipe uses (bits, U(0, 1), N(0, 1))."""
  draws = {}
  for field in DRAWS:
    shape = (2, batch) if field == "translate_z" else (batch,)
    if field.endswith("_bit"):
      draws[field] = rng.integers(0, 2, shape)
    elif field.endswith("_u"):
      draws[field] = rng.random(shape, dtype=np.float32)
    else:
      draws[field] = rng.standard_normal(shape, dtype=np.float32)
  return draws


def zoom_out_draws(batch: int) -> dict:
  """Isotropic zoom-outs by 1.8 and 1.6 (the rest 1.2) and flips, nothing else, for p = 0.5:
  the batch's margin then lies inside the widest padding and some samples fall beyond it."""
  draws = {field: np.full((2, batch) if field == "translate_z" else (batch,), 0.9, np.float32)
           for field in DRAWS}                                   # gates closed: 0.9 >= p
  draws["xflip_bit"] = np.array([1, 0, 1, 0][:batch])
  draws["yflip_bit"] = np.array([0, 1, 1, 0][:batch])
  draws["yflip_gate_u"] = np.full(batch, 0.1, np.float32)
  draws["scale_gate_u"] = np.full(batch, 0.1, np.float32)
  zoom = np.array([1.8, 1.6, 1.2, 1.2][:batch])
  draws["scale_z"] = (-np.log2(zoom) / 0.2).astype(np.float32)  # G_inv scales by 2^(-0.2 z)
  return draws


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--edm", required=True, help="NVlabs/edm checkout or git directory")
  parser.add_argument("--out", default=OUT)
  args = parser.parse_args()
  augment = load_reference_module(args.edm, "training/augment.py", "edm_augment_reference")

  B, size = 4, 16
  rng = np.random.default_rng(0)
  cases = {
      "random": dict(p=0.75, draws=random_draws(rng, B), strengths={}),
      "zoom_out": dict(p=0.5, draws=zoom_out_draws(B), strengths={}),
      # Zoom-outs (scale_std 1) and translations by about half the image push the
      # transformed corners beyond the widest padding the authors' code allows.
      "wide": dict(p=1.0, draws=random_draws(rng, B),
                   strengths=dict(scale_std=1.0, translate_frac_std=0.5)),
  }
  arrays = {}
  for name, case in cases.items():
    pipe = augment.AugmentPipe(p=case["p"], **CIFAR10_ARGS, **case["strengths"])
    images = rng.standard_normal((B, 3, size, size), dtype=np.float32)
    out, labels = run_with_draws(pipe, torch.from_numpy(images), case["draws"])
    prefix = f"{name}/"
    arrays[prefix + "p"] = np.array(case["p"], np.float32)
    strengths = {"scale_std": 0.2, "translate_frac_std": 0.125, **case["strengths"]}
    for key, value in strengths.items():
      arrays[prefix + key] = np.array(value, np.float32)
    arrays[prefix + "images"] = images.transpose(0, 2, 3, 1)    # NCHW -> NHWC
    arrays[prefix + "out"] = out.transpose(0, 2, 3, 1)
    arrays[prefix + "labels"] = labels
    for field, value in case["draws"].items():
      arrays[prefix + field] = value
    print(f"{name}: |out| max {np.abs(out).max():.3f}, labels nonzero per column "
          f"{(labels != 0).sum(0).tolist()}")
  os.makedirs(os.path.dirname(args.out), exist_ok=True)
  np.savez_compressed(args.out, **arrays)
  print(f"wrote {args.out} ({os.path.getsize(args.out)} bytes)")


if __name__ == "__main__":
  main()
