"""`--mode=latents`: encode a dataset's splits once with a trained autoencoder (or Stable
Diffusion's VAE) into a latents folder (gen_jax/data/latents.py) that any image family then
trains on (`data.dataset='latents'`, `data.latents_dir=<folder>`).

  python launch.py --workdir=runs/autoencoder --mode=latents   # -> <workdir>/latents/<dataset>

Per example the folder keeps the posterior q(z|x) = N(mean, diag(std^2)) and the label, so
the loader draws a fresh z every epoch. The scaling factor s is `latents.scaling_factor` when
set (Stable Diffusion's 0.18215), else 1 / std of the train split's z (the LDM recipe, §4.3.2
and App. D.1: "rescale the latent space ... by the component-wise standard deviation"), with
the std over all elements of z ~ q(z|x), computed exactly from the posteriors:
Var z = E[mean^2 + std^2] - E[mean]^2.

Resumable: each shard of `shard_size` examples is written atomically (a temporary file, then
a rename); a rerun skips the shards already whole and rewrites the rest, never appending to
a partial one. `latents.json` is written last: a folder without it is unfinished.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from gen_jax.core.errors import ConfigError
from gen_jax.data import latents as latents_data
from gen_jax.methods.base import MethodMode, ModeContext
from gen_jax.methods.latents import write_decoder

SETTINGS = "extraction.json"   # what the shards in a folder were made with

# x [B, H, W, C] in [-1, 1] -> (mean, std) [B, h, w, c], on the host.
EncodeFn = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]


@dataclasses.dataclass
class Moments:
  """Sums over every element of a split's posteriors, for the std of z."""
  count: int = 0
  mean: float = 0.0       # sum of mean
  square: float = 0.0     # sum of mean^2 + std^2 (= the sum of E[z^2])

  def add(self, mean: np.ndarray, std: np.ndarray) -> None:
    m, s = mean.astype(np.float64), std.astype(np.float64)
    self.count += m.size
    self.mean += float(m.sum())
    self.square += float((m * m + s * s).sum())

  def std(self) -> float:
    mu = self.mean / self.count
    return math.sqrt(max(self.square / self.count - mu * mu, 0.0))


