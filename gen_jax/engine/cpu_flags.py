"""XLA:CPU options the launcher sets before JAX starts its backends (CPU compiles only).

Convolutions: jaxlib >= 0.10 hands convolutions to YNNPACK by default
(`--xla_cpu_experimental_ynn_fusion_type` includes `individual_convolution`). On the
2-core AVX2 machine of docs/scaling.md ("U-Net step vs PyTorch") its kernels were slower
than XLA's Eigen convolutions for every U-Net shape measured, most of all for the weight
gradient (a convolution whose window is the whole feature map): 64x28x28x48 -> 16, weight
gradient 168 ms with YNNPACK, 70 ms with Eigen; the default DDPM train step 2.55 -> 1.84 s
on one core. Dots stay with YNNPACK (`individual_dot`), as by default.

The `xla_cpu_*` options change nothing on GPU or TPU, whose compiles do not read them.
"""
from __future__ import annotations

import os

# Keeps YNNPACK for dots (the default) and gives convolutions back to Eigen.
YNN_FUSION_FLAG = "--xla_cpu_experimental_ynn_fusion_type=individual_dot"


def _jaxlib_version() -> tuple[int, ...]:
  import jaxlib.version
  return tuple(int(p) for p in jaxlib.version.__version__.split(".")[:2] if p.isdigit())


def cpu_xla_flags(xla_flags: str, jaxlib_version: tuple[int, ...]) -> str:
  """`xla_flags` (an XLA_FLAGS value) with the CPU options above added.

  A flag the user already set is left as it is. Only the jaxlib releases it was measured
  on (0.10.x) get it: XLA aborts on an unknown flag, and an experimental option may be
  renamed in a later release (measure again before widening the range).

  Args:
    xla_flags: the current XLA_FLAGS ('' when unset).
    jaxlib_version: (major, minor) of the installed jaxlib.

  Returns:
    The new XLA_FLAGS value.
  """
  if (not (0, 10) <= jaxlib_version[:2] < (0, 11)
      or "--xla_cpu_experimental_ynn_fusion_type" in xla_flags):
    return xla_flags
  return f"{xla_flags} {YNN_FUSION_FLAG}".strip()


def apply_cpu_xla_flags() -> None:
  """Adds the CPU options to os.environ['XLA_FLAGS']. Call it before the first JAX
  computation or device query: XLA reads the variable once, when the backends start."""
  os.environ["XLA_FLAGS"] = cpu_xla_flags(os.environ.get("XLA_FLAGS", ""), _jaxlib_version())
