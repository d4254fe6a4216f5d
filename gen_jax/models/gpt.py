"""GPT: a decoder-only Transformer language model (Radford et al. 2018, 2019).

GPT-2 (Radford et al. 2019, §2.3) "largely follows the details of the OpenAI GPT model with
a few modifications. Layer normalization was moved to the input of each sub-block ... and an
additional layer normalization was added after the final self-attention block. A modified
initialization which accounts for the accumulation on the residual path with model depth is
used. We scale the weights of residual layers at initialization by a factor of 1/sqrt(N)
where N is the number of residual layers."

So: token + learned position embeddings -> n_layer pre-LayerNorm blocks
(x + attn(ln_1(x)), x + mlp(ln_2(x))) -> ln_f -> logits through the tied token embedding.
Field and parameter names are GPT-2's (wte, wpe, h_<i>, ln_1, attn/c_attn, attn/c_proj,
ln_2, mlp/c_fc, mlp/c_proj, ln_f). The GPT-2 small configuration (vocab 50257, 1024
context, 12 layers, 12 heads, 768 wide, biases) has 124,439,808 parameters.

Attention goes through `jax.nn.dot_product_attention`; `attention_impl` is its
`implementation`: None (the default: JAX's choice, which in jax 0.10 is always its XLA path,
softmax(q k^T) materialized, on every backend), 'xla', or 'cudnn' (cuDNN's fused flash
attention: GPU only, bfloat16/float16 inputs). That function has no dropout on the attention
probabilities, so when training with `dropout` > 0 attention takes the explicit path
(softmax(q k^T / sqrt(K) + causal mask), dropout, @ v), as nanoGPT and GPT-2 do: `dropout`
applies to the embeddings, the attention probabilities and each residual branch.
Evaluation, sampling and dropout-free training keep `jax.nn.dot_product_attention`.

The MLP's GELU (Hendrycks & Gimpel 2016) is `gelu`: 'exact', x Phi(x) with the normal
CDF (nanoGPT's `nn.GELU()`), or 'tanh', GPT-2's approximation
0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))) (OpenAI's code and Hugging Face's
`gelu_new`). `vocab_multiple` pads the token embedding to a multiple of that many rows
(nanoGPT pads GPT-2's 50257 to 50304 for faster matmuls); the padded rows are never looked
up and the logits are cut back to `vocab_size`, so they get no gradient and cannot be
sampled.

Generation uses a key/value cache: `decode(tokens, cache)` appends the keys and values of
`tokens` at `cache.index` and attends over everything cached so far, so a prompt is
"prefilled" with one call and each new token costs one position, not a re-run of the
whole context (see gen_jax/methods/autoregressive.py).

Mixed precision: matmuls run in `dtype`; parameters, the embedding sum, LayerNorm, the
softmax inside the attention and the returned logits are float32.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Literal

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp

from gen_jax.models.dense import Dense

# GPT-2's initialization: N(0, 0.02) for weights and embeddings, zeros for biases; the
# output projections of each residual branch get std 0.02 / sqrt(2 * n_layer).
_STD = 0.02
LN_EPSILON = 1e-5
GELU_FORMS = ("exact", "tanh")
ATTENTION_IMPLS = (None, "xla", "cudnn")   # jax.nn.dot_product_attention's implementations
AttentionImpl = Literal["xla", "cudnn"] | None


class KVCache(flax.struct.PyTreeNode):
  """Keys and values of the positions seen so far, for every layer.

  k, v: [n_layer, B, S, n_head, head_dim] with S = the cache length (<= block_size);
  index: how many positions are filled (the position of the next token).
  """
  k: jax.Array
  v: jax.Array
  index: jax.Array


class BlockPart(nn.Module):
  """What a block and its two residual branches take, by keyword, and the dense layer they
  build from it: GPT-2's N(0, std) weights and zero biases."""

  _: dataclasses.KW_ONLY
  dropout: float
  use_bias: bool
  residual_std: float  # std of the branch's output projection (GPT-2's 1/sqrt(N) scaling)
  dtype: Any = jnp.float32

  def dense(self, features: int, std: float, name: str) -> nn.Module:
    return Dense(features, use_bias=self.use_bias, dtype=self.dtype, name=name,
                 kernel_init=nn.initializers.normal(std), bias_init=nn.initializers.zeros)


