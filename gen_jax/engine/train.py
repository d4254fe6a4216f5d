"""`train_and_evaluate(config, workdir)`: the training loop, read top to bottom, and the
compiled update it runs.

logging -> mesh, method, shardings -> input -> state (resume / init) -> update step
-> loop (health check, log, eval, sample, checkpoint) -> final save.
"""
from __future__ import annotations

import math
import time

import jax
import ml_collections
import numpy as np
from absl import logging
from etils import epath

from gen_jax import data
from gen_jax.core.errors import UserError
from gen_jax.core.state import count_params
from gen_jax.engine import checkpoint as ckpt_lib
from gen_jax.engine import disk_errors, sample_metrics, sharding
from gen_jax.engine import lease as lease_lib
from gen_jax.engine import workdir as workdir_lib
from gen_jax.engine.checkpoint_checks import unwritable_workdir_error
from gen_jax.engine.evaluation import evaluate_state
from gen_jax.engine.experiment import Experiment, build_experiment
from gen_jax.engine.outputs import MetricWriter, Progress
from gen_jax.engine.preemption import StopRequest
from gen_jax.engine.samples import format_text_samples, make_sample_fn, write_samples


class NonFiniteLossError(UserError, FloatingPointError):
  """The loss became NaN/Inf; the message names the step and the last good checkpoint."""


def xla_flops(stage) -> float:
  """XLA's FLOP count of a lowered/compiled computation (NaN if unavailable)."""
  analysis = stage.cost_analysis()
  if isinstance(analysis, (list, tuple)):
    analysis = analysis[0] if analysis else {}
  return float((analysis or {}).get("flops", float("nan")))


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
  K = exp.config.train.steps_per_call
  gather_params = exp.mesh.shape["fsdp"] > 1

  def step_fn(state, batch, base_rng, method=exp.method):
    if gather_params:
      # FSDP: the stored params, EMA and optimizer state stay sharded; the step starts by
      # all-gathering the weights (weights only), computes on the batch shards, and the
      # sharded optimizer update reduce-scatters the gradients. Left to itself, XLA's
      # sharding propagation moved activations between devices instead (measured on the
      # baby GPT, 2x4 mesh: 96 all-gathers incl. activations and 56 all-to-alls -> 18
      # weight all-gathers, 17.9 -> 12.3 MB scratch, 190 -> 136 ms/step).
      # With tensor parallelism the weights stay split over `model` (Megatron's layout).
      state = state.replace(params=jax.lax.with_sharding_constraint(
          state.params, exp.compute_param_sharding))
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
  whole_batch_method = exp.method.without_grad_accumulation()
  flops = xla_flops(jax.jit(lambda s, b, r: step_fn(s, b, r, whole_batch_method)).lower(
      state, one_batch, exp.base_rng))
  return compiled, flops


def _record_failure(error: BaseException, status: workdir_lib.RunStatus,
                    workdir: str | epath.Path,
                    start_step: int) -> BaseException:
  """Writes the 'failed' status (at the newest finished checkpoint) and returns the error
  to raise: `error`, or the `OutputWriteError` of a full disk while writing the metrics or
  samples (one line naming the path)."""
  error = disk_errors.output_write_error(error, "the run's metrics or samples") or error
  saved = ckpt_lib.latest_step(workdir)
  status.write("failed", start_step if saved is None else saved,
               error=f"{type(error).__name__}: {error}")
  return error


