"""Does the input pipeline keep up? Loader, compiled step and training loop per family.

  python benchmarks/input_pipeline.py --text_manual_dir=../shared/data/tiny_shakespeare

For each family's default config (configs/<family>.py with no variant), in one process:
  1. loader: batches/s of `data.make_loader` on the train split at the config's batch
     size and seed, after --warmup_batches (the first batch, which decodes the split or
     loads its saved arrays, is timed on its own);
  2. step: updates/s of the compiled train step alone (`train.compile_train_step`, the
     config's steps_per_call K, one fixed stacked batch, calls dispatched back to back),
     measured right before and right after the loop and averaged;
  3. loop: updates/s of `train_and_evaluate` over about --loop_seconds of training with
     evaluation, samples, sample metrics and periodic checkpoints off (the config's
     logging cadence), timed from the dispatch of its first compiled call to the write
     of the last step's metrics (compile and the final checkpoint outside the clock);
and the ratios loader / step (goal: >= 5) and loop / step (goal: >= 0.9, within 10%),
the latter also in process CPU time per update (step CPU / loop CPU), which a busy shared
host disturbs less than wall time. With --rounds=R the loop runs R times, each run between
two timings of the step alone, and the table gives the median over the R rounds of each
rate and of each round's loop / step (its range in brackets): one pair drifts by 10-30%
on a shared host, the median of alternating rounds much less.
The launcher's XLA:CPU options (gen_jax/engine/cpu_flags.py) are set first, as launch.py
sets them. The machine (benchmarks/machine.py) and its load average are printed: on a shared host
the absolute rates drift, the ratios of one run less so.
"""
from __future__ import annotations

import itertools
import math
import os
import sys
import tempfile
import time
from statistics import median

from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from machine import cpu_description, launcher_xla_flags  # noqa: E402  (benchmarks/machine.py)

FAMILIES = ("ddpm", "dcgan", "vae", "classifier", "gpt", "lstm")
flags.DEFINE_list("families", list(FAMILIES), "configs/<family>.py to measure.")
flags.DEFINE_string("text_manual_dir", "../shared/data/tiny_shakespeare",
                    "Folder holding Tiny Shakespeare's input.txt (gpt, lstm).")
flags.DEFINE_string("data_dir", os.path.join(tempfile.gettempdir(), "gen_jax_benchmark_tfds"),
                    "TFDS data dir the datasets are prepared in (once).")
flags.DEFINE_integer("warmup_batches", 20, "Loader batches read before timing.")
flags.DEFINE_float("loader_seconds", 3.0, "Least time the loader is timed for.")
flags.DEFINE_float("step_seconds", 5.0, "Least time the compiled step is timed for.")
flags.DEFINE_float("loop_seconds", 15.0, "About how long the timed training loop runs.")
flags.DEFINE_integer("rounds", 1, "Loop runs per family, alternating with timings of the "
                     "step alone (R loops between R + 1 step timings).")
flags.DEFINE_bool("only_loader", False, "Measure the loaders only (e.g. to compare with an "
                  "older checkout: copy this file into it and run it there).")
FLAGS = flags.FLAGS


def machine() -> str:
  import jax
  return (f"{cpu_description()}; {jax.devices()[0].platform} x {jax.device_count()}; "
          f"jax {jax.__version__}")


def load_family(family: str, **overrides):
  from tests.smoke import load_config  # configs/ import each other as a package
  config = load_config(family, "", **{
      "data.data_dir": FLAGS.data_dir, "train.sample_every": 0, "eval.every": 0,
      "train.checkpoint_every": 10**9, **overrides})
  if "sample_metrics_every" in config.eval:
    config.eval.sample_metrics_every = 0
  if config.data.dataset == "tiny_shakespeare":
    config.data.manual_dir = os.path.abspath(FLAGS.text_manual_dir)
  return config