class CausalSelfAttention(BlockPart):
  n_head: int
  attention_impl: AttentionImpl = None   # jax.nn.dot_product_attention's `implementation`

  @nn.compact
  def __call__(self, x_BxTxD: jax.Array, *, train: bool, mask=None,
               kv=None) -> tuple[jax.Array, tuple[jax.Array, jax.Array] | None]:
    """Causal attention over `x`; with `kv=(k_cache, v_cache, index)` over the cache too.

    Returns:
      (output [B, T, D], updated (k_cache, v_cache) or None without a cache).
    """
    B, T, D = x_BxTxD.shape
    H = self.n_head
    qkv = self.dense(3 * D, _STD, "c_attn")(x_BxTxD).reshape(B, T, 3, H, D // H)
    q_BxTxHxK, k_BxTxHxK, v_BxTxHxK = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
    if kv is None and train and self.dropout > 0:
      y_BxTxHxK = self.attention_with_dropout(q_BxTxHxK, k_BxTxHxK, v_BxTxHxK)
      new_kv = None
    elif kv is None:
      y_BxTxHxK = jax.nn.dot_product_attention(q_BxTxHxK, k_BxTxHxK, v_BxTxHxK, is_causal=True,
                                               implementation=self.attention_impl)
      new_kv = None
    else:
      k_cache, v_cache, index = kv
      k_cache = jax.lax.dynamic_update_slice_in_dim(k_cache, k_BxTxHxK.astype(k_cache.dtype),
                                                    index, axis=1)
      v_cache = jax.lax.dynamic_update_slice_in_dim(v_cache, v_BxTxHxK.astype(v_cache.dtype),
                                                    index, axis=1)
      y_BxTxHxK = jax.nn.dot_product_attention(q_BxTxHxK, k_cache.astype(q_BxTxHxK.dtype),
                                               v_cache.astype(q_BxTxHxK.dtype), mask=mask)
      new_kv = (k_cache, v_cache)
    y_BxTxD = self.dense(D, self.residual_std, "c_proj")(y_BxTxHxK.reshape(B, T, D))
    return nn.Dropout(self.dropout, deterministic=not train)(y_BxTxD), new_kv

  def attention_with_dropout(self, q_BxTxHxK, k_BxTxHxK, v_BxTxHxK) -> jax.Array:
    """Causal attention with dropout on the probabilities (training only), as nanoGPT's
    `CausalSelfAttention` (its slow path) and GPT-2's `attn_pdrop`:
    y = dropout(softmax(q k^T / sqrt(K) + M)) v, M = -inf above the diagonal
    (Vaswani et al. 2017, Eq. 1). The scores and the softmax are float32, as in
    `jax.nn.dot_product_attention`."""
    T, K = q_BxTxHxK.shape[1], q_BxTxHxK.shape[-1]
    scores_BxHxTxT = jnp.einsum("bthk,bshk->bhts", q_BxTxHxK, k_BxTxHxK,
                                preferred_element_type=jnp.float32) / math.sqrt(K)
    causal_TxT = jnp.tril(jnp.ones((T, T), bool))
    probs_BxHxTxT = jax.nn.softmax(jnp.where(causal_TxT, scores_BxHxTxT, -jnp.inf), axis=-1)
    keep_BxHxTxT = jax.random.bernoulli(self.make_rng("dropout"), 1.0 - self.dropout,
                                        probs_BxHxTxT.shape)
    probs_BxHxTxT = jnp.where(keep_BxHxTxT, probs_BxHxTxT / (1.0 - self.dropout), 0.0)
    return jnp.einsum("bhts,bshk->bthk", probs_BxHxTxT.astype(v_BxTxHxK.dtype), v_BxTxHxK)


class MLP(BlockPart):
  gelu: str = "tanh"   # 'exact' (nanoGPT) or 'tanh' (GPT-2); see the module docstring

  @nn.compact
  def __call__(self, x_BxTxD: jax.Array, *, train: bool) -> jax.Array:
    D = x_BxTxD.shape[-1]
    h = self.dense(4 * D, _STD, "c_fc")(x_BxTxD)
    # Hendrycks & Gimpel 2016: GELU(x) = x Phi(x), or its tanh approximation (their Eq. 2's
    # 0.5x(1 + tanh[sqrt(2/pi)(x + 0.044715x^3)])).
    h = jax.nn.gelu(h, approximate=self.gelu == "tanh")
    h = self.dense(D, self.residual_std, "c_proj")(h)
    return nn.Dropout(self.dropout, deterministic=not train)(h)


class Block(BlockPart):
  """Pre-LayerNorm Transformer block: x + attn(ln_1(x)), then x + mlp(ln_2(x))."""
  n_head: int
  gelu: str = "tanh"
  attention_impl: AttentionImpl = None

  @nn.compact
  def __call__(self, x_BxTxD, train: bool, mask=None, kv=None):
    ln = lambda name: nn.LayerNorm(epsilon=LN_EPSILON, use_bias=self.use_bias, name=name,
                                   dtype=jnp.float32)
    common: dict[str, Any] = dict(dropout=self.dropout, use_bias=self.use_bias,
                                  residual_std=self.residual_std, dtype=self.dtype)
    y, new_kv = CausalSelfAttention(self.n_head, self.attention_impl, name="attn", **common)(
        ln("ln_1")(x_BxTxD), train=train, mask=mask, kv=kv)
    x_BxTxD = x_BxTxD + y
    x_BxTxD = x_BxTxD + MLP(name="mlp", gelu=self.gelu, **common)(ln("ln_2")(x_BxTxD),
                                                                 train=train)
    return x_BxTxD, new_kv


class GPT(nn.Module):
  """GPT-2-style language model: tokens [B, T] -> next-token logits [B, T, vocab_size].

  Attributes:
    vocab_size: number of token ids (65 for Tiny Shakespeare characters, 50257 for GPT-2).
    block_size: the longest context (number of learned position embeddings).
    n_layer, n_head, n_embd: depth, attention heads, width (n_embd % n_head == 0).
    dropout: dropout rate on the embeddings, attention probabilities and residual branches
      (training only).
    use_bias: biases in the dense layers and LayerNorms (GPT-2: True; nanoGPT's default: False).
    gelu: the MLP's GELU, 'exact' (nanoGPT) or 'tanh' (GPT-2).
    vocab_multiple: the token embedding has vocab_size rounded up to a multiple of this
      many rows (nanoGPT's GPT-2: 64, 50257 -> 50304); logits keep vocab_size columns.
    remat: recompute each block's activations in the backward pass (saves memory).
    dtype: compute dtype of the matmuls.
    attention_impl: `jax.nn.dot_product_attention`'s implementation for whole sequences
      without attention dropout: None (JAX's default), 'xla' or 'cudnn' (GPU only).
  """
  vocab_size: int
  block_size: int
  n_layer: int
  n_head: int
  n_embd: int
  dropout: float = 0.0
  use_bias: bool = True
  gelu: str = "tanh"
  vocab_multiple: int = 1
  remat: bool = False
  dtype: Any = jnp.float32
  attention_impl: AttentionImpl = None

  @property
  def padded_vocab_size(self) -> int:
    """Rows of the token embedding: vocab_size rounded up to a multiple of vocab_multiple."""
    return -(-self.vocab_size // self.vocab_multiple) * self.vocab_multiple

  def setup(self):
    if self.n_embd % self.n_head:
      raise ValueError(f"n_embd={self.n_embd} must be divisible by n_head={self.n_head}.")
    if self.gelu not in GELU_FORMS:
      raise ValueError(f"gelu={self.gelu!r}; expected one of {GELU_FORMS}.")
    if self.vocab_multiple < 1:
      raise ValueError(f"vocab_multiple={self.vocab_multiple} must be >= 1.")
    if self.attention_impl not in ATTENTION_IMPLS:
      raise ValueError(f"attention_impl={self.attention_impl!r}; "
                       f"expected one of {ATTENTION_IMPLS}.")
    self.wte = nn.Embed(self.padded_vocab_size, self.n_embd,
                        embedding_init=nn.initializers.normal(_STD))
    self.wpe = nn.Embed(self.block_size, self.n_embd, embedding_init=nn.initializers.normal(_STD))
    self.drop = nn.Dropout(self.dropout)
    block = nn.remat(Block, static_argnums=(2,)) if self.remat else Block
    self.h = [block(self.n_head, self.gelu, self.attention_impl, dropout=self.dropout,
                    use_bias=self.use_bias,
                    residual_std=_STD / math.sqrt(2 * self.n_layer), dtype=self.dtype,
                    name=f"h_{i}") for i in range(self.n_layer)]
    self.ln_f = nn.LayerNorm(epsilon=LN_EPSILON, use_bias=self.use_bias, dtype=jnp.float32)

  def _logits(self, x_BxTxD: jax.Array) -> jax.Array:
    # Tied output embedding (GPT-2): logits = ln_f(x) @ wte^T, computed in `dtype` (like
    # every other matmul, backward pass included) and returned in float32 for the loss;
    # the padded rows' columns (vocab_multiple) are dropped.
    h_BxTxD = self.ln_f(x_BxTxD).astype(self.dtype)
    logits_BxTxV = jnp.einsum("btd,vd->btv", h_BxTxD, self.wte.embedding.astype(self.dtype))
    return logits_BxTxV[..., :self.vocab_size].astype(jnp.float32)

  def __call__(self, tokens_BxT: jax.Array, *, train: bool = False) -> jax.Array:
    """Logits of every next token given tokens[:, :t+1], for all t at once."""
    T = tokens_BxT.shape[1]
    if T > self.block_size:
      raise ValueError(f"sequence length {T} exceeds block_size={self.block_size}.")
    x = self.wte(tokens_BxT) + self.wpe(jnp.arange(T))
    x = self.drop(x, deterministic=not train).astype(self.dtype)
    for block in self.h:
      x, _ = block(x, train)
    return self._logits(x)

  def init_cache(self, batch_size: int, length: int, dtype=jnp.float32) -> KVCache:
    """An empty cache for `length` <= block_size positions (call through `model.apply`)."""
    if length > self.block_size:
      raise ValueError(f"cache length {length} exceeds block_size={self.block_size}.")
    shape = (self.n_layer, batch_size, length, self.n_head, self.n_embd // self.n_head)
    return KVCache(k=jnp.zeros(shape, dtype), v=jnp.zeros(shape, dtype),
                   index=jnp.zeros((), jnp.int32))

  def decode(self, tokens_BxT: jax.Array, cache: KVCache) -> tuple[jax.Array, KVCache]:
    """Logits for `tokens` placed at positions cache.index ..., attending to the cache.

    The same numbers as `__call__` on the whole sequence so far (no dropout), at the
    cost of the new positions only.
    """
    T, S = tokens_BxT.shape[1], cache.k.shape[2]
    positions_T = cache.index + jnp.arange(T)
    # Query at position p sees cache slots 0..p (slots past the index hold nothing yet).
    mask = (jnp.arange(S)[None, :] <= positions_T[:, None])[None, None]   # [1, 1, T, S]
    x = (self.wte(tokens_BxT) + self.wpe(positions_T)).astype(self.dtype)
    ks, vs = [], []
    for i, block in enumerate(self.h):
      x, new_kv = block(x, False, mask, (cache.k[i], cache.v[i], cache.index))
      assert new_kv is not None   # given a cache, a block returns it updated
      k, v = new_kv
      ks.append(k)
      vs.append(v)
    return self._logits(x), KVCache(k=jnp.stack(ks), v=jnp.stack(vs), index=cache.index + T)
