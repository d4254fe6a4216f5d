"""The machine a benchmark ran on, for the line it prints next to its figures, the XLA
options every benchmark applies (launch.py's), the timer the benchmarks share, and, for
the side-by-side benchmarks against PyTorch, the machine line with both frameworks, the
matmul rate that their MFU figures divide by, the alternating rounds and their summary."""
from __future__ import annotations

import os
import platform
import time

from gen_jax.engine.cpu_flags import apply_cpu_xla_flags


def cpu_description() -> str:
  """'<CPU model name>; <N> logical CPUs' (from /proc/cpuinfo where there is one)."""
  cpu = platform.processor() or platform.machine()
  try:
    with open("/proc/cpuinfo") as f:
      cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
  except (OSError, StopIteration):
    pass
  return f"{cpu}; {os.cpu_count()} logical CPUs"


def waited(fn) -> float:
  """Seconds of one call of `fn`, its result waited for (JAX's asynchronous dispatch)."""
  import jax
  t0 = time.perf_counter()
  jax.block_until_ready(fn())
  return time.perf_counter() - t0


def launcher_xla_flags() -> str:
  """Applies launch.py's XLA options (gen_jax/engine/cpu_flags.py) and returns XLA_FLAGS,
  for the line a benchmark prints. Call it before JAX starts a backend (the first
  computation or device query), as launch.py does: XLA reads the variable once."""
  apply_cpu_xla_flags()
  return os.environ.get("XLA_FLAGS", "")


def jax_and_torch_machine() -> str:
  """`cpu_description()` with the jax and torch builds, torch's threads and CPU capability,
  and XLA_FLAGS: the line of a side-by-side benchmark against PyTorch."""
  import jax
  import torch
  return (f"{cpu_description()}; jax {jax.__version__} ({jax.devices()[0].platform} x "
          f"{jax.device_count()}); torch {torch.__version__} ({torch.get_num_threads()} "
          f"threads, {torch.backends.cpu.get_cpu_capability()}); XLA_FLAGS="
          f"{os.environ.get('XLA_FLAGS', '')!r}")


def matmul_peak(n: int):
  """A function giving GFLOP/s of the faster of jax's and torch's float32 n x n matmul
  (best of 2 calls each): the large-matmul rate an MFU on this CPU divides by, measured
  again each round next to the steps it judges."""
  import jax
  import jax.numpy as jnp
  import torch
  a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
  mm = jax.jit(jnp.matmul)
  ta = torch.randn(n, n)
  jax.block_until_ready(mm(a, a))

  def measure() -> float:
    best = min(min(waited(lambda: mm(a, a)) for _ in range(2)),
               min(waited(lambda: torch.mm(ta, ta)) for _ in range(2)))
    return 2 * n ** 3 / best / 1e9
  return measure


def alternating_rounds(jax_step, torch_step, peak, rounds: int, after_round=None):
  """Times one call of each framework's step per round, jax first on even rounds and torch
  first on odd ones, after measuring the round's matmul rate with `peak()`.

  Args:
    jax_step, torch_step: the two steps (their results waited for by `waited`).
    peak: `matmul_peak(n)`'s function.
    rounds: how many rounds.
    after_round: called as after_round(r, peak, jax_s, torch_s) after round r, if given.

  Returns:
    (jax seconds, torch seconds, matmul rates in GFLOP/s), numpy arrays of `rounds` each.
  """
  import numpy as np
  jax_s, torch_s, peaks = [], [], []
  for r in range(rounds):
    peaks.append(peak())
    order = [(jax_s, jax_step), (torch_s, torch_step)]
    for times, fn in (order if r % 2 == 0 else order[::-1]):
      times.append(waited(fn))
    if after_round is not None:
      after_round(r, peaks[-1], jax_s[-1], torch_s[-1])
  return np.array(jax_s), np.array(torch_s), np.array(peaks)


def print_side_by_side(jax_s, torch_s, peaks, flops_per_step: float) -> None:
  """The summary lines of `alternating_rounds`: the median matmul rate, each framework's
  median steps/s, best and MFU (the same FLOP count for both: the same arithmetic), and the
  speed ratio (median of the per-round ratios, of the medians and of the bests)."""
  import numpy as np
  rounds = len(jax_s)
  med = lambda v: float(np.median(v))
  mfu = lambda s: 100 * med(flops_per_step / s / 1e9 / peaks)
  print(f"  matmul peak: {med(peaks):.1f} GFLOP/s median ({peaks.min():.0f}-{peaks.max():.0f})")
  print(f"  gen_jax: {1 / med(jax_s):.3f} steps/s (median of {rounds}; best "
        f"{1 / jax_s.min():.3f}), MFU {mfu(jax_s):.1f}%")
  print(f"  torch:   {1 / med(torch_s):.3f} steps/s (median of {rounds}; best "
        f"{1 / torch_s.min():.3f}), MFU {mfu(torch_s):.1f}%")
  print(f"  gen_jax / torch speed: {med(torch_s / jax_s):.2f}x (median of per-round ratios; "
        f"ratio of medians {med(torch_s) / med(jax_s):.2f}x, of bests "
        f"{torch_s.min() / jax_s.min():.2f}x)")
