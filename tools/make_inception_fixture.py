"""Writes the Inception parity fixtures, so tests/evaluate/test_inception.py can check gen_jax's FID
Inception against pytorch-fid without PyTorch (and without the real weights).

  /work/refvenv/bin/python tools/make_inception_fixture.py [--seed=0] [--pth=/tmp/x.pth]

Needs torch, torchvision and pytorch-fid (none of them gen_jax dependencies). It

1. builds random FID-Inception weights with gen_jax's numpy-only
   `inception_weights.random_state_dict(shapes, seed)` (the test regenerates the same ones
   without torch) and loads them into pytorch-fid's
   `InceptionV3([3], resize_input=True, normalize_input=True, use_fid_inception=True)` in
   place of the downloaded file;
2. runs it on 4 fixed 32x32 RGB images (uint8 from a seed, /255) and writes
   tests/fixtures/inception_parity.npz: the images, the 2048-d pool features, the 1008
   logits pool @ fc.weight^T (no bias, as the TF Inception-score code), the state dict's
   names and shapes, torch's `F.interpolate(bilinear, align_corners=False)` on small
   up- and down-sampling cases, and pytorch-fid's FID of two small feature sets;
3. saves the random state dict with `torch.save` (to --pth) and checks that gen_jax's
   restricted reader returns identical arrays; writes two tiny `.pth` files of a few
   tensors (zip and legacy format, with a transposed view, a storage offset, float16 and
   int64) as reader fixtures: tests/fixtures/inception_tiny_{zip,legacy}.pth.

A rerun rewrites the same values; only the legacy .pth's bytes change (its storage keys
are memory addresses), so there is no need to commit it again.
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import time
import types

import numpy as np
import torch
import torch.nn.functional as F
import torchvision
from pytorch_fid import fid_score as pf_fid_score
from pytorch_fid import inception as pf_inception

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(ROOT, "tests", "fixtures")


def _import_numpy_only(name: str):
  """Imports gen_jax.evaluate.<name> from its file without running gen_jax/__init__.py
  (which needs jax, absent from a torch environment). The modules imported are numpy-only."""
  for package in ("gen_jax", "gen_jax.evaluate"):
    if package not in sys.modules:
      module = types.ModuleType(package)
      module.__path__ = [os.path.join(ROOT, *package.split("."))]
      sys.modules[package] = module
  full = f"gen_jax.evaluate.{name}"
  spec = importlib.util.spec_from_file_location(
      full, os.path.join(ROOT, "gen_jax", "evaluate", f"{name}.py"))
  module = importlib.util.module_from_spec(spec)
  sys.modules[full] = module
  spec.loader.exec_module(module)
  return module


pickle_reader = _import_numpy_only("pickle_reader")
inception_weights = _import_numpy_only("inception_weights")


def pytorch_fid_model(seed: int):
  """pytorch-fid's InceptionV3 (FID variant) with our random weights instead of the
  download, and the state dict it holds."""
  holder = {}
  original = torchvision.models.Inception3.load_state_dict

  def load_random(self, state_dict, *args, **kwargs):
    shapes = {k: tuple(v.shape) for k, v in self.state_dict().items()}
    state = inception_weights.random_state_dict(shapes, seed)
    holder["state"] = state
    return original(self, {k: torch.from_numpy(v) for k, v in state.items()}, *args, **kwargs)

  pf_inception.load_state_dict_from_url = lambda *a, **k: None   # no download
  torchvision.models.Inception3.load_state_dict = load_random
  try:
    model = pf_inception.InceptionV3([3], resize_input=True, normalize_input=True,
                                     use_fid_inception=True).eval()
  finally:
    torchvision.models.Inception3.load_state_dict = original
  return model, holder["state"]


def resize_cases(rng: np.random.Generator) -> dict[str, np.ndarray]:
  """torch bilinear (align_corners=False) on NCHW inputs; stored NHWC."""
  out = {}
  for tag, (h, w), (oh, ow) in (("down", (13, 17), (5, 7)), ("up", (5, 7), (13, 17)),
                                ("mixed", (9, 4), (4, 11))):
    x = rng.random((2, 3, h, w), dtype=np.float32)
    y = F.interpolate(torch.from_numpy(x), size=(oh, ow), mode="bilinear", align_corners=False)
    out[f"resize_{tag}_in"] = x.transpose(0, 2, 3, 1)
    out[f"resize_{tag}_out"] = y.numpy().transpose(0, 2, 3, 1)
  return out


def fid_case(rng: np.random.Generator) -> dict[str, np.ndarray]:
  """Two feature sets and pytorch-fid's FID between them (its mean, np.cov and
  calculate_frechet_distance)."""
  a = rng.normal(size=(300, 24)) * rng.uniform(0.5, 2.0, 24)
  b = rng.normal(size=(250, 24)) @ rng.normal(size=(24, 24)) * 0.3 + 0.5
  stats = [(np.mean(x, axis=0), np.cov(x, rowvar=False)) for x in (a, b)]
  fid = pf_fid_score.calculate_frechet_distance(*stats[0], *stats[1])
  return {"fid_a": a, "fid_b": b, "fid_pytorch_fid": np.float64(fid)}


def tiny_state_dict() -> dict[str, torch.Tensor]:
  """A few tensors whose values the test rebuilds with numpy (arange-based)."""
  base = torch.arange(24, dtype=torch.float32).reshape(4, 6)
  return {"plain": torch.arange(6, dtype=torch.float32).reshape(2, 3) / 4,
          "transposed": base.t(),                  # stride (1, 6)
          "offset_view": base[1:, ::2],            # storage offset 6, stride (6, 2)
          "half": torch.arange(5, dtype=torch.float16) / 8,
          "int64": torch.arange(3, dtype=torch.int64) * 1000,
          "bn.num_batches_tracked": torch.tensor(7)}


def main() -> None:
  parser = argparse.ArgumentParser()
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--pth", default="/tmp/inception_random_weights.pth",
                      help="where the random state dict is saved as a real .pth")
  args = parser.parse_args()
  torch.set_num_threads(2)

  model, state = pytorch_fid_model(args.seed)
  images_u8 = np.random.default_rng(args.seed + 1).integers(0, 256, (4, 32, 32, 3), np.uint8)
  x = torch.from_numpy(images_u8.astype(np.float32) / 255.0).permute(0, 3, 1, 2)
  start = time.time()
  with torch.no_grad():
    pool = model(x)[0][:, :, 0, 0]
    logits = pool @ torch.from_numpy(state["fc.weight"]).T
  print(f"pytorch-fid forward on 4 images: {time.time() - start:.2f} s; pool mean "
        f"{pool.mean():.4f} max {pool.max():.4f}; logits std {logits.std():.4f}")
  names = sorted(k for k in state if not k.endswith("num_batches_tracked"))
  fixture = {"seed": np.int64(args.seed), "images_uint8": images_u8,
             "pool": pool.numpy().astype(np.float32), "logits": logits.numpy().astype(np.float32),
             "names": np.array(names), "shapes": np.array(
                 [",".join(map(str, state[n].shape)) for n in names]),
             "torch_version": np.array(torch.__version__),
             **resize_cases(np.random.default_rng(args.seed + 2)),
             **fid_case(np.random.default_rng(args.seed + 3))}
  os.makedirs(FIXTURES, exist_ok=True)
  path = os.path.join(FIXTURES, "inception_parity.npz")
  np.savez_compressed(path, **fixture)
  print(f"wrote {path} ({os.path.getsize(path) / 1024:.0f} KiB)")

  # The random weights as a real .pth, read back by the restricted reader.
  torch.save(model.state_dict(), args.pth)
  read = pickle_reader.load_torch_state_dict(args.pth)
  full = {k: v.numpy() for k, v in model.state_dict().items()}
  same = read.keys() == full.keys() and all(np.array_equal(read[k], full[k]) for k in full)
  print(f"restricted reader on {args.pth} ({os.path.getsize(args.pth) / 2**20:.1f} MiB, "
        f"{len(read)} tensors): identical to torch's state dict: {same}")
  # The same weights in pytorch-fid's file layout (the torchvision Inception3 names).
  fid_pth = args.pth.replace(".pth", "_fid_layout.pth")
  torch.save({k: torch.from_numpy(v) for k, v in state.items()}, fid_pth)
  read = pickle_reader.load_torch_state_dict(fid_pth)
  same = read.keys() == state.keys() and all(np.array_equal(read[k], state[k]) for k in state)
  print(f"restricted reader on {fid_pth} (the FID file's layout): identical: {same}")
  if not same:
    raise SystemExit("the restricted reader disagrees with torch")

  tiny = tiny_state_dict()
  for fmt, zip_format in (("zip", True), ("legacy", False)):
    out = os.path.join(FIXTURES, f"inception_tiny_{fmt}.pth")
    torch.save(tiny, out, _use_new_zipfile_serialization=zip_format)
    back = pickle_reader.load_torch_state_dict(out)
    ok = all(np.array_equal(back[k], v.numpy()) for k, v in tiny.items())
    print(f"wrote {out} ({os.path.getsize(out)} bytes); reader identical: {ok}")


if __name__ == "__main__":
  main()
