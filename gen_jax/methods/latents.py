"""Latent diffusion's decoding side (Rombach et al. 2022, §3-4): a family trained on a latents
dataset (gen_jax/data/latents.py) samples latents z; its samples are the images

    x = D(z / s)     clipped to [-1, 1]

of the decoder D recorded beside the latents (`decoder.safetensors`, `autoencoder_config.json`)
and the latents' scaling factor s. `build_method` wraps such a family in `LatentImages`, so
`--mode=sample`, the sample grids of training, the sample-quality metrics of `--mode=eval`
and `gen_jax.load_run(workdir).sample(...)` all see images of the source dataset's shape.

    decoder = load_decoder(spec.latents)          # LatentDecoder: decode(z) -> images
    write_decoder(folder, model_fields, params)   # what --mode=latents saves (latents_mode.py)
"""
from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from gen_jax.core.state import TrainState
from gen_jax.data import latents as latents_data
from gen_jax.data.errors import DamagedDatasetError
from gen_jax.interop.safetensors_file import safetensors_numpy
from gen_jax.methods.base import Method, MethodMode, Samples
from gen_jax.models.autoencoder_kl import AutoencoderKL

# The params of AutoencoderKL that `decode` uses.
DECODER_PARAMS = ("decoder", "post_quant_conv")


def _flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, np.ndarray]:
  flat = {}
  for key, value in tree.items():
    name = f"{prefix}{key}"
    if isinstance(value, Mapping):
      flat.update(_flatten(value, f"{name}/"))
    else:
      flat[name] = np.asarray(value, np.float32)
  return flat


def _unflatten(flat: Mapping[str, np.ndarray]) -> dict[str, Any]:
  tree: dict[str, Any] = {}
  for name, value in flat.items():
    *parents, leaf = name.split("/")
    node = tree
    for part in parents:
      node = node.setdefault(part, {})
    node[leaf] = value
  return tree


def model_fields(model: AutoencoderKL) -> dict[str, Any]:
  """The AutoencoderKL's architecture fields (JSON-ready; the compute dtype is not kept)."""
  return {"in_channels": model.in_channels, "out_channels": model.out_channels,
          "block_out_channels": [int(w) for w in model.block_out_channels],
          "layers_per_block": model.layers_per_block, "latent_channels": model.latent_channels,
          "norm_num_groups": model.norm_num_groups, "scaling_factor": model.scaling_factor,
          "use_quant_conv": model.use_quant_conv,
          "use_post_quant_conv": model.use_post_quant_conv,
          "mid_block_add_attention": model.mid_block_add_attention}


def write_decoder(folder: str, fields: Mapping[str, Any], params: Mapping[str, Any],
                  provenance: Mapping[str, Any]) -> None:
  """Writes the decoder's config (`fields`, with where it came from) and its weights (the
  `DECODER_PARAMS` of `params`) into `folder`, each atomically."""
  weights = _flatten({k: params[k] for k in DECODER_PARAMS if k in params})
  path = os.path.join(folder, latents_data.DECODER_WEIGHTS)
  safetensors_numpy().save_file(weights, f"{path}.tmp", metadata={"format": "gen_jax_decoder"})
  os.chmod(f"{path}.tmp", 0o644)   # as the shards: readable by whoever trains on them
  os.replace(f"{path}.tmp", path)
  latents_data.write_json_atomic(os.path.join(folder, latents_data.DECODER_CONFIG),
                                 {"autoencoder_kl": dict(fields),
                                  "provenance": dict(provenance)})


@dataclasses.dataclass(frozen=True, eq=False)
class LatentDecoder:
  """D(z / s) of a latents folder: `decode(z [B, h, w, c]) -> images [B, H, W, C] in [-1, 1]`.

  Attributes:
    model: the AutoencoderKL (only its `decode` is used).
    params: its decoder's params (on device).
    scaling_factor: s.
  """
  model: AutoencoderKL
  params: Any
  scaling_factor: float

  def decode(self, z_Bxhxwxc: jax.Array) -> jax.Array:
    x = self.model.apply({"params": self.params}, z_Bxhxwxc / self.scaling_factor,
                         method=AutoencoderKL.decode)
    return jnp.clip(jnp.asarray(x, jnp.float32), -1.0, 1.0)


