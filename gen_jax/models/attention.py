"""Multi-head scaled dot-product attention, shared by the Transformers (gpt.py, dit.py).

Vaswani et al. 2017, Eq. 1: Attention(Q, K, V) = softmax(Q K^T / sqrt(d_k)) V, per head, with
the fused projection of both GPT-2's `c_attn` and timm's `qkv` (the layout DiT uses): one
dense layer [D, 3D] whose output splits as (3, heads, head_dim).

The product goes through `jax.nn.dot_product_attention`, whose `implementation` is
`attention_impl`: None (JAX's choice, in jax 0.10 always its XLA path with softmax(q k^T)
materialized), 'xla', or 'cudnn' (cuDNN's fused flash attention: GPU only, bfloat16/float16
inputs). The logits and softmax are float32 inside that function whatever the input dtype.
"""
from __future__ import annotations

from typing import Literal

import jax

ATTENTION_IMPLS = (None, "xla", "cudnn")   # jax.nn.dot_product_attention's implementations
AttentionImpl = Literal["xla", "cudnn"] | None


def check_attention_impl(attention_impl) -> None:
  """Raises ValueError unless `attention_impl` is one of ATTENTION_IMPLS."""
  if attention_impl not in ATTENTION_IMPLS:
    raise ValueError(f"attention_impl={attention_impl!r}; expected one of {ATTENTION_IMPLS}.")


def split_qkv(qkv_BxTx3D: jax.Array, num_heads: int
              ) -> tuple[jax.Array, jax.Array, jax.Array]:
  """The fused projection's output [B, T, 3D] as queries, keys and values [B, T, H, D/H]
  (the columns are ordered (q|k|v, head, head_dim), as GPT-2's and timm's)."""
  B, T, three_D = qkv_BxTx3D.shape
  qkv = qkv_BxTx3D.reshape(B, T, 3, num_heads, three_D // (3 * num_heads))
  return qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]


def attention(q_BxTxHxK: jax.Array, k_BxSxHxK: jax.Array, v_BxSxHxK: jax.Array, *,
              mask: jax.Array | None = None, is_causal: bool = False,
              attention_impl: AttentionImpl = None) -> jax.Array:
  """softmax(q k^T / sqrt(K) + M) v per head: [B, T, H, K] (Vaswani et al. 2017, Eq. 1).

  Args:
    q_BxTxHxK, k_BxSxHxK, v_BxSxHxK: queries, keys and values.
    mask: bool, broadcastable to [B, H, T, S]; False: that key is not attended to.
    is_causal: key position <= query position only (with no mask: plain causal attention).
    attention_impl: `jax.nn.dot_product_attention`'s implementation (ATTENTION_IMPLS).
  """
  return jax.nn.dot_product_attention(q_BxTxHxK, k_BxSxHxK, v_BxSxHxK, mask=mask,
                                      is_causal=is_causal, implementation=attention_impl)
