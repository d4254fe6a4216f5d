"""Generative families. `build_method(config, spec)` picks one by `config.method`."""
from __future__ import annotations

import importlib

import ml_collections

from gen_jax.core.errors import ConfigError, UserError
from gen_jax.data import DataSpec
from gen_jax.methods.base import Method
from gen_jax.methods.latents import LatentImages, load_decoder

# config.method -> "module:class"; each class has `from_config(config, spec)`,
# spec: the gen_jax.data.DataSpec of config.data (image shape, or tokenizer and seq_len).
METHODS = {
    "autoencoder": "gen_jax.methods.autoencoder:AutoencoderMethod",
    "autoregressive": "gen_jax.methods.autoregressive:AutoregressiveMethod",
    "classifier": "gen_jax.methods.classifier:ClassifierMethod",
    "diffusion": "gen_jax.methods.diffusion.method:DiffusionMethod",
    "gan": "gen_jax.methods.gan:GANMethod",
    "vae": "gen_jax.methods.vae:VAEMethod",
}


def build_method(config: ml_collections.ConfigDict, spec) -> Method:
  """Returns the method named by `config.method`, built for data described by `spec`; on a
  latents dataset (`spec.latents`), wrapped so that its samples are decoded to images
  (`LatentImages`).

  Raises:
    ConfigError: an unknown `config.method`, or a field the family's `from_config` rejects
      (a family raises ValueError for those; they are the config's fault, so they reach the
      user as one line).
  """
  if config.method not in METHODS:
    raise ConfigError(f"config.method={config.method!r} is not a known method; "
                      f"expected one of {sorted(METHODS)}.")
  module, cls = METHODS[config.method].split(":")
  family = getattr(importlib.import_module(module), cls)
  try:
    method = family.from_config(config, spec)
  except ValueError as e:
    if isinstance(e, UserError):
      raise
    raise ConfigError(str(e)) from e
  if not isinstance(spec, DataSpec) or spec.latents is None:   # tests pass (H, W, C) too
    return method
  return LatentImages.wrap(method, load_decoder(spec.latents))
