"""Writes the SongUNet parity fixture, so tests/models/test_song_unet.py can check gen_jax's
DDPM++ / NCSN++ network against the authors' PyTorch code without PyTorch.

  /work/torchvenv/bin/python tools/make_song_unet_fixture.py --edm=<NVlabs/edm checkout or
      git directory> [--out=tests/fixtures/song_unet/parity.npz]

Needs torch (not a gen_jax dependency) and a copy of NVlabs/edm (its training/networks.py is
read from there, not committed here). For each of a few tiny networks (8x8 images,
model_channels 8, two levels) covering the options the DDPM++ and NCSN++ configs
use, it

1. builds the authors' `SongUNet` and lists its state dict under gen_jax's names and layout
   (`flax_name`, `to_flax`: `enc.8x8_block0.conv0.weight` [out, in, kh, kw] is
   `enc_8x8_block0/conv0/kernel` [kh, kw, in, out]);
2. fills every tensor, the (nearly) zero-initialized ones included, with `fixture_weight`:
   values drawn from a seed and the gen_jax name alone, so the test regenerates them from
   its own parameter tree and the fixture stores no weights;
3. runs the network in eval mode (no dropout) on fixed inputs and saves the inputs, the
   output, the constructor arguments and the gen_jax names and shapes of the parameters.

The test's `_fixture_weight` is this file's `fixture_weight`; change both or neither.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import types
import zlib

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "tests", "fixtures", "song_unet", "parity.npz")
SEED = 0

# The tiny networks: (name, SongUNet constructor arguments). Together they run every option
# DDPM++ and NCSN++ use: both noise embeddings, the three encoders, both decoders, both
# resampling filters, attention inside a level and in the middle, label and augment inputs.
NETWORKS = [
    ("ddpmpp", dict(img_resolution=8, in_channels=3, out_channels=3, label_dim=4, augment_dim=9,
                    model_channels=8, channel_mult=[1, 2], num_blocks=1, attn_resolutions=[8],
                    embedding_type="positional", channel_mult_noise=1, encoder_type="standard",
                    decoder_type="standard", resample_filter=[1, 1])),
    ("ncsnpp", dict(img_resolution=8, in_channels=3, out_channels=2, model_channels=8,
                    channel_mult=[1, 2], num_blocks=1, attn_resolutions=[4],
                    embedding_type="fourier", channel_mult_noise=2, encoder_type="residual",
                    decoder_type="skip", resample_filter=[1, 3, 3, 1])),
    ("skip_encoder", dict(img_resolution=8, in_channels=3, out_channels=3, model_channels=8,
                          channel_mult=[1, 2], num_blocks=1, attn_resolutions=[],
                          embedding_type="positional", encoder_type="skip",
                          decoder_type="standard", resample_filter=[1, 3, 3, 1])),
]


def read_reference(edm: str, path: str) -> str:
  """The text of `path` in an NVlabs/edm checkout, or at HEAD of its git directory."""
  if os.path.isfile(os.path.join(edm, path)):
    with open(os.path.join(edm, path)) as f:
      return f.read()
  return subprocess.run(["git", "--git-dir", edm, "show", f"HEAD:{path}"], check=True,
                        capture_output=True, text=True).stdout


def load_reference_module(edm: str, path: str, name: str) -> types.ModuleType:
  """Imports one NVlabs/edm file with its helpers stubbed: `persistence.persistent_class` is
  the identity and `dnnlib` (which needs `requests`) an empty module; `torch_utils.misc`
  is the authors' own."""
  if "torch_utils" not in sys.modules:
    sys.modules["dnnlib"] = types.ModuleType("dnnlib")
    package = types.ModuleType("torch_utils")
    persistence = types.ModuleType("torch_utils.persistence")
    persistence.persistent_class = lambda cls: cls
    package.persistence = persistence
    sys.modules["torch_utils"] = package
    sys.modules["torch_utils.persistence"] = persistence
    package.misc = load_reference_module(edm, "torch_utils/misc.py", "torch_utils.misc")
  module = types.ModuleType(name)
  module.__file__ = f"<NVlabs/edm {path}>"
  sys.modules[name] = module
  exec(compile(read_reference(edm, path), module.__file__, "exec"), module.__dict__)
  return module


def flax_name(torch_name: str) -> str:
  """gen_jax's parameter path ('/'-joined) of one of the authors' state-dict names."""
  *modules, leaf = torch_name.split(".")
  if modules[0] in ("enc", "dec"):          # the ModuleDicts: enc.8x8_block0 -> enc_8x8_block0
    modules = [f"{modules[0]}_{modules[1]}"] + modules[2:]
  if leaf == "weight":
    leaf = "scale" if "norm" in modules[-1] else "kernel"
  return "/".join(modules + [leaf])


