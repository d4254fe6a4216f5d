"""The machine a benchmark ran on, for the line it prints next to its figures, the XLA
options every benchmark applies (launch.py's), the timer the benchmarks share, and, for
the side-by-side benchmarks against PyTorch, the machine line with both frameworks and the
matmul rate that their MFU figures divide by."""
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
