"""What benchmarks/gpu_suite.py needs beside its parts: the device and software it ran on,
the peak FLOP/s that MFU divides by, gen_jax's train step timed in steady state on
synthetic batches, a cap on a training run, out-of-memory handling, and the JSON and
markdown it writes."""
from __future__ import annotations

import contextlib
import datetime
import gc
import json
import math
import os
import signal
import statistics
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import jax
import jaxlib.version
import numpy as np

from gen_jax.core.state import count_params
from gen_jax.engine import sharding
from gen_jax.engine.train import compile_train_step

# Dense bfloat16 peak TFLOP/s per device (vendors' datasheets, without sparsity), matched
# against `jax.devices()[0].device_kind` in this order (the first name it contains wins, so
# the PCIe and NVL cards come before the SXM H100).
PEAK_BF16_TFLOPS = (
    ("H100 PCIe", 756.0),
    ("H100 NVL", 835.0),
    ("H100", 989.0),        # H100 SXM ("NVIDIA H100 80GB HBM3")
    ("H200", 989.0),        # H200 SXM and GH200: the H100 SXM's tensor cores
    ("A100", 312.0),
    ("TPU v4", 275.0),
    ("TPU v5 lite", 197.0),
    ("TPU v5", 459.0),      # v5p
    ("TPU v6 lite", 918.0),
)


def peak_tflops(device_kind: str) -> float | None:
  """The dense bf16 peak of one device of this kind (TFLOP/s), or None when not in the table."""
  for name, tflops in PEAK_BF16_TFLOPS:
    if name.lower() in device_kind.lower():
      return tflops
  return None


def mfu(flops_per_step: float, steps_per_s: float, peak_tflops_per_device: float | None,
        num_devices: int) -> float | None:
  """Model FLOPs utilization: achieved FLOP/s / (peak x devices); None without a peak."""
  if not peak_tflops_per_device:
    return None
  return flops_per_step * steps_per_s / (peak_tflops_per_device * 1e12 * num_devices)


def cuda_versions() -> dict[str, int] | None:
  """CUDA runtime, driver and cuDNN versions as jaxlib's CUDA plugin reports them (None
  without one). The plugin's version module is private to JAX; what it lacks is left out."""
  from jax._src.lib import cuda_versions as versions  # None without a CUDA plugin
  if versions is None:
    return None
  found = {}
  for name in ("cuda_runtime_get_version", "cuda_driver_get_version", "cudnn_get_version"):
    try:
      found[name.removesuffix("_get_version")] = int(getattr(versions, name)())
    except (AttributeError, RuntimeError):
      continue
  return found


def environment(peak_override: float) -> dict[str, Any]:
  """The device, its peak and the software versions, for the top of the report."""
  device = jax.devices()[0]
  table_peak = peak_tflops(device.device_kind)
  return {
      "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
      "platform": device.platform, "device_kind": device.device_kind,
      "device_count": jax.device_count(), "jax": jax.__version__,
      "jaxlib": jaxlib.version.__version__, "cuda": cuda_versions(),
      "python": sys.version.split()[0], "xla_flags": os.environ.get("XLA_FLAGS", ""),
      "peak_bf16_tflops_per_device": peak_override or table_peak,
      "peak_source": ("--peak_tflops" if peak_override else
                      "the suite's table" if table_peak else "unknown: MFU not computed"),
      "environment_info": jax.print_environment_info(return_string=True),
  }


# ------------------------------------------------------------------------------ timing


