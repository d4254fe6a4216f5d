"""Stable Diffusion's VAE from a diffusers file: `init_from='diffusers_vae:<path>'`, or
`load_autoencoder(path)` for the model and its params; and an autoencoder trained here out
as one (`--mode=export --config.export.format=diffusers_vae`) (docs/interop.md).

A diffusers `AutoencoderKL` folder (e.g. stabilityai/sd-vae-ft-mse or sd-vae-ft-ema) holds
`diffusion_pytorch_model.safetensors` and `config.json`. gen_jax reads the safetensors file
only (raw tensors and a JSON header: loading one runs no code); a pickled `.bin`/`.ckpt` is
refused. gen_jax/models/autoencoder_kl.py names its modules as diffusers does, so a tensor's
name is its params path with `.<digit>` joined by `_` (`down_blocks.0.resnets.1.conv1` ->
`down_blocks_0/resnets_1/conv1`); `weight` becomes a conv's `kernel` (OIHW -> HWIO), a
linear's `kernel` ((out, in) -> (in, out)) or a GroupNorm's `scale`.

Attention names: diffusers files written before its attention refactor call the mid-block
attention's projections `query`, `key`, `value`, `proj_attn`; newer ones `to_q`, `to_k`,
`to_v`, `to_out.0`. Both are read, and 1x1-conv projection weights [C, C, 1, 1] (ldm's
original checkpoints converted name by name) are read as the linear they are. ldm's own
names (`encoder.down.0.block.0...`) are not: convert such a checkpoint with diffusers first.
"""
from __future__ import annotations

import json
import re
from typing import Any

import jax
import numpy as np
from etils import epath

from gen_jax.interop import ForeignWeightsError, safetensors_file
from gen_jax.interop.safetensors_file import safetensors_numpy
from gen_jax.models.autoencoder_kl import AutoencoderKL

PREFIX = "diffusers_vae:"   # init_from='diffusers_vae:/path/to/folder' (or its .safetensors)
WEIGHTS, CONFIG = "diffusion_pytorch_model.safetensors", "config.json"
CONVERT_HINT = ("convert it once, where torch and diffusers are installed: "
                "AutoencoderKL.from_pretrained('<folder>').save_pretrained('<new folder>', "
                f"safe_serialization=True), which writes <new folder>/{WEIGHTS}")
# Pre-refactor diffusers names of the mid-block attention's projections.
OLD_ATTENTION_NAMES = {"query": "to_q", "key": "to_k", "value": "to_v", "proj_attn": "to_out_0"}
# config.json field -> the AutoencoderKL field (and gen_jax config field) it sets.
SHAPE_FIELDS = ("in_channels", "out_channels", "block_out_channels", "layers_per_block",
                "latent_channels", "norm_num_groups", "use_quant_conv", "use_post_quant_conv",
                "mid_block_add_attention")


def weights_path(spec: str) -> epath.Path:
  """The safetensors file of `[diffusers_vae:]<file or folder>` (a folder: its `WEIGHTS`;
  `safetensors_file.weights_path` says what is refused)."""
  return safetensors_file.weights_path(spec, prefix=PREFIX, weights=WEIGHTS,
                                       what="the VAE", convert_hint=CONVERT_HINT)


def read(spec: str) -> tuple[dict[str, np.ndarray], dict[str, Any] | None]:
  """(the file's tensors by diffusers name, the config.json beside it or None)."""
  path = weights_path(spec)
  try:
    tensors = safetensors_numpy().load_file(str(path))
  except Exception as e:   # safetensors' own error type for a damaged or foreign file
    raise ForeignWeightsError(f"{spec}: {path} is not a readable safetensors file: {e}") from e
  config_path = path.parent / CONFIG
  if not config_path.exists():
    return tensors, None
  try:
    config = json.loads(config_path.read_text())
    if not isinstance(config, dict):
      raise ValueError(f"a JSON {type(config).__name__}, not an object")
  except (ValueError, UnicodeDecodeError) as e:
    raise ForeignWeightsError(f"{spec}: {config_path} is not a diffusers config ({e}).") from None
  return tensors, config


def params_path(name: str) -> tuple[str, ...]:
  """A diffusers tensor name -> the params path: 'encoder.down_blocks.0.resnets.1.conv1.weight'
  -> ('encoder', 'down_blocks_0', 'resnets_1', 'conv1', 'weight') (the leaf renamed by
  `convert_tensor`); old attention names become today's."""
  path: list[str] = []
  for part in name.split("."):
    if part.isdigit() and path:
      path[-1] = f"{path[-1]}_{part}"
    elif path and path[-1].startswith("attentions_") and part in OLD_ATTENTION_NAMES:
      path.append(OLD_ATTENTION_NAMES[part])
    else:
      path.append(part)
  return tuple(path)


