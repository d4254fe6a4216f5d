"""Writes the DiT parity fixture, so tests/interop/test_dit_interop.py can check gen_jax's DiT
(and its weight conversion, gen_jax/interop/dit.py) against the authors' PyTorch code
without PyTorch.

  /work/torchvenv/bin/pip install timm
  /work/torchvenv/bin/python tools/make_dit_fixture.py --dit=<facebookresearch/DiT checkout
      or git directory> [--out=tests/fixtures/dit/parity.npz]

Needs torch and timm (not gen_jax dependencies) and a copy of facebookresearch/DiT (its
models.py is read from there, not committed here). It builds the authors' `DiT` at a tiny
size (8x8x3 inputs, patch 2, width 16, 2 blocks, 2 heads, 5 classes, class dropout 0.1,
learned sigma), redraws every parameter but the fixed `pos_embed` from N(0, 0.2^2) (the
authors' zero-initialized adaLN and output layers would make the output 0), runs it in eval
mode on fixed x, t, y (the null class among them), and saves the state dict in the authors'
names and layout (`sd/<name>`, numpy), the inputs in NHWC and the output in NHWC.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import types

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "tests", "fixtures", "dit", "parity.npz")
SEED = 0
CONFIG = dict(input_size=8, patch_size=2, in_channels=3, hidden_size=16, depth=2, num_heads=2,
              mlp_ratio=4.0, class_dropout_prob=0.1, num_classes=5, learn_sigma=True)


def read_models_py(dit: str) -> str:
  """models.py of a facebookresearch/DiT checkout, or at HEAD of its git directory."""
  if os.path.isfile(os.path.join(dit, "models.py")):
    with open(os.path.join(dit, "models.py")) as f:
      return f.read()
  return subprocess.run(["git", "--git-dir", dit, "show", "HEAD:models.py"], check=True,
                        capture_output=True, text=True).stdout


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--dit", required=True, help="facebookresearch/DiT checkout or git dir")
  parser.add_argument("--out", default=OUT)
  args = parser.parse_args()

  models = types.ModuleType("dit_models")
  exec(compile(read_models_py(args.dit), "DiT/models.py", "exec"), models.__dict__)
  torch.manual_seed(SEED)
  net = models.DiT(**CONFIG).eval()
  with torch.no_grad():
    for name, p in net.named_parameters():
      if name != "pos_embed":
        p.copy_(0.2 * torch.randn_like(p))

  rng = np.random.default_rng(SEED)
  B, S, C = 4, CONFIG["input_size"], CONFIG["in_channels"]
  x = rng.standard_normal((B, C, S, S)).astype(np.float32)
  t = np.array([0.0, 3.5, 250.0, 999.0], np.float32)
  y = np.array([0, 4, CONFIG["num_classes"], 2], np.int64)   # row 2: the null class
  with torch.no_grad():
    out = net(torch.from_numpy(x), torch.from_numpy(t), torch.from_numpy(y)).numpy()

  arrays = {f"sd/{k}": v.detach().numpy() for k, v in net.state_dict().items()}
  arrays.update(x=x.transpose(0, 2, 3, 1), t=t, y=y.astype(np.int32),
                out=out.transpose(0, 2, 3, 1), config=np.array(json.dumps(CONFIG)))
  os.makedirs(os.path.dirname(args.out), exist_ok=True)
  np.savez_compressed(args.out, **arrays)
  print(f"wrote {args.out}: {len(arrays)} arrays, output {out.shape}, "
        f"|out| mean {np.abs(out).mean():.3f}")


if __name__ == "__main__":
  main()
