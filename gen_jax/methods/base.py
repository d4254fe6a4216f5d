"""The interface between the family-agnostic engine and a generative family.

A method is a frozen object built from the config. All four functions are pure;
the engine jits them with explicit shardings and owns devices, files and meshes.
The engine passes `train_step` a key already folded with the step
(`fold_in(base_rng, state.step)`), so a resumed run reproduces its randomness.
"""
from __future__ import annotations

from typing import Protocol

import jax

from gen_jax.core.state import TrainState

Batch = dict[str, jax.Array]
Metrics = dict[str, jax.Array]


class Method(Protocol):

  def init(self, rng: jax.Array, batch: Batch) -> TrainState:
    """Fresh state; `batch` is an example batch (only its shapes matter)."""

  def train_step(self, state: TrainState, batch: Batch, rng: jax.Array) -> tuple[TrainState, Metrics]:
    """One update; metrics must include a scalar `loss`."""

  def eval_step(self, state: TrainState, batch: Batch, rng: jax.Array) -> Metrics:
    """Per-batch evaluation metrics; names start with `ema/` or `raw/` (which weights)."""

  def sample(self, state: TrainState, rng: jax.Array, num: int,
             use_ema: bool = True) -> jax.Array | dict[str, jax.Array]:
    """`num` samples from the EMA (or raw) weights of `state`.

    Returns images in [-1, 1], [num, H, W, C]; or a dict of named image batches (e.g.
    {"samples": ..., "interpolation": ...}), each written as its own grid; or, for text,
    token ids [num, length], which the engine decodes with the dataset's tokenizer.
    """

  # Optional: `sample_tag: str`, a short description of the sampler put into file names
  # written by `--mode=sample` (e.g. "ddim50").
  # Optional: `sample_uses_batch: bool` (default False). When True the engine calls
  # `sample(state, rng, num, use_ema, batch=...)` with the first `sample.num` images of the
  # eval split (the same batch every time), e.g. for reconstruction grids.
  # Optional: `summarize_eval(metrics) -> metrics`, applied to the eval metrics after they
  # are averaged over batches, for quantities that are functions of the means (e.g. the
  # language models' perplexity = exp(mean loss)).


def image_shape_of(spec) -> tuple[int, int, int]:
  """(H, W, C) from a `gen_jax.data.DataSpec` of images (or an (H, W, C) tuple itself).

  Raises:
    ValueError: the spec describes text, which image families cannot model.
  """
  if getattr(spec, "kind", "image") != "image":
    raise ValueError(f"This method models images, but the dataset is {spec.kind}; use "
                     "--config=configs/gpt.py or configs/lstm.py for text.")
  return tuple(int(d) for d in getattr(spec, "image_shape", spec))


def grad_accum_steps(config, rows: int | None = None, rows_desc: str | None = None) -> int:
  """`train.grad_accum_steps` M (default 1), checked before anything is compiled.

  M micro-batches share one optimizer step (`gen_jax.core.state.accumulated_value_and_grad`),
  so M must divide the rows each accumulated gradient is taken over: `train.batch_size`,
  or `rows` (described by `rows_desc` in the error) when a method splits the batch itself.
  """
  M = config.train.get("grad_accum_steps", 1)
  B = config.train.batch_size if rows is None else rows
  if M < 1 or B % M:
    raise ValueError(f"train.grad_accum_steps={M} must be >= 1 and divide "
                     f"{rows_desc or f'train.batch_size={B}'}.")
  return M