def convert_tensor(path: tuple[str, ...], value: np.ndarray) -> tuple[tuple[str, ...], np.ndarray]:
  """(params path, array) of one tensor: conv weights OIHW -> HWIO `kernel`, linear (out, in)
  -> (in, out) `kernel` (a 1x1-conv attention projection counts as linear), GroupNorm
  `weight` -> `scale`; biases as they are."""
  module, leaf = path[:-1], path[-1]
  if leaf == "bias":
    return path, value
  if leaf != "weight":
    raise ValueError(f"unexpected tensor {'.'.join(path)} (neither a weight nor a bias)")
  in_attention = len(module) >= 2 and module[-2].startswith("attentions_")
  if value.ndim == 1:   # GroupNorm
    return (*module, "scale"), value
  if value.ndim == 4 and in_attention and value.shape[2:] == (1, 1):
    value = value[:, :, 0, 0]
  if value.ndim == 2:
    return (*module, "kernel"), value.T
  if value.ndim == 4:
    return (*module, "kernel"), value.transpose(2, 3, 1, 0)
  raise ValueError(f"unexpected {value.ndim}-D weight {'.'.join(path)} {value.shape}")


def convert(tensors: dict[str, np.ndarray]) -> dict[str, Any]:
  """A diffusers AutoencoderKL state dict -> a nested params dict of `AutoencoderKL`."""
  params: dict[str, Any] = {}
  for name, value in tensors.items():
    path, array = convert_tensor(params_path(name), np.asarray(value))
    node = params
    for key in path[:-1]:
      node = node.setdefault(key, {})
    node[path[-1]] = array
  return params


def model_kwargs(config: dict[str, Any]) -> dict[str, Any]:
  """`AutoencoderKL` fields from a diffusers config.json (SD's values where it says nothing).

  Raises:
    ForeignWeightsError: a block type or activation this model does not have.
  """
  blocks = set(config.get("down_block_types", ["DownEncoderBlock2D"])) | set(
      config.get("up_block_types", ["UpDecoderBlock2D"]))
  unsupported = blocks - {"DownEncoderBlock2D", "UpDecoderBlock2D"}
  if unsupported or config.get("act_fn", "silu") != "silu":
    raise ForeignWeightsError(
        f"config.json: block types {sorted(unsupported)} / act_fn={config.get('act_fn')!r}; "
        "gen_jax's AutoencoderKL has DownEncoderBlock2D / UpDecoderBlock2D with SiLU only.")
  defaults = AutoencoderKL()
  kwargs = {f: config.get(f, getattr(defaults, f)) for f in SHAPE_FIELDS}
  kwargs["block_out_channels"] = tuple(kwargs["block_out_channels"])
  kwargs["scaling_factor"] = float(config.get("scaling_factor", defaults.scaling_factor))
  return kwargs


def check_config(spec: str, config: dict[str, Any] | None, model: AutoencoderKL) -> None:
  """Raises ForeignWeightsError naming each `model.<field>` the file's config.json contradicts
  (norm_num_groups, for one, is not visible in the tensors' shapes)."""
  if config is None:
    return
  theirs = model_kwargs(config)
  differ = [f"model.{f}: the config has {getattr(model, f)!r}, the file {theirs[f]!r}"
            for f in SHAPE_FIELDS
            if (tuple(getattr(model, f)) if f == "block_out_channels" else getattr(model, f))
            != theirs[f]]
  if differ:
    raise ForeignWeightsError(f"{spec} does not fit the config: " + "; ".join(differ)
                              + ". Set these fields to the file's values.")


