"""The DDPM noise-prediction U-Net (Ho, Jain, Abbeel 2020, arXiv:2006.11239, Appendix B).

Appendix B: "our neural network architecture follows the backbone of PixelCNN++, which is a
U-Net based on a Wide ResNet. We replaced weight normalization with group normalization ...
Our 32 x 32 models use four feature map resolutions (32 x 32 to 4 x 4) ... two convolutional
residual blocks per resolution level and self-attention blocks at the 16 x 16 resolution
between the convolutional blocks. Diffusion time t is specified by adding the Transformer
sinusoidal position embedding into each residual block."

The layout, widths, initializers and the skip-connection bookkeeping follow the authors'
released TF1 code (`hojonathanho/diffusion`, `diffusion_tf/models/unet.py`), so the CIFAR-10
configuration (ch=128, ch_mult=(1, 2, 2, 2), num_res_blocks=2, attn_resolutions=(16,)) has
exactly the 35,746,307 parameters of that code (the paper's "35.7M").

Mixed precision: convolutions, dense layers and attention matmuls run in `UNet.dtype`;
parameters are always float32; GroupNorm, the timestep embedding and the attention softmax run
in float32; the returned prediction is float32.

Rematerialization (`remat=True`): every ResBlock and attention block is wrapped in `nn.remat`
(gradient checkpointing, Chen et al. 2016, arXiv:1604.06174): the backward pass keeps only
the blocks' inputs and recomputes their insides, trading about one more forward pass for
activation memory. Parameter names and values are the same either way.

Class conditioning (`num_classes` = K > 0; Ho & Salimans 2022, "Classifier-Free Diffusion
Guidance", arXiv:2207.12598): a learned [K + 1, 4 ch] table `label_emb` whose row y is added
to the timestep embedding after its MLP (as guided-diffusion's `emb + label_emb(y)`), so every
ResBlock sees it; row K is the "null" class of the unconditional model eps(x, null), which
a call without labels uses. K = 0 has no table: the parameters and outputs of the
unconditional U-Net.
"""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

# The released code initializes every kernel with VarianceScaling(scale, 'fan_avg', 'uniform')
# and every bias with zeros; "zero" layers use scale=1e-10 because TF rejects scale=0. Flax's
# fans for a (kh, kw, in, out) conv kernel or an (in, out) dense kernel are computed exactly as
# TF's, so these initializers draw from the same distributions.
_default_init = nn.initializers.variance_scaling(1.0, "fan_avg", "uniform")
_zero_ish_init = nn.initializers.variance_scaling(1e-10, "fan_avg", "uniform")

# tf.contrib.layers.group_norm's epsilon, as used by the released code.
_GN_EPSILON = 1e-6


def timestep_embedding(t_B: jax.Array, dim: int) -> jax.Array:
  """Sinusoidal embedding of (integer or continuous) diffusion times, in float32.

  The Transformer position encoding (Vaswani et al. 2017, Section 3.5) applied to t, as in
  Ho et al. 2020, Section 3.3 / Appendix B. Frequencies are 10000^(-i / (dim/2 - 1)) for
  i = 0 .. dim/2 - 1, and sines come before cosines (the tensor2tensor / released-code layout,
  not the interleaved one of the Transformer paper). An odd `dim` is zero-padded by one.

  Args:
    t_B: [B] timesteps.
    dim: embedding width.

  Returns:
    [B, dim] float32 embedding.
  """
  half = dim // 2
  log_rate = math.log(10000.0) / max(half - 1, 1)
  freqs_F = jnp.exp(-log_rate * jnp.arange(half, dtype=jnp.float32))
  angles_BxF = t_B.astype(jnp.float32)[:, None] * freqs_F[None, :]
  emb_BxD = jnp.concatenate([jnp.sin(angles_BxF), jnp.cos(angles_BxF)], axis=-1)
  if dim % 2 == 1:
    emb_BxD = jnp.pad(emb_BxD, ((0, 0), (0, 1)))
  return emb_BxD