def steady_rate(call: Callable[[], Any], seconds: float, rounds: int = 3) -> dict[str, float]:
  """Calls of `call` per second in steady state, each call's result waited for.

  `call` must be compiled and warmed up already. One waited call sizes the rounds; then
  `rounds` rounds of n calls each (dispatched back to back, the last one waited for) last
  about `seconds` together. Returns the median round's rate and the rounds' spread.
  """
  start = time.perf_counter()
  jax.block_until_ready(call())
  one = max(time.perf_counter() - start, 1e-6)
  n = max(1, round(seconds / rounds / one))
  rates = []
  for _ in range(rounds):
    start = time.perf_counter()
    for _ in range(n):
      out = call()
    jax.block_until_ready(out)
    rates.append(n / (time.perf_counter() - start))
  return {"per_s": statistics.median(rates), "min_per_s": min(rates), "max_per_s": max(rates),
          "calls_per_round": n, "rounds": rounds}


# ---------------------------------------------------------------------- train steps


def synthetic_batches(exp, steps_per_call: int, seed: int = 0):
  """[K, B, ...] batches shaped as the experiment's data: random token ids below the
  vocabulary, images uniform in [-1, 1], other fields (labels) zero."""
  rng = np.random.default_rng(seed)
  B = exp.config.train.batch_size
  local = {}
  for name, example in exp.spec.example_batch().items():
    shape = (steps_per_call, B, *example.shape[1:])
    if name == "tokens":
      local[name] = rng.integers(0, exp.spec.vocab_size, shape, dtype=np.int32)
    elif name == "image":
      local[name] = rng.uniform(-1, 1, shape).astype(np.float32)
    else:
      local[name] = np.zeros(shape, example.dtype)
  return sharding.global_batch(local, sharding.stacked_batch_sharding(exp.mesh))


CUDNN_ATTENTION_CALL = "__cudnn$fmha"   # custom-call target prefix of cuDNN's fused attention


def train_step_rate(exp, seconds: float) -> dict:
  """Compiles gen_jax's train step (`compile_train_step`) for `exp` on synthetic batches,
  warms it up and times it for about `seconds`: compile seconds, updates/s, XLA's FLOPs
  per update, the last loss."""
  K = exp.config.train.get("steps_per_call", 1)
  holder = {"state": exp.init_state()}
  batches = synthetic_batches(exp, K)
  start = time.perf_counter()
  compiled, xla_flops = compile_train_step(exp, holder["state"], batches)
  compile_s = time.perf_counter() - start

  def call():
    holder["state"], metrics = compiled(holder["state"], batches, exp.base_rng)
    return metrics

  metrics = jax.device_get(call())   # warm-up; running out of memory shows here
  rate = steady_rate(call, seconds)
  loss = float(np.asarray(metrics["loss"])[-1])
  if not math.isfinite(loss):
    raise FloatingPointError(f"non-finite loss {loss} in the timed train step")
  return {"compile_s": compile_s, "steps_per_s": rate["per_s"] * K,
          "steps_per_s_range": [rate["min_per_s"] * K, rate["max_per_s"] * K],
          "steps_per_call": K, "xla_flops_per_step": xla_flops, "loss": loss,
          "params": count_params(holder["state"].params),
          # Which attention ran: cuDNN's fused attention is a custom call in the program.
          "cudnn_fused_attention": CUDNN_ATTENTION_CALL in compiled.as_text()}


def released() -> None:
  """Drops compiled programs and unreferenced buffers between parts (device memory)."""
  gc.collect()
  jax.clear_caches()


@contextlib.contextmanager
def stopped_at(deadline: float):
  """SIGTERM to this process at `deadline` (time.monotonic()), then every 2 s until the
  block ends: the training loop's preemption handler saves and returns. A signal that
  comes before the loop installs its handler meets this block's, which ignores it."""
  done = threading.Event()

  def nag():
    if done.wait(max(0.0, deadline - time.monotonic())):
      return
    while not done.is_set():
      os.kill(os.getpid(), signal.SIGTERM)
      done.wait(2.0)

  previous = signal.signal(signal.SIGTERM, lambda signum, frame: None)
  thread = threading.Thread(target=nag, daemon=True)
  thread.start()
  try:
    yield
  finally:
    done.set()
    thread.join()
    signal.signal(signal.SIGTERM, previous)


