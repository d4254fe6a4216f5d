"""The modes of `launch.py` besides training: `sample`, `eval` and `export` of a trained
run, and (allocating nothing) `summary` and `compile`."""
from __future__ import annotations

import time

import jax
import ml_collections
import numpy as np
from absl import logging
from etils import epath

from gen_jax import data
from gen_jax.core.errors import ConfigError
from gen_jax.core.state import count_params
from gen_jax.engine import checkpoint as ckpt_lib
from gen_jax.engine import disk_errors, sample_dump, sample_metrics, sharding
from gen_jax.engine import export as export_lib
from gen_jax.engine import lease as lease_lib
from gen_jax.engine import workdir as workdir_lib
from gen_jax.engine.checkpoint_checks import unwritable_workdir_error
from gen_jax.engine.evaluation import evaluate_state, run_dataset_evaluation
from gen_jax.engine.experiment import build_experiment
from gen_jax.engine.outputs import MetricWriter, is_main_process, save_json
from gen_jax.engine.preemption import Interrupted, StopRequest
from gen_jax.engine.samples import format_text_samples, make_sample_fn, write_samples
from gen_jax.engine.train import compile_train_step


def trained_workdir(config: ml_collections.ConfigDict, workdir: str) -> str:
  """The run whose checkpoint the read modes restore: `eval.checkpoint_from` when a config
  sets it (a sampler-only run, e.g. one member of a sweep over the sampler settings of one
  trained model: experiments/song2021_ddim), otherwise `workdir` itself."""
  return config.eval.checkpoint_from or workdir


def sample(config: ml_collections.ConfigDict, workdir: str) -> epath.Path:
  """Writes grid(s) or text sampled from the newest checkpoint with the configured sampler.

  Text is also printed. Returns:
    The path of the (first) output, e.g. samples/sample_step_1500_ddim50_ema_seed0.png.
  """
  exp = build_experiment(config)
  if not exp.method.can_sample:
    raise ConfigError(f"config.method={config.method!r} has nothing to sample; use "
                      "--mode=eval or --mode=train.")
  s = config.sample
  formats = sample_dump.parse_formats(s.format)
  if formats != ("grid",) and exp.spec.kind != data.IMAGE:
    raise ConfigError(f"sample.format={s.format!r} writes images; {config.method!r} samples "
                      "text, which --mode=sample writes as a .txt file (sample.format='grid').")
  state, step = ckpt_lib.load_checkpoint(exp, workdir, config.eval.step)
  name = "_".join(p for p in (f"sample_step_{step}", exp.method.sample_tag,
                              "ema" if s.use_ema else "raw", f"seed{s.seed}") if p)
  with disk_errors.writing("the samples"):
    if formats != ("grid",):
      return _dump(exp, state, step, epath.Path(workdir) / "samples" / name, formats)
    paths, samples = write_samples(exp, state, epath.Path(workdir) / "samples" / f"{name}.png",
                                   rng=jax.random.key(s.seed))
  logging.info("Wrote %d samples to %s", s.num, ", ".join(map(str, paths)))
  if samples.tokens is not None and is_main_process():
    print(format_text_samples(exp.spec.tokenizer, samples.tokens), end="", flush=True)
  return paths[0]


def _dump(exp, state, step: int, folder: epath.Path, formats: tuple[str, ...]) -> epath.Path:
  """`--mode=sample` with sample.format npz/png: resumable uint8 shards (sample_dump.py)."""
  plan = sample_dump.plan_dump(exp.config.sample, step=step, sampler=exp.method.sample_tag,
                               image_shape=exp.spec.image_shape,
                               default_batch=exp.config.eval.sample_batch_size)
  sharding.validate_global_batch(plan.batch_size, exp.mesh, "sample.batch_size")
  sample_fn = make_sample_fn(exp, plan.batch_size)

  def draw(rng):   # the images, and a conditional family's classes
    samples = jax.device_get(sample_fn(state, rng))
    out = {"images": samples.images}
    return out if samples.labels is None else {**out, "labels": samples.labels}

  stop = StopRequest()
  with lease_lib.RunLease(folder.parent.parent, "sample dump"), stop.installed():
    done = sample_dump.dump_samples(folder, plan, formats, draw, stop)
  if done is None:
    raise Interrupted(f"Sampling stopped on request; the finished shards are in {folder}. "
                      "Rerun the same command to continue.")
  logging.info("Wrote %d samples (%s) to %s", plan.num, ", ".join(formats), folder)
  return folder


@lease_lib.leased("evaluation", unwritable_workdir_error)
def evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
  """Evaluates a checkpoint; writes `eval/step_<N>.json` and a line in metrics.jsonl.

  Always `method.eval_step` over the eval split; then, when configured, the family's own
  evaluation (`method.dataset_evaluation()`, e.g. DDPM bits/dim) and the sample-quality
  metrics (`eval.sample_metrics`, see gen_jax/engine/sample_metrics.py). Returns the scalar
  metrics; the JSON also holds the family evaluation's details (e.g. per-timestep terms).
  With `eval.checkpoint_from` (`trained_workdir`) the checkpoint is that run's, and
  `workdir` gets this run's config.json and a 'done' status, so sweeps skip it when
  finished and `--mode=report` lists it.
  """
  exp = build_experiment(config)
  evaluator = None
  if config.eval.sample_metrics:   # fail on a missing classifier before work
    evaluator = sample_metrics.SampleQualityEvaluator(exp)
  source = trained_workdir(config, workdir)
  state, step = ckpt_lib.load_checkpoint(exp, source, config.eval.step)
  if source != workdir:   # a sampler-only run: its config and status, for sweeps and reports
    workdir_lib.claim(config, workdir, None)
  metrics, details = evaluate_state(exp, state), {}
  if (family_evaluation := exp.method.dataset_evaluation()) is not None:
    family_metrics, details = run_dataset_evaluation(exp, state, family_evaluation)
    metrics.update(family_metrics)
  if evaluator is not None:   # finished sample batches survive SIGTERM or a kill
    cache = sample_dump.BatchCache(epath.Path(workdir) / "eval" / f"step_{step}_samples",
                                   evaluator.cache_key(step))
    stop = StopRequest()
    with stop.installed():
      metrics.update(evaluator(state, cache, stop))
  with disk_errors.writing("the evaluation's results"):
    save_json(epath.Path(workdir) / "eval" / f"step_{step}.json",
              {"step": step, **metrics, **details})
    if evaluator is not None:
      cache.clear()
    writer = MetricWriter(workdir, tensorboard=False)
    writer.write(step, metrics)
    writer.close()
  if source != workdir:
    workdir_lib.RunStatus(workdir).write("done", step)
  return metrics


