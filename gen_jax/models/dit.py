"""DiT: the Diffusion Transformer (Peebles & Xie 2023, "Scalable Diffusion Models with
Transformers", arXiv:2212.09748), as the authors' facebookresearch/DiT `models.py`.

An image (or latent) x [B, H, W, C] is cut into T = (H/p)(W/p) patches p x p, each linearly
embedded to D channels ("patchify", §3.1: a p x p convolution of stride p), plus the fixed
2-D sine-cosine position embedding of the patch grid (MAE's `get_2d_sincos_pos_embed`: the
first D/2 channels encode a patch's column, the last D/2 its row; each half is
[sin(pos w_i), cos(pos w_i)] with w_i = 10000^(-i / (D/4)), i < D/4). The conditioning
c = t_emb + y_emb [B, D] sums

  * the timestep embedding: [cos(t f_i), sin(t f_i)], f_i = 10000^(-i / 128), i < 128 (the
    256-wide frequency embedding of GLIDE), through Linear(256, D), SiLU, Linear(D, D);
  * the label embedding: a table of num_classes rows, plus the null class's row (id
    num_classes) when class_dropout_prob > 0; in training each label is replaced by the null
    class with probability class_dropout_prob (for classifier-free guidance).

`depth` adaLN-Zero blocks (§3.2, Fig. 3) follow: from SiLU(c) one linear layer regresses
(shift, scale, gate) for each of the two branches, and with LN a LayerNorm without affine
parameters (eps 1e-6),

  x <- x + gate_msa * Attn(LN(x) (1 + scale_msa) + shift_msa)
  x <- x + gate_mlp * MLP(LN(x) (1 + scale_mlp) + shift_mlp),

Attn being timm's multi-head self-attention (fused qkv with bias, then a projection) and MLP
Linear(D, mlp_ratio D), GELU (tanh approximation), Linear(mlp_ratio D, D). The final layer
modulates LN(x) with (shift, scale) from SiLU(c) and maps each token to a p x p x C_out patch
("unpatchify" reassembles the image); C_out = 2C with `learn_sigma` (the channels [C:] are
the reverse process's variance, Nichol & Dhariwal's interpolation), else C.

The authors' initialization (`DiT.initialize_weights`): Xavier-uniform weights and zero biases
for every linear layer, the patch embedding initialized like a linear layer of fan-in p p C,
N(0, 0.02) for the label table and both timestep-MLP weights, and zeros for every adaLN
modulation layer and the final linear layer ("adaLN-Zero": each block starts as the identity
and the network outputs 0).

Parameters are named as the authors' modules (x_embedder, t_embedder/mlp_0, mlp_2,
y_embedder/embedding_table, blocks_<i>/{attn/qkv, attn/proj, mlp/fc1, mlp/fc2,
adaLN_modulation}, final_layer/{linear, adaLN_modulation}); gen_jax/interop/dit.py converts
their state dict. The position embedding is a constant here, not a parameter: the authors keep
it as a frozen `nn.Parameter`, so their count includes it (`fixed_parameter_count`).

Mixed precision: matmuls in `dtype`; parameters, the LayerNorms, the modulation's inputs,
the softmax inside attention and the returned output are float32.
"""
from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from gen_jax.models.attention import AttentionImpl, attention, check_attention_impl, split_qkv
from gen_jax.models.dense import Dense

FREQUENCY_EMBEDDING_SIZE = 256   # TimestepEmbedder's frequency_embedding_size
MAX_PERIOD = 10000.0
LN_EPSILON = 1e-6
_EMBED_STD = 0.02                # label table and timestep MLP weights

# The paper's Table 1 models: (depth N, hidden size D, heads), each with patch p in (2, 4, 8).
_DIT_BASE_SIZES = {"S": (12, 384, 6), "B": (12, 768, 12), "L": (24, 1024, 16),
                   "XL": (28, 1152, 16)}
DIT_SIZES: dict[str, dict[str, Any]] = {
    f"DiT-{name}/{p}": dict(depth=depth, hidden_size=D, num_heads=heads, patch_size=p)
    for name, (depth, D, heads) in _DIT_BASE_SIZES.items() for p in (2, 4, 8)}

_xavier = nn.initializers.xavier_uniform()
_zeros = nn.initializers.zeros
# The authors' patch embedding: xavier_uniform_ on the conv weight viewed as [D, p p C], i.e.
# fan-in p p C and fan-out D (a conv's own Xavier would count fan-out D p p).
_patch_init = nn.initializers.variance_scaling(1.0, "fan_avg", "uniform", in_axis=(0, 1, 2),
                                               out_axis=-1)


