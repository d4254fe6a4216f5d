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

Layer styles (`style`). 'radford' is the above. 'tflib' is the layer library of Gulrajani
et al.'s release (igul222/improved_wgan_training, tflib/ops/*.py), as `gan_cifar.py` builds
the same DCGAN stack:

  * every linear/conv layer has a bias (zero-initialized), also before a BatchNorm;
  * weights ~ U(-sqrt(3) s, sqrt(3) s): linear layers Glorot, s^2 = 2 / (fan_in + fan_out)
    (linear.py, initialization=None); (transposed) convolutions tflib's 'he' variant,
    s^2 = 4 / (fan_in + fan_out), with the fans of a stride-2 layer counted as conv2d.py /
    deconv2d.py do: fan_in = C_in k^2, fan_out = C_out k^2 / 4 for a convolution, and
    fan_in = C_in k^2 / 4, fan_out = C_out k^2 for a transposed one (`tflib_uniform`);
  * BatchNorm scales start at 1, offsets at 0, eps 1e-5;
  * G's first BatchNorm normalizes each of the H0 x W0 x C0 projected features on its own
    (gan_cifar.py: `Batchnorm('Generator.BN1', [0], ...)` on the flat [B, 4*4*4*DIM]
    output: the non-fused branch of batchnorm.py, one scale and offset per feature), the
    later ones per channel.

Class conditioning (`num_classes` = K > 0; Miyato & Koyama 2018, gen_jax/models/
class_conditioning.py): every BatchNorm of G becomes a conditional BatchNorm (per-class
gain and offset tables [K, C] from 1 and 0, in place of the plain scale and offset; in the
'tflib' style the first one per feature of the flat projection, like the plain one), and D
adds the projection term embed(y) . phi(x) to its logit, phi(x) the flattened last feature
map the read-out `logit` sees (Eq. 3; the table `embed` [K, F] initialised as the
read-out's kernel). With num_classes = 0 (the default) both nets are exactly the
unconditional ones: same parameters, same outputs. The authors have no DCGAN-shaped
projection D to follow: here the conditional layers keep this module's conventions (a bias in
the read-out, BatchNorm eps 1e-5); their ResNet's (no read-out bias, eps 2e-5, features
summed) are gen_jax/models/resnet_gan.py's 'sngan' knobs.

Spectral normalization (`spectral_norm`; Miyato et al. 2018, gen_jax/models/spectral_norm.py):
every convolution of D, its read-out and (conditional) its class embedding compute with
W / sigma(W); the parameters are the same.

