"""Soak test: kill a training run at random moments, rerun it after each kill, and check
that it ends exactly where an uninterrupted run ends. Not part of the test suite.

  python benchmarks/soak.py                      # configs/vae.py:smoke, 1500 steps, 30 kills
  python benchmarks/soak.py --kills=50 --steps=3000 --seed=1 --root=/tmp/soak

1. Reference: `launch.py` trains --steps steps uninterrupted.
2. Kills: --kills times, `launch.py` (the same command) starts on the soak workdir and gets
   SIGKILL or SIGTERM (a coin flip) after a random delay, uniform in [0, --max_wait] s
   from its start, so that kills land in start-up, restore, compilation, training and
   checkpoint saves (asynchronous, every --checkpoint_every steps). SIGTERM is a
   preemption: once training runs, the run saves at its current step and exits 0 (before
   the handler is installed, SIGTERM kills like SIGKILL). A run that finishes before its
   kill is not counted as a kill, and the soak stops killing.
3. A last run finishes the training.
4. Sweep drivers: a sweep of two such runs (seed 0, the reference's config, and seed 1)
   is started by `launch.py --sweep` --driver_kills times, and each driver gets SIGKILL
   after a random delay in [0, --max_wait] s. Its running child must stop with it (the
   kernel sends it SIGTERM: PR_SET_PDEATHSIG) within 120 s; then the next driver starts.
   A last driver finishes the sweep.

Checks (exit status 1 if one fails):
  * the final train state (params, EMA, optimizer state, step) is bitwise equal to the
    reference's;
  * metrics.jsonl holds each training step 1..steps exactly once, with the reference's
    loss, bitwise (train.log_every=1: rows do not depend on where a run resumed);
  * every run stopped by SIGTERM after training had started exited 0, with a checkpoint at
    its last logged step;
  * no sweep run outlived its killed driver, and after the last driver both sweep runs
    hold steps 1..steps once each, the seed-0 run with the reference's loss, bitwise.
Prints one line per kill, a summary and a final JSON line.
"""
from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time

from absl import app, flags, logging

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from machine import cpu_description, launcher_xla_flags  # noqa: E402  (benchmarks/machine.py)

flags.DEFINE_string("config", "configs/vae.py:smoke", "Config (and variant) to train.")
flags.DEFINE_integer("steps", 1500, "Training steps of each run.")
flags.DEFINE_integer("kills", 30, "Kills before the last, finishing run.")
flags.DEFINE_float("max_wait", 10.0, "Longest delay (s) from a run's start to its kill.")
flags.DEFINE_integer("checkpoint_every", 10, "train.checkpoint_every.")
flags.DEFINE_integer("driver_kills", 5, "SIGKILLs of a sweep driver (0: no sweep phase).")
flags.DEFINE_integer("seed", 0, "Seed of the kill times and signals.")
flags.DEFINE_string("root", "/tmp/gen_jax_soak", "Folder for the runs, the data and the XLA "
                    "cache (emptied first, except the data and the cache).")
FLAGS = flags.FLAGS


def machine() -> str:
  return cpu_description()


def overrides() -> list[str]:
  values = {"train.num_steps": FLAGS.steps, "train.checkpoint_every": FLAGS.checkpoint_every,
            "train.async_checkpointing": True, "train.log_every": 1,
            "train.sample_every": 0, "eval.every": 0,
            "data.data_dir": os.path.join(FLAGS.root, "tfds")}
  return [f"--config.{k}={v}" for k, v in values.items()]


def command(workdir: str) -> list[str]:
  return [sys.executable, os.path.join(ROOT, "launch.py"), f"--config={FLAGS.config}",
          f"--workdir={workdir}", *overrides()]


SWEEP_FILE = """
import importlib.util
spec = importlib.util.spec_from_file_location("base", {path!r})
base = importlib.util.module_from_spec(spec)
spec.loader.exec_module(base)

def get_config(arg=None):
  return base.get_config({arg!r})

def get_sweep(arg=None):
  return [{{"seed": 0}}, {{"seed": 1}}]
"""


def pid_alive(pid: int) -> bool:
  from gen_jax.engine.lease import pid_alive as alive
  return alive(pid)


