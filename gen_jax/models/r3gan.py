"""The R3GAN ConvNet generator and discriminator (Huang et al. 2024, §3, config E).

Huang, Gokaslan, Kuleshov, Tompkin 2024, "The GAN is dead; long live the GAN! A Modern GAN
Baseline" (NeurIPS 2024, arXiv:2501.05441), §3 "A roadmap to a new baseline": StyleGAN2's
networks stripped to a plain ResNet and modernized (config E), as in the authors' release
(brownvc/R3GAN, R3GAN/Networks.py):

  G  z [Z] (++ embed(y)) -> basis: a learned [4, 4, W_0] constant scaled per channel by
     Linear(z) -> stage 0's blocks -> for each later stage s: 1x1 conv W_{s-1} -> W_s (when
     they differ), bilinear 2x upsampling, stage s's blocks -> 1x1 conv -> C image channels
     (no output activation)
  D  x -> 1x1 conv C -> W_0 -> for each stage s but the last: stage s's blocks, bilinear 2x
     downsampling, 1x1 conv W_s -> W_{s+1} (when they differ) -> last stage's blocks ->
     4x4 depthwise conv (valid: 4x4 -> 1x1) -> Linear -> 1 logit (or, conditional, the
     W_0-dim feature dotted with embed(y))

A residual block is an inverted bottleneck with a grouped convolution (ResNeXt / ConvNeXt
style; §3, Fig. 3):

  out = x + conv1x1_{2C->C}(act(conv3x3_{2C->2C, groups=cardinality}(act(conv1x1_{C->2C}(x)))))

with act(h) = LeakyReLU_0.2(h + b), a per-channel bias and no normalization anywhere
(§3: "no normalization"). No convolution or linear layer has a bias of its own.

Initialization (fix-up style, §3 following Zhang et al. 2019): every weight ~ N(0, g^2 /
fan_in) (`msr_normal`); inside a residual block g = sqrt(2 / (1 + 0.2^2)) * L^(-1/4), the
leaky ReLU's gain times L^(-1 / (2m - 2)) for L = the total number of blocks and m = 3
linear layers per block, and the block's last 1x1 conv is zero (g = 0), so every block
starts as the identity. Elsewhere g = 1; the basis constant is N(0, 1).

Resampling (§3: bilinear, StyleGAN's [1, 2, 1] filter): the 1D filter [1, 2, 1] convolved
with [1, 1] gives [1, 3, 3, 1]; its outer product, normalized to sum 1, is the 4x4 low-pass
kernel. Upsampling inserts zeros between pixels and filters with 4x the kernel (the
release's upfirdn2d.upsample2d); downsampling filters and keeps every second pixel
(upfirdn2d.downsample2d). Both are depthwise, so channels never mix there.

Class conditioning (`num_classes` = K > 0; the released CIFAR-10 run is conditional): G
concatenates embed_G(y) (a bias-free linear map of the one-hot label, `embed_dim` wide, N(0,
1/K)) to z; D's read-out gives a feature h(x) as wide as its last (4x4) stage, W (G's first width in
the release), and the logit is h(x) . embed_D(y), embed_D ~ N(0, 1 / (K W)) (gain
1/sqrt(W)).

The released CIFAR-10 configuration (train.py, preset CIFAR10; experiments/huang2024_r3gan/
cifar10.py): 4 stages (4, 8, 16, 32 px) of width 768, 2 blocks each, cardinality 96 (16
channels per group in the expanded 1536-channel conv), expansion 2, Z = 64; D mirrors G.
Parameter counts, from the authors' Networks.py (tools/r3gan_param_count.py) and pinned with
`jax.eval_shape` in tests/models/test_r3gan.py: see `CIFAR10_PARAM_COUNTS`.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from gen_jax.models import class_conditioning

LEAK = 0.2
ACT_GAIN = math.sqrt(2.0 / (1.0 + LEAK ** 2))   # the leaky ReLU's variance gain
LINEAR_LAYERS_PER_BLOCK = 3
BASIS_SIZE = 4                                   # G starts, and D ends, at 4x4

# (G, D) trainable parameters of the released CIFAR-10 configuration, counted by the
# authors' Networks.py (tools/r3gan_param_count.py): unconditional, and with K = 10 classes.
CIFAR10_PARAM_COUNTS = {"unconditional": (20_732_160, 20_683_776),
                        "conditional": (20_781_952, 21_280_512)}


def msr_normal(gain: float) -> nn.initializers.Initializer:
  """N(0, gain^2 / fan_in) for a Flax kernel (the release's `MSRInitializer`): fan_in is the
  product of all kernel dimensions but the last (kh * kw * C_in / groups for a conv)."""
  def init(key, shape, dtype=jnp.float32):
    fan_in = int(np.prod(shape[:-1]))
    return gain / math.sqrt(fan_in) * jax.random.normal(key, shape, dtype)
  return init


def lowpass_kernel(taps: Sequence[int] = (1, 2, 1)) -> np.ndarray:
  """The 4x4 bilinear kernel: taps * [1, 1], outer product, normalized to sum 1."""
  k_1d = np.convolve(np.asarray(taps, np.float64), [1.0, 1.0])
  k_2d = np.outer(k_1d, k_1d)
  return (k_2d / k_2d.sum()).astype(np.float32)


def _depthwise(x_BxHxWxC: jax.Array, kernel_KxK: np.ndarray, **conv_kw) -> jax.Array:
  C = x_BxHxWxC.shape[-1]
  k = jnp.broadcast_to(jnp.asarray(kernel_KxK, x_BxHxWxC.dtype)[:, :, None, None],
                       (*kernel_KxK.shape, 1, C))
  return jax.lax.conv_general_dilated(x_BxHxWxC, k, dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                      feature_group_count=C, **conv_kw)


def upsample_2x(x_BxHxWxC: jax.Array) -> jax.Array:
  """[B, H, W, C] -> [B, 2H, 2W, C]: zeros between pixels, then the low-pass kernel x 4
  (upfirdn2d.upsample2d with the [1, 3, 3, 1] kernel: pads 2 before and 1 after the
  zero-stuffed 2H, i.e. 2 and 2 around the dilated 2H - 1)."""
  k = lowpass_kernel()
  pad = (k.shape[0] + 1) // 2
  return _depthwise(x_BxHxWxC, 4.0 * k, window_strides=(1, 1), padding=[(pad, pad)] * 2,
                    lhs_dilation=(2, 2))


def downsample_2x(x_BxHxWxC: jax.Array) -> jax.Array:
  """[B, H, W, C] -> [B, H/2, W/2, C]: the low-pass kernel, then every second pixel
  (upfirdn2d.downsample2d with the [1, 3, 3, 1] kernel: padding 1 on each side)."""
  k = lowpass_kernel()
  pad = (k.shape[0] - 1) // 2
  return _depthwise(x_BxHxWxC, k, window_strides=(2, 2), padding=[(pad, pad)] * 2)


def conv(features: int, kernel: int, gain: float = 1.0, groups: int = 1, dtype: Any = None,
         name: str | None = None) -> nn.Conv:
  """A bias-free 'same' convolution with `msr_normal(gain)` weights."""
  return nn.Conv(features, (kernel, kernel), padding="SAME", feature_group_count=groups,
                 use_bias=False, kernel_init=msr_normal(gain), dtype=dtype, name=name)


class BiasedActivation(nn.Module):
  """LeakyReLU_0.2(h + b), b a per-channel bias initialized to 0 (the release's
  `BiasedActivation`, with bias_act's gain 1)."""

  @nn.compact
  def __call__(self, h: jax.Array) -> jax.Array:
    b = self.param("bias", nn.initializers.zeros, (h.shape[-1],), jnp.float32)
    return nn.leaky_relu(h + b.astype(h.dtype), LEAK)


class ResidualBlock(nn.Module):
  """x + conv1x1(act(grouped conv3x3(act(conv1x1(x))))), the last conv zero-initialized.

  Attributes:
    cardinality: groups of the 3x3 conv over the C * expansion expanded channels.
    expansion: the inverted bottleneck's width factor.
    num_blocks_total: L, the number of residual blocks of the whole network (fix-up scaling).
  """

  cardinality: int
  expansion: int
  num_blocks_total: int
  kernel_size: int = 3
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x_BxHxWxC: jax.Array) -> jax.Array:
    C = x_BxHxWxC.shape[-1]
    E = C * self.expansion
    gain = ACT_GAIN * self.num_blocks_total ** (-1.0 / (2 * LINEAR_LAYERS_PER_BLOCK - 2))
    h = conv(E, 1, gain, dtype=self.dtype, name="expand")(x_BxHxWxC)
    h = BiasedActivation(name="act1")(h)
    h = conv(E, self.kernel_size, gain, groups=self.cardinality, dtype=self.dtype,
             name="grouped")(h)
    h = BiasedActivation(name="act2")(h)
    h = conv(C, 1, 0.0, dtype=self.dtype, name="project")(h)
    return x_BxHxWxC + h


def check_image_shape(image_shape: Sequence[int], num_stages: int) -> None:
  """Raises ValueError unless images are square of side 4 * 2^(num_stages - 1)."""
  H, W, _ = image_shape
  side = BASIS_SIZE * 2 ** (num_stages - 1)
  if (H, W) != (side, side):
    raise ValueError(
        f"gan.arch='r3gan' with {num_stages} stages (len(gan.r3gan.widths)) makes "
        f"{side}x{side} images; the data is {H}x{W} (image_shape={tuple(image_shape)}). Set "
        f"gan.r3gan.widths (and blocks, cardinality) to log2({H} / 4) + 1 stages, or use "
        "gan.arch='dcgan' for 28x28.")


class Generator(nn.Module):
  """z [B, Z] (and labels [B]) -> images [B, H, W, C] (no output activation).

  Attributes:
    image_shape: (H, W, C); H = W = 4 * 2^(len(widths) - 1).
    widths, blocks, cardinality: per stage, from 4x4 up.
    expansion: the residual blocks' inverted-bottleneck factor.
    num_classes: K > 0 concatenates a learned label embedding to z.
    embed_dim: width of that embedding (the release: Z).
  """

  image_shape: tuple[int, int, int]
  widths: tuple[int, ...]
  blocks: tuple[int, ...]
  cardinality: tuple[int, ...]
  expansion: int = 2
  num_classes: int = 0
  embed_dim: int = 0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, z_BxZ: jax.Array, train: bool,
               labels_B: jax.Array | None = None) -> jax.Array:
    del train   # no normalization: training and sampling are the same function
    class_conditioning.check_labels(labels_B, self.num_classes, z_BxZ.shape[0], "Generator")
    check_image_shape(self.image_shape, len(self.widths))
    L = sum(self.blocks)
    h = z_BxZ.astype(self.dtype)
    if self.num_classes:
      onehot = jax.nn.one_hot(labels_B, self.num_classes, dtype=self.dtype)
      h = jnp.concatenate([h, nn.Dense(self.embed_dim, use_bias=False,
                                       kernel_init=msr_normal(1.0), dtype=self.dtype,
                                       name="embed")(onehot)], axis=-1)
    # The generative basis: a learned 4x4 constant per channel, scaled by a linear map of z.
    basis = self.param("basis", nn.initializers.normal(1.0),
                       (BASIS_SIZE, BASIS_SIZE, self.widths[0]), jnp.float32)
    scale_BxW = nn.Dense(self.widths[0], use_bias=False, kernel_init=msr_normal(1.0),
                         dtype=self.dtype, name="basis_scale")(h)
    h = basis.astype(self.dtype)[None] * scale_BxW[:, None, None, :]
    stages = zip(self.widths, self.blocks, self.cardinality, strict=True)
    for s, (width, n, groups) in enumerate(stages):
      if s > 0:
        if width != h.shape[-1]:
          h = conv(width, 1, dtype=self.dtype, name=f"stage{s}_transition")(h)
        h = upsample_2x(h)
      for i in range(n):
        h = ResidualBlock(groups, self.expansion, L, dtype=self.dtype,
                          name=f"stage{s}_block{i}")(h)
    x = conv(self.image_shape[-1], 1, dtype=self.dtype, name="to_image")(h)
    return x.astype(jnp.float32)


