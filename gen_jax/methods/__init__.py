"""Generative families. `build_method(config, image_shape)` picks one by `config.method`."""
from __future__ import annotations

import ml_collections

from gen_jax.methods.base import Method


def build_method(config: ml_collections.ConfigDict, image_shape: tuple[int, int, int]) -> Method:
  """Returns the method named by `config.method`, built for data of `image_shape`."""
  if config.method == "diffusion":
    from gen_jax.methods import diffusion
    return diffusion.DiffusionMethod.from_config(config, image_shape)
  raise ValueError(f"config.method={config.method!r} is not a known method; "
                   "expected one of: 'diffusion'.")
