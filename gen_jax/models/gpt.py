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

Attention goes through `jax.nn.dot_product_attention` (gen_jax/models/attention.py, shared
with the DiT); `attention_impl` is its `implementation`: None (the default: JAX's choice,
which in jax 0.10 is always its XLA path, softmax(q k^T) materialized, on every backend),
'xla', or 'cudnn' (cuDNN's fused flash attention: GPU only, bfloat16/float16 inputs). That
function has no dropout on the attention
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

Modern blocks (modded-nanogpt's, Jordan et al. 2024), each an option whose default keeps
GPT-2's module and parameters exactly; a new parameter exists only when its option is on:
- `position='rope'`: rotary embeddings on queries and keys (Su et al. 2021;
  gen_jax/models/rotary.py) instead of the learned `wpe`, which is then absent.
- `norm='rmsnorm'`: x / sqrt(mean(x^2) + eps), no learned scale or bias (Zhang & Sennrich
  2019, Eq. 4 with g = 1; modded-nanogpt's `F.rms_norm`), for ln_1, ln_2 and ln_f;
  `embed_norm` also normalizes the token embeddings (modded-nanogpt).
- `qk_norm`: the same RMSNorm on each head's queries and keys before RoPE (Henry et al.
  2020 normalize q and k; modded-nanogpt without a learned scale), which bounds the logits.
- `mlp_activation='relu2'`: ReLU(x)^2 (So et al. 2021, "Primer", §4) instead of the GELU.
- `tie_head=False`: a separate output matrix `lm_head` [D, V] (no bias) instead of wte^T.
- `zero_init_proj`: the output projections of every residual branch (attn/c_proj,
  mlp/c_proj) and an untied `lm_head` start at zero, so each block starts as the identity.
- `logit_softcap` = c > 0: logits = c tanh(logits / c) (Gemma 2's "logit soft-capping";
  modded-nanogpt: c = 30), in float32.
- `attention_window` = W > 0: sliding-window attention, position t attends to
  t - W < s <= t (Beltagy et al. 2020, §3.1; modded-nanogpt's `window_mask`).
- `segment_ids` [B, T] (an argument, not an option): packed sequences attend only within
  their own segment (document), causally; a token's loss then has zero gradient w.r.t. the
  tokens of other documents (tests/models/test_gpt_options.py).
Not implemented from modded-nanogpt's record: the value residual (v mixed with the first
block's v), the x0 skip lambdas, the U-Net skip connections, and FlexAttention's block
sparsity (masks here are dense [T, T] booleans, fine at these lengths on CPU).
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp

from gen_jax.models.attention import ATTENTION_IMPLS, AttentionImpl, attention, split_qkv
from gen_jax.models.dense import Dense
from gen_jax.models.rotary import DEFAULT_BASE, apply_rotary

# GPT-2's initialization: N(0, 0.02) for weights and embeddings, zeros for biases; the
# output projections of each residual branch get std 0.02 / sqrt(2 * n_layer).
_STD = 0.02
LN_EPSILON = 1e-5
GELU_FORMS = ("exact", "tanh")
POSITIONS = ("learned", "rope")
NORMS = ("layernorm", "rmsnorm")
MLP_ACTIVATIONS = ("gelu", "relu2")
RMS_EPSILON = 1e-6


class KVCache(flax.struct.PyTreeNode):
  """Keys and values of the positions seen so far, for every layer.

  k, v: [n_layer, B, S, n_head, head_dim] with S = the cache length (<= block_size);
  index: how many positions are filled (the position of the next token).
  """
  k: jax.Array
  v: jax.Array
  index: jax.Array


def rms_norm(x: jax.Array, epsilon: float = RMS_EPSILON) -> jax.Array:
  """x / sqrt(mean(x^2) + eps) over the last axis, in float32 (Zhang & Sennrich 2019, Eq. 4,
  without the learned gain; modded-nanogpt's `F.rms_norm(x, (x.size(-1),))`)."""
  x32 = x.astype(jnp.float32)
  return x32 * jax.lax.rsqrt(jnp.mean(jnp.square(x32), axis=-1, keepdims=True) + epsilon)


def attention_mask(positions_T: jax.Array, key_positions_S: jax.Array, window: int = 0,
                   segment_ids_BxT: jax.Array | None = None) -> jax.Array:
  """Which keys each query may attend to: bool [B or 1, 1, T, S].

  Causal (key position <= query position), within the last `window` positions when
  window > 0 (t - W < s <= t), and, with segment ids, within the query's own segment.

  Args:
    positions_T: the queries' positions.
    key_positions_S: the keys' positions.
    window: the sliding window W (0: the whole causal prefix).
    segment_ids_BxT: each token's segment (document) id; queries and keys are the same
      tokens then (S = T).
  """
  q, k = positions_T[:, None], key_positions_S[None, :]
  allowed_TxS = k <= q
  if window > 0:
    allowed_TxS &= q - k < window
  mask = allowed_TxS[None, None]
  if segment_ids_BxT is not None:
    mask = mask & (segment_ids_BxT[:, None, :, None] == segment_ids_BxT[:, None, None, :])
  return mask


class BlockPart(nn.Module):
  """What a block and its two residual branches take, by keyword, and the dense layer they
  build from it: GPT-2's N(0, std) weights and zero biases."""

  _: dataclasses.KW_ONLY
  dropout: float
  use_bias: bool
  residual_std: float  # std of the branch's output projection (GPT-2's 1/sqrt(N) scaling)
  dtype: Any = jnp.float32
  zero_init_proj: bool = False   # the branch's output projection starts at zero

  def dense(self, features: int, std: float, name: str) -> nn.Module:
    return Dense(features, use_bias=self.use_bias, dtype=self.dtype, name=name,
                 kernel_init=nn.initializers.normal(std), bias_init=nn.initializers.zeros)

  def output_projection(self, features: int) -> nn.Module:
    """The branch's `c_proj`: GPT-2's N(0, residual_std), or zeros with zero_init_proj."""
    if self.zero_init_proj:
      return Dense(features, use_bias=self.use_bias, dtype=self.dtype, name="c_proj",
                   kernel_init=nn.initializers.zeros, bias_init=nn.initializers.zeros)
    return self.dense(features, self.residual_std, "c_proj")


class CausalSelfAttention(BlockPart):
  n_head: int
  attention_impl: AttentionImpl = None   # jax.nn.dot_product_attention's `implementation`
  rope: bool = False
  rope_base: float = DEFAULT_BASE
  qk_norm: bool = False

  @nn.compact
  def __call__(self, x_BxTxD: jax.Array, *, train: bool, positions_T: jax.Array,
               mask=None, kv=None) -> tuple[jax.Array, tuple[jax.Array, jax.Array] | None]:
    """Attention over `x` (causal, or as `mask` allows); with `kv=(k_cache, v_cache, index)`
    over the cache too.

    Args:
      x_BxTxD: the block's normalized input.
      train: dropout on.
      positions_T: the tokens' positions (RoPE's angles).
      mask: bool [B or 1, 1, T, S]; None: causal over the T tokens (no cache only).
      kv: the layer's cache (keys, values [B, S, H, K]) and the index of the first token.

    Returns:
      (output [B, T, D], updated (k_cache, v_cache) or None without a cache).
    """
    B, T, D = x_BxTxD.shape
    H = self.n_head
    q_BxTxHxK, k_BxTxHxK, v_BxTxHxK = split_qkv(self.dense(3 * D, _STD, "c_attn")(x_BxTxD), H)
    if self.qk_norm:
      q_BxTxHxK = rms_norm(q_BxTxHxK).astype(self.dtype)
      k_BxTxHxK = rms_norm(k_BxTxHxK).astype(self.dtype)
    if self.rope:
      q_BxTxHxK = apply_rotary(q_BxTxHxK, positions_T, self.rope_base)
      k_BxTxHxK = apply_rotary(k_BxTxHxK, positions_T, self.rope_base)
    if kv is None and train and self.dropout > 0:
      y_BxTxHxK = self.attention_with_dropout(q_BxTxHxK, k_BxTxHxK, v_BxTxHxK, mask)
      new_kv = None
    elif kv is None:
      y_BxTxHxK = attention(q_BxTxHxK, k_BxTxHxK, v_BxTxHxK, mask=mask,
                            is_causal=mask is None, attention_impl=self.attention_impl)
      new_kv = None
    else:
      k_cache, v_cache, index = kv
      k_cache = jax.lax.dynamic_update_slice_in_dim(k_cache, k_BxTxHxK.astype(k_cache.dtype),
                                                    index, axis=1)
      v_cache = jax.lax.dynamic_update_slice_in_dim(v_cache, v_BxTxHxK.astype(v_cache.dtype),
                                                    index, axis=1)
      y_BxTxHxK = attention(q_BxTxHxK, k_cache.astype(q_BxTxHxK.dtype),
                            v_cache.astype(q_BxTxHxK.dtype), mask=mask)
      new_kv = (k_cache, v_cache)
    y_BxTxD = self.output_projection(D)(y_BxTxHxK.reshape(B, T, D))
    return nn.Dropout(self.dropout, deterministic=not train)(y_BxTxD), new_kv

  def attention_with_dropout(self, q_BxTxHxK, k_BxTxHxK, v_BxTxHxK, mask=None) -> jax.Array:
    """Attention with dropout on the probabilities (training only), as nanoGPT's
    `CausalSelfAttention` (its slow path) and GPT-2's `attn_pdrop`:
    y = dropout(softmax(q k^T / sqrt(K) + M)) v, M = -inf where `mask` (default: causal)
    is False (Vaswani et al. 2017, Eq. 1). The scores and the softmax are float32, as in
    `jax.nn.dot_product_attention`."""
    T, K = q_BxTxHxK.shape[1], q_BxTxHxK.shape[-1]
    scores_BxHxTxT = jnp.einsum("bthk,bshk->bhts", q_BxTxHxK, k_BxTxHxK,
                                preferred_element_type=jnp.float32) / math.sqrt(K)
    if mask is None:
      mask = jnp.tril(jnp.ones((T, T), bool))
    probs_BxHxTxT = jax.nn.softmax(jnp.where(mask, scores_BxHxTxT, -jnp.inf), axis=-1)
    keep_BxHxTxT = jax.random.bernoulli(self.make_rng("dropout"), 1.0 - self.dropout,
                                        probs_BxHxTxT.shape)
    probs_BxHxTxT = jnp.where(keep_BxHxTxT, probs_BxHxTxT / (1.0 - self.dropout), 0.0)
    return jnp.einsum("bhts,bshk->bthk", probs_BxHxTxT.astype(v_BxTxHxK.dtype), v_BxTxHxK)


class MLP(BlockPart):
  gelu: str = "tanh"   # 'exact' (nanoGPT) or 'tanh' (GPT-2); see the module docstring
  activation: str = "gelu"   # 'gelu' or 'relu2'

  @nn.compact
  def __call__(self, x_BxTxD: jax.Array, *, train: bool) -> jax.Array:
    D = x_BxTxD.shape[-1]
    h = self.dense(4 * D, _STD, "c_fc")(x_BxTxD)
    if self.activation == "relu2":
      h = jnp.square(jax.nn.relu(h))   # So et al. 2021 (Primer), §4: squared ReLU
    else:
      # Hendrycks & Gimpel 2016: GELU(x) = x Phi(x), or its tanh approximation (their
      # Eq. 2's 0.5x(1 + tanh[sqrt(2/pi)(x + 0.044715x^3)])).
      h = jax.nn.gelu(h, approximate=self.gelu == "tanh")
    h = self.output_projection(D)(h)
    return nn.Dropout(self.dropout, deterministic=not train)(h)


class Block(BlockPart):
  """Pre-norm Transformer block: x + attn(ln_1(x)), then x + mlp(ln_2(x))."""
  n_head: int
  gelu: str = "tanh"
  attention_impl: AttentionImpl = None
  norm: str = "layernorm"
  mlp_activation: str = "gelu"
  rope: bool = False
  rope_base: float = DEFAULT_BASE
  qk_norm: bool = False

  def normalize(self, x: jax.Array, name: str) -> jax.Array:
    if self.norm == "rmsnorm":
      return rms_norm(x)
    return nn.LayerNorm(epsilon=LN_EPSILON, use_bias=self.use_bias, name=name,
                        dtype=jnp.float32)(x)

  @nn.compact
  def __call__(self, x_BxTxD, train: bool, positions_T, mask=None, kv=None):
    common: dict[str, Any] = dict(dropout=self.dropout, use_bias=self.use_bias,
                                  residual_std=self.residual_std, dtype=self.dtype,
                                  zero_init_proj=self.zero_init_proj)
    attn = CausalSelfAttention(self.n_head, self.attention_impl, self.rope, self.rope_base,
                               self.qk_norm, name="attn", **common)
    y, new_kv = attn(self.normalize(x_BxTxD, "ln_1"), train=train, positions_T=positions_T,
                     mask=mask, kv=kv)
    x_BxTxD = x_BxTxD + y
    mlp = MLP(name="mlp", gelu=self.gelu, activation=self.mlp_activation, **common)
    x_BxTxD = x_BxTxD + mlp(self.normalize(x_BxTxD, "ln_2"), train=train)
    return x_BxTxD, new_kv


class GPT(nn.Module):
  """GPT-2-style language model: tokens [B, T] -> next-token logits [B, T, vocab_size].

  Attributes:
    vocab_size: number of token ids (65 for Tiny Shakespeare characters, 50257 for GPT-2).
    block_size: the longest context (number of learned position embeddings; with RoPE, the
      longest sequence accepted).
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
    position: 'learned' (GPT-2's wpe) or 'rope' (rotary, `rope_base`).
    norm: 'layernorm' (GPT-2) or 'rmsnorm' (parameter-free).
    embed_norm: RMSNorm on the token embeddings.
    qk_norm: RMSNorm on each head's queries and keys.
    mlp_activation: 'gelu' (with `gelu`'s form) or 'relu2' (squared ReLU).
    tie_head: logits through wte^T (GPT-2) or through a separate `lm_head`.
    zero_init_proj: residual-branch output projections (and an untied head) start at zero.
    logit_softcap: c > 0 maps logits to c tanh(logits / c); 0: off.
    attention_window: sliding-window attention over the last W positions; 0: off.
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
  position: str = "learned"
  rope_base: float = DEFAULT_BASE
  norm: str = "layernorm"
  embed_norm: bool = False
  qk_norm: bool = False
  mlp_activation: str = "gelu"
  tie_head: bool = True
  zero_init_proj: bool = False
  logit_softcap: float = 0.0
  attention_window: int = 0

  @property
  def padded_vocab_size(self) -> int:
    """Rows of the token embedding: vocab_size rounded up to a multiple of vocab_multiple."""
    return -(-self.vocab_size // self.vocab_multiple) * self.vocab_multiple

  @property
  def is_gpt2_layout(self) -> bool:
    """Whether the parameters and their roles are GPT-2's (learned positions, LayerNorm,
    GELU, tied head, no soft-cap or window): what Hugging Face's GPT2LMHeadModel holds."""
    return (self.position == "learned" and self.norm == "layernorm" and not self.embed_norm
            and not self.qk_norm and self.mlp_activation == "gelu" and self.tie_head
            and self.logit_softcap == 0 and self.attention_window == 0)

  def setup(self):
    checks = (("gelu", GELU_FORMS), ("attention_impl", ATTENTION_IMPLS),
              ("position", POSITIONS), ("norm", NORMS), ("mlp_activation", MLP_ACTIVATIONS))
    for field, allowed in checks:
      if getattr(self, field) not in allowed:
        raise ValueError(f"{field}={getattr(self, field)!r}; expected one of {allowed}.")
    if self.n_embd % self.n_head:
      raise ValueError(f"n_embd={self.n_embd} must be divisible by n_head={self.n_head}.")
    if self.vocab_multiple < 1:
      raise ValueError(f"vocab_multiple={self.vocab_multiple} must be >= 1.")
    if self.logit_softcap < 0 or self.attention_window < 0:
      raise ValueError(f"logit_softcap={self.logit_softcap} and attention_window="
                       f"{self.attention_window} must be >= 0 (0: off).")
    self.wte = nn.Embed(self.padded_vocab_size, self.n_embd,
                        embedding_init=nn.initializers.normal(_STD))
    if self.position == "learned":
      self.wpe = nn.Embed(self.block_size, self.n_embd,
                          embedding_init=nn.initializers.normal(_STD))
    self.drop = nn.Dropout(self.dropout)
    block = nn.remat(Block, static_argnums=(2,)) if self.remat else Block
    self.h = [block(self.n_head, self.gelu, self.attention_impl, self.norm,
                    self.mlp_activation, self.position == "rope", self.rope_base, self.qk_norm,
                    dropout=self.dropout, use_bias=self.use_bias,
                    residual_std=_STD / math.sqrt(2 * self.n_layer), dtype=self.dtype,
                    zero_init_proj=self.zero_init_proj, name=f"h_{i}")
              for i in range(self.n_layer)]
    if self.norm == "layernorm":
      self.ln_f = nn.LayerNorm(epsilon=LN_EPSILON, use_bias=self.use_bias, dtype=jnp.float32)
    if not self.tie_head:
      head_init = nn.initializers.zeros if self.zero_init_proj else nn.initializers.normal(_STD)
      self.lm_head = Dense(self.padded_vocab_size, use_bias=False, dtype=self.dtype,
                           kernel_init=head_init)

  def _embed(self, tokens_BxT: jax.Array, positions_T: jax.Array, train: bool) -> jax.Array:
    x = self.wte(tokens_BxT)
    if self.position == "learned":
      x = x + self.wpe(positions_T)
    if self.embed_norm:
      x = rms_norm(x)
    return self.drop(x, deterministic=not train).astype(self.dtype)

  def _logits(self, x_BxTxD: jax.Array) -> jax.Array:
    # Tied output embedding (GPT-2): logits = ln_f(x) @ wte^T, computed in `dtype` (like
    # every other matmul, backward pass included) and returned in float32 for the loss;
    # the padded rows' columns (vocab_multiple) are dropped.
    h_BxTxD = (rms_norm(x_BxTxD) if self.norm == "rmsnorm" else self.ln_f(x_BxTxD))
    h_BxTxD = h_BxTxD.astype(self.dtype)
    if self.tie_head:
      logits_BxTxV = jnp.einsum("btd,vd->btv", h_BxTxD, self.wte.embedding.astype(self.dtype))
    else:
      logits_BxTxV = self.lm_head(h_BxTxD)
    logits_BxTxV = logits_BxTxV[..., :self.vocab_size].astype(jnp.float32)
    if self.logit_softcap > 0:
      logits_BxTxV = self.logit_softcap * jnp.tanh(logits_BxTxV / self.logit_softcap)
    return logits_BxTxV

  def __call__(self, tokens_BxT: jax.Array, *, train: bool = False,
               segment_ids: jax.Array | None = None) -> jax.Array:
    """Logits of every next token given tokens[:, :t+1], for all t at once.

    Args:
      tokens_BxT: token ids.
      train: dropout on.
      segment_ids: int [B, T], the document of each token in packed rows: attention stays
        within a document. None: one sequence per row.
    """
    T = tokens_BxT.shape[1]
    if T > self.block_size:
      raise ValueError(f"sequence length {T} exceeds block_size={self.block_size}.")
    positions_T = jnp.arange(T)
    mask = None   # plain causal attention (jax.nn.dot_product_attention's is_causal)
    if segment_ids is not None or self.attention_window > 0:
      mask = attention_mask(positions_T, positions_T, self.attention_window, segment_ids)
    x = self._embed(tokens_BxT, positions_T, train)
    for block in self.h:
      x, _ = block(x, train, positions_T, mask)
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
    # Query at position p sees cache slots 0..p (slots past the index hold nothing yet),
    # and with a window only the last attention_window of them.
    mask = attention_mask(positions_T, jnp.arange(S), self.attention_window)   # [1, 1, T, S]
    x = self._embed(tokens_BxT, positions_T, False)
    ks, vs = [], []
    for i, block in enumerate(self.h):
      x, new_kv = block(x, False, positions_T, mask, (cache.k[i], cache.v[i], cache.index))
      assert new_kv is not None   # given a cache, a block returns it updated
      k, v = new_kv
      ks.append(k)
      vs.append(v)
    return self._logits(x), KVCache(k=jnp.stack(ks), v=jnp.stack(vs), index=cache.index + T)


def param_roles(params: Any) -> Any:
  """Each GPT parameter's role for Muon-with-Adam (gen_jax/core/optimizer.py), as
  modded-nanogpt splits them: the token (and learned position) embeddings are 'embedding',
  an untied `lm_head` is 'head', the blocks' 2-D kernels are 'hidden' (Muon), and every
  vector (norm scales, biases) is 'other'. A tied head is the embedding."""
  def role(path, leaf) -> str:
    top = path[0].key
    if top in ("wte", "wpe"):
      return "embedding"
    if top == "lm_head":
      return "head"
    return "hidden" if leaf.ndim == 2 else "other"

  return jax.tree_util.tree_map_with_path(role, params)


# Megatron-LM's split of a Transformer block over a tensor-parallel group (Shoeybi et al.
# 2019, §3, Fig. 3): the first matmul of each branch is split by columns (its outputs: the
# attention heads, the MLP's hidden units), the second by rows, so each branch needs one
# all-reduce forward and one backward; a bias of a column-split kernel is split with it.
_COLUMN_SPLIT = {("attn", "c_attn"), ("mlp", "c_fc")}
_ROW_SPLIT = {("attn", "c_proj"), ("mlp", "c_proj")}


def tensor_parallel_dims(params: Any) -> dict[tuple[str, ...], int]:
  """{parameter path: the dimension split over the tensor-parallel axis}: Megatron's column
  split of c_attn and c_fc (kernel dim 1, bias dim 0) and row split of both c_proj (kernel
  dim 0; their biases are replicated), plus the vocabulary-parallel token embedding (wte
  dim 0) and untied head (lm_head dim 1). A split the axis size does not divide is left
  replicated by the engine (e.g. a 65-character vocabulary)."""
  dims = {}
  for path, _ in jax.tree_util.tree_flatten_with_path(params)[0]:
    names = tuple(str(k.key) for k in path)
    layer, leaf = names[-3:-1], names[-1]
    if layer in _COLUMN_SPLIT:
      dims[names] = 1 if leaf == "kernel" else 0
    elif layer in _ROW_SPLIT and leaf == "kernel":
      dims[names] = 0
    elif names == ("wte", "embedding"):
      dims[names] = 0
    elif names == ("lm_head", "kernel"):
      dims[names] = 1
  return dims
