"""The interface between the family-agnostic engine and a generative family.

A method is a frozen object built from the config (`from_config(config, spec)`). Its four
required functions are pure; the engine jits them with explicit shardings and owns
devices, files and meshes. The engine passes `train_step` a key already folded with the
step (`fold_in(base_rng, state.step)`), so a resumed run reproduces its randomness.

Every optional hook is written out below with its default; the engine calls hooks and
never asks a method what it can do.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import numpy as np

from gen_jax.core.state import TrainState

Batch = dict[str, jax.Array]
Metrics = dict[str, jax.Array]


@dataclasses.dataclass(frozen=True)
class DatasetEvaluation:
  """A family's own evaluation over the first `num_examples` images of the eval split (in
  `--mode=eval`), e.g. DDPM's bits/dim.

  The engine reads the split in order, `batch_size` images at a time, runs the jitted
  `batch_fn(state, batch, key)` on each batch (key i of a fixed sequence) and passes the
  list of per-batch outputs, on the host, to `summarize`.

  Attributes:
    name: what it computes, for logs (e.g. 'bits/dim').
    num_examples: images evaluated; a multiple of `batch_size`.
    batch_size: global batch of one compiled call.
    batch_fn: (state, batch, key) -> dict of arrays; its outputs are replicated.
    summarize: list of per-batch output dicts -> (scalar metrics, details). Names are
      relative to `eval/` (e.g. 'ema/bpd'); details (lists, counts) go to the eval JSON only.
  """
  name: str
  num_examples: int
  batch_size: int
  batch_fn: Callable[[TrainState, Batch, jax.Array], dict[str, jax.Array]]
  summarize: Callable[[list[dict[str, np.ndarray]]], tuple[dict[str, float], dict[str, Any]]]


class Method:
  """Base class of the families (`gen_jax/methods/*.py`)."""

  # Optional: whether the family can sample at all (a classifier cannot); when False the
  # engine writes no samples and `--mode=sample` stops with a clear error.
  can_sample: bool = True
  # Optional: when True the engine calls `sample(..., batch=...)` with the first
  # `sample.num` images of the eval split (the same batch every time), e.g. for a VAE's
  # reconstruction grids; otherwise `batch=None`.
  sample_uses_batch: bool = False
  # Micro-batches per update (`train.grad_accum_steps`); a family that accumulates
  # gradients has it as a field.
  grad_accum_steps: int = 1
  # Optional: K > 0 for a class-conditional family (its samples take labels 0..K-1, see
  # `sample(labels=...)` and `sample_labels`); 0 = unconditional.
  num_classes: int = 0
  # sample.label of a conditional family: -1 = classes in blocks (rows), c = only class c.
  sample_label: int = -1

  # ------------------------------------------------------------------ required

  def init(self, rng: jax.Array, batch: Batch) -> TrainState:
    """Fresh state; `batch` is an example batch (only its shapes matter)."""
    raise NotImplementedError

  def train_step(self, state: TrainState, batch: Batch,
                 rng: jax.Array) -> tuple[TrainState, Metrics]:
    """One update; metrics must include a scalar `loss`."""
    raise NotImplementedError

  def eval_step(self, state: TrainState, batch: Batch, rng: jax.Array) -> Metrics:
    """Per-batch evaluation metrics; names start with `ema/` or `raw/` (which weights)."""
    raise NotImplementedError

  def sample(self, state: TrainState, rng: jax.Array, num: int, use_ema: bool = True,
             batch: Batch | None = None,
             labels: jax.Array | None = None) -> jax.Array | dict[str, jax.Array]:
    """`num` samples from the EMA (or raw) weights of `state`.

    Returns images in [-1, 1], [num, H, W, C]; or a dict of named image batches (e.g.
    {"samples": ..., "interpolation": ...}), each written as its own grid, "samples"
    first; or, for text, token ids [num, length], which the engine decodes with the
    dataset's tokenizer. `batch`: see `sample_uses_batch`. `labels`: a conditional
    family's class labels [num] (int) for the "samples" (None: `sample_labels(num)`); the
    engine passes them only when `num_classes` > 0.
    """
    raise NotImplementedError(f"{type(self).__name__} cannot sample (can_sample=False).")

  # ------------------------------------------------------------- optional hooks

  def sample_labels(self, num: int) -> np.ndarray | None:
    """The class labels [num] (int32) that `sample(..., num)` draws its "samples" for when
    given none, or None for an unconditional family. Default: `class_rows(num, K,
    sample_label)` (one grid row per class at num = K^2, or only class `sample_label`).
    The engine's sample metrics score the classifier's agreement with them
    (`label_agreement`), so they must not depend on the key."""
    if not self.num_classes:
      return None
    return class_rows(num, self.num_classes, self.sample_label)

  @property
  def sample_tag(self) -> str:
    """A short description of the sampler for file names of `--mode=sample` (e.g. 'ddim50')."""
    return ""

  def summarize_eval(self, metrics: dict[str, float]) -> dict[str, float]:
    """Applied to the eval metrics after they are averaged over batches, for quantities
    that are functions of the means (e.g. perplexity = exp(mean loss)). Default: as is."""
    return metrics

  def dataset_evaluation(self) -> DatasetEvaluation | None:
    """The family's own evaluation over the eval split in `--mode=eval`, if it has one."""
    return None

  def without_grad_accumulation(self) -> "Method":
    """The same method taking each batch whole: the engine counts FLOPs per update on it
    (XLA counts a micro-batch loop's body once)."""
    if self.grad_accum_steps == 1:
      return self
    return dataclasses.replace(self, grad_accum_steps=1)


