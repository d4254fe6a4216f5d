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
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import jax
import jax.numpy as jnp
import numpy as np

from gen_jax.core.state import TrainState

Batch = dict[str, jax.Array]
Metrics = dict[str, jax.Array]
Params = Any   # a pytree of arrays


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


# ------------------------------------------------------------------------ samples


@dataclasses.dataclass(frozen=True, eq=False)
class Samples:
  """What `Method.sample` returns: one declared structure for every family.

  A pytree, so it comes out of a jitted `sample` (and through `jax.device_get`) whole.
  Exactly one of `images` and `tokens` is set.

  Attributes:
    images: [N, H, W, C] floating, in [-1, 1]: an image family's samples (the engine's
      `<stem>.png` grid, or `<stem>_samples.png` beside `grids`).
    tokens: [N, L] int32: a language model's token ids (prompt included), which the engine
      decodes with the dataset's tokenizer.
    labels: [N] int32, a conditional family's classes the N samples were drawn for
      (`Method.sample_labels(N)` unless the caller passed others); None when unconditional.
    grids: named image batches [M, H', W', C] in [-1, 1] a family draws beside its samples
      (GAN: 'interpolation'; VAE: 'reconstructions', 'manifold'), each written as its own
      grid `<stem>_<name>.png`; M and the size may differ from the samples'. Empty for text.
      Out of a jitted function the dict is in name order (JAX flattens dicts sorted).

  Raises (on construction):
    ValueError: both or neither of images/tokens, or a field of the wrong rank or dtype, or
      labels not one per sample, or grids beside tokens or named '' or 'samples'.
  """
  images: jax.Array | None = None    # [N, H, W, C] float in [-1, 1]
  tokens: jax.Array | None = None    # [N, L] int32
  labels: jax.Array | None = None    # [N] int32
  grids: dict[str, jax.Array] = dataclasses.field(default_factory=dict)   # name -> [M, H', W', C]

  def __post_init__(self):
    _check_samples(self)

  @property
  def num(self) -> int:
    """N, the number of samples."""
    if self.tokens is not None:
      return self.tokens.shape[0]
    assert self.images is not None   # one of the two (`_check_samples`)
    return self.images.shape[0]

  def image_grids(self) -> dict[str, jax.Array]:
    """{'samples': images, **grids}, samples first: what the engine writes as image grids."""
    if self.images is None:
      raise ValueError("These samples are token ids; they have no image grids.")
    return {"samples": self.images, **self.grids}


def _check_samples(samples: Samples) -> None:
  """The invariants of `Samples`; raises ValueError naming the field that breaks one."""
  images, tokens, labels = samples.images, samples.tokens, samples.labels
  if (images is None) == (tokens is None):
    raise ValueError("Samples holds images or tokens, exactly one of the two; got "
                     f"{'both' if images is not None else 'neither'}.")
  if images is not None and (len(images.shape) != 4 or
                             not jnp.issubdtype(images.dtype, jnp.floating)):
    raise ValueError(f"Samples.images must be floating [N, H, W, C]; got {images.dtype} "
                     f"{tuple(images.shape)}.")
  if tokens is not None and (len(tokens.shape) != 2 or tokens.dtype != jnp.int32):
    raise ValueError(f"Samples.tokens must be int32 [N, L]; got {tokens.dtype} "
                     f"{tuple(tokens.shape)}.")
  if labels is not None and (tuple(labels.shape) != (samples.num,) or
                             labels.dtype != jnp.int32):
    raise ValueError(f"Samples.labels must be int32 [N={samples.num}], one class per sample; "
                     f"got {labels.dtype} {tuple(labels.shape)}.")
  if samples.grids and tokens is not None:
    raise ValueError(f"Samples of tokens have no image grids; got {sorted(samples.grids)}.")
  for name, grid in samples.grids.items():
    if not isinstance(name, str) or name in ("", "samples"):
      raise ValueError(f"Samples.grids name {name!r}: a non-empty str other than 'samples' "
                       "(the samples' own grid).")
    if len(grid.shape) != 4 or not jnp.issubdtype(grid.dtype, jnp.floating):
      raise ValueError(f"Samples.grids[{name!r}] must be floating [M, H, W, C]; got "
                       f"{grid.dtype} {tuple(grid.shape)}.")