def sincos_1d(embed_dim: int, positions: np.ndarray) -> np.ndarray:
  """[sin(pos w_i), cos(pos w_i)] with w_i = 10000^(-i / (embed_dim / 2)): [M, embed_dim]."""
  omega = 1.0 / MAX_PERIOD ** (np.arange(embed_dim // 2, dtype=np.float64) / (embed_dim / 2))
  angles = np.outer(positions.reshape(-1).astype(np.float64), omega)
  return np.concatenate([np.sin(angles), np.cos(angles)], axis=1)


def sincos_2d_position_embedding(embed_dim: int, grid_size: int) -> np.ndarray:
  """The fixed position embedding of a grid_size x grid_size patch grid, [T, embed_dim]
  float32, patches in row-major order: channels [:D/2] encode the column, [D/2:] the row
  (MAE's get_2d_sincos_pos_embed, which DiT uses)."""
  if embed_dim % 4:
    raise ValueError(f"hidden_size={embed_dim} must be divisible by 4 for the 2-D sine-cosine "
                     "position embedding.")
  rows, cols = np.meshgrid(np.arange(grid_size), np.arange(grid_size), indexing="ij")
  half = embed_dim // 2
  return np.concatenate([sincos_1d(half, cols), sincos_1d(half, rows)],
                        axis=1).astype(np.float32)


def timestep_embedding(t_B: jax.Array, dim: int = FREQUENCY_EMBEDDING_SIZE) -> jax.Array:
  """[cos(t f_i), sin(t f_i)] with f_i = 10000^(-i / (dim/2)), i < dim/2 (GLIDE's, which
  DiT's TimestepEmbedder uses; t may be fractional): [B, dim] float32."""
  half = dim // 2
  freqs = jnp.exp(-math.log(MAX_PERIOD) * jnp.arange(half, dtype=jnp.float32) / half)
  args_BxF = t_B.astype(jnp.float32)[:, None] * freqs[None]
  embedding = jnp.concatenate([jnp.cos(args_BxF), jnp.sin(args_BxF)], axis=-1)
  if dim % 2:
    embedding = jnp.pad(embedding, ((0, 0), (0, 1)))
  return embedding


def modulate(x_BxTxD: jax.Array, shift_BxD: jax.Array, scale_BxD: jax.Array) -> jax.Array:
  """adaLN: x (1 + scale) + shift, per example (Peebles & Xie §3.2)."""
  return x_BxTxD * (1.0 + scale_BxD[:, None]) + shift_BxD[:, None]


def _layer_norm(x: jax.Array) -> jax.Array:
  """LayerNorm without affine parameters, eps 1e-6, in float32."""
  return nn.LayerNorm(epsilon=LN_EPSILON, use_bias=False, use_scale=False,
                      dtype=jnp.float32)(x.astype(jnp.float32))


class SelfAttention(nn.Module):
  """timm's `Attention` (qkv_bias=True): fused qkv, multi-head attention, projection."""
  num_heads: int
  dtype: Any = jnp.float32
  attention_impl: AttentionImpl = None

  @nn.compact
  def __call__(self, x_BxTxD: jax.Array) -> jax.Array:
    B, T, D = x_BxTxD.shape
    qkv = Dense(3 * D, dtype=self.dtype, kernel_init=_xavier, name="qkv")(x_BxTxD)
    q_BxTxHxK, k_BxTxHxK, v_BxTxHxK = split_qkv(qkv, self.num_heads)
    y_BxTxHxK = attention(q_BxTxHxK, k_BxTxHxK, v_BxTxHxK, attention_impl=self.attention_impl)
    return Dense(D, dtype=self.dtype, kernel_init=_xavier, name="proj")(y_BxTxHxK.reshape(B, T, D))


class MLP(nn.Module):
  """timm's `Mlp`: Linear(D, F), GELU (tanh approximation), Linear(F, D)."""
  hidden_features: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x_BxTxD: jax.Array) -> jax.Array:
    h = Dense(self.hidden_features, dtype=self.dtype, kernel_init=_xavier, name="fc1")(x_BxTxD)
    h = jax.nn.gelu(h, approximate=True)
    return Dense(x_BxTxD.shape[-1], dtype=self.dtype, kernel_init=_xavier, name="fc2")(h)


class DiTBlock(nn.Module):
  """A DiT block with adaLN-Zero conditioning (Peebles & Xie §3.2, Fig. 3, right)."""
  num_heads: int
  mlp_ratio: float = 4.0
  dtype: Any = jnp.float32
  attention_impl: AttentionImpl = None

  @nn.compact
  def __call__(self, x_BxTxD: jax.Array, c_BxD: jax.Array) -> jax.Array:
    D = x_BxTxD.shape[-1]
    modulation = Dense(6 * D, dtype=self.dtype, kernel_init=_zeros, name="adaLN_modulation")
    (shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp,
     gate_mlp) = jnp.split(modulation(nn.silu(c_BxD)).astype(jnp.float32), 6, axis=-1)
    h = modulate(_layer_norm(x_BxTxD), shift_msa, scale_msa).astype(self.dtype)
    h = SelfAttention(self.num_heads, self.dtype, self.attention_impl, name="attn")(h)
    x_BxTxD = x_BxTxD + (gate_msa[:, None] * h).astype(x_BxTxD.dtype)
    h = modulate(_layer_norm(x_BxTxD), shift_mlp, scale_mlp).astype(self.dtype)
    h = MLP(int(D * self.mlp_ratio), self.dtype, name="mlp")(h)
    return x_BxTxD + (gate_mlp[:, None] * h).astype(x_BxTxD.dtype)


class FinalLayer(nn.Module):
  """adaLN (shift, scale) on LN(x), then a zero-initialized Linear(D, p p C_out)."""
  patch_size: int
  out_channels: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x_BxTxD: jax.Array, c_BxD: jax.Array) -> jax.Array:
    D = x_BxTxD.shape[-1]
    modulation = Dense(2 * D, dtype=self.dtype, kernel_init=_zeros, name="adaLN_modulation")
    shift, scale = jnp.split(modulation(nn.silu(c_BxD)).astype(jnp.float32), 2, axis=-1)
    h = modulate(_layer_norm(x_BxTxD), shift, scale).astype(self.dtype)
    return Dense(self.patch_size ** 2 * self.out_channels, dtype=self.dtype, kernel_init=_zeros,
                 name="linear")(h)