def _keys(tree: Any) -> dict[str, Any]:
  return {jax.tree_util.keystr(p, simple=True, separator="/"): leaf
          for p, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def load_params(spec: str, model: AutoencoderKL, abstract_params: Any) -> Any:
  """`model`'s params from a diffusers AutoencoderKL safetensors file: host arrays with the
  structure and dtypes of `abstract_params` (the model's `init` under `jax.eval_shape`).

  Raises:
    ForeignWeightsError (a ValueError): pickled or unreadable file, a config.json that
      contradicts `model`, a tensor missing or left over, or a shape that differs.
    ForeignWeightsNotFoundError (a FileNotFoundError): no file there.
  """
  tensors, config = read(spec)
  return _fitted_params(spec, tensors, config, model, abstract_params)


def _fitted_params(spec: str, tensors: dict[str, np.ndarray], config: dict[str, Any] | None,
                   model: AutoencoderKL, abstract_params: Any) -> Any:
  """`load_params` on tensors already read."""
  check_config(spec, config, model)
  try:
    found = _keys(convert(tensors))
  except ValueError as e:
    raise ForeignWeightsError(f"{spec}: {e}") from None
  wanted = _keys(abstract_params)
  missing, extra = sorted(set(wanted) - set(found)), sorted(set(found) - set(wanted))
  wrong = [f"{k} is {found[k].shape} in the file and {tuple(wanted[k].shape)} in the model"
           for k in sorted(set(wanted) & set(found)) if found[k].shape != tuple(wanted[k].shape)]
  problems = ([f"missing from the file: {', '.join(missing[:5])}"
               + (f" (and {len(missing) - 5} more)" if len(missing) > 5 else "")] * bool(missing)
              + [f"not in the model: {', '.join(extra[:5])}"
                 + (f" (and {len(extra) - 5} more)" if len(extra) > 5 else "")] * bool(extra)
              + wrong[:5])
  if problems:
    raise ForeignWeightsError(
        f"{spec} does not fit the model (params paths; diffusers names have '.' for '/' and "
        f"'.N' for '_N'): {'; '.join(problems)}. Use a config whose model makes these "
        "shapes (block_out_channels, layers_per_block, latent_channels, ...), or a "
        "diffusers AutoencoderKL file.")
  flat = [np.asarray(found[k], wanted[k].dtype) for k in _keys(abstract_params)]
  return jax.tree.unflatten(jax.tree.structure(abstract_params), flat)


def load_autoencoder(path: str, dtype: Any = np.float32) -> tuple[AutoencoderKL, Any]:
  """(the AutoencoderKL its config.json describes, its params) of a diffusers VAE folder or
  file, e.g. `load_autoencoder('sd-vae-ft-mse')`; without a config.json, Stable Diffusion's
  config. Params are host float32 arrays: `model.apply({'params': params}, x,
  method=model.encode)`.

  Raises:
    ForeignWeightsError, ForeignWeightsNotFoundError: as `load_params`.
  """
  tensors, config = read(path)
  model = AutoencoderKL(**model_kwargs(config or {}), dtype=dtype)
  side = 2 * model.downsampling_factor
  abstract = jax.eval_shape(lambda: model.init(
      jax.random.key(0), np.zeros((1, side, side, model.in_channels), np.float32)))["params"]
  return model, _fitted_params(path, tensors, config, model, abstract)


def to_diffusers(params: Any) -> dict[str, np.ndarray]:
  """`convert`'s inverse: AutoencoderKL params (host arrays) -> a diffusers state dict, with
  today's attention names (`to_q`, ..., `to_out.0`)."""
  tensors = {}
  for path, value in _keys(params).items():
    *module, leaf = [re.sub(r"_(\d+)$", r".\1", part) for part in path.split("/")]
    value = np.asarray(value, np.float32)
    if leaf == "kernel":
      value = value.transpose(3, 2, 0, 1) if value.ndim == 4 else value.T
    tensors[".".join([*module, "bias" if leaf == "bias" else "weight"])] = (
        np.ascontiguousarray(value))
  return tensors


def export_files(params: Any, model: AutoencoderKL, image_size: int, step: int
                 ) -> tuple[dict[str, np.ndarray], dict[str, str], dict[str, Any]]:
  """The files of a folder diffusers' `AutoencoderKL.from_pretrained` loads, for `params`
  (host arrays) of checkpoint `step`: (the tensors of `WEIGHTS`, its metadata, config.json)."""
  levels = len(model.block_out_channels)
  config = {"_class_name": "AutoencoderKL", "act_fn": "silu",
            "down_block_types": ["DownEncoderBlock2D"] * levels,
            "up_block_types": ["UpDecoderBlock2D"] * levels, "sample_size": image_size,
            **{f: getattr(model, f) for f in SHAPE_FIELDS}, "scaling_factor": model.scaling_factor}
  config["block_out_channels"] = list(model.block_out_channels)
  # diffusers reads a safetensors file only with metadata format 'pt'.
  metadata = {"format": "pt", "step": str(step),
              "exported_by": "gen_jax --mode=export (diffusers_vae)"}
  return to_diffusers(params), metadata, config
