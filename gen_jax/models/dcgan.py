"""DCGAN generator and discriminator (Radford, Metz, Chintala 2016, arXiv:1511.06434).

§3 "Approach and model architecture", the guidelines these modules follow:

  * no pooling: strided convolutions in D, fractionally-strided (transposed) ones in G;
  * BatchNorm in both nets, except the G output layer and the D input layer;
  * no fully connected hidden layers (G starts with one projection of z, D ends with one
    linear read-out of the last feature map, as in Fig. 1 and the authors' code);
  * ReLU in G with a tanh output, LeakyReLU(0.2) in every D layer.

§4: all weights from N(0, 0.02). BatchNorm scales start at N(1, 0.02) and its offsets at
0 (as the common PyTorch DCGAN example does). Kernels are 5x5 with stride 2 (the authors'
code; the PyTorch example uses 4x4), and a layer followed by a normalization has no bias.

Fig. 1 (64x64, ngf=128): z (100) -> 4x4x1024 -> 8x8x512 -> 16x16x256 -> 32x32x128 -> 64x64x3.
Widths double at every halving of the resolution; the layouts for the supported sizes:

  size  start  G channels (ngf = n)                 D channels (ndf = n)
  28    7x7    2n -> n -> C                         n -> 2n -> linear
  32    4x4    4n -> 2n -> n -> C                   n -> 2n -> 4n -> linear
  64    4x4    8n -> 4n -> 2n -> n -> C             n -> 2n -> 4n -> 8n -> linear

The critic variant for WGAN-GP (Gulrajani et al. 2017, arXiv:1704.00028, §4: "we omit
batch normalization in the critic ... we recommend layer normalization as a drop-in
replacement") is the same discriminator with `norm='layer'` (per-example LayerNorm over
H, W, C with per-channel scale and offset) or `norm='none'`; neither mixes examples, so
the critic's input gradient of one example does not depend on the others.

Mixed precision: convolutions run in `dtype`, parameters and normalizations are float32,
outputs are float32.
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

# Radford et al. 2016, §4: "All weights were initialized from a zero-centered Normal
# distribution with standard deviation 0.02."
INIT_STD = 0.02
_kernel_init = nn.initializers.normal(stddev=INIT_STD)
# LeakyReLU slope in D (Radford et al. 2016, §4: "the slope of the leak was set to 0.2").
LEAK = 0.2
NORMS = ("batch", "layer", "none")

# image size -> (start resolution, number of stride-2 layers)
_LAYOUTS = {28: (7, 2), 32: (4, 3), 64: (4, 4)}


def _scale_init(key: jax.Array, shape: tuple[int, ...], dtype: Any = jnp.float32) -> jax.Array:
  """Normalization scales ~ N(1, 0.02)."""
  return 1.0 + INIT_STD * jax.random.normal(key, shape, dtype)


def layout(image_shape: tuple[int, int, int]) -> tuple[int, int]:
  """(start resolution, number of stride-2 layers) for an (H, W, C) image.

  Raises:
    ValueError: for images that are not square 28x28, 32x32 or 64x64.
  """
  H, W, _ = image_shape
  if H != W or H not in _LAYOUTS:
    raise ValueError(
        f"DCGAN supports square 28x28 (MNIST), 32x32 (CIFAR-10) and 64x64 images; got "
        f"{H}x{W} (image_shape={tuple(image_shape)}). Resize the data or add a layout to "
        f"gen_jax/models/dcgan.py:_LAYOUTS.")
  return _LAYOUTS[H]


class Generator(nn.Module):
  """z [B, Z] -> images [B, H, W, C] in (-1, 1) (Radford et al. 2016, Fig. 1).

  Attributes:
    image_shape: (H, W, C) of the output; H = W in {28, 32, 64}.
    ngf: channels of the last hidden layer; earlier layers double it per resolution.
    kernel_size: side of the (transposed) convolution kernels.
    dtype: compute dtype of dense/conv layers.
  """

  image_shape: tuple[int, int, int]
  ngf: int = 64
  kernel_size: int = 5
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, z_BxZ: jax.Array, train: bool) -> jax.Array:
    start, num_up = layout(self.image_shape)
    C = self.image_shape[-1]
    k = (self.kernel_size, self.kernel_size)
    bn = lambda name: nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5,
                                   scale_init=_scale_init, dtype=jnp.float32, name=name)
    ch = self.ngf * 2 ** (num_up - 1)
    # "The first layer of the GAN, which takes a uniform noise distribution Z as input,
    # could be called fully connected as it is just a matrix multiplication, but the result
    # is reshaped into a 4-dimensional tensor" (§3).
    h = nn.Dense(start * start * ch, use_bias=False, kernel_init=_kernel_init,
                 dtype=self.dtype, name="project")(z_BxZ)
    h_BxhxwxD = h.reshape(z_BxZ.shape[0], start, start, ch)
    h_BxhxwxD = nn.relu(bn("project_bn")(h_BxhxwxD))
    for i in range(1, num_up):
      ch //= 2
      h_BxhxwxD = nn.ConvTranspose(ch, k, strides=(2, 2), padding="SAME", use_bias=False,
                                   kernel_init=_kernel_init, dtype=self.dtype,
                                   name=f"deconv{i}")(h_BxhxwxD)
      h_BxhxwxD = nn.relu(bn(f"deconv{i}_bn")(h_BxhxwxD))
    # Output layer: no BatchNorm, tanh.
    x_BxHxWxC = nn.ConvTranspose(C, k, strides=(2, 2), padding="SAME", use_bias=True,
                                 kernel_init=_kernel_init, dtype=self.dtype,
                                 name=f"deconv{num_up}")(h_BxhxwxD)
    return jnp.tanh(x_BxHxWxC.astype(jnp.float32))


class Discriminator(nn.Module):
  """Images [B, H, W, C] -> logits [B] (Radford et al. 2016, §3; the mirror of G).

  Attributes:
    ndf: channels of the first layer; later layers double it per resolution.
    norm: 'batch' (DCGAN), 'layer' or 'none' (the WGAN-GP critic, no BatchNorm).
    kernel_size: side of the convolution kernels.
    dtype: compute dtype of dense/conv layers.
  """

  ndf: int = 64
  norm: str = "batch"
  kernel_size: int = 5
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x_BxHxWxC: jax.Array, train: bool) -> jax.Array:
    if self.norm not in NORMS:
      raise ValueError(f"Discriminator norm={self.norm!r}; expected one of {NORMS}.")
    _, num_down = layout(x_BxHxWxC.shape[1:])
    k = (self.kernel_size, self.kernel_size)
    h = x_BxHxWxC.astype(self.dtype)
    for i in range(num_down):
      # Input layer: no normalization (and a bias instead).
      normed = i > 0 and self.norm != "none"
      h = nn.Conv(self.ndf * 2 ** i, k, strides=(2, 2), padding="SAME", use_bias=not normed,
                  kernel_init=_kernel_init, dtype=self.dtype, name=f"conv{i}")(h)
      if normed and self.norm == "batch":
        h = nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5,
                         scale_init=_scale_init, dtype=jnp.float32, name=f"conv{i}_bn")(h)
      elif normed:
        h = nn.LayerNorm(epsilon=1e-5, reduction_axes=(1, 2, 3), feature_axes=-1,
                         scale_init=_scale_init, dtype=jnp.float32, name=f"conv{i}_ln")(h)
      h = nn.leaky_relu(h, LEAK)
    h_BxF = h.reshape(h.shape[0], -1)
    logits_Bx1 = nn.Dense(1, kernel_init=_kernel_init, dtype=self.dtype, name="logit")(h_BxF)
    return logits_Bx1[:, 0].astype(jnp.float32)
