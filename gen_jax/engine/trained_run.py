"""The Python API for trained runs: `load_run(workdir)` and what it returns.

  import gen_jax
  run = gen_jax.load_run("runs/ddpm")                     # newest checkpoint, saved config
  images = run.sample(16, seed=0, steps=50)               # uint8 [16, 28, 28, 1]
  sevens = gen_jax.load_run("runs/dcgan_conditional").sample(8, labels=7)   # class-conditional
  metrics = run.evaluate()                                 # {'eval/ema/loss': ...}
  text = gen_jax.load_run("runs/gpt_baby").generate("ROMEO:", max_new_tokens=200)
  mean, logvar = gen_jax.load_run("runs/autoencoder").encode(images)   # an autoencoder run
  images = gen_jax.load_run("runs/autoencoder").decode(mean)

What sampling returns, the same for every family:
  run.sample(num)    images: uint8 [num, H, W, C] (the samples only); text: `num` strings.
  run.draw(num)      the method's own `gen_jax.methods.base.Samples` on the host: images in
                     [-1, 1] (or token ids), a conditional run's labels, and the extra grids
                     a family draws beside the samples (a GAN's 'interpolation', a VAE's
                     'reconstructions' and 'manifold'), e.g.
                     `to_uint8(run.draw(16).grids["interpolation"])`.

Nothing is written to the workdir. The state is restored once onto the current devices;
sampler settings passed as keyword arguments (`config.sample` fields) rebuild only the
method, which is cheap (shapes, no compile), and each distinct setting compiles once. A
keyword that is no such field (`UnknownSettingError`), a count below 1 and `generate` on an
image run (`SamplingRequestError`) are refused before anything is compiled.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import jax
import ml_collections
import numpy as np
from etils import epath

from gen_jax import data
from gen_jax.core.errors import UserError
from gen_jax.core.state import TrainState
from gen_jax.engine import checkpoint as ckpt_lib
from gen_jax.engine import export as export_lib
from gen_jax.engine import workdir as workdir_lib
from gen_jax.engine.evaluation import evaluate_state, run_dataset_evaluation
from gen_jax.engine.experiment import Experiment, build_experiment
from gen_jax.engine.outputs import to_uint8
from gen_jax.engine.samples import fixed_sample_batch, make_sample_fn
from gen_jax.methods.base import Samples


class UnknownSettingError(UserError, TypeError):
  """A keyword argument that is no field of the config group it sets (e.g. `stpes=2`)."""


class SamplingRequestError(UserError, ValueError):
  """A request a trained run cannot serve: a sample count below 1, labels it cannot take,
  or a text prompt to an image model."""


def check_settings(group: ml_collections.ConfigDict, name: str, settings: dict[str, Any],
                   taken: tuple[str, ...] = ()) -> None:
  """Refuses keyword arguments that are not fields of `config.<name>` (or are set by an
  argument of their own, `taken`), naming the allowed ones.

  Raises:
    UnknownSettingError: an unknown or taken keyword.
  """
  allowed = sorted(k for k in group.keys() if k not in taken)
  unknown = sorted(k for k in settings if k not in allowed)
  if unknown:
    raise UnknownSettingError(
        f"Unknown {name} setting(s): {', '.join(unknown)}. The keyword arguments are the "
        f"fields of config.{name}: {', '.join(allowed)}.")


@dataclasses.dataclass
class TrainedRun:
  """A trained run restored from its workdir.

  Attributes:
    workdir: the run directory.
    config: the config it was trained with (`config.json`).
    step: the checkpoint's step.
    state: the restored TrainState (params, EMA params, optimizer state).
  """
  workdir: epath.Path
  config: ml_collections.ConfigDict
  step: int
  state: TrainState
  _experiments: dict[str, Experiment] = dataclasses.field(default_factory=dict, repr=False)
  _sample_fns: dict[tuple, Any] = dataclasses.field(default_factory=dict, repr=False)

  @property
  def params(self):
    """The raw (last optimizer step's) parameters."""
    return self.state.params

  @property
  def ema_params(self):
    """The EMA parameters, which sampling and evaluation use by default."""
    return self.state.ema_params

  def experiment(self, **overrides: Any) -> Experiment:
    """The run's Experiment with `overrides` ({dotted field: value}) applied to its config."""
    key = repr(sorted(overrides.items()))
    if key not in self._experiments:
      config = ml_collections.ConfigDict(self.config.to_dict())
      config.update_from_flattened_dict(overrides)
      self._experiments[key] = build_experiment(config)
    return self._experiments[key]

  def sample(self, num: int, seed: int = 0, use_ema: bool = True, labels=None,
             **sample_overrides: Any) -> np.ndarray | list[str]:
    """`num` samples with the run's sampler, changed by `sample_overrides` (fields of
    `config.sample`, e.g. `steps=50, eta=0.0` for DDPM, `temperature=0.8` for a GPT).

    Args:
      num, seed, use_ema, labels, sample_overrides: as for `draw`.

    Returns:
      Images: uint8 [num, H, W, C], for every image family (a family's extra grids, e.g. a
      GAN's interpolation, are in `draw(...).grids`). Text: a list of `num` strings.

    Raises:
      SamplingRequestError: num < 1; `labels` for an unconditional run, or labels of the
        wrong shape or range (a ValueError).
      UnknownSettingError: a keyword that is no field of `config.sample` (a TypeError).
    """
    samples = self.draw(num, seed, use_ema, labels, **sample_overrides)
    if samples.tokens is not None:
      tokenizer = self.experiment().spec.tokenizer
      return [tokenizer.decode(row) for row in samples.tokens]
    assert samples.images is not None   # Samples holds images or tokens
    return to_uint8(samples.images)

  def draw(self, num: int, seed: int = 0, use_ema: bool = True, labels=None,
           **sample_overrides: Any) -> Samples:
    """`num` samples as the method returns them (`Samples`, on the host), with the run's
    sampler changed by `sample_overrides` (fields of `config.sample`).

    Args:
      num: how many samples (`sample.num`).
      seed: the sampler's key, `jax.random.key(seed)`: the same seed, the same samples.
      use_ema: sample from the EMA weights (True) or the raw ones.
      labels: for a class-conditional run, the class of every sample (an int) or of each
        ([num] ints); None = the sampler's own (`sample.label`: one grid row per class, or
        one class). Different labels reuse one compiled sampler.
      **sample_overrides: fields of `config.sample`; each distinct setting compiles once.

    Returns:
      `Samples`: images in [-1, 1] [num, H, W, C] with the family's extra grids, or token
      ids [num, L]; `labels` [num] for a class-conditional run.

    Raises:
      SamplingRequestError: num < 1; `labels` for an unconditional run, or labels of the
        wrong shape or range (a ValueError).
      UnknownSettingError: a keyword that is no field of `config.sample` (a TypeError).
    """
    if isinstance(num, bool) or not isinstance(num, (int, np.integer)) or num < 1:
      raise SamplingRequestError(f"num={num!r}: the number of samples must be an int >= 1.")
    check_settings(self.config.sample, "sample", sample_overrides, taken=("num", "use_ema"))
    overrides = {f"sample.{k}": v for k, v in sample_overrides.items()}
    overrides.update({"sample.num": num, "sample.use_ema": use_ema})
    exp = self.experiment(**overrides)
    key = tuple(sorted(overrides.items()))
    rng = jax.random.key(seed)
    if labels is not None:
      labels = self._check_labels(exp, labels, num)
      key = key + (("labels", True),)
      if key not in self._sample_fns:
        self._sample_fns[key] = _labelled_sample_fn(exp, num)
      return jax.device_get(self._sample_fns[key](self.state, rng, labels))
    if key not in self._sample_fns:
      self._sample_fns[key] = make_sample_fn(exp, num)
    return jax.device_get(self._sample_fns[key](self.state, rng))

  @staticmethod
  def _check_labels(exp: Experiment, labels, num: int) -> np.ndarray:
    """`labels` (an int or [num] ints) as int32 [num], checked against the run's classes."""
    K = exp.method.num_classes
    if not K:
      raise SamplingRequestError(
          f"labels={labels!r}: this {exp.config.method!r} run is unconditional (trained "
          "without class labels); sample without labels.")
    labels = np.asarray(labels)
    if labels.ndim == 0:
      labels = np.full((num,), labels)
    if labels.shape != (num,) or not np.issubdtype(labels.dtype, np.integer):
      raise SamplingRequestError(f"labels must be an int or {num} ints (one per sample); "
                                 f"got {labels.dtype} {labels.shape}.")
    if labels.min() < 0 or labels.max() >= K:
      raise SamplingRequestError(f"labels must be classes in [0, {K}); got "
                                 f"[{labels.min()}, {labels.max()}].")
    return labels.astype(np.int32)

  def generate(self, prompt: str, max_new_tokens: int = 200, num: int = 1, seed: int = 0,
               **sample_overrides: Any) -> str | list[str]:
    """A language model's continuation of `prompt` (prompt included): a string, or a
    list of `num` strings when num > 1. `sample_overrides`: temperature, top_k, top_p.

    Raises:
      SamplingRequestError: the run is not a language model (use `sample`), or num < 1.
      UnknownSettingError: a keyword that is no field of `config.sample`.
    """
    spec = self.experiment().spec
    if spec.kind != data.TEXT:
      raise SamplingRequestError(
          f"generate() continues a text prompt; this {self.config.method!r} run draws "
          f"{spec.kind} samples: use sample(num) (or draw(num)).")
    texts = self.sample(num, seed, prompt=prompt, max_new_tokens=max_new_tokens,
                        **sample_overrides)
    if not isinstance(texts, list):
      raise TypeError("generate() continues text; this run makes images (use sample()).")
    return texts[0] if num == 1 else texts

  def encode(self, images, use_ema: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """An autoencoder run's posterior of `images` (float [N, H, W, C] in [-1, 1], or uint8
    [0, 255]): (mean, logvar), float32 latents [N, h, w, c]. Compiles once per shape.

    Raises:
      SamplingRequestError: the run's method does not encode, or images of another shape.
    """
    images = np.asarray(images)
    if np.issubdtype(images.dtype, np.integer):
      images = images.astype(np.float32) / 127.5 - 1.0
    method = self._encoder("encode")
    want = self._image_shape()
    if images.ndim != 4 or tuple(images.shape[1:]) != want:
      raise SamplingRequestError(f"encode() takes images [N, {', '.join(map(str, want))}]; "
                                 f"got {images.shape}.")
    params = self.ema_params if use_ema else self.params
    return jax.device_get(self._jitted("encode", method.encode)(params, images))

  def decode(self, latents, use_ema: bool = True) -> np.ndarray:
    """An autoencoder run's images (float32 [N, H, W, C], [-1, 1] up to the decoder's
    overshoot; `gen_jax.engine.outputs.to_uint8` makes uint8) of latents shaped as
    `encode`'s mean. Compiles once per shape.

    Raises:
      SamplingRequestError: the run's method does not decode, or latents of another shape.
    """
    method = self._encoder("decode")
    params = self.ema_params if use_ema else self.params
    latents = np.asarray(latents, np.float32)
    one_image = jax.ShapeDtypeStruct((1, *self._image_shape()), np.float32)
    want = tuple(jax.eval_shape(method.encode, params, one_image)[0].shape[1:])
    if latents.ndim != 1 + len(want) or tuple(latents.shape[1:]) != want:
      raise SamplingRequestError(f"decode() takes latents [N, {', '.join(map(str, want))}] "
                                 f"(encode()'s); got {latents.shape}.")
    return jax.device_get(self._jitted("decode", method.decode)(params, latents))

  def _image_shape(self) -> tuple[int, ...]:
    shape = self.experiment().spec.image_shape
    assert shape is not None   # an autoencoder's data are images
    return tuple(shape)

  def _encoder(self, what: str):
    method = self.experiment().method
    if not method.can_encode:
      raise SamplingRequestError(f"{what}() needs an autoencoder run; this is a "
                                 f"{self.config.method!r} run.")
    return method

  def _jitted(self, name: str, fn):
    if (name,) not in self._sample_fns:
      self._sample_fns[(name,)] = jax.jit(fn)
    return self._sample_fns[(name,)]

  def evaluate(self, **eval_overrides: Any) -> dict[str, float]:
    """The eval metrics of `--mode=eval` (eval_step over the split, and the family's own
    dataset evaluation when configured), computed in memory; `eval_overrides` are fields
    of `config.eval` (e.g. `num_batches=0` for the whole split)."""
    check_settings(self.config.eval, "eval", eval_overrides)
    exp = self.experiment(**{f"eval.{k}": v for k, v in eval_overrides.items()})
    metrics = evaluate_state(exp, self.state)
    if (family_evaluation := exp.method.dataset_evaluation()) is not None:
      metrics.update(run_dataset_evaluation(exp, self.state, family_evaluation)[0])
    return metrics


def _labelled_sample_fn(exp: Experiment, num: int):
  """(state, rng, labels [num]) -> `Samples` for those classes: `method.sample(labels=...)`
  jitted once (the labels are an argument, not a constant), replicated over the mesh."""
  cfg = exp.config.sample
  batch = fixed_sample_batch(exp, num) if exp.method.sample_uses_batch else None
  sample = jax.jit(lambda state, rng, labels, batch: exp.method.sample(
      state, rng, num, cfg.use_ema, batch=batch, labels=labels), out_shardings=exp.replicated)
  return lambda state, rng, labels: sample(state, rng, labels, batch)


def load_run(workdir: str | epath.Path, step: int | None = None) -> TrainedRun:
  """Restores the newest (or the given) checkpoint of the run in `workdir`, with the
  config it was trained with, onto the current devices. `workdir` may also be an export
  (`--mode=export`'s `export/step_<N>/` folder): its EMA weights, config and step.

  Raises:
    FileNotFoundError: no config.json or no checkpoint there.
  """
  workdir = epath.Path(workdir)
  config = workdir_lib.load_saved_config(workdir)
  if config is None:
    raise FileNotFoundError(f"No {workdir_lib.CONFIG} in {workdir}: not a gen_jax run.")
  exp = build_experiment(config)
  if export_lib.is_export(workdir):
    state, step = export_lib.load_export(exp, workdir)
    return TrainedRun(workdir=workdir, config=config, step=step, state=state,
                      _experiments={repr([]): exp})
  state, step = ckpt_lib.load_checkpoint(exp, workdir, step)
  return TrainedRun(workdir=workdir, config=config, step=step, state=state,
                    _experiments={repr([]): exp})