def load_decoder(info: latents_data.LatentsInfo) -> LatentDecoder:
  """The decoder recorded in a latents folder.

  Raises:
    DamagedDatasetError: its config or weights cannot be read, or do not fit each other.
  """
  try:
    with open(info.decoder_config) as f:
      fields = json.load(f)["autoencoder_kl"]
    model = AutoencoderKL(**{**fields, "block_out_channels": tuple(fields["block_out_channels"])})
    params = _unflatten(safetensors_numpy().load_file(info.decoder_weights))
    f = model.downsampling_factor
    h, w, c = info.latent_shape
    expected = (h * f, w * f, model.out_channels)
    if c != model.latent_channels or expected != info.image_shape:
      raise ValueError(f"the decoder maps latents of {c} channels to images of shape "
                       f"{expected}, the folder holds latents {info.latent_shape} of images "
                       f"{info.image_shape}")
    abstract = jax.eval_shape(
        lambda: model.init(jax.random.key(0), jnp.zeros((1, h, w, c)),
                           method=AutoencoderKL.decode)["params"])
    if jax.tree.structure(abstract) != jax.tree.structure(params) or any(
        a.shape != b.shape for a, b in zip(jax.tree.leaves(abstract), jax.tree.leaves(params),
                                           strict=True)):
      raise ValueError("its weights do not fit its config")
  except (OSError, KeyError, TypeError, ValueError) as err:
    raise DamagedDatasetError(f"The decoder of the latents in {info.folder} cannot be used "
                              f"({err}); extract the latents again.") from None
  return LatentDecoder(model=model, params=jax.tree.map(jnp.asarray, params),
                       scaling_factor=info.scaling_factor)


@dataclasses.dataclass(frozen=True, eq=False)
class LatentImages(Method):
  """A family trained on latents (`inner`), whose samples are decoded to images.

  Everything but sampling is the inner family's: it trains and evaluates on latents (the
  batches' "image" is z). `sample` decodes the inner samples and any extra grids. The
  family's own modes (inpainting, reflow) work on pixels or on the data's own files and are
  not offered on latents.
  """
  inner: Method
  decoder: LatentDecoder
  can_sample: bool = True
  sample_uses_batch: bool = False
  grad_accum_steps: int = 1
  num_classes: int = 0
  sample_label: int = -1

  @classmethod
  def wrap(cls, inner: Method, decoder: LatentDecoder) -> LatentImages:
    return cls(inner=inner, decoder=decoder, can_sample=inner.can_sample,
               sample_uses_batch=inner.sample_uses_batch,
               grad_accum_steps=inner.grad_accum_steps, num_classes=inner.num_classes,
               sample_label=inner.sample_label)

  def init(self, rng, batch) -> TrainState:
    return self.inner.init(rng, batch)

  def train_step(self, state, batch, rng):
    return self.inner.train_step(state, batch, rng)

  def eval_step(self, state, batch, rng):
    return self.inner.eval_step(state, batch, rng)

  def sample(self, state, rng, num, use_ema=True, batch=None, labels=None) -> Samples:
    """The inner family's latents, decoded: images [num, H, W, C] in [-1, 1]."""
    latent = self.inner.sample(state, rng, num, use_ema, batch=batch, labels=labels)
    if latent.images is None:
      raise ValueError("a family trained on latents must sample images (latents).")
    return Samples(images=self.decoder.decode(latent.images), labels=latent.labels,
                   grids={k: self.decoder.decode(v) for k, v in latent.grids.items()})

  def sample_labels(self, num):
    return self.inner.sample_labels(num)

  @property
  def sample_tag(self) -> str:
    return self.inner.sample_tag

  def summarize_eval(self, metrics):
    return self.inner.summarize_eval(metrics)

  def dataset_evaluation(self):
    return self.inner.dataset_evaluation()

  def tensor_parallel_dims(self, abstract_params):
    return self.inner.tensor_parallel_dims(abstract_params)

  def modes(self) -> dict[str, MethodMode]:
    return {}

  def init_from_formats(self) -> tuple[str, ...]:
    return self.inner.init_from_formats()

  def export_formats(self) -> tuple[str, ...]:
    return self.inner.export_formats()

  def load_foreign_params(self, init_from: str, abstract_params):
    return self.inner.load_foreign_params(init_from, abstract_params)

  def export_foreign(self, export_format: str, params, step: int):
    return self.inner.export_foreign(export_format, params, step)

  def without_grad_accumulation(self) -> Method:
    if self.grad_accum_steps == 1:
      return self
    return dataclasses.replace(self, inner=self.inner.without_grad_accumulation(),
                               grad_accum_steps=1)
