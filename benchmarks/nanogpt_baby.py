"""nanoGPT's own CPU ("baby") run against gen_jax's modded-nanogpt baby recipe, side by side.

  python benchmarks/nanogpt_baby.py --nanogpt_dir=/tmp/nanoGPT \\
      --data_dir=../shared/data/tiny_shakespeare --torch_python=/path/to/venv/bin/python

`--nanogpt_dir` is a checkout of github.com/karpathy/nanoGPT (nothing of it is part of
gen_jax); `--torch_python` an interpreter with torch and numpy. The script

  1. prepares Tiny Shakespeare for nanoGPT as its data/shakespeare_char/prepare.py does
     (sorted characters as the vocabulary, the first 90% of input.txt as train.bin, the rest
     as val.bin, uint16 ids, meta.pkl) from `--data_dir`'s input.txt;
  2. runs, alternating A/B/A/B for `--pairs` pairs, nanoGPT's command from its README
       python train.py config/train_shakespeare_char.py --device=cpu --compile=False
         --eval_iters=20 --log_interval=1 --block_size=64 --batch_size=12 --n_layer=4
         --n_head=4 --n_embd=128 --max_iters=2000 --lr_decay_iters=2000 --dropout=0.0
     and `python launch.py --config=<--config>` with an empty compilation cache (a first
     run), each timed from start to exit;
  3. evaluates nanoGPT's final checkpoint on the WHOLE validation split with the windows
     gen_jax's evaluation reads (`num_batches=0`: windows j*64 of 65 tokens, whole batches of
     12), so both losses are over the same 1,740 windows; nanoGPT's own printed figure is an
     estimate from 20 random batches;
  4. prints per pair both wall times, both whole-split losses and gen_jax's time / nanoGPT's,
     which counts only when gen_jax's loss is <= nanoGPT's.
"""
from __future__ import annotations

import argparse
import json
import os
import pickle
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NANOGPT_ARGS = ["config/train_shakespeare_char.py", "--device=cpu", "--compile=False",
                "--eval_iters=20", "--log_interval=1", "--block_size=64", "--batch_size=12",
                "--n_layer=4", "--n_head=4", "--n_embd=128", "--max_iters=2000",
                "--lr_decay_iters=2000", "--dropout=0.0"]
SEQ_LEN, EVAL_BATCH = 64, 12

# Runs inside nanoGPT's folder with --torch_python: the final checkpoint's mean loss over
# the windows j*SEQ_LEN (SEQ_LEN + 1 tokens) of val.bin, in whole batches of EVAL_BATCH.
WHOLE_SPLIT_EVAL = f"""
import json, numpy as np, torch
from model import GPT, GPTConfig
ckpt = torch.load('out-shakespeare-char/ckpt.pt', map_location='cpu')
model = GPT(GPTConfig(**ckpt['model_args']))
state = {{k.removeprefix('_orig_mod.'): v for k, v in ckpt['model'].items()}}
model.load_state_dict(state)
model.eval()
val = np.memmap('data/shakespeare_char/val.bin', dtype=np.uint16, mode='r').astype(np.int64)
n = ((len(val) - 1) // {SEQ_LEN} // {EVAL_BATCH}) * {EVAL_BATCH}
losses = []
with torch.no_grad():
  for b in range(0, n, {EVAL_BATCH}):
    starts = [j * {SEQ_LEN} for j in range(b, b + {EVAL_BATCH})]
    rows = np.stack([val[s: s + {SEQ_LEN} + 1] for s in starts])
    x = torch.from_numpy(np.ascontiguousarray(rows[:, :-1]))
    y = torch.from_numpy(np.ascontiguousarray(rows[:, 1:]))   # model.py view()s the targets
    _, loss = model(x, y)
    losses.append(loss.item())
print('RESULT' + json.dumps({{'loss': float(np.mean(losses)), 'windows': n,
                             'iter': int(ckpt['iter_num'])}}))
"""


