"""R3GAN's networks from the authors' code: parameter counts of the released CIFAR-10
configuration, and a tiny forward-pass fixture for tests/models/test_r3gan.py.

  git -C <mirror of github.com/brownvc/R3GAN> archive HEAD | tar -x -C /tmp/r3gan_src
  /work/torchvenv/bin/python tools/make_r3gan_fixture.py --r3gan_src=/tmp/r3gan_src

prints the trainable parameter counts of `R3GAN.Networks.Generator` and `Discriminator` as
train.py's CIFAR10 preset builds them (unconditional and with 10 classes; the numbers
gen_jax/models/r3gan.py's CIFAR10_PARAM_COUNTS holds), and writes
tests/fixtures/r3gan_tiny.npz: a tiny conditional G and D (2 stages of widths 8 -> 4 and
4 -> 8, cardinality 2, 8x8 images, 3 classes) with every parameter drawn off its
initialization (so zero-initialized convs and biases matter), their inputs and outputs, all
float32, keyed by the torch module paths. Runs on CPU (bias_act and upfirdn2d take their
reference paths there). Needs torch (not a gen_jax dependency).
"""
from __future__ import annotations

import argparse
import os
import sys
import types

import numpy as np

CIFAR10 = dict(NoiseDimension=64, WidthPerStage=[768] * 4, CardinalityPerStage=[96] * 4,
               BlocksPerStage=[2] * 4, ExpansionFactor=2)
TINY = dict(WidthPerStage=[8, 4], CardinalityPerStage=[2, 2], BlocksPerStage=[1, 1],
            ExpansionFactor=2)
TINY_Z, TINY_CLASSES, TINY_EMBED = 5, 3, 6


def _release_tuple(version: str) -> tuple[int, ...]:
  """'2.13.0+cpu' -> (2, 13, 0): enough of parse_version for conv2d_gradfix's comparison."""
  parts = version.split("+")[0].split(".")[:3]
  return tuple(int("".join(ch for ch in p if ch.isdigit()) or 0) for p in parts)


def count(module) -> int:
  return sum(p.numel() for p in module.parameters() if p.requires_grad)


def main() -> None:
  parser = argparse.ArgumentParser()
  parser.add_argument("--r3gan_src", required=True, help="a checkout of brownvc/R3GAN")
  parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "tests",
                                                    "fixtures", "r3gan_tiny.npz"))
  args = parser.parse_args()
  sys.path.insert(0, args.r3gan_src)
  # dnnlib (imported by the release's torch_utils) imports `requests` for downloads that
  # never happen here, and conv2d_gradfix `pkg_resources.parse_version` (setuptools):
  # stand-ins spare installing them.
  sys.modules.setdefault("requests", types.ModuleType("requests"))
  pkg_resources = types.ModuleType("pkg_resources")
  pkg_resources.parse_version = _release_tuple  # pyright: ignore[reportAttributeAccessIssue]
  sys.modules.setdefault("pkg_resources", pkg_resources)
  import torch
  from R3GAN.Networks import Discriminator, Generator

  torch.manual_seed(0)
  d_cfg = {k: [*reversed(v)] if isinstance(v, list) else v for k, v in CIFAR10.items()
           if k != "NoiseDimension"}
  for name, cond in (("unconditional", {}), ("conditional", None)):
    g_cond = cond if cond is not None else dict(ConditionDimension=10,
                                                ConditionEmbeddingDimension=64)
    d_cond = cond if cond is not None else dict(ConditionDimension=10,
                                                ConditionEmbeddingDimension=768)
    G, D = Generator(**CIFAR10, **g_cond), Discriminator(**d_cfg, **d_cond)
    print(f"CIFAR-10 {name}: G {count(G):,}  D {count(D):,}")

  G = Generator(NoiseDimension=TINY_Z, ConditionDimension=TINY_CLASSES,
                ConditionEmbeddingDimension=TINY_EMBED, **TINY)
  D = Discriminator(WidthPerStage=[4, 8], CardinalityPerStage=[2, 2], BlocksPerStage=[1, 1],
                    ExpansionFactor=2, ConditionDimension=TINY_CLASSES,
                    ConditionEmbeddingDimension=8)
  arrays = {}
  with torch.no_grad():
    for prefix, net in (("G", G), ("D", D)):
      for path, p in net.named_parameters():
        p.copy_(0.5 * torch.randn_like(p))
        arrays[f"{prefix}/{path}"] = p.numpy().copy()
    z = torch.randn(4, TINY_Z)
    labels = torch.tensor([0, 2, 1, 2])
    onehot = torch.nn.functional.one_hot(labels, TINY_CLASSES).float()
    images = G(z, onehot)
    x = torch.randn(4, 3, 8, 8)
    logits = D(x, onehot)
  arrays.update(z=z.numpy(), labels=labels.numpy(), g_out_NCHW=images.numpy(),
                d_in_NCHW=x.numpy(), d_out=logits.numpy())
  np.savez_compressed(args.out, **{k: np.asarray(v, np.float32 if k != "labels" else np.int32)
                                   for k, v in arrays.items()})
  print(f"wrote {args.out}: {len(arrays)} arrays")


if __name__ == "__main__":
  main()