def class_rows(num: int, num_classes: int, label: int = -1) -> np.ndarray:
  """The labels [num] (int32) of a conditional sample set (`sample.label`).

  `label` >= 0: that class for every sample. -1: the classes in equal consecutive blocks,
  sample i of class floor(i K / num): every class equally often when K divides num, and
  one row per class in the engine's grid (sqrt(num) columns) when num = K^2 (100 for
  digits).

  Raises:
    ValueError: `label` is not -1 or a class in [0, K).
  """
  if not -1 <= label < num_classes:
    raise ValueError(f"sample.label={label}: expected -1 (one row per class) or a class in "
                     f"[0, {num_classes}).")
  if label >= 0:
    return np.full((num,), label, np.int32)
  return (np.arange(num) * num_classes // num).astype(np.int32)


def image_shape_of(spec) -> tuple[int, int, int]:
  """(H, W, C) from a `gen_jax.data.DataSpec` of images (or an (H, W, C) tuple itself).

  Raises:
    ValueError: the spec describes text, which image families cannot model.
  """
  if not isinstance(spec, (tuple, list)) and spec.kind != "image":
    raise ValueError(f"This method models images, but the dataset is {spec.kind}; use "
                     "--config=configs/gpt.py or configs/lstm.py for text.")
  return tuple(int(d) for d in (spec if isinstance(spec, (tuple, list)) else spec.image_shape))


def grad_accum_steps(config, rows: int | None = None, rows_desc: str | None = None) -> int:
  """`train.grad_accum_steps` M, checked before anything is compiled.

  M micro-batches share one optimizer step (`gen_jax.core.state.accumulated_value_and_grad`),
  so M must divide the rows each accumulated gradient is taken over: `train.batch_size`,
  or `rows` (described by `rows_desc` in the error) when a method splits the batch itself.
  """
  M = config.train.grad_accum_steps
  B = config.train.batch_size if rows is None else rows
  if M < 1 or B % M:
    raise ValueError(f"train.grad_accum_steps={M} must be >= 1 and divide "
                     f"{rows_desc or f'train.batch_size={B}'}.")
  return M
