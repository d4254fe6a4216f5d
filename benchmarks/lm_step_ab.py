"""Seconds per update of two GPT configs' compiled train steps, alternating in one process.

  python benchmarks/lm_step_ab.py --data_dir=../shared/data/tiny_shakespeare

A: experiments/jordan2024_modded_nanogpt/shakespeare_char.py (modern blocks, Muon); B:
configs/gpt.py:baby (nanoGPT's recipe, AdamW). Each is compiled as the launcher runs it
(`train.steps_per_call` updates per call); then calls alternate A, B, A, B ... on fixed
batches of real windows, and the median of the per-pair ratios of seconds per update is
printed, so that the machine's drifting speed and load cancel pair by pair.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

import jax  # noqa: E402
import numpy as np  # noqa: E402

from gen_jax import data  # noqa: E402
from gen_jax.configs import gpt  # noqa: E402
from gen_jax.engine import sharding  # noqa: E402
from gen_jax.engine.experiment import build_experiment  # noqa: E402
from gen_jax.engine.train import compile_train_step  # noqa: E402
from gen_jax.experiments.jordan2024_modded_nanogpt import shakespeare_char  # noqa: E402


def compiled_step(config):
  """(call, state, batches, K): the engine's compiled K-update step on real windows."""
  exp = build_experiment(config)
  K = config.train.steps_per_call
  loader = iter(data.make_loader(config.data, split="train",
                                 global_batch_size=config.train.batch_size, seed=0))
  batches = sharding.global_batch(
      jax.tree.map(lambda *xs: np.stack(xs), *[next(loader) for _ in range(K)]),
      sharding.stacked_batch_sharding(exp.mesh))
  state = exp.init_state()
  step, flops = compile_train_step(exp, state, batches)
  return (lambda s: step(s, batches, exp.base_rng)), state, K, flops


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--data_dir", required=True, help="folder holding input.txt")
  parser.add_argument("--pairs", type=int, default=20)
  args = parser.parse_args()
  configs = {"modded": shakespeare_char.get_config(), "baby": gpt.get_config("baby")}
  steps = {}
  for name, config in configs.items():
    config.data.manual_dir = args.data_dir
    steps[name] = list(compiled_step(config))
  seconds = {name: [] for name in steps}
  for _ in range(args.pairs + 1):   # the first pair warms up
    for name, entry in steps.items():
      call, state, K, _ = entry
      t = time.perf_counter()
      state, metrics = call(state)
      jax.block_until_ready(metrics)
      seconds[name].append((time.perf_counter() - t) / K)
      entry[1] = state
  ratios = [a / b for a, b in zip(seconds["modded"][1:], seconds["baby"][1:], strict=True)]
  for name, entry in steps.items():
    print(f"{name}: median {np.median(seconds[name][1:]) * 1e3:.1f} ms/update, "
          f"XLA FLOPs/update {entry[3]:.3g}")
  print(f"modded / baby seconds per update: median {np.median(ratios):.3f} "
        f"(min {min(ratios):.3f}, max {max(ratios):.3f}; {args.pairs} pairs); load average "
        f"{os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
  main()
