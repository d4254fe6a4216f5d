"""The non-training modes: `sample`, `eval` and `summary` (no allocation)."""
from __future__ import annotations

import jax
import ml_collections
import numpy as np
from absl import logging
from etils import epath

from gen_jax.engine import checkpoint as ckpt_lib
from gen_jax.engine.experiment import Experiment, build_experiment
from gen_jax.engine.logging import MetricWriter
from gen_jax.engine.state import TrainState, count_params
from gen_jax.engine.train import evaluate_state, save_json, write_samples


def load_checkpoint(exp: Experiment, workdir: str | epath.Path,
                    step: int | None = None) -> tuple[TrainState, int]:
  """Restores the newest (or the given) checkpoint of `workdir` onto the current mesh."""
  ckpt = ckpt_lib.Checkpointer(ckpt_lib.checkpoint_dir(workdir), read_only=True)
  available = ckpt.all_steps()
  if not available:
    raise FileNotFoundError(f"No checkpoint in {ckpt.directory}. Train first: "
                            f"python launch.py --config=... --workdir={workdir}")
  step = max(available) if step in (None, -1) else step
  if step not in available:
    raise FileNotFoundError(f"No checkpoint for step {step} in {ckpt.directory}; "
                            f"available: {sorted(available)}")
  state = ckpt.restore(step, exp.abstract_state, exp.state_sharding)
  ckpt.close()
  return state, step


def sample(config: ml_collections.ConfigDict, workdir: str) -> epath.Path:
  """Writes grid(s) or text sampled from the newest checkpoint with the configured sampler.

  Text is also printed. Returns:
    The path of the (first) output, e.g. samples/sample_step_1500_ddim50_ema_seed0.png.
  """
  exp = build_experiment(config)
  state, step = load_checkpoint(exp, workdir, config.eval.step)
  s = config.sample
  tag = getattr(exp.method, "sample_tag", "")
  name = "_".join(p for p in (f"sample_step_{step}", tag, "ema" if s.use_ema else "raw",
                              f"seed{s.seed}") if p)
  paths = write_samples(exp, state, epath.Path(workdir) / "samples" / f"{name}.png",
                        rng=jax.random.key(s.seed))
  logging.info("Wrote %d samples to %s", s.num, ", ".join(map(str, paths)))
  if exp.spec.kind == "text":
    print(paths[0].read_text(), end="", flush=True)
  return paths[0]


def evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
  """Evaluates a checkpoint; writes `eval/step_<N>.json` and a line in metrics.jsonl."""
  exp = build_experiment(config)
  state, step = load_checkpoint(exp, workdir, config.eval.step)
  metrics = evaluate_state(exp, state)
  save_json(epath.Path(workdir) / "eval" / f"step_{step}.json", {"step": step, **metrics})
  writer = MetricWriter(workdir, tensorboard=False)
  writer.write(step, metrics)
  writer.close()
  return metrics


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