def prepare_nanogpt_data(nanogpt_dir: str, data_dir: str) -> None:
  """nanoGPT's data/shakespeare_char/prepare.py, on the local input.txt (no download)."""
  out = os.path.join(nanogpt_dir, "data", "shakespeare_char")
  with open(os.path.join(data_dir, "input.txt")) as f:
    text = f.read()
  chars = sorted(set(text))
  stoi = {ch: i for i, ch in enumerate(chars)}
  itos = dict(enumerate(chars))
  n = len(text)
  for name, part in (("train", text[:int(n * 0.9)]), ("val", text[int(n * 0.9):])):
    np.array([stoi[c] for c in part], dtype=np.uint16).tofile(os.path.join(out, f"{name}.bin"))
  with open(os.path.join(out, "meta.pkl"), "wb") as f:
    pickle.dump({"vocab_size": len(chars), "itos": itos, "stoi": stoi}, f)


def timed(cmd: list[str], cwd: str, log: str) -> float:
  """Wall seconds from start to exit; output to `log`. Raises on a non-zero exit."""
  start = time.perf_counter()
  with open(log, "w") as f:
    subprocess.run(cmd, cwd=cwd, stdout=f, stderr=subprocess.STDOUT, check=True)
  return time.perf_counter() - start


def final_eval_loss(workdir: str) -> float:
  rows = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
  return [r for r in rows if "eval/raw/loss" in r][-1]["eval/raw/loss"]


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--nanogpt_dir", required=True)
  parser.add_argument("--data_dir", required=True, help="folder holding input.txt")
  parser.add_argument("--torch_python", required=True)
  parser.add_argument("--config",
                      default="experiments/jordan2024_modded_nanogpt/shakespeare_char.py")
  parser.add_argument("--pairs", type=int, default=2)
  parser.add_argument("--out", default=tempfile.mkdtemp(prefix="nanogpt_baby_"))
  args, overrides = parser.parse_known_args()   # the rest: --config.x=y for gen_jax
  os.makedirs(args.out, exist_ok=True)
  prepare_nanogpt_data(args.nanogpt_dir, args.data_dir)
  print(f"machine: {os.cpu_count()} cores; load average {os.getloadavg()[0]:.2f} at start; "
        f"logs in {args.out}", flush=True)
  rows = []
  for pair in range(args.pairs):
    shutil.rmtree(os.path.join(args.nanogpt_dir, "out-shakespeare-char"), ignore_errors=True)
    nano_s = timed([args.torch_python, "train.py", *NANOGPT_ARGS], args.nanogpt_dir,
                   os.path.join(args.out, f"nanogpt_{pair}.log"))
    evaluated = subprocess.run([args.torch_python, "-c", WHOLE_SPLIT_EVAL], cwd=args.nanogpt_dir,
                               capture_output=True, text=True, check=True).stdout
    nano = json.loads(evaluated.split("RESULT", 1)[1])
    workdir = os.path.join(args.out, f"gen_jax_{pair}")
    jax_s = timed([sys.executable, "launch.py", f"--config={args.config}",
                   f"--config.data.manual_dir={args.data_dir}", "--config.compilation_cache=",
                   "--config.train.sample_every=0", f"--workdir={workdir}", *overrides], REPO,
                  os.path.join(args.out, f"gen_jax_{pair}.log"))
    jax_loss = final_eval_loss(workdir)
    row = {"pair": pair, "nanogpt_s": round(nano_s, 1), "nanogpt_loss": round(nano["loss"], 4),
           "nanogpt_ckpt_iter": nano["iter"], "gen_jax_s": round(jax_s, 1),
           "gen_jax_loss": round(jax_loss, 4), "ratio": round(jax_s / nano_s, 3),
           "reached": jax_loss <= nano["loss"],
           "load": round(os.getloadavg()[0], 2)}
    rows.append(row)
    print(json.dumps(row), flush=True)
  ratios = sorted(r["ratio"] for r in rows)
  print(f"gen_jax / nanoGPT wall time: median {ratios[len(ratios) // 2]:.3f} "
        f"(min {ratios[0]:.3f}, max {ratios[-1]:.3f}); reached nanoGPT's loss in "
        f"{sum(r['reached'] for r in rows)} of {len(rows)} pairs")


if __name__ == "__main__":
  main()