def export(config: ml_collections.ConfigDict, workdir: str) -> epath.Path:
  """Writes the newest (or `eval.step`) checkpoint's EMA params and model state as
  safetensors with the config, into `<workdir>/export/step_<N>/` (gen_jax/engine/export.py);
  with another `export.format` (one the run's method offers, e.g. a GPT's 'hf_gpt2'), the
  method's foreign layout into `<workdir>/export/step_<N>_<format>/`.
  Returns the weights file's path."""
  exp = build_experiment(config)
  state, step = ckpt_lib.load_checkpoint(exp, workdir, config.eval.step)
  export_format = config.export.format
  if export_format == "gen_jax":
    path = export_lib.export_state(exp, state, step,
                                   epath.Path(workdir) / "export" / f"step_{step}")
  else:
    path = export_lib.export_foreign(
        exp, state, step, export_format,
        epath.Path(workdir) / "export" / f"step_{step}_{export_format}")
  logging.info("Exported step %d to %s", step, path)
  return path


def summary(config: ml_collections.ConfigDict) -> str:
  """Parameter shapes and total, from `jax.eval_shape` (nothing is allocated).

  The last line is `params: <total count>`.
  """
  exp = build_experiment(config)
  params = exp.abstract_state.params
  lines = []
  for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
    name = "/".join(str(getattr(k, "key", k)) for k in path)
    lines.append(f"{name:<60s} {str(tuple(leaf.shape)):<20s} {int(np.prod(leaf.shape)):>12,d}")
  lines.append(f"params: {count_params(params)}")
  return "\n".join(lines)


def _gib(num_bytes: float) -> str:
  """Bytes in GiB, MiB or KiB, whichever keeps the number >= 1."""
  for unit, scale in (("GiB", 2**30), ("MiB", 2**20)):
    if num_bytes >= scale:
      return f"{num_bytes / scale:.2f} {unit}"
  return f"{num_bytes / 2**10:.1f} KiB"


def compile_report(config: ml_collections.ConfigDict) -> str:
  """Lowers and compiles the train step for the configured mesh on abstract inputs.

  Nothing is allocated and no data is read: a user can check that a paper-size config
  fits per device before getting the hardware (with `launch.py --cpu_devices=N`, for an
  N-device mesh on a CPU; XLA:CPU's buffer assignment, so treat the figures as an
  estimate of a GPU's or TPU's). Returns the report; its last line is
  `peak bytes per device: <int>`.
  """
  exp = build_experiment(config)
  t = config.train
  K = t.steps_per_call
  state = ckpt_lib.with_shardings(exp.abstract_state, exp.state_sharding)
  stacked = sharding.stacked_batch_sharding(exp.mesh)
  batches = {k: jax.ShapeDtypeStruct((K, t.batch_size, *v.shape[1:]), v.dtype, sharding=stacked)
             for k, v in exp.spec.example_batch().items()}
  t0 = time.perf_counter()
  compiled, flops = compile_train_step(exp, state, batches)
  seconds = time.perf_counter() - t0
  mem = compiled.memory_analysis()
  if mem is None:
    raise RuntimeError(f"XLA gives no memory analysis on {jax.devices()[0].platform}.")
  state_bytes = sharding.per_device_bytes(exp.abstract_state, exp.state_sharding)
  peak = (mem.argument_size_in_bytes + mem.output_size_in_bytes - mem.alias_size_in_bytes
          + mem.temp_size_in_bytes)
  n = exp.mesh.size
  lines = [
      f"mesh: {dict(exp.mesh.shape)} ({n} {jax.devices()[0].platform} devices, "
      f"{jax.process_count()} process(es)); compiled in {seconds:.1f}s",
      f"params: {count_params(exp.abstract_state.params):,d}; global batch {t.batch_size} "
      f"x {K} update(s) per call; dtype {config.dtype}",
      f"FLOPs per update: {flops:.4g} ({flops / n:.4g} per device)",
      "memory per device (XLA buffer assignment):",
      f"  train state (params, EMA, optimizer): {_gib(state_bytes)}",
      f"  arguments {_gib(mem.argument_size_in_bytes)}, outputs {_gib(mem.output_size_in_bytes)}"
      f", donated/aliased {_gib(mem.alias_size_in_bytes)}",
      f"  temporaries (activations, gradients, workspace): {_gib(mem.temp_size_in_bytes)}",
      f"  peak = arguments + outputs - aliased + temporaries: {_gib(peak)}",
      f"peak bytes per device: {peak}",
  ]
  return "\n".join(lines)