def _group_norm(x_BxHxWxC: jax.Array, num_groups: int, name: str) -> jax.Array:
  """GroupNorm (Wu & He 2018) in float32; raises a clear ValueError on indivisible widths."""
  C = x_BxHxWxC.shape[-1]
  if C % num_groups:
    raise ValueError(
        f"GroupNorm '{name}' sees {C} channels, which num_groups={num_groups} does not "
        f"divide. Choose `ch` (and hence every ch * ch_mult[i] and every skip concatenation) "
        f"divisible by num_groups, or lower num_groups.")
  return nn.GroupNorm(
      num_groups=num_groups, epsilon=_GN_EPSILON, dtype=jnp.float32, param_dtype=jnp.float32,
      name=name)(x_BxHxWxC)


class ResBlock(nn.Module):
  """Wide-ResNet block with an additive timestep projection (Ho et al. 2020, Appendix B).

  h = conv3x3(dropout(swish(GN(conv3x3(swish(GN(x))) + Dense(swish(temb))))));
  returns shortcut(x) + h, where the shortcut is a 1x1 projection only when widths differ.
  The second conv is (nearly) zero-initialized, so each block starts as the identity.
  """
  out_ch: int
  dropout: float
  num_groups: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x_BxHxWxC: jax.Array, temb_BxE: jax.Array, train: bool) -> jax.Array:
    # `train` is positional so that `nn.remat(ResBlock, static_argnums=(3,))` keeps it static.
    conv = lambda name, init=_default_init: nn.Conv(
        self.out_ch, (3, 3), padding="SAME", dtype=self.dtype, kernel_init=init, name=name)

    h_BxHxWxO = conv("conv1")(nn.swish(_group_norm(x_BxHxWxC, self.num_groups, "norm1")))
    temb_BxO = nn.Dense(self.out_ch, dtype=self.dtype, kernel_init=_default_init,
                        name="temb_proj")(nn.swish(temb_BxE))
    h_BxHxWxO = h_BxHxWxO + temb_BxO[:, None, None, :]
    h_BxHxWxO = nn.swish(_group_norm(h_BxHxWxO, self.num_groups, "norm2"))
    h_BxHxWxO = nn.Dropout(self.dropout, deterministic=not train)(h_BxHxWxO)
    h_BxHxWxO = conv("conv2", _zero_ish_init)(h_BxHxWxO)

    if x_BxHxWxC.shape[-1] != self.out_ch:
      # The released code's default "nin_shortcut": a 1x1 (network-in-network) projection.
      x_BxHxWxC = nn.Dense(self.out_ch, dtype=self.dtype, kernel_init=_default_init,
                           name="nin_shortcut")(x_BxHxWxC)
    return x_BxHxWxC.astype(h_BxHxWxO.dtype) + h_BxHxWxO


class AttnBlock(nn.Module):
  """Single-head self-attention over all H*W positions, with a residual (Ho et al., App. B).

  GN -> 1x1 q, k, v -> softmax(q k^T / sqrt(C)) v -> 1x1 output projection (nearly
  zero-initialized, so the block starts as the identity) -> x + h.
  """
  num_groups: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x_BxHxWxC: jax.Array) -> jax.Array:
    B, H, W, C = x_BxHxWxC.shape
    dense = lambda name, init=_default_init: nn.Dense(
        C, dtype=self.dtype, kernel_init=init, name=name)

    h_BxNxC = _group_norm(x_BxHxWxC, self.num_groups, "norm").reshape(B, H * W, C)
    q_BxNxC, k_BxNxC, v_BxNxC = dense("q")(h_BxNxC), dense("k")(h_BxNxC), dense("v")(h_BxNxC)
    logits_BxNxN = jnp.einsum("bnc,bmc->bnm", q_BxNxC, k_BxNxC) * (C ** -0.5)
    weights_BxNxN = jax.nn.softmax(logits_BxNxN.astype(jnp.float32), axis=-1)
    h_BxNxC = jnp.einsum("bnm,bmc->bnc", weights_BxNxN.astype(v_BxNxC.dtype), v_BxNxC)
    h_BxNxC = dense("proj_out", _zero_ish_init)(h_BxNxC)
    return x_BxHxWxC.astype(h_BxNxC.dtype) + h_BxNxC.reshape(B, H, W, C)