# JAX rebuilds a pytree from placeholder leaves (object(), None, shardings) inside its
# transformations; `_unflatten_samples` skips `__post_init__`, so only a family's own
# construction is checked (JAX's pytree docs: "Custom pytrees and initialization with
# unexpected values").
_SAMPLES_FIELDS = ("images", "tokens", "labels", "grids")


def _flatten_samples(samples: Samples):
  return [(jax.tree_util.GetAttrKey(n), getattr(samples, n)) for n in _SAMPLES_FIELDS], None


def _unflatten_samples(_, children) -> Samples:
  samples = object.__new__(Samples)
  for name, value in zip(_SAMPLES_FIELDS, children, strict=True):
    object.__setattr__(samples, name, value)
  return samples


jax.tree_util.register_pytree_with_keys(Samples, _flatten_samples, _unflatten_samples)


# ------------------------------------------- what a family offers beyond the four functions


class ModeContext(Protocol):
  """What the engine hands a family's own mode (`Method.modes`): the trained run and the
  services that touch devices and files, which a method does not.

  Attributes:
    config: the run's config (its saved config with the command's overrides).
    workdir: the run directory (for messages; outputs go through `write_*`).
  """
  @property
  def config(self) -> Any: ...

  @property
  def workdir(self) -> str: ...

  def restore(self) -> tuple[Any, int]:
    """(TrainState, step) of the run's newest (or `eval.step`) checkpoint, on the mesh."""
    ...

  def eval_images(self, num: int) -> Batch:
    """The first `num` examples of the eval split, in order, as a global batch."""
    ...

  def jit(self, fn: Callable) -> Callable:
    """`fn` compiled for the mesh, its outputs replicated (readable on every process)."""
    ...

  def read_grayscale_image(self, path: str) -> np.ndarray:
    """The image file at `path` as uint8 [H, W] (grayscale).

    Raises:
      OSError, ValueError: no such file, or not an image.
    """
    ...

  def write_image_grid(self, name: str, images: np.ndarray, ncols: int) -> str:
    """Writes images [N, H, W, C] in [-1, 1] as one grid, `ncols` per row, to
    `<workdir>/<mode>/<name>.png`; returns the path."""
    ...

  def write_json(self, name: str, content: Mapping[str, Any]) -> str:
    """Writes `<workdir>/<mode>/<name>.json`; returns the path."""
    ...

  def write_arrays(self, name: str, arrays: Mapping[str, np.ndarray]) -> str:
    """Writes host arrays as `<workdir>/<mode>/<name>.npz` (on the main process); returns
    the path."""
    ...


@dataclasses.dataclass(frozen=True)
class MethodMode:
  """A `--mode=<name>` of one family (e.g. a DDPM's `inpaint`), offered by `Method.modes`.

  The engine builds the experiment, checks that the run's method offers the mode, and
  calls `run(context, group)`; `launch.py` prints `report(result)`.

  Attributes:
    help: one line for `--help` and for the error listing a run's modes.
    config_group: the config group the mode reads (e.g. 'inpaint'), passed as `group`;
      fields the config file has and a saved run lacks get the file's values.
    run: (ModeContext, the config group) -> a JSON-serializable result.
    report: result -> the lines to print.
  """
  help: str
  config_group: str
  run: Callable[[ModeContext, Any], dict[str, Any]]
  report: Callable[[dict[str, Any]], str]