def loader_rate(config) -> dict:
  """Batches/s of the train loader after warm-up; the first batch's seconds apart."""
  from gen_jax import data
  t0 = time.perf_counter()
  iterator = iter(data.make_loader(config.data, split=config.data.train_split,
                                   global_batch_size=config.train.batch_size, seed=config.seed))
  next(iterator)
  first_s = time.perf_counter() - t0
  for _ in range(FLAGS.warmup_batches):
    next(iterator)
  n, t0 = 0, time.perf_counter()
  while (elapsed := time.perf_counter() - t0) < FLAGS.loader_seconds or n < 20:
    next(iterator)
    n += 1
  return {"batches_per_s": n / elapsed, "first_batch_s": first_s}


class CompiledStep:
  """The compiled K-update train step of a config on one fixed stacked batch, timed alone."""

  def __init__(self, config):
    import jax
    import numpy as np

    from gen_jax import data
    from gen_jax.engine import sharding
    from gen_jax.engine.experiment import build_experiment
    from gen_jax.engine.train import compile_train_step
    self.exp = exp = build_experiment(config)
    self.K = K = config.train.get("steps_per_call", 1)
    iterator = iter(data.make_loader(config.data, split=config.data.train_split,
                                     global_batch_size=config.train.batch_size,
                                     seed=config.seed))
    local = [next(iterator) for _ in range(K)]
    self.batches = sharding.global_batch(jax.tree.map(lambda *xs: np.stack(xs), *local),
                                         sharding.stacked_batch_sharding(exp.mesh))
    self.state = exp.init_state()
    self.step, _ = compile_train_step(exp, self.state, self.batches)
    self.state, metrics = self.step(self.state, self.batches, exp.base_rng)   # warm-up
    jax.block_until_ready(metrics)

  def rate(self, seconds: float) -> tuple[float, float]:
    """(updates/s, process CPU seconds per update) over at least `seconds` and 3 calls,
    dispatched back to back."""
    import jax
    calls, t0, cpu0 = 0, time.perf_counter(), time.process_time()
    while True:
      self.state, metrics = self.step(self.state, self.batches, self.exp.base_rng)
      calls += 1
      if calls >= 3 and calls % max(1, math.ceil(20 / self.K)) == 0:  # wait now and then
        jax.block_until_ready(metrics)
        if (elapsed := time.perf_counter() - t0) >= seconds:
          return calls * self.K / elapsed, (time.process_time() - cpu0) / (calls * self.K)


def loop_rate(config, steps_per_s: float) -> dict:
  """Updates/s of train_and_evaluate from its first compiled call's dispatch to the write
  of the last step's metrics (the config's own logging cadence)."""
  from gen_jax.engine import train
  K = config.train.get("steps_per_call", 1)
  calls = max(4, math.ceil(FLAGS.loop_seconds * steps_per_s / K))
  config = config.copy_and_resolve_references()
  config.train.num_steps = calls * K
  dispatched, finished = [], []
  compile_step, write = train.compile_train_step, train.MetricWriter.write

  def timed_compile(*args, **kwargs):   # the benchmark's hooks into the loop
    step, flops = compile_step(*args, **kwargs)

    def timed_step(*step_args):
      dispatched.append((time.perf_counter(), time.process_time()))
      return step(*step_args)
    return timed_step, flops

  def timed_write(self, step, metrics):
    if step == config.train.num_steps and "train/loss" in metrics:
      finished.append((time.perf_counter(), time.process_time()))
    return write(self, step, metrics)

  train.compile_train_step, train.MetricWriter.write = timed_compile, timed_write
  try:
    with tempfile.TemporaryDirectory() as workdir:
      train.train_and_evaluate(config, workdir)
  finally:
    train.compile_train_step, train.MetricWriter.write = compile_step, write
  (t0, cpu0), (t1, cpu1) = dispatched[0], finished[0]
  return {"steps_per_s": config.train.num_steps / (t1 - t0),
          "cpu_per_step": (cpu1 - cpu0) / config.train.num_steps,
          "steps": config.train.num_steps}


