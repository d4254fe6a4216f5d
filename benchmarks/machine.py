"""The machine a benchmark ran on, for the line it prints next to its figures, and the
timer the benchmarks share."""
from __future__ import annotations

import os
import platform
import time


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
