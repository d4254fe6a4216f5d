"""`train_and_evaluate(config, workdir)`: the training loop, read top to bottom.

logging -> mesh, method, shardings -> input -> state (resume / init) -> update step
-> loop (health check, log, eval, sample, checkpoint) -> final save.
"""
from __future__ import annotations

import contextlib
import functools
import json
import math
import signal
import threading
import time
from typing import Any

import jax
import ml_collections
import numpy as np
from absl import logging
from etils import epath

from gen_jax import data
from gen_jax.engine import checkpoint as ckpt_lib
from gen_jax.engine import sample_metrics, sharding
from gen_jax.engine.experiment import Experiment, build_experiment
from gen_jax.engine.logging import MetricWriter, Progress, is_main_process, save_image_grid
from gen_jax.core.state import TrainState, count_params
from gen_jax.methods import build_method


class NonFiniteLossError(FloatingPointError):
  """The loss became NaN/Inf; the message names the step and the last good checkpoint."""


def write_config(config: ml_collections.ConfigDict, workdir: epath.Path) -> None:
  if is_main_process():
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "config.json").write_text(config.to_json_best_effort(indent=2) + "\n")


def restore_or_init(exp: Experiment, ckpt: ckpt_lib.Checkpointer, data_iter: Any) -> TrainState:
  """Resume precedence: workdir checkpoint > resume_from > init_from > scratch.

  (Also in `gen_jax/engine/checkpoint.py` and the README.)
  """
  cfg = exp.config
  if (step := ckpt.latest_step()) is not None:
    logging.info("Resuming from %s step %d", ckpt.directory, step)
    return ckpt.restore(step, exp.abstract_state, exp.state_sharding, data_iter)
  if cfg.resume_from:
    other = ckpt_lib.Checkpointer(ckpt_lib.checkpoint_dir(cfg.resume_from), read_only=True)
    if (step := other.latest_step()) is None:
      raise FileNotFoundError(f"resume_from={cfg.resume_from}: no checkpoint found there.")
    logging.info("Resuming full state from %s step %d", other.directory, step)
    state = other.restore(step, exp.abstract_state, exp.state_sharding, data_iter)
    other.close()
    return state
  state = exp.init_state()
  if cfg.init_from:
    params, step = ckpt_lib.restore_params(
        cfg.init_from, exp.abstract_state.params, exp.state_sharding.params)
    logging.info("Initialized params (and EMA) from %s step %d", cfg.init_from, step)
    state = state.replace(params=params, ema_params=params)
  return state


class _StopRequest:
  """SIGTERM/SIGINT set a flag; the loop saves a checkpoint and exits cleanly."""

  def __init__(self):
    self.requested = False

  @contextlib.contextmanager
  def installed(self):
    if threading.current_thread() is not threading.main_thread():
      yield self
      return
    def handler(signum, frame):
      logging.warning("Received signal %d: saving a checkpoint and stopping.", signum)
      self.requested = True
    previous = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
      yield self
    finally:
      for s, h in previous.items():
        signal.signal(s, h)


def _flops(stage) -> float:
  """XLA's FLOP count of a lowered/compiled computation (NaN if unavailable)."""
  analysis = stage.cost_analysis()
  if isinstance(analysis, (list, tuple)):
    analysis = analysis[0] if analysis else {}
  return float((analysis or {}).get("flops", float("nan")))


def evaluate_state(exp: Experiment, state: TrainState, eval_fn=None) -> dict[str, float]:
  """Mean of `method.eval_step` over `eval.num_batches` batches of the eval split.

  The batches and the eval key are fixed, so numbers are comparable across steps.
  """
  cfg = exp.config
  # Text: `num_batches` windows drawn at random (with a fixed seed, so the same ones every
  # time) represent the whole split; num_batches=0 reads every window of the split once.
  random_windows = exp.spec.kind == data.TEXT and cfg.eval.num_batches > 0
  loader = data.make_loader(cfg.data, split=cfg.data.eval_split,
                            global_batch_size=cfg.eval.batch_size, seed=cfg.seed,
                            shuffle=random_windows, num_epochs=None if random_windows else 1)
  eval_fn = eval_fn or jax.jit(exp.method.eval_step)
  rng = jax.random.fold_in(exp.base_rng, 0xE7A1)
  totals, n = {}, 0
  for i, local in enumerate(loader):
    if cfg.eval.num_batches and i >= cfg.eval.num_batches:
      break
    metrics = jax.device_get(eval_fn(state, sharding.global_batch(local, exp.batch_sharding),
                                     jax.random.fold_in(rng, i)))
    for k, v in metrics.items():
      totals[k] = totals.get(k, 0.0) + float(v)
    n += 1
  if n == 0:
    raise ValueError(f"eval split {cfg.data.eval_split!r} yielded no batch of "
                     f"eval.batch_size={cfg.eval.batch_size}.")
  metrics = {k: v / n for k, v in totals.items()}
  if hasattr(exp.method, "summarize_eval"):   # metrics of the means, e.g. exp(mean loss)
    metrics = exp.method.summarize_eval(metrics)
  return {f"eval/{k}": v for k, v in metrics.items()}