def sweep_soak(rng: random.Random, log: str, reference_losses: dict) -> tuple[list, list]:
  """Step 4 of the module docstring: (one record per driver kill, failures)."""
  path, _, arg = FLAGS.config.partition(":")
  config_file = os.path.join(FLAGS.root, "sweep_config.py")
  with open(config_file, "w") as f:
    f.write(SWEEP_FILE.format(path=os.path.join(ROOT, path), arg=arg or None))
  sweep_dir = os.path.join(FLAGS.root, "sweep")
  cmd = [sys.executable, os.path.join(ROOT, "launch.py"), f"--config={config_file}", "--sweep",
         f"--workdir={sweep_dir}", *overrides()]
  kills, failures = [], []
  for i in range(FLAGS.driver_kills + 1):
    last = i == FLAGS.driver_kills
    delay = None if last else rng.uniform(0, FLAGS.max_wait)
    with open(log, "a") as out:
      driver = subprocess.Popen(cmd, cwd=ROOT, env=environment(), stdout=subprocess.PIPE,
                                stderr=out, text=True)
      try:
        stdout, _ = driver.communicate(timeout=delay)
      except subprocess.TimeoutExpired:
        driver.kill()
        stdout, _ = driver.communicate()
      out.write(stdout)
    children = [int(line.rsplit("pid ", 1)[1].rstrip(")")) for line in stdout.splitlines()
                if line.startswith("[sweep] started ")]
    if last:
      if driver.returncode != 0:
        failures.append(f"the finishing sweep driver exited {driver.returncode}; see {log}")
      break
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and any(map(pid_alive, children)):
      time.sleep(0.2)
    orphans = [pid for pid in children if pid_alive(pid)]
    kills.append({"after_s": round(delay, 1), "exit": driver.returncode,
                  "children": children, "orphans": orphans})
    print(f"driver kill {i + 1}: SIGKILL after {delay:4.1f} s: exit {driver.returncode}, "
          f"running child(ren) {children or 'none'}"
          + (f", still alive after 120 s: {orphans}" if orphans else ""), flush=True)
    if orphans:
      failures.append(f"driver kill {i + 1}: runs {orphans} outlived their sweep driver")
  for name in ("seed=0", "seed=1"):
    rows = train_rows(os.path.join(sweep_dir, name))
    if [r["step"] for r in rows] != list(range(1, FLAGS.steps + 1)):
      failures.append(f"sweep run {name}: metrics.jsonl steps are not 1..{FLAGS.steps} once "
                      f"each ({len(rows)} rows)")
    if name == "seed=0" and any(r["train/loss"] != reference_losses.get(r["step"]) for r in rows):
      failures.append("sweep run seed=0: train/loss differs from the reference")
  return kills, failures


def environment() -> dict[str, str]:
  return {**os.environ, "JAX_PLATFORMS": "cpu",
          "JAX_COMPILATION_CACHE_DIR": os.path.join(FLAGS.root, "xla_cache"),
          "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0"}


def run(workdir: str, log: str, kill_after: float | None = None,
        sig: int = signal.SIGKILL) -> tuple[int, float]:
  """Runs launch.py (killed with `sig` after `kill_after` s, if given): (exit status, s)."""
  t0 = time.monotonic()
  with open(log, "a") as out:
    proc = subprocess.Popen(command(workdir), cwd=ROOT, env=environment(), stdout=out,
                            stderr=subprocess.STDOUT)
    try:
      proc.wait(timeout=kill_after)
    except subprocess.TimeoutExpired:
      proc.send_signal(sig)
      proc.wait(timeout=600)
  return proc.returncode, time.monotonic() - t0


def train_rows(workdir: str) -> list[dict]:
  from gen_jax.engine.outputs import read_metrics
  return [r for r in read_metrics(workdir) if "train/loss" in r]


def unfinished_saves(workdir: str) -> list[str]:
  """The saves a kill interrupted: orbax's temporary step folders left behind."""
  folder = os.path.join(workdir, "checkpoints")
  if not os.path.isdir(folder):
    return []
  return sorted(n for n in os.listdir(folder) if ".orbax-checkpoint-tmp" in n)


def final_state(workdir: str):
  import ml_collections

  from gen_jax.engine import checkpoint as ckpt_lib
  from gen_jax.engine.experiment import build_experiment
  with open(os.path.join(workdir, "config.json")) as f:
    exp = build_experiment(ml_collections.ConfigDict(json.load(f)))
  ckpt = ckpt_lib.Checkpointer(os.path.join(workdir, "checkpoints"), read_only=True)
  state = ckpt.restore(FLAGS.steps, exp.abstract_state, exp.state_sharding)
  ckpt.close()
  return state