def to_flax(value: np.ndarray) -> np.ndarray:
  """The authors' layout -> gen_jax's: [out, in, kh, kw] -> [kh, kw, in, out], [out, in] ->
  [in, out]; vectors unchanged."""
  if value.ndim == 4:
    return value.transpose(2, 3, 1, 0)
  return value.T if value.ndim == 2 else value


def from_flax(value: np.ndarray) -> np.ndarray:
  """gen_jax's layout -> the authors' (the inverse of `to_flax`)."""
  if value.ndim == 4:
    return value.transpose(3, 2, 0, 1)
  return value.T if value.ndim == 2 else value


def fixture_weight(path: str, shape: tuple[int, ...], seed: int) -> np.ndarray:
  """A parameter's fixture value from its gen_jax path and shape alone (float32): kernels
  N(0, 1 / fan_in), GroupNorm scales 1 + N(0, 0.1^2), biases N(0, 0.1^2), Fourier
  frequencies N(0, 4^2). Nothing is zero, so the layers the authors initialize near zero
  take part in the output."""
  noise = np.random.default_rng([seed, zlib.crc32(path.encode())]).standard_normal(shape)
  leaf = path.rsplit("/", 1)[-1]
  if leaf == "kernel":
    return (noise / math.sqrt(math.prod(shape[:-1]))).astype(np.float32)
  if leaf == "scale":
    return (1 + 0.1 * noise).astype(np.float32)
  if leaf == "freqs":
    return (4 * noise).astype(np.float32)
  return (0.1 * noise).astype(np.float32)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--edm", required=True, help="NVlabs/edm checkout or git directory")
  parser.add_argument("--out", default=OUT)
  args = parser.parse_args()
  networks = load_reference_module(args.edm, "training/networks.py", "edm_networks")

  arrays = {}
  for index, (name, kwargs) in enumerate(NETWORKS):
    net = networks.SongUNet(**kwargs).eval()
    state = {}
    names, shapes = [], []
    for key, tensor in net.state_dict().items():
      if key.endswith("resample_filter"):   # constant buffers, computed from the arguments
        continue
      path = flax_name(key)
      flax_shape = to_flax(tensor.numpy()).shape
      state[key] = torch.from_numpy(from_flax(fixture_weight(path, flax_shape, SEED)))
      names.append(path)
      shapes.append(list(flax_shape))
    net.load_state_dict(state, strict=False)   # strict=False: the resample_filter buffers

    rng = np.random.default_rng(100 + index)
    B, res, C = 2, kwargs["img_resolution"], kwargs["in_channels"]
    x = rng.standard_normal((B, C, res, res)).astype(np.float32)
    sigma = np.array([0.02, 5.0], np.float32)
    noise_labels = (np.log(sigma) / 4).astype(np.float32)     # EDM's c_noise
    label_dim = kwargs.get("label_dim", 0)
    augment_dim = kwargs.get("augment_dim", 0)
    class_labels = np.array([1, label_dim], np.int32)          # label_dim = the null label
    onehot = (np.eye(label_dim + 1, dtype=np.float32)[class_labels, :label_dim] if label_dim
              else None)
    augment = (0.5 * rng.standard_normal((B, augment_dim))).astype(np.float32)
    with torch.no_grad():
      out = net(torch.from_numpy(x), torch.from_numpy(noise_labels),
                torch.from_numpy(onehot) if onehot is not None else None,
                torch.from_numpy(augment) if augment_dim else None).numpy()
    print(f"{name}: {sum(math.prod(s) for s in shapes)} parameter values, output std "
          f"{out.std():.3f}")

    prefix = f"{name}/"
    arrays[prefix + "kwargs"] = np.array(json.dumps(kwargs))
    arrays[prefix + "param_names"] = np.array(names)
    arrays[prefix + "param_shapes"] = np.array(json.dumps(shapes))
    arrays[prefix + "x"] = x.transpose(0, 2, 3, 1)             # NCHW -> NHWC
    arrays[prefix + "noise_labels"] = noise_labels
    if label_dim:
      arrays[prefix + "class_labels"] = class_labels
    if augment_dim:
      arrays[prefix + "augment_labels"] = augment
    arrays[prefix + "out"] = out.transpose(0, 2, 3, 1)
  arrays["seed"] = np.array(SEED)
  os.makedirs(os.path.dirname(args.out), exist_ok=True)
  np.savez_compressed(args.out, **arrays)
  print(f"wrote {args.out} ({os.path.getsize(args.out)} bytes)")


if __name__ == "__main__":
  main()