Mixed precision: convolutions run in `dtype`, parameters and normalizations are float32,
outputs are float32.
"""
from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from gen_jax.models import class_conditioning, spectral_norm

# Radford et al. 2016, §4: "All weights were initialized from a zero-centered Normal
# distribution with standard deviation 0.02."
INIT_STD = 0.02
_kernel_init = nn.initializers.normal(stddev=INIT_STD)
# LeakyReLU slope in D (Radford et al. 2016, §4: "the slope of the leak was set to 0.2").
LEAK = 0.2
NORMS = ("batch", "layer", "none")
STYLES = ("radford", "tflib")

# image size -> (start resolution, number of stride-2 layers)
_LAYOUTS = {28: (7, 2), 32: (4, 3), 64: (4, 4)}


def _scale_init(key: jax.Array, shape: tuple[int, ...], dtype: Any = jnp.float32) -> jax.Array:
  """Normalization scales ~ N(1, 0.02)."""
  return 1.0 + INIT_STD * jax.random.normal(key, shape, dtype)


def tflib_uniform(gain_sq: float = 1.0, stride: int = 1, transposed: bool = False):
  """The uniform initializers of Gulrajani et al.'s tflib (linear.py, conv2d.py, deconv2d.py).

  W ~ U(-sqrt(3) s, sqrt(3) s) with s^2 = gain_sq * 2 / (fan_in + fan_out): gain_sq = 1 is
  Glorot & Bengio 2010 (tflib: `initialization=None` / `he_init=False`), gain_sq = 2 tflib's
  `he_init=True` (`sqrt(4 / (fan_in + fan_out))`, not He et al.'s fan-in rule). For a
  kernel [k..., C_in, C_out]: fan_in = C_in prod(k), fan_out = C_out prod(k); a strided
  convolution divides fan_out by stride^2, a transposed one (stride = its upsampling)
  fan_in, as tflib does.

  Args:
    gain_sq: 1 (Glorot) or 2 (tflib 'he').
    stride: the layer's stride (1 for dense layers and stride-1 convolutions).
    transposed: whether the kernel is a transposed convolution's.

  Returns:
    A flax initializer (key, shape, dtype) -> array.
  """
  def init(key: jax.Array, shape: tuple[int, ...], dtype: Any = jnp.float32) -> jax.Array:
    receptive = math.prod(shape[:-2])
    fan_in, fan_out = shape[-2] * receptive, shape[-1] * receptive
    if transposed:
      fan_in /= stride ** 2
    else:
      fan_out /= stride ** 2
    limit = math.sqrt(3.0 * gain_sq * 2.0 / (fan_in + fan_out))
    return jax.random.uniform(key, shape, dtype, -limit, limit)
  return init


def _check_style(style: str) -> None:
  if style not in STYLES:
    raise ValueError(f"DCGAN style={style!r}; expected one of {STYLES}.")


def layout(image_shape: tuple[int, ...]) -> tuple[int, int]:
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
  """z [B, Z] (and class labels [B]) -> images [B, H, W, C] in (-1, 1) (Radford et al. 2016,
  Fig. 1).

  Attributes:
    image_shape: (H, W, C) of the output; H = W in {28, 32, 64}.
    ngf: channels of the last hidden layer; earlier layers double it per resolution.
    kernel_size: side of the (transposed) convolution kernels.
    style: 'radford' or 'tflib' (Gulrajani et al.'s layers; see the module docstring).
    num_classes: K > 0 makes every BatchNorm conditional on the label; 0 = unconditional.
    dtype: compute dtype of dense/conv layers.
  """

  image_shape: tuple[int, int, int]
  ngf: int = 64
  kernel_size: int = 5
  style: str = "radford"
  num_classes: int = 0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, z_BxZ: jax.Array, train: bool,
               labels_B: jax.Array | None = None) -> jax.Array:
    _check_style(self.style)
    class_conditioning.check_labels(labels_B, self.num_classes, z_BxZ.shape[0], "Generator")
    start, num_up = layout(self.image_shape)
    C = self.image_shape[-1]
    k = (self.kernel_size, self.kernel_size)
    tflib = self.style == "tflib"
    bn = lambda name: class_conditioning.batch_norm(
        self.num_classes, labels_B, train, name,
        scale_init=nn.initializers.ones if tflib else _scale_init)
    deconv_init = tflib_uniform(2.0, stride=2, transposed=True) if tflib else _kernel_init
    ch = self.ngf * 2 ** (num_up - 1)
    # "The first layer of the GAN, which takes a uniform noise distribution Z as input,
    # could be called fully connected as it is just a matrix multiplication, but the result
    # is reshaped into a 4-dimensional tensor" (§3).
    h_BxF = nn.Dense(start * start * ch, use_bias=tflib,
                     kernel_init=tflib_uniform() if tflib else _kernel_init,
                     dtype=self.dtype, name="project")(z_BxZ)
    if tflib:   # gan_cifar.py's BN1: per feature of the flat projection
      h_BxF = nn.relu(bn("project_bn")(h_BxF))
    h_BxhxwxD = h_BxF.reshape(z_BxZ.shape[0], start, start, ch)
    if not tflib:
      h_BxhxwxD = nn.relu(bn("project_bn")(h_BxhxwxD))
    for i in range(1, num_up):
      ch //= 2
      h_BxhxwxD = nn.ConvTranspose(ch, k, strides=(2, 2), padding="SAME", use_bias=tflib,
                                   kernel_init=deconv_init, dtype=self.dtype,
                                   name=f"deconv{i}")(h_BxhxwxD)
      h_BxhxwxD = nn.relu(bn(f"deconv{i}_bn")(h_BxhxwxD))
    # Output layer: no BatchNorm, tanh.
    x_BxHxWxC = nn.ConvTranspose(C, k, strides=(2, 2), padding="SAME", use_bias=True,
                                 kernel_init=deconv_init, dtype=self.dtype,
                                 name=f"deconv{num_up}")(h_BxhxwxD)
    return jnp.tanh(x_BxHxWxC.astype(jnp.float32))


class Discriminator(nn.Module):
  """Images [B, H, W, C] (and class labels [B]) -> logits [B] (Radford et al. 2016, §3; the
  mirror of G).

  Attributes:
    ndf: channels of the first layer; later layers double it per resolution.
    norm: 'batch' (DCGAN), 'layer' or 'none' (the WGAN-GP critic, no BatchNorm).
    kernel_size: side of the convolution kernels.
    style: 'radford' or 'tflib' (Gulrajani et al.'s layers; see the module docstring).
    num_classes: K > 0 adds the projection term (Miyato & Koyama 2018, Eq. 3); 0 = none.
    dtype: compute dtype of dense/conv layers.
    spectral_norm: every convolution, the read-out and the class embedding spectrally
      normalized (Miyato et al. 2018).
  """

  ndf: int = 64
  norm: str = "batch"
  kernel_size: int = 5
  style: str = "radford"
  num_classes: int = 0
  dtype: Any = jnp.float32
  spectral_norm: bool = False

  @nn.compact
  def __call__(self, x_BxHxWxC: jax.Array, train: bool,
               labels_B: jax.Array | None = None) -> jax.Array:
    if self.norm not in NORMS:
      raise ValueError(f"Discriminator norm={self.norm!r}; expected one of {NORMS}.")
    _check_style(self.style)
    class_conditioning.check_labels(labels_B, self.num_classes, x_BxHxWxC.shape[0],
                                    "Discriminator")
    _, num_down = layout(x_BxHxWxC.shape[1:])
    k = (self.kernel_size, self.kernel_size)
    tflib = self.style == "tflib"
    scale_init = nn.initializers.ones if tflib else _scale_init
    h = x_BxHxWxC.astype(self.dtype)
    for i in range(num_down):
      # Input layer: no normalization (and a bias instead).
      normed = i > 0 and self.norm != "none"
      conv = nn.Conv(self.ndf * 2 ** i, k, strides=(2, 2), padding="SAME",
                     use_bias=tflib or not normed,
                     kernel_init=tflib_uniform(2.0, stride=2) if tflib else _kernel_init,
                     dtype=self.dtype, name=f"conv{i}")
      h = spectral_norm.wrap(conv, self.spectral_norm, train)(h)
      if normed and self.norm == "batch":
        h = nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5,
                         scale_init=scale_init, dtype=jnp.float32, name=f"conv{i}_bn")(h)
      elif normed:
        h = nn.LayerNorm(epsilon=1e-5, reduction_axes=(1, 2, 3), feature_axes=-1,
                         scale_init=scale_init, dtype=jnp.float32, name=f"conv{i}_ln")(h)
      h = nn.leaky_relu(h, LEAK)
    phi_BxF = h.reshape(h.shape[0], -1)
    self.sow("intermediates", "phi", phi_BxF)   # the features psi and the projection read
    # psi(phi(x)), plus embed(y) . phi(x) when conditional (Miyato & Koyama 2018, Eq. 3).
    return class_conditioning.discriminator_logits(
        phi_BxF, labels_B, self.num_classes, tflib_uniform() if tflib else _kernel_init,
        self.dtype, normalize=self.spectral_norm, train=train)