def main(argv):
  del argv
  xla_flags = launcher_xla_flags()   # launch.py's, before JAX starts: steps run as launched
  from absl import logging

  from gen_jax.engine.outputs import quiet_library_logs
  quiet_library_logs()
  logging.set_verbosity(logging.WARNING)
  if FLAGS.rounds < 1:
    raise app.UsageError(f"--rounds={FLAGS.rounds}: give at least 1.")
  print(f"machine: {machine()}; XLA_FLAGS={xla_flags!r}; load average "
        f"{os.getloadavg()[0]:.2f} at start")
  rows = []
  for family in FLAGS.families:
    config = load_family(family)
    loader = loader_rate(config)
    if FLAGS.only_loader:
      print(f"  {family}: loader {loader['batches_per_s']:.0f} batches/s, first batch "
            f"{loader['first_batch_s']:.2f} s (load {os.getloadavg()[0]:.1f})", flush=True)
      continue
    compiled = CompiledStep(config)
    steps = [compiled.rate(FLAGS.step_seconds)]   # (updates/s, CPU s/update)
    loops = []
    for _ in range(FLAGS.rounds):   # loop, then the step again: the host's speed drifts
      loops.append(loop_rate(config, steps[-1][0]))
      steps.append(compiled.rate(FLAGS.step_seconds))
    del compiled
    # Round i's step rate: the mean of the timings just before and just after its loop.
    step_rates = [(a[0] + b[0]) / 2 for a, b in itertools.pairwise(steps)]
    step_cpus = [(a[1] + b[1]) / 2 for a, b in itertools.pairwise(steps)]
    ratios = [loop["steps_per_s"] / r for loop, r in zip(loops, step_rates, strict=True)]
    cpu_ratios = [c / loop["cpu_per_step"] for loop, c in zip(loops, step_cpus, strict=True)]
    row = {"K": config.train.get("steps_per_call", 1), "step": median(step_rates),
           "loop": median([loop["steps_per_s"] for loop in loops]), "ratio": median(ratios),
           "ratio_range": (min(ratios), max(ratios)), "cpu_ratio": median(cpu_ratios)}
    rows.append((family, config, loader, row))
    listed = lambda values, digits: ", ".join(f"{v:.{digits}f}" for v in values)
    loop_cpu = median([loop["cpu_per_step"] for loop in loops])
    print(f"  {family}: loader {loader['batches_per_s']:.0f} batches/s; step/s "
          f"{listed([r for r, _ in steps], 1)} and loop/s "
          f"{listed([loop['steps_per_s'] for loop in loops], 1)}, alternating "
          f"({loops[0]['steps']} updates a loop); loop / step per round "
          f"{listed(ratios, 2)}; CPU ms/update: step {1e3 * median(step_cpus):.1f}, loop "
          f"{1e3 * loop_cpu:.1f} (load {os.getloadavg()[0]:.1f})", flush=True)
  if FLAGS.only_loader:
    return
  print()
  print("| family | dataset, batch, K | first batch s | loader batches/s | step updates/s "
        "| loop updates/s | loader / step | loop / step | loop / step in CPU time |")
  print("|---|---|---|---|---|---|---|---|---|")
  for family, config, loader, row in rows:
    lo, hi = row["ratio_range"]
    spread = f" [{lo:.2f}-{hi:.2f}]" if FLAGS.rounds > 1 else ""
    print(f"| {family} | {config.data.dataset}, {config.train.batch_size}, {row['K']} | "
          f"{loader['first_batch_s']:.2f} | {loader['batches_per_s']:.0f} | "
          f"{row['step']:.1f} | {row['loop']:.1f} | "
          f"{loader['batches_per_s'] / row['step']:.1f} | {row['ratio']:.2f}{spread} | "
          f"{row['cpu_ratio']:.2f} |")
  print(f"load average at end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
  app.run(main)
