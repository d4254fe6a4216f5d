"""The KL-regularized autoencoder of latent diffusion (Stable Diffusion's VAE).

Rombach, Blattmann, Lorenz, Esser, Ommer 2022, "High-Resolution Image Synthesis with Latent
Diffusion Models" (arXiv:2112.10752): §3.1 and App. G: an encoder E maps x [H, W, 3] to
z = E(x) [H/f, W/f, c] and a decoder D reconstructs x~ = D(z); "KL-reg." puts a slight KL
penalty towards N(0, I) on a diagonal Gaussian posterior q(z|x) (App. G: kl_weight 1e-6).
Stable Diffusion uses f = 8, c = 4 (`SD_CONFIG`); its latents are multiplied by
`scaling_factor` (0.18215, §4.3.2 and App. D.1: the inverse std of the latents) before
diffusion.

The architecture is that of Hugging Face diffusers' `AutoencoderKL` (the same network as
CompVis' ldm/modules/diffusionmodules/model.py), and the submodules carry diffusers' names
(`down_blocks_0/resnets_1/conv1`, `mid_block/attentions_0/to_q`, ...), so a diffusers
state dict maps onto the params by name (gen_jax/interop/diffusers_vae.py):

  Encoder  conv_in 3x3 -> for each level i: `layers_per_block` ResnetBlocks to
           block_out_channels[i], then (all but the last level) a stride-2 3x3 conv on the
           input padded by one row and column at the bottom and right only -> mid block
           (ResnetBlock, single-head self-attention, ResnetBlock) -> GroupNorm, SiLU,
           conv_out 3x3 to 2c channels (posterior mean and log-variance).
  Decoder  conv_in 3x3 -> mid block -> for each level, widest first: layers_per_block + 1
           ResnetBlocks, then (all but the last) nearest-neighbour 2x upsampling and a 3x3
           conv -> GroupNorm, SiLU, conv_out 3x3.
  1x1 convs quant_conv (2c -> 2c) after the encoder and post_quant_conv (c -> c) before the
  decoder. GroupNorm eps 1e-6 everywhere; activations SiLU.

The downsampling factor is f = 2 ** (len(block_out_channels) - 1). Layout NHWC, images in
[-1, 1]. Compute runs in `dtype`; params, softmax, the posterior and outputs are float32.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

GROUP_NORM_EPS = 1e-6
# DiagonalGaussianDistribution (diffusers, and ldm's distributions.py) clips log sigma^2.
LOGVAR_MIN, LOGVAR_MAX = -30.0, 20.0

# diffusers' `AutoencoderKL` config of Stable Diffusion v1/v2's VAE (stabilityai/sd-vae-ft-mse).
SD_CONFIG: dict[str, Any] = dict(
    in_channels=3, out_channels=3, block_out_channels=(128, 256, 512, 512), layers_per_block=2,
    latent_channels=4, norm_num_groups=32, scaling_factor=0.18215)


def _group_norm(groups: int, name: str) -> nn.GroupNorm:
  # Two-pass variance, as torch's GroupNorm computes it (the fast E[x^2] - E[x]^2 differs
  # by more than float tolerance on activations with a large mean).
  return nn.GroupNorm(num_groups=groups, epsilon=GROUP_NORM_EPS, use_fast_variance=False,
                      name=name)


def _conv(features: int, kernel: int, dtype: Any, name: str, stride: int = 1,
          padding: Any = "SAME") -> nn.Conv:
  return nn.Conv(features, (kernel, kernel), strides=(stride, stride), padding=padding,
                 dtype=dtype, name=name)


class ResnetBlock(nn.Module):
  """diffusers' ResnetBlock2D without a time embedding: x + conv2(silu(norm2(conv1(silu(
  norm1(x)))))), the skip through a 1x1 `conv_shortcut` when the width changes."""

  out_channels: int
  groups: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x_BxHxWxC: jax.Array) -> jax.Array:
    h = nn.silu(_group_norm(self.groups, "norm1")(x_BxHxWxC))
    h = _conv(self.out_channels, 3, self.dtype, "conv1")(h)
    h = nn.silu(_group_norm(self.groups, "norm2")(h))
    h = _conv(self.out_channels, 3, self.dtype, "conv2")(h)
    skip = x_BxHxWxC
    if x_BxHxWxC.shape[-1] != self.out_channels:
      skip = _conv(self.out_channels, 1, self.dtype, "conv_shortcut")(skip)
    return skip + h


class SelfAttention(nn.Module):
  """The mid block's attention: GroupNorm, one head over the H*W positions (head width C,
  scores scaled by 1/sqrt(C)), an output projection and the residual."""

  groups: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x_BxHxWxC: jax.Array) -> jax.Array:
    B, H, W, C = x_BxHxWxC.shape
    h_BxNxC = _group_norm(self.groups, "group_norm")(x_BxHxWxC).reshape(B, H * W, C)
    dense = lambda name: nn.Dense(C, dtype=self.dtype, name=name)
    q, k, v = (dense(n)(h_BxNxC) for n in ("to_q", "to_k", "to_v"))
    logits_BxNxN = jnp.einsum("bqc,bkc->bqk", q, k).astype(jnp.float32) / jnp.sqrt(C)
    weights = jax.nn.softmax(logits_BxNxN, axis=-1).astype(v.dtype)
    out_BxNxC = dense("to_out_0")(jnp.einsum("bqk,bkc->bqc", weights, v))
    return x_BxHxWxC + out_BxNxC.reshape(B, H, W, C)


class MidBlock(nn.Module):
  """ResnetBlock, self-attention (optional, as diffusers' `mid_block_add_attention`),
  ResnetBlock, at the lowest resolution."""

  channels: int
  groups: int
  add_attention: bool = True
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    x = ResnetBlock(self.channels, self.groups, self.dtype, name="resnets_0")(x)
    if self.add_attention:
      x = SelfAttention(self.groups, self.dtype, name="attentions_0")(x)
    return ResnetBlock(self.channels, self.groups, self.dtype, name="resnets_1")(x)


class Downsample(nn.Module):
  """Stride-2 3x3 conv with no padding on an input padded by one zero row and column at the
  bottom and right (diffusers' Downsample2D with padding=0; ldm's asymmetric pad):
  H -> floor(H/2)."""

  channels: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x_BxHxWxC: jax.Array) -> jax.Array:
    x = jnp.pad(x_BxHxWxC, ((0, 0), (0, 1), (0, 1), (0, 0)))
    return _conv(self.channels, 3, self.dtype, "conv", stride=2, padding="VALID")(x)


class Upsample(nn.Module):
  """Nearest-neighbour 2x upsampling, then a 3x3 conv (diffusers' Upsample2D, use_conv)."""

  channels: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x_BxHxWxC: jax.Array) -> jax.Array:
    x = jnp.repeat(jnp.repeat(x_BxHxWxC, 2, axis=1), 2, axis=2)
    return _conv(self.channels, 3, self.dtype, "conv")(x)


class ResnetStage(nn.Module):
  """One level: `num_layers` ResnetBlocks (`resnets_j`), then an optional down- or
  upsampler (`downsamplers_0` / `upsamplers_0`): diffusers' DownEncoderBlock2D and
  UpDecoderBlock2D."""

  out_channels: int
  num_layers: int
  groups: int
  resample: str = ""   # '' | 'down' | 'up'
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    for j in range(self.num_layers):
      x = ResnetBlock(self.out_channels, self.groups, self.dtype, name=f"resnets_{j}")(x)
    if self.resample == "down":
      x = Downsample(self.out_channels, self.dtype, name="downsamplers_0")(x)
    elif self.resample == "up":
      x = Upsample(self.out_channels, self.dtype, name="upsamplers_0")(x)
    return x


class Encoder(nn.Module):
  """x [B, H, W, in] -> the moments [B, H/f, W/f, 2 * latent] (before quant_conv)."""

  block_out_channels: Sequence[int]
  layers_per_block: int
  latent_channels: int
  groups: int
  mid_block_add_attention: bool = True
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    widths = tuple(self.block_out_channels)
    h = _conv(widths[0], 3, self.dtype, "conv_in")(x.astype(self.dtype))
    for i, width in enumerate(widths):
      last = i == len(widths) - 1
      h = ResnetStage(width, self.layers_per_block, self.groups, "" if last else "down",
                      self.dtype, name=f"down_blocks_{i}")(h)
    h = MidBlock(widths[-1], self.groups, self.mid_block_add_attention, self.dtype,
                 name="mid_block")(h)
    h = nn.silu(_group_norm(self.groups, "conv_norm_out")(h))
    return _conv(2 * self.latent_channels, 3, self.dtype, "conv_out")(h)


class Decoder(nn.Module):
  """z [B, h, w, latent] (after post_quant_conv) -> x [B, h*f, w*f, out]."""

  block_out_channels: Sequence[int]
  layers_per_block: int
  out_channels: int
  groups: int
  mid_block_add_attention: bool = True
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, z: jax.Array) -> jax.Array:
    widths = tuple(reversed(tuple(self.block_out_channels)))
    h = _conv(widths[0], 3, self.dtype, "conv_in")(z.astype(self.dtype))
    h = MidBlock(widths[0], self.groups, self.mid_block_add_attention, self.dtype,
                 name="mid_block")(h)
    for i, width in enumerate(widths):
      last = i == len(widths) - 1
      h = ResnetStage(width, self.layers_per_block + 1, self.groups, "" if last else "up",
                      self.dtype, name=f"up_blocks_{i}")(h)
    h = nn.silu(_group_norm(self.groups, "conv_norm_out")(h))
    return _conv(self.out_channels, 3, self.dtype, "conv_out")(h)