class Discriminator(nn.Module):
  """Images [B, H, W, C] (and labels [B]) -> logits [B].

  Attributes:
    widths, blocks, cardinality: per stage, from full resolution down to 4x4 (the release
      mirrors G's lists).
    expansion: the residual blocks' inverted-bottleneck factor.
    num_classes: K > 0: the logit is h(x) . embed(y), h(x) as wide as the last stage.
  """

  widths: tuple[int, ...]
  blocks: tuple[int, ...]
  cardinality: tuple[int, ...]
  expansion: int = 2
  num_classes: int = 0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x_BxHxWxC: jax.Array, train: bool,
               labels_B: jax.Array | None = None) -> jax.Array:
    del train
    class_conditioning.check_labels(labels_B, self.num_classes, x_BxHxWxC.shape[0],
                                    "Discriminator")
    check_image_shape(x_BxHxWxC.shape[1:], len(self.widths))
    L = sum(self.blocks)
    last = len(self.widths) - 1
    h = conv(self.widths[0], 1, dtype=self.dtype, name="from_image")(x_BxHxWxC.astype(self.dtype))
    stages = zip(self.widths, self.blocks, self.cardinality, strict=True)
    for s, (width, n, groups) in enumerate(stages):
      for i in range(n):
        h = ResidualBlock(groups, self.expansion, L, dtype=self.dtype,
                          name=f"stage{s}_block{i}")(h)
      if s < last:
        h = downsample_2x(h)
        if self.widths[s + 1] != width:
          h = conv(self.widths[s + 1], 1, dtype=self.dtype, name=f"stage{s}_transition")(h)
    # The discriminative basis: a 4x4 depthwise conv (valid: one value per channel), linear.
    h = nn.Conv(h.shape[-1], (BASIS_SIZE, BASIS_SIZE), padding="VALID",
                feature_group_count=h.shape[-1], use_bias=False, kernel_init=msr_normal(1.0),
                dtype=self.dtype, name="basis")(h)
    h_BxF = h.reshape(h.shape[0], -1)
    out = self.widths[-1] if self.num_classes else 1
    h_BxF = nn.Dense(out, use_bias=False, kernel_init=msr_normal(1.0), dtype=self.dtype,
                     name="readout")(h_BxF).astype(jnp.float32)
    if not self.num_classes:
      return h_BxF[:, 0]
    onehot = jax.nn.one_hot(labels_B, self.num_classes, dtype=jnp.float32)
    embed_BxF = nn.Dense(out, use_bias=False, kernel_init=msr_normal(1.0 / math.sqrt(out)),
                         name="embed")(onehot)
    return jnp.sum(h_BxF * embed_BxF, axis=-1)
