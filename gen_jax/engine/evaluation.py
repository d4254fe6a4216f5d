"""Evaluation over the eval split: the mean of `method.eval_step` (every eval), and a
family's own dataset evaluation (`method.dataset_evaluation()`, e.g. DDPM bits/dim, in
`--mode=eval`).

Batches and keys are fixed, so numbers are comparable across steps and runs.
"""
from __future__ import annotations

import jax
from absl import logging

from gen_jax import data
from gen_jax.core.state import TrainState
from gen_jax.data.errors import DatasetTooSmallError
from gen_jax.engine import sharding
from gen_jax.engine.experiment import Experiment
from gen_jax.methods.base import DatasetEvaluation


def evaluate_state(exp: Experiment, state: TrainState, eval_fn=None) -> dict[str, float]:
  """Mean of `method.eval_step` over `eval.num_batches` batches of the eval split, then the
  method's `summarize_eval` (metrics that are functions of the means). Names: `eval/...`.

  `eval_fn`: `jax.jit(method.eval_step)`, compiled once by a caller that evaluates often.
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
    raise DatasetTooSmallError(
        f"eval split {cfg.data.eval_split!r} of {cfg.data.dataset} holds fewer examples than "
        f"one eval batch (eval.batch_size={cfg.eval.batch_size}); lower it, e.g. "
        "--config.eval.batch_size=16, or use a larger eval split (data.eval_split).")
  metrics = exp.method.summarize_eval({k: v / n for k, v in totals.items()})
  return {f"eval/{k}": v for k, v in metrics.items()}


def run_dataset_evaluation(exp: Experiment, state: TrainState,
                           evaluation: DatasetEvaluation) -> tuple[dict[str, float], dict]:
  """Runs `evaluation` over the first `num_examples` images of the eval split, in order.

  One compiled call per batch (key i: `fold_in(fold_in(base_rng, 0xB9D), i)`). Returns
  (scalar metrics, details), both named `eval/...`.
  """
  cfg = exp.config
  n, bs = evaluation.num_examples, evaluation.batch_size
  sharding.validate_global_batch(bs, exp.mesh, f"the batch size of {evaluation.name}")
  loader = data.make_loader(cfg.data, split=cfg.data.eval_split, global_batch_size=bs,
                            seed=cfg.seed, shuffle=False, num_epochs=1)
  batch_fn = jax.jit(evaluation.batch_fn, out_shardings=exp.replicated)
  rng = jax.random.fold_in(exp.base_rng, 0xB9D)
  outputs = []
  for i, local in zip(range(n // bs), loader, strict=False):
    logging.info("%s: batch %d/%d (%d images)", evaluation.name, i + 1, n // bs, bs)
    outputs.append(jax.device_get(batch_fn(state, sharding.global_batch(local, exp.batch_sharding),
                                           jax.random.fold_in(rng, i))))
  if len(outputs) < n // bs:
    raise DatasetTooSmallError(f"eval split {cfg.data.eval_split!r} has fewer than the {n} images "
                     f"that {evaluation.name} evaluates.")
  metrics, details = evaluation.summarize(outputs)
  return ({f"eval/{k}": v for k, v in metrics.items()},
          {f"eval/{k}": v for k, v in details.items()})
