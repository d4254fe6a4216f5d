"""Our GPT's parameters <-> the Hugging Face GPT-2 layout (`GPT2LMHeadModel`'s state dict).

Pure name and shape mapping on numpy arrays; files are read and checked in
gen_jax/interop/hf_gpt2.py. The two models compute the same function (GPT-2's
architecture, Radford et al. 2019, §2.3), and their tensors correspond one to one:

  transformer.wte.weight              [V, D]   wte/embedding   (lm_head.weight is tied to it)
  transformer.wpe.weight              [P, D]   wpe/embedding
  transformer.h.{i}.ln_1.weight/bias  [D]      h_{i}/ln_1/scale, bias
  transformer.h.{i}.attn.c_attn.*     [D, 3D]  h_{i}/attn/c_attn/kernel, bias
  transformer.h.{i}.attn.c_proj.*     [D, D]   h_{i}/attn/c_proj/kernel, bias
  transformer.h.{i}.ln_2.weight/bias  [D]      h_{i}/ln_2/scale, bias
  transformer.h.{i}.mlp.c_fc.*        [D, 4D]  h_{i}/mlp/c_fc/kernel, bias
  transformer.h.{i}.mlp.c_proj.*      [4D, D]  h_{i}/mlp/c_proj/kernel, bias
  transformer.ln_f.weight/bias        [D]      ln_f/scale, bias

GPT-2's `Conv1D` stores its weight as [in, out], as a flax `Dense` kernel does, so nothing
is transposed; c_attn's 3D outputs are q, k, v, each split into heads of D / H, in both.
Files saved from `GPT2Model` carry the same names without `transformer.`, and files of
older transformers versions hold the causal-mask buffers `attn.bias` / `attn.masked_bias`,
which are not parameters; both are accepted on reading.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

PREFIX = "transformer."
LM_HEAD = "lm_head.weight"
_BUFFERS = (".attn.bias", ".attn.masked_bias")   # causal masks, not parameters
# Hugging Face's `activation_function` names <-> GPT.gelu.
HF_ACTIVATION = {"tanh": "gelu_new", "exact": "gelu"}
GELU_OF_HF = {"gelu_new": "tanh", "gelu_pytorch_tanh": "tanh", "gelu": "exact"}

_LAYER = (("ln_1.weight", "ln_1/scale"), ("ln_1.bias", "ln_1/bias"),
          ("attn.c_attn.weight", "attn/c_attn/kernel"), ("attn.c_attn.bias", "attn/c_attn/bias"),
          ("attn.c_proj.weight", "attn/c_proj/kernel"), ("attn.c_proj.bias", "attn/c_proj/bias"),
          ("ln_2.weight", "ln_2/scale"), ("ln_2.bias", "ln_2/bias"),
          ("mlp.c_fc.weight", "mlp/c_fc/kernel"), ("mlp.c_fc.bias", "mlp/c_fc/bias"),
          ("mlp.c_proj.weight", "mlp/c_proj/kernel"), ("mlp.c_proj.bias", "mlp/c_proj/bias"))
_TOP = (("wte.weight", "wte/embedding"), ("wpe.weight", "wpe/embedding"),
        ("ln_f.weight", "ln_f/scale"), ("ln_f.bias", "ln_f/bias"))


@dataclasses.dataclass(frozen=True)
class GPT2Shape:
  """What a GPT-2 state dict's shapes say about the model (the heads are not in them)."""
  vocab_size: int     # rows of wte
  n_positions: int    # rows of wpe (our block_size)
  n_layer: int
  n_embd: int


def name_map(n_layer: int) -> dict[str, str]:
  """{Hugging Face name (with `transformer.`): our parameter path ('h_0/ln_1/scale')}."""
  names = {PREFIX + hf: ours for hf, ours in _TOP}
  for i in range(n_layer):
    names.update({f"{PREFIX}h.{i}.{hf}": f"h_{i}/{ours}" for hf, ours in _LAYER})
  return names