def encode_range(encode: EncodeFn, images: latents_data.SplitImages, start: int, stop: int,
                 batch_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """(mean, std, labels) of examples start ... stop - 1, `batch_size` at a time (the last
  batch padded with repeats of its first image, so one compiled shape serves every batch)."""
  means, stds, labels = [], [], []
  for first in range(start, stop, batch_size):
    last = min(stop, first + batch_size)
    x, y = images.read(first, last)
    pad = batch_size - len(x)
    if pad:
      x = np.concatenate([x, np.repeat(x[:1], pad, axis=0)])
    mean, std = encode(x)
    means.append(np.asarray(mean)[:last - first])
    stds.append(np.asarray(std)[:last - first])
    labels.append(y)
  return np.concatenate(means), np.concatenate(stds), np.concatenate(labels)


def extract_split(encode: EncodeFn, images: latents_data.SplitImages, folder: str, split: str,
                  *, latent_shape: tuple[int, int, int], shard_size: int, batch_size: int,
                  max_new_shards: int | None = None
                  ) -> tuple[dict[str, Any] | None, Moments, int]:
  """Writes the shards of one split that are not already whole.

  Args:
    max_new_shards: stop before writing more than this many (None: all); what an
      interruption leaves.

  Returns:
    (the split's `latents.json` entry, None when stopped early; the moments of its
    posteriors; the number of shards written).
  """
  n = images.num_records
  count = max(1, math.ceil(n / shard_size))
  shards, moments, written = [], Moments(), 0
  for i in range(count):
    start, stop = i * shard_size, min(n, (i + 1) * shard_size)
    path = os.path.join(folder, latents_data.shard_name(split, i, count))
    if latents_data.shard_records(path) == stop - start:   # finished before: keep it
      mean, std, _ = latents_data.read_shard(path, latent_shape)
    else:
      if max_new_shards is not None and written >= max_new_shards:
        return None, moments, written
      mean, std, labels = encode_range(encode, images, start, stop, batch_size)
      latents_data.write_shard(path, mean, std, labels)
      written += 1
    moments.add(mean, std)
    shards.append([os.path.basename(path), stop - start])
  return {"num_examples": n, "shards": shards}, moments, written


def _check_settings(folder: str, settings: dict[str, Any]) -> None:
  """Records the settings of a new folder; refuses a folder made with others.

  Raises:
    ConfigError: the folder's shards were made with other settings.
  """
  path = os.path.join(folder, SETTINGS)
  if os.path.exists(path):
    with open(path) as f:
      saved = json.load(f)
    if saved != settings:
      differ = sorted(k for k in set(saved) | set(settings) if saved.get(k) != settings.get(k))
      raise ConfigError(f"{folder} holds latents extracted with other settings "
                        f"({', '.join(differ)} differ); delete it or set latents.output_dir "
                        "to another folder.")
    return
  latents_data.write_json_atomic(path, settings)


def extract_latents(encode: EncodeFn, data_config: ml_collections.ConfigDict, folder: str, *,
                    splits: tuple[str, ...], shard_size: int, batch_size: int,
                    scaling_factor: float, latent_shape: tuple[int, int, int],
                    decoder_fields: Mapping[str, Any], decoder_params: Mapping[str, Any],
                    provenance: Mapping[str, Any], max_new_shards: int | None = None
                    ) -> dict[str, Any]:
  """Encodes `splits` of `data_config`'s dataset into `folder` (module docstring).

  Args:
    encode: x -> (mean, std) on the host.
    scaling_factor: s; 0 = 1 / std of the first split's z (list "train" first).
    latent_shape: (h, w, c) that `encode` gives.
    decoder_fields, decoder_params: the AutoencoderKL's fields and params (its decoder's
      are saved).
    provenance: where the autoencoder came from (run and step, or weights file).
    max_new_shards: stop after this many new shards (an interruption, for tests).

  Returns:
    {"folder", "complete", "scaling_factor", "splits": {split: examples}, "latent_shape"}.
  """
  if shard_size < 1 or batch_size < 1 or not splits:
    raise ConfigError(f"latents.shard_size={shard_size} and latents.batch_size={batch_size} "
                      f"must be >= 1, latents.splits={splits} not empty.")
  os.makedirs(folder, exist_ok=True)
  sources = {split: latents_data.SplitImages(data_config, split) for split in splits}
  image_shape = next(iter(sources.values())).image_shape
  source = latents_data.source_fields(data_config, image_shape)
  _check_settings(folder, {"source": source, "shard_size": shard_size,
                           "latent_shape": list(latent_shape), "autoencoder": dict(provenance)})
  entries, first_moments, left = {}, None, max_new_shards
  for split, images in sources.items():
    entry, moments, written = extract_split(
        encode, images, folder, split, latent_shape=latent_shape, shard_size=shard_size,
        batch_size=batch_size, max_new_shards=left)
    if entry is None:
      return {"folder": folder, "complete": False, "splits": {},
              "latent_shape": list(latent_shape), "scaling_factor": 0.0}
    left = None if left is None else left - written
    entries[split] = entry
    first_moments = first_moments or moments
  assert first_moments is not None
  scale = float(scaling_factor) if scaling_factor > 0 else 1.0 / first_moments.std()
  write_decoder(folder, decoder_fields, decoder_params, provenance)
  latents_data.write_json_atomic(
      os.path.join(folder, latents_data.METADATA),
      latents_data.metadata(latent_shape=latent_shape, scaling_factor=scale, source=source,
                            splits=entries))
  return {"folder": folder, "complete": True, "scaling_factor": scale,
          "latent_shape": list(latent_shape),
          "splits": {k: v["num_examples"] for k, v in entries.items()}}


def format_report(result: dict[str, Any]) -> str:
  if not result["complete"]:
    return f"Latents: stopped early; rerun to finish {result['folder']}."
  splits = ", ".join(f"{k}: {v}" for k, v in result["splits"].items())
  return (f"Latents {tuple(result['latent_shape'])} of {splits} examples, scaling factor "
          f"{result['scaling_factor']:.6g}, in {result['folder']}\n"
          f"Train on them: --config.data.dataset=latents "
          f"--config.data.latents_dir={result['folder']}")


def latents_mode(encode_params: Callable[[Any, Any], tuple[Any, Any]],
                 params_and_provenance: Callable[[ModeContext], tuple[Any, dict[str, Any]]],
                 decoder_fields: Mapping[str, Any],
                 latent_shape: Callable[[tuple[int, int, int]], tuple[int, int, int]]
                 ) -> MethodMode:
  """The `--mode=latents` an autoencoder family offers (`Method.modes`).

  Args:
    encode_params: (params, x) -> (mean, logvar), traceable.
    params_and_provenance: the context -> (the autoencoder's params, where they came from).
    decoder_fields: the AutoencoderKL's fields.
    latent_shape: image shape (H, W, C) -> latent shape (h, w, c).
  """
  def run(ctx: ModeContext, cfg: ml_collections.ConfigDict) -> dict[str, Any]:
    if jax.process_count() > 1:
      raise ConfigError("--mode=latents runs in one process (it writes the shards itself); "
                        "run it without jax.distributed (one host encodes all splits).")
    data_config = ml_collections.ConfigDict(ctx.config.data.to_dict())
    if cfg.dataset:
      data_config.dataset = cfg.dataset
    folder = cfg.output_dir or os.path.join(ctx.workdir, "latents", data_config.dataset)
    params, provenance = params_and_provenance(ctx)
    encode = host_encoder(encode_params, params, ctx.jit)
    splits = tuple(cfg.splits)
    shape = latents_data.SplitImages(data_config, splits[0]).image_shape
    return extract_latents(encode, data_config, folder, splits=splits,
                           shard_size=cfg.shard_size, batch_size=cfg.batch_size,
                           scaling_factor=cfg.scaling_factor, latent_shape=latent_shape(shape),
                           decoder_fields=decoder_fields, decoder_params=params,
                           provenance=provenance)

  return MethodMode(
      help="encode the dataset's splits into a latents folder (data.dataset='latents'): "
           "posterior mean/std and labels in array_record shards, the decoder beside them",
      config_group="latents", run=run, report=format_report)


def host_encoder(encode_params: Callable[[Any, Any], tuple[Any, Any]], params: Any,
                 jit: Callable[[Callable], Callable] = jax.jit) -> EncodeFn:
  """x -> (mean, std) on the host: `encode_params(params, x)`'s (mean, logvar) compiled by
  `jit`, with std = exp(logvar / 2) computed on the device."""
  moments = jit(lambda p, x: _mean_and_std(*encode_params(p, x)))

  def encode(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mean, std = moments(params, x)
    return np.asarray(mean), np.asarray(std)

  return encode


def _mean_and_std(mean, logvar):
  """q(z|x)'s (mean, std) from (mean, log variance)."""
  return mean, jnp.exp(0.5 * logvar)
