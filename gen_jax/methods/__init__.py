"""Generative families. `build_method(config, spec)` picks one by `config.method`."""
from __future__ import annotations

import importlib

import ml_collections

from gen_jax.methods.base import Method

# config.method -> "module:class"; each class has `from_config(config, spec)`,
# spec: the gen_jax.data.DataSpec of config.data (image shape, or tokenizer and seq_len).
METHODS = {
    "autoregressive": "gen_jax.methods.autoregressive:AutoregressiveMethod",
    "classifier": "gen_jax.methods.classifier:ClassifierMethod",
    "diffusion": "gen_jax.methods.diffusion:DiffusionMethod",
    "gan": "gen_jax.methods.gan:GANMethod",
    "vae": "gen_jax.methods.vae:VAEMethod",
}


def build_method(config: ml_collections.ConfigDict, spec) -> Method:
  """Returns the method named by `config.method`, built for data described by `spec`."""
  if config.method not in METHODS:
    raise ValueError(f"config.method={config.method!r} is not a known method; "
                     f"expected one of {sorted(METHODS)}.")
  module, cls = METHODS[config.method].split(":")
  return getattr(importlib.import_module(module), cls).from_config(config, spec)