def canonical(tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  """A GPT-2 state dict with `transformer.` names and parameters only.

  Accepts `GPT2LMHeadModel` files (`transformer.*`, maybe `lm_head.weight`) and `GPT2Model`
  files (bare names); drops the attention-mask buffers.

  Raises:
    ValueError: an `lm_head.weight` that differs from the token embedding (our GPT ties
      them, as GPT-2 does).
  """
  out = {}
  for name, value in tensors.items():
    if name == LM_HEAD or name.endswith(_BUFFERS):
      continue
    out[name if name.startswith(PREFIX) else PREFIX + name] = value
  head, wte = tensors.get(LM_HEAD), out.get(PREFIX + "wte.weight")
  if head is not None and wte is not None and not np.array_equal(head, wte):
    raise ValueError("lm_head.weight differs from transformer.wte.weight: this GPT-2 has an "
                     "untied output layer, and gen_jax's GPT ties it to the token embedding.")
  return out


def infer_shape(tensors: dict[str, np.ndarray]) -> GPT2Shape:
  """The sizes a canonical GPT-2 state dict implies.

  Raises:
    ValueError: the tensors are not a GPT-2 state dict (no token or position embedding).
  """
  for name in ("wte.weight", "wpe.weight"):
    if PREFIX + name not in tensors:
      raise ValueError(f"No tensor {PREFIX + name} (or {name}): not a GPT-2 state dict; "
                       f"it holds e.g. {sorted(tensors)[:4]}.")
  V, D = tensors[PREFIX + "wte.weight"].shape
  layers = {int(n[len(PREFIX) + 2:].split(".")[0]) for n in tensors
            if n.startswith(PREFIX + "h.")}
  return GPT2Shape(vocab_size=V, n_positions=tensors[PREFIX + "wpe.weight"].shape[0],
                   n_layer=len(layers), n_embd=D)


def from_hf(tensors: dict[str, np.ndarray], *, n_layer: int, padded_vocab_size: int,
            use_bias: bool) -> dict[str, Any]:
  """Our GPT's params (a nested dict of float32 arrays) from a canonical GPT-2 state dict.

  Args:
    tensors: `canonical(...)` of the file's tensors; shapes already checked by the caller.
    n_layer: the model's depth (every layer must be present).
    padded_vocab_size: rows of our token embedding (GPT.padded_vocab_size); rows past the
      file's vocabulary are zeros (they are never looked up, and their logits are cut).
    use_bias: our model's biases; without them, the file's biases (dense and LayerNorm)
      must be zero, since dropping non-zero ones would change the function.

  Returns:
    {'wte': {'embedding': ...}, 'h_0': {'attn': {'c_attn': {'kernel': ...}}}, ...}.

  Raises:
    KeyError: a tensor the mapping needs is missing; ValueError: non-zero biases for a
    model without them.
  """
  params: dict[str, Any] = {}
  for hf, ours in name_map(n_layer).items():
    if hf not in tensors:
      raise KeyError(f"The GPT-2 state dict has no {hf!r} (needed for our {ours}).")
    value = np.asarray(tensors[hf], np.float32)
    if ours.endswith("/bias") and not use_bias:
      if np.any(value):
        raise ValueError(f"{hf} is not zero, and the model has no biases (use_bias=False): "
                         "set use_bias=True to load this GPT-2.")
      continue
    if ours == "wte/embedding" and padded_vocab_size > value.shape[0]:
      value = np.concatenate([value, np.zeros((padded_vocab_size - value.shape[0],
                                               value.shape[1]), np.float32)])
    node = params
    *parents, leaf = ours.split("/")
    for p in parents:
      node = node.setdefault(p, {})
    node[leaf] = value
  return params


def to_hf(params: dict[str, Any], *, n_layer: int, vocab_size: int) -> dict[str, np.ndarray]:
  """The `GPT2LMHeadModel` state dict of our GPT's params, as `save_pretrained` writes it
  (`transformer.*`, float32; `lm_head.weight` left out since it is tied to wte).

  Args:
    params: our GPT's params (nested dicts of arrays).
    n_layer: the model's depth.
    vocab_size: the real vocabulary: padded embedding rows past it are dropped.

  Returns:
    {Hugging Face name: array}. A model without biases gets zero biases, which compute
    the same function.
  """
  out = {}
  for hf, ours in name_map(n_layer).items():
    node = params
    for key in ours.split("/")[:-1]:
      node = node[key]
    leaf = ours.split("/")[-1]
    if leaf in node:
      value = np.asarray(node[leaf], np.float32)
    else:   # no biases: zeros of the matching weight's output size
      value = np.zeros(np.shape(node["kernel"] if "kernel" in node else node["scale"])[-1],
                       np.float32)
    out[hf] = value[:vocab_size] if ours == "wte/embedding" else value
  return out


def hf_config(shape: GPT2Shape, *, n_head: int, gelu: str, dropout: float,
              layer_norm_epsilon: float) -> dict[str, Any]:
  """The `config.json` Hugging Face's `GPT2LMHeadModel.from_pretrained` needs for `shape`."""
  return {"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2",
          "vocab_size": shape.vocab_size, "n_positions": shape.n_positions,
          "n_embd": shape.n_embd, "n_layer": shape.n_layer, "n_head": n_head, "n_inner": None,
          "activation_function": HF_ACTIVATION[gelu], "layer_norm_epsilon": layer_norm_epsilon,
          "resid_pdrop": dropout, "embd_pdrop": dropout, "attn_pdrop": dropout,
          "scale_attn_weights": True, "tie_word_embeddings": True,
          "bos_token_id": None, "eos_token_id": None}