class TimestepEmbedder(nn.Module):
  """Frequency embedding of t (`timestep_embedding`), then Linear, SiLU, Linear."""
  hidden_size: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, t_B: jax.Array) -> jax.Array:
    init = nn.initializers.normal(_EMBED_STD)
    h = Dense(self.hidden_size, dtype=self.dtype, kernel_init=init, name="mlp_0")(
        timestep_embedding(t_B))
    return Dense(self.hidden_size, dtype=self.dtype, kernel_init=init, name="mlp_2")(nn.silu(h))


class DiT(nn.Module):
  """Diffusion Transformer: x [B, H, W, C], t [B], labels [B] -> [B, H, W, C_out] float32.

  Attributes:
    input_size: H = W of the input (32 for ImageNet-256 latents, 28 for MNIST pixels).
    patch_size: p, dividing input_size.
    in_channels: C.
    hidden_size, depth, num_heads: D, the number of blocks N, the attention heads
      (`DIT_SIZES` has the paper's).
    mlp_ratio: the MLP's hidden width over D.
    class_dropout_prob: the probability of replacing a label by the null class in training;
      > 0 also adds the null class's row (id num_classes) to the label table.
    num_classes: K classes; 0: unconditional (no label table, c = t_emb).
    learn_sigma: C_out = 2C (the variance's channels follow the mean's), else C.
    train_label_dropout: whether `train=True` drops labels (class_dropout_prob, rng
      'dropout'), as the authors' LabelEmbedder; False for a caller that drops them itself
      before the call (the diffusion method's diffusion.p_uncond).
    dtype: compute dtype of the matmuls.
    remat: recompute each block's activations in the backward pass (less memory).
    attention_impl: `jax.nn.dot_product_attention`'s implementation (models/attention.py).
  """
  input_size: int = 32
  patch_size: int = 2
  in_channels: int = 4
  hidden_size: int = 1152
  depth: int = 28
  num_heads: int = 16
  mlp_ratio: float = 4.0
  class_dropout_prob: float = 0.1
  num_classes: int = 1000
  learn_sigma: bool = True
  train_label_dropout: bool = True
  dtype: Any = jnp.float32
  remat: bool = False
  attention_impl: AttentionImpl = None

  @property
  def out_channels(self) -> int:
    return 2 * self.in_channels if self.learn_sigma else self.in_channels

  @property
  def grid_size(self) -> int:
    return self.input_size // self.patch_size

  @property
  def has_null_class(self) -> bool:
    """Whether the label table has the null class's row (the authors': class dropout > 0)."""
    return self.num_classes > 0 and self.class_dropout_prob > 0

  @property
  def fixed_parameter_count(self) -> int:
    """Entries of the fixed position embedding, a frozen parameter in the authors' count."""
    return self.grid_size ** 2 * self.hidden_size

  def _check(self, x_BxHxWxC: jax.Array, t_B: jax.Array, labels_B: jax.Array | None) -> None:
    check_attention_impl(self.attention_impl)
    B = x_BxHxWxC.shape[0]
    expected = (self.input_size, self.input_size, self.in_channels)
    if x_BxHxWxC.ndim != 4 or x_BxHxWxC.shape[1:] != expected:
      raise ValueError(f"DiT expects x of shape [B, {', '.join(map(str, expected))}] "
                       f"(input_size, input_size, in_channels); got {x_BxHxWxC.shape}.")
    if self.input_size % self.patch_size:
      raise ValueError(f"patch_size={self.patch_size} must divide input_size="
                       f"{self.input_size}.")
    if self.hidden_size % self.num_heads:
      raise ValueError(f"hidden_size={self.hidden_size} must be divisible by num_heads="
                       f"{self.num_heads}.")
    if t_B.shape != (B,):
      raise ValueError(f"DiT expects timesteps of shape [B]=({B},); got {t_B.shape}.")
    if labels_B is not None and not self.num_classes:
      raise ValueError("DiT got class labels but is unconditional (num_classes=0); set "
                       "num_classes to the number of classes to condition on them.")
    if labels_B is not None and labels_B.shape != (B,):
      raise ValueError(f"DiT expects labels of shape [B]=({B},); got {labels_B.shape}.")
    if labels_B is None and self.num_classes and not self.has_null_class:
      raise ValueError("A conditional DiT without class dropout (class_dropout_prob=0) has no "
                       "null class: pass the labels.")

  def _label_embedding(self, labels_B: jax.Array | None, batch: int, train: bool) -> jax.Array:
    """The labels' rows of the table; None: the null class. Training with
    train_label_dropout replaces each label by the null class with probability
    class_dropout_prob (the authors' `LabelEmbedder.token_drop`)."""
    if labels_B is None:
      labels_B = jnp.full((batch,), self.num_classes, jnp.int32)
    elif train and self.train_label_dropout and self.class_dropout_prob > 0:
      drop_B = jax.random.uniform(self.make_rng("dropout"), (batch,)) < self.class_dropout_prob
      labels_B = jnp.where(drop_B, self.num_classes, labels_B)
    table = nn.Embed(self.num_classes + int(self.has_null_class), self.hidden_size,
                     embedding_init=nn.initializers.normal(_EMBED_STD), name="y_embedder")
    return table(labels_B)

  def unpatchify(self, x_BxTxF: jax.Array) -> jax.Array:
    """Tokens [B, T, p p C_out] (each a p x p x C_out patch) -> image [B, H, W, C_out]."""
    B, g, p, c = x_BxTxF.shape[0], self.grid_size, self.patch_size, self.out_channels
    x = x_BxTxF.reshape(B, g, g, p, p, c).transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(B, g * p, g * p, c)

  @nn.compact
  def __call__(self, x_BxHxWxC: jax.Array, t_B: jax.Array, labels_B: jax.Array | None = None,
               *, train: bool = False) -> jax.Array:
    """The network's output for x at timesteps (or noise labels) t.

    Args:
      x_BxHxWxC: the noisy input.
      t_B: [B] timesteps, may be fractional.
      labels_B: [B] int classes in [0, num_classes], num_classes being the null class; None:
        all null (a conditional model) or none (an unconditional one).
      train: label dropout on (see train_label_dropout).

    Returns:
      [B, H, W, out_channels] float32.
    """
    self._check(x_BxHxWxC, t_B, labels_B)
    B, D, p = x_BxHxWxC.shape[0], self.hidden_size, self.patch_size
    patches = nn.Conv(D, (p, p), strides=(p, p), padding="VALID", dtype=self.dtype,
                      kernel_init=_patch_init, name="x_embedder")(x_BxHxWxC)
    pos_TxD = jnp.asarray(sincos_2d_position_embedding(D, self.grid_size))
    x_BxTxD = (patches.reshape(B, -1, D).astype(jnp.float32) + pos_TxD).astype(self.dtype)
    c_BxD = TimestepEmbedder(D, self.dtype, name="t_embedder")(t_B).astype(jnp.float32)
    if self.num_classes:
      c_BxD = c_BxD + self._label_embedding(labels_B, B, train)
    block_cls = nn.remat(DiTBlock) if self.remat else DiTBlock
    for i in range(self.depth):
      x_BxTxD = block_cls(self.num_heads, self.mlp_ratio, self.dtype, self.attention_impl,
                          name=f"blocks_{i}")(x_BxTxD, c_BxD)
    out = FinalLayer(p, self.out_channels, self.dtype, name="final_layer")(x_BxTxD, c_BxD)
    return self.unpatchify(out).astype(jnp.float32)


def dit_kwargs(size: str) -> dict[str, Any]:
  """depth, hidden_size, num_heads and patch_size of a paper model, e.g. 'DiT-XL/2'."""
  if size not in DIT_SIZES:
    raise ValueError(f"DiT size {size!r}; expected one of {sorted(DIT_SIZES)}.")
  return dict(DIT_SIZES[size])