# ----------------------------------------------------------------------- out of memory


def is_out_of_memory(error: BaseException) -> bool:
  """Whether `error` is XLA's out-of-memory error (RESOURCE_EXHAUSTED)."""
  text = str(error)
  return "RESOURCE_EXHAUSTED" in text or "Out of memory" in text or "out of memory" in text


class NoBatchFits(RuntimeError):
  """Every batch size tried ran out of memory (or the time cap came first)."""


def largest_fitting_batch(candidates: list[int], attempt: Callable[[int], dict],
                          deadline: float) -> tuple[int, dict, list[dict]]:
  """Runs `attempt(batch)` for each candidate, largest first, until one does not run out
  of memory.

  Args:
    candidates: per-device batch sizes, tried in the order given (largest first).
    attempt: compiles and measures at one batch size; returns its figures.
    deadline: time.monotonic() after which no further size is tried.

  Returns:
    (the batch that ran, its figures, one {'batch', 'result'} row per size tried).

  Raises:
    NoBatchFits: no size ran.
  """
  tried = []
  for batch in candidates:
    if time.monotonic() > deadline:
      tried.append({"batch": batch, "result": "not tried: time cap"})
      continue
    try:
      figures = attempt(batch)
    except Exception as e:   # pylint: disable=broad-except
      if not is_out_of_memory(e):
        raise
      tried.append({"batch": batch, "result": "out of memory"})
      continue
    tried.append({"batch": batch, "result": "ran"})
    return batch, figures, tried
  raise NoBatchFits(f"no per-device batch of {candidates} ran: "
                    + ", ".join(f"{t['batch']}: {t['result']}" for t in tried))


# ------------------------------------------------------------------------------ report


def write_report(out_dir: str, report: dict) -> tuple[str, str]:
  """Writes gpu_results.json and gpu_results.md into `out_dir`; returns their paths."""
  os.makedirs(out_dir, exist_ok=True)
  json_path = os.path.join(out_dir, "gpu_results.json")
  md_path = os.path.join(out_dir, "gpu_results.md")
  with open(json_path + ".tmp", "w") as f:
    json.dump(report, f, indent=1)
  os.replace(json_path + ".tmp", json_path)
  with open(md_path, "w") as f:
    f.write(markdown(report))
  return json_path, md_path


def markdown(report: dict) -> str:
  """The report as a short markdown document: the environment, then one row per part."""
  env = report["environment"]
  cuda = env["cuda"] or {}
  peak = env["peak_bf16_tflops_per_device"]
  lines = [
      f"# gen_jax GPU suite ({'tiny' if report['tiny'] else 'full'} run)", "",
      f"- date: {env['date']}; suite wall time {report['wall_s']:.0f} s "
      f"(limit {report['time_limit_s']:.0f} s)",
      f"- device: {env['device_count']} x {env['device_kind']} ({env['platform']})",
      f"- peak: {f'{peak:g} TFLOP/s bf16 dense per device' if peak else 'unknown'} "
      f"({env['peak_source']})",
      f"- jax {env['jax']}, jaxlib {env['jaxlib']}, CUDA "
      + (", ".join(f"{k} {v}" for k, v in cuda.items()) if cuda else "none")
      + f", Python {env['python']}",
      f"- XLA_FLAGS: `{env['xla_flags']}`", "",
      "| part | status | figures | goal | goal met | s (cap) |",
      "|---|---|---|---|---|---|",
  ]
  for part in report["parts"]:
    status = part["status"] + (f": {part['reason']}" if part["reason"] else "")
    met = {True: "yes", False: "no", None: ""}[part["goal_met"]]
    lines.append(f"| {part['title']} | {status} | {part['summary']} | {part['goal']} | {met} "
                 f"| {part['seconds']:.0f} ({part['budget_s']:.0f}) |")
  return "\n".join(lines) + "\n"
