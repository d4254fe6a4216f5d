"""What the persistent XLA compilation cache saves on the main command. Not a test.

  python benchmarks/compile_cache.py                       # configs/ddpm.py, 2 rounds
  python benchmarks/compile_cache.py --config=configs/gpt.py --rounds=3

Each timing is a whole `launch.py` process, from its start, as a user waits for it:

  start   a new run of --config, to its first logged train call (train.log_every set to
          train.steps_per_call, 1 for most configs)
  resume  a rerun of that run after SIGTERM, to its first new train step
  sample  `--mode=sample` of that run (its default sampler), to the process exit

each once with an empty cache directory ("cold": everything compiles) and once with the
cache the previous cold process filled ("warm"), cold and warm alternating, `--rounds`
times. Prints the medians, the saving in seconds and the ratio, and the machine.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

from absl import app, flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from benchmarks.machine import cpu_description, launcher_xla_flags  # noqa: E402  (after sys.path)

_CONFIG = flags.DEFINE_string("config", "configs/ddpm.py", "Config file[:variant] to time.")
_ROUNDS = flags.DEFINE_integer("rounds", 2, "Cold/warm pairs per measurement.")
_ROOT = flags.DEFINE_string("root", "", "Scratch directory (default: a new temp dir).")


def _train_rows(workdir: str) -> int:
  path = os.path.join(workdir, "metrics.jsonl")
  if not os.path.exists(path):
    return 0
  with open(path) as f:
    return sum('"train/loss"' in line or '"train/d_loss"' in line for line in f)


def _launch(args: list[str]) -> subprocess.Popen:
  return subprocess.Popen([sys.executable, os.path.join(ROOT, "launch.py"), *args], cwd=ROOT,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def time_to_new_step(workdir: str, cache: str) -> float:
  """Starts (or resumes) the run; seconds until it logs one more train step; then SIGTERM."""
  before = _train_rows(workdir)
  t0 = time.perf_counter()
  import gen_jax  # pylint: disable=import-outside-toplevel
  first_log = gen_jax.load_config(_CONFIG.value).train.get("steps_per_call", 1)
  proc = _launch([f"--config={_CONFIG.value}", f"--workdir={workdir}",
                  f"--config.compilation_cache={cache}", f"--config.train.log_every={first_log}"])
  while _train_rows(workdir) <= before:
    if proc.poll() is not None:
      raise RuntimeError(f"launch.py exited with {proc.returncode} before a train step")
    time.sleep(0.05)
  seconds = time.perf_counter() - t0
  proc.send_signal(signal.SIGTERM)   # saves a checkpoint at its step and exits 0
  if proc.wait(timeout=600) != 0:
    raise RuntimeError(f"launch.py exited with {proc.returncode} after SIGTERM")
  return seconds


def time_sample(workdir: str, cache: str) -> float:
  t0 = time.perf_counter()
  proc = _launch([f"--workdir={workdir}", "--mode=sample",
                  f"--config.compilation_cache={cache}"])
  if proc.wait(timeout=1800) != 0:
    raise RuntimeError(f"--mode=sample exited with {proc.returncode}")
  return time.perf_counter() - t0


def main(argv):
  del argv
  # The timed launch.py processes apply launch.py's XLA options themselves; set here too (the
  # children inherit the same value), and printed beside the figures.
  xla_flags = launcher_xla_flags()
  root = _ROOT.value or tempfile.mkdtemp(prefix="gen_jax_cache_bench_")
  runs = {"start": [], "resume": [], "sample": []}   # (cold, warm) pairs
  for r in range(_ROUNDS.value):
    cache = os.path.join(root, f"cache_{r}")
    workdir = os.path.join(root, f"run_{r}")
    shutil.rmtree(cache, ignore_errors=True), shutil.rmtree(workdir, ignore_errors=True)
    cold = time_to_new_step(workdir, cache)                   # fills the cache
    warm = time_to_new_step(workdir + "_warm", cache)         # a new run, same programs
    runs["start"].append((cold, warm))
    cold = time_to_new_step(workdir, cache + "_empty")        # resume with an empty cache
    warm = time_to_new_step(workdir, cache)
    runs["resume"].append((cold, warm))
    cold = time_sample(workdir, cache + "_empty2")
    warm = time_sample(workdir, cache + "_empty2")
    runs["sample"].append((cold, warm))
    for c in (cache + "_empty", cache + "_empty2"):
      shutil.rmtree(c, ignore_errors=True)
    print(f"round {r + 1}: " + ", ".join(f"{k} cold {v[-1][0]:.1f}s warm {v[-1][1]:.1f}s"
                                          for k, v in runs.items()), flush=True)
  print(f"\n{_CONFIG.value}; {cpu_description()}; XLA_FLAGS={xla_flags!r}; medians of "
        f"{_ROUNDS.value} rounds")
  summary = {}
  for name, pairs in runs.items():
    cold = statistics.median(p[0] for p in pairs)
    warm = statistics.median(p[1] for p in pairs)
    summary[name] = {"cold_s": round(cold, 1), "warm_s": round(warm, 1)}
    print(f"  {name:<7s} cold {cold:6.1f} s   warm {warm:6.1f} s   saves {cold - warm:5.1f} s "
          f"({cold / warm:.1f}x)")
  print(json.dumps(summary))


if __name__ == "__main__":
  app.run(main)