def main(argv):
  del argv
  # launch.py's XLA options, before JAX starts here (the final states are compared in this
  # process); the launch.py runs it starts apply them themselves.
  print(f"XLA_FLAGS={launcher_xla_flags()!r}")
  logging.set_verbosity(logging.WARNING)
  import jax
  import numpy as np

  from gen_jax.engine import checkpoint as ckpt_lib

  reference, soak = os.path.join(FLAGS.root, "reference"), os.path.join(FLAGS.root, "soak")
  for path in (reference, soak):
    shutil.rmtree(path, ignore_errors=True)
  os.makedirs(FLAGS.root, exist_ok=True)
  log = os.path.join(FLAGS.root, "soak.log")
  started = time.time()
  code, seconds = run(reference, log)
  assert code == 0, f"the reference run failed (exit {code}); see {log}"
  print(f"reference: {FLAGS.steps} steps in {seconds:.1f} s (start-up and compile included)",
        flush=True)

  rng = random.Random(FLAGS.seed)
  kills, failures = [], []
  for i in range(FLAGS.kills):
    sig = rng.choice([signal.SIGKILL, signal.SIGTERM])
    delay = rng.uniform(0, FLAGS.max_wait)
    before = max((r["step"] for r in train_rows(soak)), default=0)
    left_before = unfinished_saves(soak)
    code, seconds = run(soak, log, delay, sig)
    rows = train_rows(soak)
    after = max((r["step"] for r in rows), default=0)
    saved = ckpt_lib.latest_step(soak)
    if code == 0 and saved == FLAGS.steps and after == FLAGS.steps:
      print(f"run {i + 1} finished before its kill: no more kills", flush=True)
      break
    mid_save = [n for n in unfinished_saves(soak) if n not in left_before]
    kills.append({"signal": signal.Signals(sig).name, "after_s": round(delay, 1),
                  "exit": code, "steps": [before, after], "checkpoint": saved,
                  "mid_save": mid_save})
    print(f"kill {i + 1}: {signal.Signals(sig).name} after {delay:4.1f} s: exit {code}, "
          f"logged steps {before} -> {after}, newest checkpoint {saved}"
          + (f", killed during the save of {', '.join(mid_save)}" if mid_save else ""),
          flush=True)
    if code == 0 and sig == signal.SIGTERM and after < FLAGS.steps and saved != after:
      failures.append(f"kill {i + 1}: SIGTERM exited 0 at step {after} but the newest "
                      f"checkpoint is {saved}")
    if sig == signal.SIGTERM and code not in (0, -signal.SIGTERM):
      failures.append(f"kill {i + 1}: SIGTERM gave exit status {code}")
  code, seconds = run(soak, log)
  if code != 0:
    failures.append(f"the finishing run exited {code}; see {log}")

  steps = [r["step"] for r in train_rows(soak)]
  if steps != list(range(1, FLAGS.steps + 1)):
    failures.append(f"metrics.jsonl steps are not 1..{FLAGS.steps} once each "
                    f"({len(steps)} rows, {len(set(steps))} distinct)")
  losses = {r["step"]: r["train/loss"] for r in train_rows(reference)}
  differ = [r["step"] for r in train_rows(soak) if r["train/loss"] != losses.get(r["step"])]
  if differ:
    failures.append(f"train/loss differs from the reference at {len(differ)} steps, "
                    f"first {differ[:5]}")
  leaves = 0
  if code == 0:
    a = jax.tree_util.tree_flatten_with_path(final_state(soak))[0]
    b = jax.tree.leaves(final_state(reference))
    for (path, x), y in zip(a, b, strict=False):
      leaves += 1
      if not np.array_equal(np.asarray(x), np.asarray(y)):
        failures.append(f"final state differs at {jax.tree_util.keystr(path)}")
    if len(a) != len(b):
      failures.append(f"final states have {len(a)} and {len(b)} leaves")

  driver_kills = []
  if FLAGS.driver_kills:
    shutil.rmtree(os.path.join(FLAGS.root, "sweep"), ignore_errors=True)
    driver_kills, sweep_failures = sweep_soak(rng, log, losses)
    failures += sweep_failures

  damaged = os.path.join(soak, ckpt_lib.DAMAGED_DIR)
  summary = {
      "config": FLAGS.config, "steps": FLAGS.steps, "kills": len(kills),
      "sigkill": sum(k["signal"] == "SIGKILL" for k in kills),
      "sigterm": sum(k["signal"] == "SIGTERM" for k in kills),
      "sigterm_saved_and_exited_0": sum(k["signal"] == "SIGTERM" and k["exit"] == 0
                                        for k in kills),
      "killed_mid_save": sum(bool(k["mid_save"]) for k in kills),
      "bitwise_equal_final_state": code == 0 and not any("final state" in f for f in failures),
      "leaves_compared": leaves, "each_step_once": steps == list(range(1, FLAGS.steps + 1)),
      "losses_equal": not differ,
      "moved_aside": sorted(os.listdir(damaged)) if os.path.isdir(damaged) else [],
      "driver_kills": len(driver_kills),
      "driver_kills_with_a_running_child": sum(bool(k["children"]) for k in driver_kills),
      "orphaned_runs": sum(len(k["orphans"]) for k in driver_kills),
      "failures": failures, "wall_s": round(time.time() - started),
      "machine": machine(), "date": time.strftime("%Y-%m-%d"),
      "command": " ".join(["python benchmarks/soak.py", *sys.argv[1:]]),
  }
  print("\n".join(["", "PASSED" if not failures else "FAILED", *failures]))
  print(json.dumps(summary))
  sys.exit(1 if failures else 0)


if __name__ == "__main__":
  app.run(main)