class AutoencoderKL(nn.Module):
  """Rombach et al. 2022's KL-regularized autoencoder, fields named as diffusers' config.

  Attributes:
    in_channels, out_channels: image channels (SD: 3).
    block_out_channels: widths of the levels (SD: 128, 256, 512, 512); f = 2**(levels - 1).
    layers_per_block: ResnetBlocks per encoder level (the decoder has one more) (SD: 2).
    latent_channels: c, the latent's channels (SD: 4).
    norm_num_groups: GroupNorm groups; must divide every width (SD: 32).
    scaling_factor: what latent diffusion multiplies z by (SD: 0.18215); not used here.
    use_quant_conv, use_post_quant_conv: the 1x1 convs around the latent (SD: both).
    mid_block_add_attention: self-attention in the mid blocks (SD: yes).
    dtype: compute dtype.
  """

  in_channels: int = 3
  out_channels: int = 3
  block_out_channels: Sequence[int] = (128, 256, 512, 512)
  layers_per_block: int = 2
  latent_channels: int = 4
  norm_num_groups: int = 32
  scaling_factor: float = 0.18215
  use_quant_conv: bool = True
  use_post_quant_conv: bool = True
  mid_block_add_attention: bool = True
  dtype: Any = jnp.float32

  @property
  def downsampling_factor(self) -> int:
    """f = 2 ** (levels - 1): latents are [H/f, W/f, c] (H, W multiples of f)."""
    return 2 ** (len(self.block_out_channels) - 1)

  def setup(self):
    bad = [w for w in self.block_out_channels if w % self.norm_num_groups]
    if not self.block_out_channels or bad:
      raise ValueError(f"block_out_channels={tuple(self.block_out_channels)}: every width must "
                       f"be a multiple of norm_num_groups={self.norm_num_groups}.")
    self.encoder = Encoder(self.block_out_channels, self.layers_per_block, self.latent_channels,
                           self.norm_num_groups, self.mid_block_add_attention, self.dtype)
    self.decoder = Decoder(self.block_out_channels, self.layers_per_block, self.out_channels,
                           self.norm_num_groups, self.mid_block_add_attention, self.dtype)
    L = self.latent_channels
    self.quant_conv = _conv(2 * L, 1, self.dtype, "quant_conv") if self.use_quant_conv else None
    self.post_quant_conv = (_conv(L, 1, self.dtype, "post_quant_conv")
                            if self.use_post_quant_conv else None)

  def encode(self, x_BxHxWxC: jax.Array) -> tuple[jax.Array, jax.Array]:
    """The posterior q(z|x) = N(mean, exp(logvar)) of images in [-1, 1].

    Returns:
      (mean, logvar), each float32 [B, H/f, W/f, c]; logvar clipped to [-30, 20] as
      diffusers' and ldm's DiagonalGaussianDistribution.
    """
    moments = self.encoder(x_BxHxWxC)
    if self.quant_conv is not None:
      moments = self.quant_conv(moments)
    mean, logvar = jnp.split(moments.astype(jnp.float32), 2, axis=-1)
    return mean, jnp.clip(logvar, LOGVAR_MIN, LOGVAR_MAX)

  def decode(self, z_Bxhxwxc: jax.Array) -> jax.Array:
    """Images (float32 [B, h*f, w*f, out], unclipped; the data are in [-1, 1]) of latents z
    (unscaled: divide by `scaling_factor` first if they come from a latent-diffusion model)."""
    if self.post_quant_conv is not None:
      z_Bxhxwxc = self.post_quant_conv(z_Bxhxwxc.astype(self.dtype))
    return self.decoder(z_Bxhxwxc).astype(jnp.float32)

  def __call__(self, x_BxHxWxC: jax.Array, rng: jax.Array | None = None
               ) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Training pass: z = mean + sigma * eps with eps ~ N(0, I) from `rng` (the posterior
    mode z = mean when rng is None), decoded.

    Returns:
      (reconstruction [B, H, W, out], mean, logvar [B, H/f, W/f, c]).
    """
    mean, logvar = self.encode(x_BxHxWxC)
    z = mean
    if rng is not None:
      z = mean + jnp.exp(0.5 * logvar) * jax.random.normal(rng, mean.shape, mean.dtype)
    return self.decode(z), mean, logvar
