"""Language-model speed on this machine: matmul peak, train tokens/s and MFU, and the wall
time for `configs/gpt.py:baby` to reach validation loss <= 1.88 on Tiny Shakespeare.

  python benchmarks/lm.py --data_dir=../shared/data/tiny_shakespeare

Prints, with the machine it ran on:
  1. peak: GFLOP/s of a jitted float32 (n x n) @ (n x n) matmul (the MFU denominator),
     measured (best of 3 calls) right before each timed train call, since this VM's speed
     drifts.
  2. throughput: train steps/s and tokens/s of the compiled train step (`train.steps_per_call`
     updates per call, as the launcher runs them), model FLOPs per token by nanoGPT's
     formula 6N + 12 L H Q T (PaLM, Appendix B; N = parameters without position embeddings),
     and MFU = the median over calls of model FLOP/s / the adjacent peak. XLA's own count
     of the step's FLOPs is shown beside it.
  3. time to loss: `train_and_evaluate` on the real data (evaluation every 250 steps on the
     WHOLE validation split, more exact than nanoGPT's 20 random batches; no periodic
     samples), timed from the call (config, mesh, compile included; the one-time dataset
     preparation excluded) to the first evaluation with loss <= --target_loss, where the
     run stops. The config's schedule is kept (cosine to 1e-4 at its 2000 steps); if the
     target is not reached by then, training continues at the final learning rate, up to
     --max_steps.
The launcher's XLA options (gen_jax/engine/cpu_flags.py) are applied first and printed.
Reference (nanoGPT's README): its baby CPU config reaches a validation loss of about 1.88;
benchmarks/torch_reference.py runs the same model and recipe in PyTorch on this machine.
"""
from __future__ import annotations

import os
import sys
import tempfile
import time

from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from machine import cpu_description, launcher_xla_flags, waited  # noqa: E402

flags.DEFINE_string("data_dir", None, "Folder holding Tiny Shakespeare's input.txt.", required=True)
flags.DEFINE_string("config", "baby", "Variant of configs/gpt.py to run.")
flags.DEFINE_float("target_loss", 1.88, "Validation loss that stops the clock.")
flags.DEFINE_integer("peak_size", 2048, "n of the n x n matmul that measures the peak.")
flags.DEFINE_integer("throughput_calls", 30, "Timed calls of the train step (each "
                     "after a peak measurement).")
flags.DEFINE_bool("time_to_loss", True, "Also run the full training for the time to loss.")
flags.DEFINE_integer("seed", 0,
                     "config.seed: initialization and the order of the training windows.")
flags.DEFINE_integer("steps_per_call", 0, "Override train.steps_per_call (0 = the config's).")
flags.DEFINE_integer("max_steps", 5000, "Longest run for the time to loss (the config's "
                     "schedule, then its final learning rate).")
FLAGS = flags.FLAGS


def machine() -> str:
  import jax
  return (f"{cpu_description()}; {jax.devices()[0].platform} x "
          f"{jax.device_count()}; jax {jax.__version__}; load average "
          f"{os.getloadavg()[0]:.2f} at start")



def make_matmul(n: int):
  """A jitted float32 (n x n) @ (n x n) matmul and its FLOPs (the MFU denominator's op)."""
  import jax
  import jax.numpy as jnp
  a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
  b = jax.random.normal(jax.random.key(1), (n, n), jnp.float32)
  matmul = jax.jit(jnp.matmul)
  jax.block_until_ready(matmul(a, b))
  return (lambda: matmul(a, b)), 2 * n ** 3


def model_flops_per_token(config, non_embedding_params: int) -> float:
  """nanoGPT's estimate_mfu: 6N + 12 L H Q T (PaLM, Appendix B), T = the window length."""
  m = config.model
  return 6 * non_embedding_params + 12 * m.n_layer * m.n_head * (m.n_embd // m.n_head) * (
      config.data.seq_len)


def throughput(config, calls: int, peak_size: int) -> dict:
  """Steps/s of the compiled K-update train step on batches of real windows, and MFU.

  This VM's speed drifts (the same matmul measured 93-213 GFLOP/s within an hour), so
  each of the `calls` rounds times one train call right after the matmul peak (best of 3
  calls): MFU is the median over rounds of (model FLOP/s / that round's peak).
  """
  import jax
  import numpy as np

  from gen_jax import data
  from gen_jax.core.state import count_params
  from gen_jax.engine import sharding
  from gen_jax.engine.experiment import build_experiment
  from gen_jax.engine.train import xla_flops as count_xla_flops

  exp = build_experiment(config)
  K = config.train.steps_per_call
  state = exp.init_state()
  loader = iter(data.make_loader(config.data, split="train",
                                 global_batch_size=config.train.batch_size, seed=0))
  stacked = sharding.stacked_batch_sharding(exp.mesh)
  batches = sharding.global_batch(
      {"tokens": np.stack([next(loader)["tokens"] for _ in range(K)])}, stacked)

  def k_steps(state, batches):
    step = lambda s, b: exp.method.train_step(s, b, jax.random.fold_in(exp.base_rng, s.step))
    return jax.lax.scan(step, state, batches)

  t0 = time.perf_counter()
  compiled = jax.jit(k_steps, donate_argnums=0).lower(state, batches).compile()
  compile_s = time.perf_counter() - t0
  xla_flops = count_xla_flops(jax.jit(exp.method.train_step).lower(
      state, jax.tree.map(lambda x: x[0], batches), exp.base_rng))
  params = exp.abstract_state.params
  non_embedding = count_params(params) - params["wpe"]["embedding"].size
  tokens_per_step = config.train.batch_size * config.data.seq_len
  model_flops = model_flops_per_token(config, non_embedding) * tokens_per_step
  matmul, matmul_flops = make_matmul(peak_size)
  state, _ = compiled(state, batches)          # warm-up
  jax.block_until_ready(state)
  steps_per_s, peaks = [], []
  for _ in range(calls):
    peaks.append(matmul_flops / min(waited(matmul) for _ in range(3)) / 1e9)
    t = time.perf_counter()
    state, metrics = compiled(state, batches)
    jax.block_until_ready(metrics)
    steps_per_s.append(K / (time.perf_counter() - t))
  steps_per_s, peaks = np.array(steps_per_s), np.array(peaks)
  median = lambda x: float(np.median(x))
  return {"K": K, "compile_s": compile_s, "steps_per_s": median(steps_per_s),
          "peak_gflops": median(peaks), "peak_range": (float(peaks.min()), float(peaks.max())),
          "mfu": median(model_flops * steps_per_s / 1e9 / peaks),
          "xla_mfu": median(xla_flops * steps_per_s / 1e9 / peaks),
          "tokens_per_step": tokens_per_step, "params": count_params(params),
          "non_embedding_params": non_embedding, "xla_flops_per_step": xla_flops,
          "model_flops_per_step": model_flops}


