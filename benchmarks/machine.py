"""The machine a benchmark ran on, for the line it prints next to its figures, the XLA
options every benchmark applies (launch.py's), and the timer the benchmarks share."""
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
