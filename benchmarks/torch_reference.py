"""The same baby GPT run in PyTorch (eager), to compare with benchmarks/lm.py on one machine.

An independent PyTorch implementation of exactly what `configs/gpt.py:baby` trains (and what
nanoGPT's CPU command trains): 4 pre-LayerNorm blocks, 4 heads, 128 wide, context 64, no
biases, tied embeddings, GPT-2 init; AdamW (0.9, 0.99), weight decay 0.1 on matrices, lr
1e-3 with 100 warmup steps and cosine decay to 1e-4 at 2000, clip 1.0, batch 12 random
windows of the first 90% of Tiny Shakespeare; validation loss on the whole last 10% every
250 iterations, stopping at the first <= --target_loss (after 2000 steps training goes on
at lr 1e-4, up to --max_steps), as benchmarks/lm.py does. PyTorch is not a gen_jax
dependency; in a separate venv:

  python -m venv /tmp/torchvenv && /tmp/torchvenv/bin/pip install torch==2.13.0 numpy
  /tmp/torchvenv/bin/python benchmarks/torch_reference.py --data_dir=../shared/data/tiny_shakespeare

Prints steps/s of the train step, each evaluation's validation loss with the wall time
since start, and the time to reach validation loss <= 1.88.
"""
from __future__ import annotations

import argparse
import math
import os
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

N_LAYER, N_HEAD, N_EMBD, BLOCK, BATCH, STEPS = 4, 4, 128, 64, 12, 2000
LR, MIN_LR, WARMUP, WD, CLIP, EVAL_EVERY = 1e-3, 1e-4, 100, 0.1, 1.0, 250


class Block(nn.Module):

  def __init__(self):
    super().__init__()
    self.ln_1 = nn.LayerNorm(N_EMBD, bias=False)
    self.c_attn = nn.Linear(N_EMBD, 3 * N_EMBD, bias=False)
    self.attn_proj = nn.Linear(N_EMBD, N_EMBD, bias=False)
    self.ln_2 = nn.LayerNorm(N_EMBD, bias=False)
    self.c_fc = nn.Linear(N_EMBD, 4 * N_EMBD, bias=False)
    self.mlp_proj = nn.Linear(4 * N_EMBD, N_EMBD, bias=False)

  def forward(self, x):
    B, T, D = x.shape
    q, k, v = self.c_attn(self.ln_1(x)).view(B, T, 3, N_HEAD, D // N_HEAD).unbind(2)
    y = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                       is_causal=True)
    x = x + self.attn_proj(y.transpose(1, 2).reshape(B, T, D))
    return x + self.mlp_proj(F.gelu(self.c_fc(self.ln_2(x)), approximate="tanh"))


class GPT(nn.Module):

  def __init__(self, vocab_size: int):
    super().__init__()
    self.wte = nn.Embedding(vocab_size, N_EMBD)
    self.wpe = nn.Embedding(BLOCK, N_EMBD)
    self.h = nn.ModuleList(Block() for _ in range(N_LAYER))
    self.ln_f = nn.LayerNorm(N_EMBD, bias=False)
    for name, p in self.named_parameters():
      if p.dim() >= 2:   # GPT-2 init: N(0, 0.02), residual projections / sqrt(2 L)
        std = 0.02 / math.sqrt(2 * N_LAYER) if name.endswith("proj.weight") else 0.02
        nn.init.normal_(p, 0.0, std)

  def forward(self, idx):
    x = self.wte(idx) + self.wpe(torch.arange(idx.shape[1]))
    for block in self.h:
      x = block(x)
    return self.ln_f(x) @ self.wte.weight.T


def lr_at(step: int) -> float:
  if step < WARMUP:
    return LR * step / WARMUP
  progress = min(1.0, (step - WARMUP) / (STEPS - WARMUP))
  return MIN_LR + 0.5 * (LR - MIN_LR) * (1 + math.cos(math.pi * progress))


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--data_dir", required=True)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--target_loss", type=float, default=1.88)
  parser.add_argument("--max_steps", type=int, default=5000)
  args = parser.parse_args()
  start = time.perf_counter()
  torch.manual_seed(args.seed)
  text = open(os.path.join(args.data_dir, "input.txt"), encoding="utf-8").read()
  chars = sorted(set(text))
  lookup = {c: i for i, c in enumerate(chars)}
  ids = torch.tensor(np.array([lookup[c] for c in text], dtype=np.int64))
  cut = int(0.9 * len(ids))
  train, val = ids[:cut], ids[cut:]

  def batch(split):
    offsets = torch.randint(len(split) - BLOCK - 1, (BATCH,))
    windows = torch.stack([split[o:o + BLOCK + 1] for o in offsets.tolist()])
    return windows[:, :-1], windows[:, 1:]

  model = GPT(len(chars))
  decay = [p for p in model.parameters() if p.dim() >= 2]
  no_decay = [p for p in model.parameters() if p.dim() < 2]
  opt = torch.optim.AdamW([{"params": decay, "weight_decay": WD},
                           {"params": no_decay, "weight_decay": 0.0}],
                          lr=LR, betas=(0.9, 0.99), eps=1e-8)
  def full_validation_loss():   # every window of the validation split once, in order
    windows = val[:(len(val) - 1) // BLOCK * BLOCK + 1]
    x, y = windows[:-1].view(-1, BLOCK), windows[1:].view(-1, BLOCK)
    model.eval()
    with torch.no_grad():
      nats = sum(F.cross_entropy(model(x[i:i + 64]).flatten(0, 1), y[i:i + 64].flatten(),
                                 reduction="sum").item() for i in range(0, len(x), 64))
    model.train()
    return nats / y.numel()

  reached, train_time, step = None, 0.0, 0
  while reached is None and step < args.max_steps:
    step += 1
    t = time.perf_counter()
    for group in opt.param_groups:
      group["lr"] = lr_at(step - 1)
    x, y = batch(train)
    loss = F.cross_entropy(model(x).flatten(0, 1), y.flatten())
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), CLIP)
    opt.step()
    train_time += time.perf_counter() - t
    if step % EVAL_EVERY == 0:
      val_loss = full_validation_loss()
      seconds = time.perf_counter() - start
      print(f"  eval at step {step:5d}: val loss {val_loss:.4f} at {seconds:6.1f} s", flush=True)
      if val_loss <= args.target_loss:
        reached = (seconds, step, val_loss)
  total = time.perf_counter() - start
  print(f"torch {torch.__version__}, {torch.get_num_threads()} threads: "
        f"{step / train_time:.1f} train steps/s; whole run {total:.1f} s")
  if reached:
    print(f"time to val loss <= {args.target_loss} (whole validation split): "
          f"{reached[0]:.1f} s at step {reached[1]} (loss {reached[2]:.4f})")
  else:
    print(f"val loss never reached {args.target_loss} in {args.max_steps} steps")


if __name__ == "__main__":
  main()