def fixed_sample_batch(exp: Experiment, num: int | None = None) -> dict[str, jax.Array]:
  """The first `num` (default `sample.num`) images of the eval split (unshuffled), as a
  global batch."""
  cfg = exp.config
  num = cfg.sample.num if num is None else num
  sharding.validate_global_batch(num, exp.mesh, "sample.num")
  loader = data.make_loader(cfg.data, split=cfg.data.eval_split,
                            global_batch_size=num, seed=cfg.seed,
                            shuffle=False, num_epochs=1)
  local = next(iter(loader), None)
  if local is None:
    raise ValueError(f"eval split {cfg.data.eval_split!r} has fewer than "
                     f"sample.num={num} images.")
  return sharding.global_batch(local, exp.batch_sharding)


def make_sample_fn(exp: Experiment, num: int | None = None):
  """`method.sample` jitted once: (state, rng) -> images, `num` (default `sample.num`) of them.

  A method with `sample_uses_batch = True` (e.g. the VAE, for reconstructions) also gets
  `batch=` the same `fixed_sample_batch` on every call.
  """
  cfg = exp.config.sample
  num = cfg.num if num is None else num
  if not getattr(exp.method, "sample_uses_batch", False):
    return jax.jit(lambda state, rng: exp.method.sample(state, rng, num, cfg.use_ema),
                   out_shardings=exp.replicated)
  batch = fixed_sample_batch(exp, num)
  sample = jax.jit(lambda state, rng, batch: exp.method.sample(state, rng, num, cfg.use_ema,
                                                               batch=batch),
                   out_shardings=exp.replicated)
  return lambda state, rng: sample(state, rng, batch)


def write_samples(exp: Experiment, state: TrainState, path: epath.Path, sample_fn=None,
                  rng: jax.Array | None = None) -> list[epath.Path]:
  """Samples from `state` (EMA weights unless `sample.use_ema=False`) and writes them.

  Images: a PNG grid at `path`; a method returning a dict of image batches gets one grid
  per entry, `<stem>_<name>.png`. Text: the decoded token sequences in `<stem>.txt`,
  separated by a line of dashes. The default key is fixed, so outputs across training
  start from the same noise/latents/random draws.
  """
  sample_fn = sample_fn or make_sample_fn(exp)
  rng = jax.random.fold_in(exp.base_rng, 0x5A3) if rng is None else rng
  samples = jax.device_get(sample_fn(state, rng))
  if exp.spec.kind == data.TEXT:
    out = path.with_suffix(".txt")
    if is_main_process():
      out.parent.mkdir(parents=True, exist_ok=True)
      out.write_text(format_text_samples(exp.spec.tokenizer, samples))
    return [out]
  if not isinstance(samples, dict):
    samples = {"": samples}
  samples = dict(sorted(samples.items(), key=lambda kv: kv[0] != "samples"))   # samples first
  paths = [path.with_name(f"{path.stem}_{name}{path.suffix}") if name else path
           for name in samples]
  if is_main_process():
    for out, batch in zip(paths, samples.values()):
      save_image_grid(np.asarray(batch), out)
  return paths


def format_text_samples(tokenizer, tokens_NxT: np.ndarray) -> str:
  """Decoded samples, one after another, each followed by a separator line."""
  return "".join(f"{tokenizer.decode(row)}\n{'-' * 40}\n" for row in np.asarray(tokens_NxT))