@dataclasses.dataclass(frozen=True)
class ForeignExport:
  """The files of an `export.format` other than 'gen_jax' (`Method.export_foreign`), which
  the engine writes into `<workdir>/export/step_<N>_<format>/` (on one process).

  Attributes:
    weights_file: the safetensors file's name, e.g. 'model.safetensors'.
    tensors: name -> host array, in the foreign layout.
    metadata: the safetensors header's string metadata.
    json_files: further files beside it, name -> JSON content (e.g. a `config.json`).
    config_file: the name under which the engine adds the run's own config.
  """
  weights_file: str
  tensors: dict[str, np.ndarray]
  metadata: dict[str, str]
  json_files: dict[str, Any]
  config_file: str = "gen_jax_config.json"


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
             batch: Batch | None = None, labels: jax.Array | None = None) -> Samples:
    """`num` samples from the EMA (or raw) weights of `state`, as `Samples`: images in
    [-1, 1] [num, H, W, C] (with any named extra grids, e.g. a GAN's interpolation) or, for
    text, token ids [num, length]; a conditional family fills `Samples.labels`.

    `batch`: see `sample_uses_batch`. `labels`: a conditional family's class labels [num]
    (int) for the samples (None: `sample_labels(num)`); the engine passes them only when
    `num_classes` > 0.
    """
    raise NotImplementedError(f"{type(self).__name__} cannot sample (can_sample=False).")

  # ------------------------------------------------------------- optional hooks

  def sample_labels(self, num: int) -> np.ndarray | None:
    """The class labels [num] (int32) that `sample(..., num)` draws its samples for when
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

  def tensor_parallel_dims(self, abstract_params: Params) -> dict[tuple[str, ...], int]:
    """Tensor parallelism (the `model` mesh axis): {parameter path (its dict keys): the
    dimension split over `model`}, Megatron's column and row splits (Shoeybi et al. 2019,
    §3). Parameters not listed are replicated over `model`. Default: none (then
    mesh.model must be 1)."""
    del abstract_params
    return {}

  # ------------------------------------------ family modes and foreign weights

  def modes(self) -> dict[str, MethodMode]:
    """`--mode=<name>`s of this family beyond train, sample, eval, export, summary and
    compile, e.g. a DDPM's {'inpaint': ...}. Default: none."""
    return {}

  def init_from_formats(self) -> tuple[str, ...]:
    """The foreign formats (`gen_jax.interop.FORMATS`) this method's params can start from,
    `init_from='<format>:<path>'` (read by `load_foreign_params`). Default: none."""
    return ()

  def export_formats(self) -> tuple[str, ...]:
    """The `export.format`s besides 'gen_jax' (`gen_jax.interop.FORMATS`) this method
    writes (`export_foreign`). Default: none."""
    return ()

  def load_foreign_params(self, init_from: str, abstract_params: Params) -> Params:
    """The params in `init_from='<format>:<path>'` (a format of `init_from_formats`),
    checked against the config: host arrays with the structure, shapes and dtypes of
    `abstract_params`; the engine places them on the mesh.

    Raises:
      ValueError, FileNotFoundError: the file is unsafe, unreadable or does not fit.
    """
    raise NotImplementedError(f"{type(self).__name__} reads no foreign weights "
                              f"(init_from={init_from}).")

  def export_foreign(self, export_format: str, params: Params, step: int) -> ForeignExport:
    """The files of `export.format=<export_format>` (one of `export_formats`) holding
    `params` (host arrays; the engine passes the EMA params) of checkpoint `step`."""
    raise NotImplementedError(f"{type(self).__name__} has no export.format={export_format!r}.")

  # Optional: True for a family whose `classify` gives class logits and features: its runs
  # can be the sample-quality metrics' feature extractor (`eval.classifier_workdir`).
  can_classify: bool = False

  def classify(self, params: Params, images: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(logits [B, K], features [B, D]) of images [B, H, W, C] in [-1, 1]."""
    raise NotImplementedError(f"{type(self).__name__} does not classify (can_classify=False).")

  # Optional: True for an autoencoder whose `encode` and `decode` map images to latents and
  # back (`gen_jax.load_run(...).encode / .decode`, latent diffusion on top of a run).
  can_encode: bool = False

  def encode(self, params: Params, images: jax.Array) -> tuple[jax.Array, jax.Array]:
    """The posterior q(z|x) of images [B, H, W, C] in [-1, 1]: (mean, logvar), latent-shaped."""
    raise NotImplementedError(f"{type(self).__name__} does not encode (can_encode=False).")

  def decode(self, params: Params, latents: jax.Array) -> jax.Array:
    """Images [B, H, W, C] (data range [-1, 1], unclipped) of latents shaped as `encode`'s."""
    raise NotImplementedError(f"{type(self).__name__} does not decode (can_encode=False).")

  def without_grad_accumulation(self) -> Method:
    """The same method taking each batch whole: the engine counts FLOPs per update on it
    (XLA counts a micro-batch loop's body once)."""
    if self.grad_accum_steps == 1:
      return self
    if not dataclasses.is_dataclass(self):
      raise TypeError(f"{type(self).__name__} accumulates gradients: it must be a dataclass "
                      "with a grad_accum_steps field.")
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
  height, width, channels = spec if isinstance(spec, (tuple, list)) else spec.image_shape
  return int(height), int(width), int(channels)


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
