"""The authors' DiT weights (facebookresearch/DiT `models.py` state dict) as gen_jax's `DiT`
params (gen_jax/models/dit.py).

The released checkpoints (DiT-XL-2-256x256.pt, ...) are pickled PyTorch state dicts; gen_jax
does not unpickle (that can run code). Convert one once where torch is installed, e.g.

  sd = torch.load("DiT-XL-2-256x256.pt", map_location="cpu")
  safetensors.torch.save_file({k: v.contiguous() for k, v in sd.items()}, "dit_xl_2.safetensors")

then `load_dit_safetensors("dit_xl_2.safetensors")` gives the params of
`DiT(**dit_kwargs("DiT-XL/2"), input_size=32, in_channels=4, num_classes=1000)`.

Layouts: a torch Linear weight [out, in] is a Dense kernel [in, out]; the patch embedding's
Conv2d weight [D, C, p, p] is an NHWC conv kernel [p, p, C, D]; `nn.Sequential` indices
become names (`t_embedder.mlp.0` -> t_embedder/mlp_0, `adaLN_modulation.1` ->
adaLN_modulation); `pos_embed` (frozen, the fixed sine-cosine table) is not a parameter here
and is checked against ours instead.
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import numpy as np

from gen_jax.interop import ForeignWeightsError
from gen_jax.interop.safetensors_file import safetensors_numpy
from gen_jax.models.dit import sincos_2d_position_embedding

# (authors' module path, gen_jax module path) of every linear layer, `\d+` the block index.
_LINEARS = (
    (r"t_embedder\.mlp\.0", "t_embedder/mlp_0"),
    (r"t_embedder\.mlp\.2", "t_embedder/mlp_2"),
    (r"blocks\.(\d+)\.attn\.qkv", "blocks_{}/attn/qkv"),
    (r"blocks\.(\d+)\.attn\.proj", "blocks_{}/attn/proj"),
    (r"blocks\.(\d+)\.mlp\.fc1", "blocks_{}/mlp/fc1"),
    (r"blocks\.(\d+)\.mlp\.fc2", "blocks_{}/mlp/fc2"),
    (r"blocks\.(\d+)\.adaLN_modulation\.1", "blocks_{}/adaLN_modulation"),
    (r"final_layer\.linear", "final_layer/linear"),
    (r"final_layer\.adaLN_modulation\.1", "final_layer/adaLN_modulation"),
)


def _convert(name: str, value: np.ndarray) -> tuple[str, np.ndarray]:
  """One authors' tensor as (gen_jax path 'a/b/leaf', array in gen_jax's layout)."""
  if name == "x_embedder.proj.weight":
    return "x_embedder/kernel", value.transpose(2, 3, 1, 0)
  if name == "x_embedder.proj.bias":
    return "x_embedder/bias", value
  if name == "y_embedder.embedding_table.weight":
    return "y_embedder/embedding", value
  for pattern, target in _LINEARS:
    match = re.fullmatch(pattern + r"\.(weight|bias)", name)
    if match:
      *index, leaf = match.groups()
      path = target.format(*index)
      return (f"{path}/kernel", value.T) if leaf == "weight" else (f"{path}/bias", value)
  raise ForeignWeightsError(f"DiT state dict: unexpected tensor {name!r} {value.shape}; "
                            "expected facebookresearch/DiT models.py's names.")


def dit_params_from_state_dict(state_dict: Mapping[str, Any]) -> dict[str, Any]:
  """The params of gen_jax's `DiT` from the authors' state dict (numpy arrays, or anything
  `np.asarray` reads), float32.

  Raises:
    ForeignWeightsError: a tensor the authors' DiT does not have, or a `pos_embed` that is
      not the fixed sine-cosine table (the model would not be the authors').
  """
  params: dict[str, Any] = {}
  for name, value in state_dict.items():
    value = np.asarray(value, np.float32)
    if name == "pos_embed":
      _check_pos_embed(value)
      continue
    path, array = _convert(name, value)
    node = params
    *parents, leaf = path.split("/")
    for key in parents:
      node = node.setdefault(key, {})
    node[leaf] = array
  if "x_embedder" not in params or "final_layer" not in params:
    raise ForeignWeightsError("DiT state dict: no x_embedder / final_layer tensors; is this a "
                              "facebookresearch/DiT checkpoint?")
  return params


def _check_pos_embed(pos_embed: np.ndarray) -> None:
  _, T, D = pos_embed.shape
  grid = round(T ** 0.5)
  expected = sincos_2d_position_embedding(D, grid)
  if grid * grid != T or not np.allclose(pos_embed[0], expected, atol=1e-5):
    raise ForeignWeightsError(f"DiT state dict: pos_embed {pos_embed.shape} is not the fixed "
                              f"{grid}x{grid} sine-cosine embedding gen_jax's DiT uses.")


def load_dit_safetensors(path: str) -> dict[str, Any]:
  """`dit_params_from_state_dict` of a safetensors file of the authors' state dict."""
  return dit_params_from_state_dict(safetensors_numpy().load_file(path))