def compile_train_step(exp: Experiment, state, batches):
  """The jitted, compiled update: (state, batches [K, B, ...], base_rng) -> (state, metrics [K]).

  `train.steps_per_call` (K) updates run inside one compiled lax.scan over K stacked
  batches (tiny models are dominated by per-call dispatch, not by FLOPs). The state is
  donated; state and batches may be arrays or ShapeDtypeStructs (`--mode=compile`).

  Returns:
    (compiled step, XLA's FLOPs per update). XLA counts a loop body once, so they are
    counted on one un-fused update, and with `train.grad_accum_steps` > 1 on the
    equivalent whole-batch update (the same arithmetic without the micro-batch loop).
  """
  K = exp.config.train.get("steps_per_call", 1)
  gather_params = exp.mesh.shape["fsdp"] > 1

  def step_fn(state, batch, base_rng, method=exp.method):
    if gather_params:
      # FSDP: the stored params, EMA and optimizer state stay sharded; the step starts by
      # all-gathering the weights (weights only), computes on the batch shards, and the
      # sharded optimizer update reduce-scatters the gradients. Left to itself, XLA's
      # sharding propagation moved activations between devices instead (measured on the
      # baby GPT, 2x4 mesh: 96 all-gathers incl. activations and 56 all-to-alls -> 18
      # weight all-gathers, 17.9 -> 12.3 MB scratch, 190 -> 136 ms/step).
      state = state.replace(params=jax.lax.with_sharding_constraint(
          state.params, jax.tree.map(lambda _: exp.replicated, state.params)))
    # RNG is derived, not carried: resuming at step s replays exactly the keys of s.
    return method.train_step(state, batch, jax.random.fold_in(base_rng, state.step))

  def multi_step_fn(state, batches, base_rng):
    if K == 1:   # no loop: XLA:CPU runs convolutions inside a while loop ~40x slower
      state, metrics = step_fn(state, jax.tree.map(lambda x: x[0], batches), base_rng)
      return state, jax.tree.map(lambda m: m[None], metrics)
    return jax.lax.scan(lambda s, b: step_fn(s, b, base_rng), state, batches)

  stacked_sharding = sharding.stacked_batch_sharding(exp.mesh)
  compiled = jax.jit(multi_step_fn,
                     in_shardings=(exp.state_sharding, stacked_sharding, exp.replicated),
                     out_shardings=(exp.state_sharding, exp.replicated),
                     donate_argnums=0).lower(state, batches, exp.base_rng).compile()
  one_batch = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape[1:], x.dtype), batches)
  method = exp.method
  if exp.config.train.get("grad_accum_steps", 1) > 1:
    whole_batch = exp.config.copy_and_resolve_references()
    with whole_batch.unlocked():
      whole_batch.train.grad_accum_steps = 1
    method = build_method(whole_batch, exp.spec)
  flops = _flops(jax.jit(functools.partial(step_fn, method=method)).lower(
      state, one_batch, exp.base_rng))
  return compiled, flops


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
  """Trains (resuming if `workdir` has a checkpoint), evaluating and sampling periodically.

  Returns:
    The last logged training metrics.
  """
  # --------------------------------------------------------------------- logging
  workdir = epath.Path(workdir)
  write_config(config, workdir)
  tcfg = config.train

  # ------------------------------------------------- mesh, method, shapes, shardings
  exp = build_experiment(config)
  logging.info("Workdir %s; mesh %s; params: %d; train state per device: %.2f MiB of %.2f MiB",
               workdir, dict(exp.mesh.shape), count_params(exp.abstract_state.params),
               sharding.per_device_bytes(exp.abstract_state, exp.state_sharding) / 2**20,
               sharding.per_device_bytes(exp.abstract_state) / 2**20)
  # Periodic sample-quality metrics load their classifier now: a missing one fails here.
  sample_quality_every = config.eval.get("sample_metrics_every", 0)
  sample_quality = (sample_metrics.SampleQualityEvaluator(exp) if sample_quality_every
                    else None)

  # ----------------------------------------------------------------------- input
  train_iter = iter(data.make_loader(config.data, split=config.data.train_split,
                                     global_batch_size=tcfg.batch_size, seed=config.seed))

  # ------------------------------------------------------ state: resume or init
  ckpt = ckpt_lib.Checkpointer(workdir / "checkpoints", max_to_keep=tcfg.max_checkpoints,
                               async_save=tcfg.async_checkpointing)
  state = restore_or_init(exp, ckpt, train_iter)
  start_step = int(jax.device_get(state.step))
  last_saved = start_step if ckpt.latest_step() is not None else None
  K = tcfg.get("steps_per_call", 1)   # updates per compiled call, see "update step"
  if start_step % K:
    raise ValueError(f"Restored step {start_step} is not a multiple of train.steps_per_call="
                     f"{K}; resume with a steps_per_call that divides it.")
  if start_step >= tcfg.num_steps:
    logging.info("Step %d >= train.num_steps=%d: nothing to train.", start_step, tcfg.num_steps)
    ckpt.close()
    return {}

  # ----------------------------------------------------------------- update step
  stacked_sharding = sharding.stacked_batch_sharding(exp.mesh)

  def next_batches():
    local = [next(train_iter) for _ in range(K)]
    return sharding.global_batch(jax.tree.map(lambda *xs: np.stack(xs), *local), stacked_sharding)

  batches = next_batches()
  t0 = time.perf_counter()
  train_step, flops_per_step = compile_train_step(exp, state, batches)
  logging.info("Compiled train step (%d update(s) per call) in %.1fs (%.3g FLOPs/update)", K,
               time.perf_counter() - t0, flops_per_step)
  eval_fn = jax.jit(exp.method.eval_step)
  sample_fn = make_sample_fn(exp)

  # ------------------------------------------------------------------------ loop
  writer = MetricWriter(workdir, resume_step=start_step)
  progress = Progress(start_step, tcfg.num_steps, tcfg.log_every)
  window: list[dict[str, float]] = []
  pending = None   # (last step, device metrics [K]) of the previous call, fetched one call late
  logged: dict[str, float] = {}

  def check_finite(step: int, metrics: dict[str, float]) -> None:
    bad = {k: v for k, v in metrics.items() if not math.isfinite(v)}
    if bad:
      where = (f"step {last_saved} in {ckpt.directory}" if last_saved is not None
               else "none (no checkpoint was saved yet)")
      raise NonFiniteLossError(
          f"Non-finite {bad} at step {step}: training stopped. The last good checkpoint is "
          f"{where}. Lower train.lr or raise train.warmup_steps, then rerun to resume.")

  def consume(last_step: int, device_metrics) -> None:
    nonlocal logged
    stacked = jax.device_get(device_metrics)
    for k in range(K):
      step = last_step - K + 1 + k
      metrics = {name: float(values[k]) for name, values in stacked.items()}
      check_finite(step, metrics)
      window.append(metrics)
      progress.update(step, metrics)
      if step % tcfg.log_every == 0 or step == tcfg.num_steps:
        logged = {f"train/{n}": float(np.mean([m[n] for m in window])) for n in window[0]}
        if math.isfinite(progress.steps_per_sec):
          logged["train/steps_per_sec"] = progress.steps_per_sec
          logged["train/flops_per_sec"] = progress.steps_per_sec * flops_per_step
          if exp.spec.kind == data.TEXT:
            logged["train/tokens_per_sec"] = (progress.steps_per_sec * tcfg.batch_size
                                              * exp.spec.seq_len)
        writer.write(step, logged)
        window.clear()

  stop = _StopRequest()
  try:
    with stop.installed():
      for step in range(start_step + K, tcfg.num_steps + 1, K):
        if step > start_step + K:
          batches = next_batches()
        state, metrics = train_step(state, batches, exp.base_rng)
        if pending is not None:   # fetch the previous call while this one runs
          consume(*pending)
        pending = (step, metrics)

        # On a stop request (preemption) only the checkpoint is written: grace periods are short.
        is_last = step == tcfg.num_steps
        if config.eval.every and (step % config.eval.every == 0 or is_last):
          consume(*pending)
          pending = None
          eval_metrics = evaluate_state(exp, state, eval_fn)
          writer.write(step, eval_metrics)
          progress.report(step, eval_metrics)
        if sample_quality and (step % sample_quality_every == 0 or is_last):
          if pending is not None:
            consume(*pending)
            pending = None
          writer.write(step, sample_quality(state))
        if tcfg.sample_every and (step % tcfg.sample_every == 0 or is_last):
          paths = write_samples(exp, state, workdir / "samples" / f"step_{step}.png", sample_fn)
          if exp.spec.kind == data.TEXT and is_main_process():   # show the first sample
            progress.show_text(step, paths[0].read_text().split("\n" + "-" * 40 + "\n")[0])
        if step % tcfg.checkpoint_every == 0 or is_last or stop.requested:
          if pending is not None:   # never checkpoint a state whose loss we have not checked
            consume(*pending)
            pending = None
          ckpt.save(step, state, train_iter)
          last_saved = step
        if stop.requested:
          logging.warning("Stopped at step %d on request; rerun the same command to resume.", step)
          break
      if pending is not None:
        consume(*pending)

  finally:   # also on a NaN error or a crash: finish the in-flight save, close files
    ckpt.wait()
    ckpt.close()
    writer.close()
  logging.info("Done at step %d: checkpoints in %s, samples in %s, metrics in %s", last_saved,
               ckpt.directory, workdir / "samples", workdir / "metrics.jsonl")
  return logged


def save_json(path: epath.Path, payload: dict) -> None:
  if is_main_process():
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")