class _TargetReached(Exception):
  pass


def time_to_loss(config, target: float, max_steps: int) -> dict:
  """Runs `train_and_evaluate`, recording the wall time at which each eval row is written,
  and stops it at the first evaluation with loss <= target."""
  from gen_jax.engine import train

  config = config.copy_and_resolve_references()
  config.train.decay_steps = config.train.num_steps   # the config's schedule ...
  config.train.num_steps = max_steps                  # ... then its final learning rate
  config.eval.num_batches = 0                         # the whole validation split
  evals = []
  start = time.perf_counter()
  write = train.MetricWriter.write

  def timed_write(self, step, metrics):   # the benchmark's only hook into the loop
    result = write(self, step, metrics)
    if "eval/raw/loss" in metrics:
      evals.append((time.perf_counter() - start, step, metrics["eval/raw/loss"]))
      if metrics["eval/raw/loss"] <= target:
        raise _TargetReached
    return result

  train.MetricWriter.write = timed_write
  try:
    with tempfile.TemporaryDirectory() as workdir:
      start = time.perf_counter()
      try:
        train.train_and_evaluate(config, workdir)
      except _TargetReached:
        pass
      total = time.perf_counter() - start
  finally:
    train.MetricWriter.write = write
  reached = next(((t, s, loss) for t, s, loss in evals if loss <= target), None)
  return {"evals": evals, "total_s": total, "reached": reached}


def main(argv):
  del argv
  xla_flags = launcher_xla_flags()   # before JAX starts a backend, as launch.py does
  from absl import logging

  from gen_jax import data
  from gen_jax.engine.outputs import quiet_library_logs
  from tests.smoke import load_config  # configs/ import each other as a package

  quiet_library_logs()
  logging.set_verbosity(logging.WARNING)
  print(f"machine: {machine()}; XLA_FLAGS={xla_flags!r}")

  overrides = {"data.manual_dir": os.path.abspath(FLAGS.data_dir),
               "data.data_dir": os.path.join(tempfile.gettempdir(), "gen_jax_benchmark_tfds"),
               "train.sample_every": 0, "train.checkpoint_every": 1_000_000, "seed": FLAGS.seed}
  if FLAGS.steps_per_call:
    overrides["train.steps_per_call"] = FLAGS.steps_per_call
  config = load_config("gpt", FLAGS.config, **overrides)
  data.prepare_builder(config.data.dataset, data_dir=config.data.data_dir,
                       manual_dir=config.data.manual_dir)

  r = throughput(config, FLAGS.throughput_calls, FLAGS.peak_size)
  lo, hi = r["peak_range"]
  print(f"peak: {r['peak_gflops']:.1f} GFLOP/s median ({lo:.0f}-{hi:.0f}) of a jitted float32 "
        f"{FLAGS.peak_size}x{FLAGS.peak_size} matmul, timed next to each train call")
  print(f"model: configs/gpt.py:{FLAGS.config}, {r['params']:,} params "
        f"({r['non_embedding_params']:,} without position embeddings), "
        f"{r['tokens_per_step']} tokens/step, {r['K']} steps per call")
  print(f"throughput: {r['steps_per_s']:.1f} steps/s, "
        f"{r['steps_per_s'] * r['tokens_per_step']:,.0f} tokens/s (compile {r['compile_s']:.1f} s)")
  print(f"MFU: {100 * r['mfu']:.1f}% (6N + 12LHQT = {r['model_flops_per_step'] / 1e9:.2f} "
        f"GFLOP/step; median over calls of model GFLOP/s / the adjacent peak)  [XLA counts "
        f"{r['xla_flops_per_step'] / 1e9:.2f} GFLOP/step: {100 * r['xla_mfu']:.1f}%]")

  if FLAGS.time_to_loss:
    t = time_to_loss(config, FLAGS.target_loss, FLAGS.max_steps)
    for seconds, step, loss in t["evals"]:
      print(f"  eval at step {step:5d}: val loss {loss:.4f} at {seconds:6.1f} s")
    if t["reached"]:
      seconds, step, loss = t["reached"]
      print(f"time to val loss <= {FLAGS.target_loss} (whole validation split): "
            f"{seconds:.1f} s at step {step} (loss {loss:.4f})")
    else:
      print(f"val loss never reached {FLAGS.target_loss} in {FLAGS.max_steps} steps (best "
            f"{min(loss for _, _, loss in t['evals']):.4f}); whole run {t['total_s']:.1f} s")
  print(f"load average at end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
  app.run(main)
