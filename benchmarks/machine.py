"""The machine a benchmark ran on, for the line it prints next to its figures."""
from __future__ import annotations

import os
import platform


def cpu_description() -> str:
  """'<CPU model name>; <N> logical CPUs' (from /proc/cpuinfo where there is one)."""
  cpu = platform.processor() or platform.machine()
  try:
    with open("/proc/cpuinfo") as f:
      cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
  except (OSError, StopIteration):
    pass
  return f"{cpu}; {os.cpu_count()} logical CPUs"