@lease_lib.leased("training", unwritable_workdir_error)   # one writer per workdir
def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str | epath.Path, *,
                       accept_config_changes: bool = False) -> dict[str, float]:
  """Trains (resuming if `workdir` has a checkpoint), evaluating and sampling periodically.

  A workdir is one run: resuming with a config that differs in more than the resumable
  fields raises `gen_jax.engine.workdir.ConfigMismatchError` before anything is compiled,
  unless `accept_config_changes` (see gen_jax/engine/workdir.py).

  Returns:
    The last logged training metrics.
  """
  # ------------------------------------------------------- run identity, logging
  workdir = epath.Path(workdir)
  try:
    workdir_lib.claim(config, workdir, ckpt_lib.latest_step(workdir),
                      accept_changes=accept_config_changes)
  except OSError as e:   # an unwritable or full disk: one clear line
    if ckpt_lib.write_errno(e) is None:
      raise
    raise unwritable_workdir_error(e, workdir) from None
  tcfg = config.train

  # ------------------------------------------------- mesh, method, shapes, shardings
  exp = build_experiment(config)
  logging.info("Workdir %s; mesh %s; params: %d; train state per device: %.2f MiB of %.2f MiB",
               workdir, dict(exp.mesh.shape), count_params(exp.abstract_state.params),
               sharding.per_device_bytes(exp.abstract_state, exp.state_sharding) / 2**20,
               sharding.per_device_bytes(exp.abstract_state) / 2**20)
  # Periodic sample-quality metrics load their classifier now: a missing one fails here.
  sample_quality_every = config.eval.sample_metrics_every
  sample_quality = (sample_metrics.SampleQualityEvaluator(exp) if sample_quality_every
                    else None)

  # ----------------------------------------------------------------------- input
  train_iter = iter(data.make_loader(config.data, split=config.data.train_split,
                                     global_batch_size=tcfg.batch_size, seed=config.seed))

  # ------------------------------------------------------ state: resume or init
  ckpt = ckpt_lib.Checkpointer(workdir / "checkpoints", max_to_keep=tcfg.max_checkpoints,
                               async_save=tcfg.async_checkpointing)
  state = ckpt_lib.restore_or_init(exp, ckpt, train_iter)
  start_step = int(jax.device_get(state.step))
  last_saved = start_step if ckpt.latest_step() is not None else None
  K = tcfg.steps_per_call   # updates per compiled call, see "update step"
  if start_step % K:
    raise ValueError(f"Restored step {start_step} is not a multiple of train.steps_per_call="
                     f"{K}; resume with a steps_per_call that divides it.")
  status = workdir_lib.RunStatus(workdir)
  if start_step >= tcfg.num_steps:
    logging.info("Step %d >= train.num_steps=%d: nothing to train.", start_step, tcfg.num_steps)
    status.write("done", start_step)
    ckpt.close()
    return {}
  status.write("running", start_step)

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
  sample_every = tcfg.sample_every
  sample_fn = make_sample_fn(exp) if sample_every else None

  # ------------------------------------------------------------------------ loop
  try:
    writer = MetricWriter(workdir, resume_step=start_step)
    writer.write_config(workdir_lib.flatten(config))
  except BaseException as e:
    ckpt.close(after_error=True)
    error = _record_failure(e, status, workdir, start_step)
    if error is not e:
      raise error from e
    raise
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
    """Fetches, checks and logs the K steps' metrics of one compiled call."""
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

  def due(every: int, step: int, is_last: bool) -> bool:
    return bool(every) and (step % every == 0 or is_last)

  stop = StopRequest()
  try:
    with stop.installed():
      for step in range(start_step + K, tcfg.num_steps + 1, K):
        if step > start_step + K:
          batches = next_batches()
        state, metrics = train_step(state, batches, exp.base_rng)
        if pending is not None:   # fetch the previous call's metrics while this one runs
          consume(*pending)
        pending = (step, metrics)

        is_last = step == tcfg.num_steps
        # On a stop request (preemption) only the checkpoint is written: grace periods are short.
        evaluate = due(config.eval.every, step, is_last)
        measure_quality = sample_quality is not None and due(sample_quality_every, step, is_last)
        draw_samples = due(sample_every, step, is_last)
        save = step % tcfg.checkpoint_every == 0 or is_last or stop.requested
        if evaluate or measure_quality or save:
          # Evaluate and checkpoint only a state whose loss has been checked. The last step
          # always saves, so nothing is pending once the loop ends.
          consume(*pending)
          pending = None

        if evaluate:
          eval_metrics = evaluate_state(exp, state, eval_fn)
          writer.write(step, eval_metrics)
          progress.report(step, eval_metrics)
        if measure_quality and sample_quality is not None:
          writer.write(step, sample_quality(state))
        if draw_samples:
          _, samples = write_samples(exp, state, workdir / "samples" / f"step_{step}.png",
                                     sample_fn)
          if samples.tokens is not None:   # the first sample on the terminal, all in TensorBoard
            progress.show_text(step, exp.spec.tokenizer.decode(samples.tokens[0]))
            writer.write_text(step, "samples",
                              format_text_samples(exp.spec.tokenizer, samples.tokens))
          else:
            writer.write_images(step, samples.image_grids())
        if save:
          ckpt.save(step, state, train_iter)
          last_saved = step
          status.write("running", step)
        if stop.requested:
          logging.warning("Stopped at step %d on request; rerun the same command to resume.", step)
          break
    ckpt.close()   # waits for the last save: one that could not be written raises here
  except BaseException as e:
    # Also on a NaN error or a crash: finish the save in flight (the last good checkpoint).
    ckpt.close(after_error=True)
    error = _record_failure(e, status, workdir, start_step)
    if error is not e:
      raise error from e
    raise
  finally:
    writer.close()
  assert last_saved is not None   # the loop's last step saves
  status.write("done" if last_saved == tcfg.num_steps else "stopped", last_saved)
  logging.info("Done at step %d: checkpoints in %s, samples in %s, metrics in %s", last_saved,
               ckpt.directory, workdir / "samples", workdir / "metrics.jsonl")
  return logged