class UNet(nn.Module):
  """DDPM epsilon-prediction U-Net (Ho et al. 2020, Appendix B; PixelCNN++-style backbone).

  Attributes:
    ch: base width; the timestep embedding has width ch and its MLP width 4 * ch.
    ch_mult: width multiplier per resolution level; level i runs at H / 2**i.
    num_res_blocks: ResBlocks per level on the way down (num_res_blocks + 1 on the way up).
    attn_resolutions: feature-map heights after whose ResBlocks a self-attention block runs.
    dropout: dropout rate inside every ResBlock (uses the 'dropout' rng when train=True).
    num_groups: GroupNorm groups; every normalized width must be divisible by it.
    out_channels: output channels; defaults to the input's.
    remat: recompute each ResBlock and attention block in the backward pass (less memory).
    num_classes: K > 0 adds the class-label embedding (module docstring); 0 = unconditional.
    dtype: compute dtype of convolutions, dense layers and attention matmuls (params stay
      float32; normalization, the timestep embedding and softmax run in float32).
  """
  ch: int = 128
  ch_mult: tuple[int, ...] = (1, 2, 2, 2)
  num_res_blocks: int = 2
  attn_resolutions: tuple[int, ...] = (16,)
  dropout: float = 0.1
  num_groups: int = 32
  out_channels: int | None = None
  remat: bool = False
  num_classes: int = 0
  dtype: Any = jnp.float32

  def _check_inputs(self, x_BxHxWxC: jax.Array, t_B: jax.Array,
                    labels_B: jax.Array | None) -> None:
    """Validates config and shapes at trace time, before anything is compiled."""
    if x_BxHxWxC.ndim != 4:
      raise ValueError(f"UNet expects images of shape [B, H, W, C]; got {x_BxHxWxC.shape}.")
    B, H, W, _ = x_BxHxWxC.shape
    if t_B.shape != (B,):
      raise ValueError(f"UNet expects timesteps of shape [B]=({B},); got {t_B.shape}.")
    if labels_B is not None and not self.num_classes:
      raise ValueError("UNet got class labels but is unconditional (num_classes=0); set "
                       "model.num_classes to the number of classes to condition on them.")
    if labels_B is not None and labels_B.shape != (B,):
      raise ValueError(f"UNet expects labels of shape [B]=({B},); got {labels_B.shape}.")
    if not self.ch_mult:
      raise ValueError("ch_mult must name at least one resolution level.")
    if self.num_res_blocks < 1:
      raise ValueError(f"num_res_blocks must be >= 1; got {self.num_res_blocks}.")
    factor = 2 ** (len(self.ch_mult) - 1)
    if H % factor or W % factor:
      raise ValueError(
          f"Input size {H}x{W} is not divisible by 2**(len(ch_mult)-1) = {factor}, which "
          f"the {len(self.ch_mult) - 1} downsamplings of ch_mult={self.ch_mult} need. Use a "
          f"shorter ch_mult (e.g. length 3 for 28x28: 28 -> 14 -> 7) or resize the input.")
    heights = tuple(H // 2**i for i in range(len(self.ch_mult)))
    unused = [r for r in self.attn_resolutions if r not in heights]
    if unused:
      raise ValueError(
          f"attn_resolutions {tuple(unused)} never occur; feature-map heights for a {H}x{W} "
          f"input with ch_mult={self.ch_mult} are {heights}.")

  @nn.compact
  def __call__(self, x_BxHxWxC: jax.Array, t_B: jax.Array, labels_B: jax.Array | None = None,
               *, train: bool) -> jax.Array:
    """Predicts epsilon (or any same-resolution target) from a noisy image and its timestep.

    Args:
      x_BxHxWxC: [B, H, W, C] images; H and W divisible by 2**(len(ch_mult) - 1).
      t_B: [B] diffusion timesteps (integers, or floats for continuous time).
      labels_B: [B] int classes in [0, num_classes], num_classes being the null class; None
        = all null. Only for num_classes > 0.
      train: enables dropout, which then needs the 'dropout' rng.

    Returns:
      [B, H, W, out_channels or C] float32 prediction.
    """
    self._check_inputs(x_BxHxWxC, t_B, labels_B)
    C_out = x_BxHxWxC.shape[-1] if self.out_channels is None else self.out_channels
    num_levels = len(self.ch_mult)
    # nn.remat keeps the wrapped module's name, so params are the same with and without it.
    res_cls = nn.remat(ResBlock, static_argnums=(3,)) if self.remat else ResBlock
    attn_cls = nn.remat(AttnBlock) if self.remat else AttnBlock
    res_block = lambda out_ch, name: res_cls(
        out_ch, self.dropout, self.num_groups, self.dtype, name=name)
    attn_block = lambda name: attn_cls(self.num_groups, self.dtype, name=name)

    # Timestep embedding: sinusoid(ch) -> Dense(4ch) -> swish -> Dense(4ch).
    E = 4 * self.ch
    temb_BxE = nn.Dense(E, dtype=self.dtype, kernel_init=_default_init,
                        name="temb_dense0")(timestep_embedding(t_B, self.ch))
    temb_BxE = nn.Dense(E, dtype=self.dtype, kernel_init=_default_init,
                        name="temb_dense1")(nn.swish(temb_BxE))
    if self.num_classes:
      # Ho & Salimans 2022: eps(x, t, c) with c's embedding added to t's; row K is null.
      if labels_B is None:
        labels_B = jnp.full(t_B.shape, self.num_classes, jnp.int32)
      temb_BxE = temb_BxE + nn.Embed(self.num_classes + 1, E, dtype=self.dtype,
                                     name="label_emb")(labels_B)

    # Down path. `skips` collects conv_in's output, every ResBlock(+attention) output and every
    # downsample output: 1 + num_levels * num_res_blocks + (num_levels - 1) tensors, one for
    # each of the num_levels * (num_res_blocks + 1) up-path ResBlocks.
    h = nn.Conv(self.ch, (3, 3), padding="SAME", dtype=self.dtype, kernel_init=_default_init,
                name="conv_in")(x_BxHxWxC.astype(self.dtype))
    skips = [h]
    for level, mult in enumerate(self.ch_mult):
      for block in range(self.num_res_blocks):
        h = res_block(self.ch * mult, f"down_{level}_block_{block}")(h, temb_BxE, train)
        if h.shape[1] in self.attn_resolutions:
          h = attn_block(f"down_{level}_attn_{block}")(h)
        skips.append(h)
      if level != num_levels - 1:
        # Stride-2 3x3 conv; 'SAME' pads (0, 1) per spatial axis, as TF does.
        h = nn.Conv(h.shape[-1], (3, 3), strides=(2, 2), padding="SAME", dtype=self.dtype,
                    kernel_init=_default_init, name=f"down_{level}_downsample")(h)
        skips.append(h)

    # Middle: ResBlock -> attention -> ResBlock at the lowest resolution.
    h = res_block(h.shape[-1], "mid_block_1")(h, temb_BxE, train)
    h = attn_block("mid_attn_1")(h)
    h = res_block(h.shape[-1], "mid_block_2")(h, temb_BxE, train)

    # Up path: every ResBlock consumes one skip, concatenated on channels.
    for level in reversed(range(num_levels)):
      for block in range(self.num_res_blocks + 1):
        h = jnp.concatenate([h, skips.pop().astype(h.dtype)], axis=-1)
        h = res_block(self.ch * self.ch_mult[level], f"up_{level}_block_{block}")(
            h, temb_BxE, train)
        if h.shape[1] in self.attn_resolutions:
          h = attn_block(f"up_{level}_attn_{block}")(h)
      if level != 0:
        # Nearest-neighbour 2x upsampling, then a 3x3 conv.
        h = jnp.repeat(jnp.repeat(h, 2, axis=1), 2, axis=2)
        h = nn.Conv(h.shape[-1], (3, 3), padding="SAME", dtype=self.dtype,
                    kernel_init=_default_init, name=f"up_{level}_upsample")(h)
    assert not skips, f"{len(skips)} skip connections left unused"

    # Output head: GN -> swish -> 3x3 conv (nearly zero-initialized, as in the released code).
    h = nn.swish(_group_norm(h, self.num_groups, "norm_out"))
    out_BxHxWxC = nn.Conv(C_out, (3, 3), padding="SAME", dtype=self.dtype,
                          kernel_init=_zero_ish_init, name="conv_out")(h)
    return out_BxHxWxC.astype(jnp.float32)
