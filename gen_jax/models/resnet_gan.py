"""The ResNet generator and critic of Gulrajani et al. 2017 for 32x32 images.

"Improved Training of Wasserstein GANs" (arXiv:1704.00028), §5.3 and Appendix C: the
CIFAR-10 model behind Table 3's unsupervised Inception score 7.86 (the authors' release,
igul222/improved_wgan_training, `gan_cifar_resnet.py` with CONDITIONAL=False):

  G  z [128] -> linear 4x4xD -> 3 x ResBlock(up) -> BN, ReLU -> conv3x3 -> 3 ch, tanh
  D  x [32x32x3] -> OptimizedBlock(down) -> ResBlock(down) -> 2 x ResBlock -> ReLU
     -> mean over H, W -> linear -> 1

with D = DIM_G = DIM_D = 128. A residual block is pre-activation (He et al. 2016):

  out = shortcut(x) + conv2(act(norm(conv1(act(norm(x))))))

  up:    conv1 = nearest-neighbour 2x upsampling then conv3x3 ('UpsampleConv'), conv2 =
         conv3x3; shortcut = upsampling then conv1x1.
  down:  conv1 = conv3x3 (C_in -> C_in), conv2 = conv3x3 then 2x2 mean pooling
         ('ConvMeanPool'); shortcut = conv1x1 then mean pooling.
  none:  conv1, conv2 = conv3x3; identity shortcut (C_in = C_out).

The critic's first block is 'optimized' (`OptimizedResBlockDisc1`): no normalization or
activation before its first conv (the input is the image), out = MeanPoolConv1x1(x) +
ConvMeanPool3x3(ReLU(conv3x3(x))), the shortcut pooling *before* its 1x1 conv. G has
BatchNorm (per channel, eps 1e-5, scale 1 / offset 0 at init); the unconditional critic
none (NORMALIZATION_D=False; 'layer' gives tflib's per-example LayerNorm instead).

Every layer has a zero-initialized bias, and the weights follow tflib's uniform rules
(`dcgan.tflib_uniform`): convolutions 'he' (s^2 = 4 / (fan_in + fan_out)) except the 1x1
shortcuts and G's output conv (`he_init=False`: Glorot), linear layers Glorot.

Parameter counts (D = 128, counted from the code; tests/methods/test_gan_resnet.py pins them):
G 1,204,483 trainable parameters plus 1,792 BatchNorm statistics (7 BatchNorms x 128 x
{mean, var}; their TF graph holds these as non-trainable `moving_mean`/`moving_variance`
variables, and the script's "Total param count" for G, which counts every variable of
G's var_list, prints 1,206,275); D 1,053,825.

Class conditioning (`num_classes` = K > 0). G: the six BatchNorms of the residual blocks
become conditional BatchNorms (per-class gain and offset, gen_jax/models/class_conditioning.py)
and the output BatchNorm stays plain, as in both gan_cifar_resnet.py (CONDITIONAL=True:
`Normalize('Generator.OutputN', output)` takes no labels) and Miyato & Koyama's
`ResNetGenerator` (`b5 = L.BatchNormalization`). D: the authors' conditional critic is an
AC-GAN (ACGAN=True: a 10-way classifier head and its cross-entropy added to both losses);
here it is Miyato & Koyama 2018's projection discriminator instead (Eq. 3): D(x, y) =
psi(phi(x)) + embed(y) . phi(x), phi(x) the [B, D] pooled ReLU features the read-out sees
(averaged over H, W as gan_cifar_resnet.py's critic; Miyato & Koyama's
SNResNetProjectionDiscriminator sums: `pooling='sum'`, below), `embed` a [K, D] table with
Glorot init (their `SNEmbedID(initialW=GlorotUniform())`). With K = 10 and D = 128, G's six block
BatchNorms trade their scale and offset (6 x 2 x 128) for the tables (6 x 2 x 10 x 128):
+13,824 parameters; D gains the 10 x 128 table: +1,280. K = 0 is the unconditional model.

Miyato et al.'s ResNets (SN-GAN, arXiv:1802.05957, and the projection discriminator; their
release pfnet-research/sngan_projection, gen_models/resnet_32.py and
dis_models/snresnet_32.py) are these blocks with the same initializers (chainer's
GlorotUniform(sqrt 2) is tflib's 'he' rule, GlorotUniform its Glorot) and three
differences, the knobs below: D sums phi over H, W (`pooling='sum'`: "Global average
pooling" in their comment, `F.sum` in their code), D's read-out psi has no bias
(`readout_bias=False`: `SNLinear(..., nobias=True)`), and G's BatchNorms, plain and
conditional, add eps 2e-5 to the variance (`bn_epsilon`, chainer's default). Their D is
spectrally normalized throughout (`spectral_norm=True`: every convolution, psi and the
class embedding; gen_jax/models/spectral_norm.py); their G has DIM_G = 256.
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from gen_jax.models import class_conditioning, spectral_norm
from gen_jax.models.dcgan import tflib_uniform

IMAGE_SIZE = 32        # the 4x4 start and three 2x upsamplings of gan_cifar_resnet.py
CRITIC_NORMS = ("none", "layer")
POOLINGS = ("mean", "sum")      # of phi over H, W: Gulrajani et al.'s, Miyato et al.'s
_HE = tflib_uniform(2.0)        # tflib conv2d.py he_init=True
_GLOROT = tflib_uniform(1.0)    # he_init=False, and linear.py's default


def check_image_shape(image_shape: tuple[int, ...]) -> None:
  """Raises ValueError unless images are 32x32 (the only size the authors' ResNet has)."""
  H, W, _ = image_shape
  if (H, W) != (IMAGE_SIZE, IMAGE_SIZE):
    raise ValueError(
        f"gan.arch='resnet' is Gulrajani et al.'s 32x32 CIFAR-10 ResNet; got {H}x{W} images "
        f"(image_shape={tuple(image_shape)}). Use gan.arch='dcgan' for 28x28 or 64x64.")


def mean_pool(x_BxHxWxC: jax.Array) -> jax.Array:
  """2x2 mean pooling, stride 2 (tflib's average of the four strided sub-grids)."""
  return nn.avg_pool(x_BxHxWxC, (2, 2), strides=(2, 2))


def upsample(x_BxHxWxC: jax.Array) -> jax.Array:
  """Nearest-neighbour 2x upsampling (tflib's concat of 4 copies + depth_to_space)."""
  return jnp.repeat(jnp.repeat(x_BxHxWxC, 2, axis=1), 2, axis=2)


class ResBlock(nn.Module):
  """A pre-activation residual block, `resample` in {'up', 'down', None} (module docstring).

  Attributes:
    features: output channels.
    resample: 'up' (G), 'down' or None (D).
    norm: 'batch', 'layer' or 'none', applied before each activation.
    dtype: compute dtype of the convolutions.
    num_classes: K > 0 makes norm='batch' a conditional BatchNorm on the labels.
    spectral_norm: every convolution spectrally normalized (a critic's blocks).
    bn_epsilon: eps of norm='batch'.
  """

  features: int
  resample: str | None
  norm: str
  dtype: Any = jnp.float32
  num_classes: int = 0
  spectral_norm: bool = False
  bn_epsilon: float = 1e-5

  def _norm(self, h: jax.Array, train: bool, name: str,
            labels_B: jax.Array | None) -> jax.Array:
    if self.norm == "batch":
      return class_conditioning.batch_norm(self.num_classes, labels_B, train, name,
                                           epsilon=self.bn_epsilon)(h)
    if self.norm == "layer":
      return nn.LayerNorm(epsilon=1e-5, reduction_axes=(1, 2, 3), feature_axes=-1,
                          dtype=jnp.float32, name=name)(h)
    return h

  @nn.compact
  def __call__(self, x_BxHxWxC: jax.Array, train: bool,
               labels_B: jax.Array | None = None) -> jax.Array:
    C_in, C_out = x_BxHxWxC.shape[-1], self.features
    conv = lambda c, k, init, name: spectral_norm.wrap(
        nn.Conv(c, (k, k), padding="SAME", kernel_init=init, dtype=self.dtype, name=name),
        self.spectral_norm, train)
    if self.resample == "up":
      shortcut = conv(C_out, 1, _GLOROT, "shortcut")(upsample(x_BxHxWxC))
    elif self.resample == "down":
      shortcut = mean_pool(conv(C_out, 1, _GLOROT, "shortcut")(x_BxHxWxC))
    elif C_in == C_out:
      shortcut = x_BxHxWxC
    else:
      shortcut = conv(C_out, 1, _GLOROT, "shortcut")(x_BxHxWxC)

    h = nn.relu(self._norm(x_BxHxWxC, train, "norm1", labels_B))
    if self.resample == "up":
      h = upsample(h)
    h = conv(C_in if self.resample == "down" else C_out, 3, _HE, "conv1")(h)
    h = nn.relu(self._norm(h, train, "norm2", labels_B))
    h = conv(C_out, 3, _HE, "conv2")(h)
    if self.resample == "down":
      h = mean_pool(h)
    return shortcut + h


class Generator(nn.Module):
  """z [B, Z] (and class labels [B]) -> images [B, 32, 32, C] in (-1, 1)
  (gan_cifar_resnet.py `Generator`).

  Attributes:
    image_shape: (32, 32, C).
    dim: DIM_G, the channels of every block (128).
    num_classes: K > 0 conditions the blocks' BatchNorms on the label; 0 = unconditional.
    dtype: compute dtype of dense/conv layers.
    bn_epsilon: eps of every BatchNorm (tflib 1e-5, chainer 2e-5).
  """

  image_shape: tuple[int, int, int]
  dim: int = 128
  num_classes: int = 0
  dtype: Any = jnp.float32
  bn_epsilon: float = 1e-5

  @nn.compact
  def __call__(self, z_BxZ: jax.Array, train: bool,
               labels_B: jax.Array | None = None) -> jax.Array:
    check_image_shape(self.image_shape)
    class_conditioning.check_labels(labels_B, self.num_classes, z_BxZ.shape[0], "Generator")
    h = nn.Dense(4 * 4 * self.dim, kernel_init=_GLOROT, dtype=self.dtype, name="project")(z_BxZ)
    h_BxhxwxD = h.reshape(z_BxZ.shape[0], 4, 4, self.dim)
    for i in range(3):
      h_BxhxwxD = ResBlock(self.dim, "up", "batch", self.dtype, self.num_classes,
                           bn_epsilon=self.bn_epsilon, name=f"block{i + 1}")(h_BxhxwxD, train,
                                                                             labels_B)
    h_BxhxwxD = nn.BatchNorm(use_running_average=not train, momentum=0.9,
                             epsilon=self.bn_epsilon,
                             dtype=jnp.float32, name="out_bn")(h_BxhxwxD)
    x_BxHxWxC = nn.Conv(self.image_shape[-1], (3, 3), padding="SAME", kernel_init=_GLOROT,
                        dtype=self.dtype, name="out_conv")(nn.relu(h_BxhxwxD))
    return jnp.tanh(x_BxHxWxC.astype(jnp.float32))


class Discriminator(nn.Module):
  """Images [B, 32, 32, C] (and class labels [B]) -> critic values [B]
  (gan_cifar_resnet.py `Discriminator`; with labels the projection head, module docstring).

  Attributes:
    dim: DIM_D, the channels of every block (128).
    norm: 'none' (the unconditional model) or 'layer'; both treat examples independently,
      as the gradient penalty needs.
    num_classes: K > 0 adds the projection term (Miyato & Koyama 2018, Eq. 3); 0 = none.
    dtype: compute dtype of dense/conv layers.
    spectral_norm: every convolution, psi and the class embedding spectrally normalized.
    pooling: phi = 'mean' (Gulrajani et al.) or 'sum' (Miyato et al.) of the last ReLU
      features over H, W.
    readout_bias: whether psi has a bias (Gulrajani et al.: yes; Miyato et al.: no).
  """

  dim: int = 128
  norm: str = "none"
  num_classes: int = 0
  dtype: Any = jnp.float32
  spectral_norm: bool = False
  pooling: str = "mean"
  readout_bias: bool = True

  @nn.compact
  def __call__(self, x_BxHxWxC: jax.Array, train: bool,
               labels_B: jax.Array | None = None) -> jax.Array:
    if self.norm not in CRITIC_NORMS:
      raise ValueError(f"ResNet critic norm={self.norm!r}; expected one of {CRITIC_NORMS}.")
    check_image_shape(x_BxHxWxC.shape[1:])
    if self.pooling not in POOLINGS:
      raise ValueError(f"ResNet critic pooling={self.pooling!r}; expected one of {POOLINGS}.")
    class_conditioning.check_labels(labels_B, self.num_classes, x_BxHxWxC.shape[0],
                                    "Discriminator")
    conv = lambda k, init, name: spectral_norm.wrap(
        nn.Conv(self.dim, (k, k), padding="SAME", kernel_init=init, dtype=self.dtype,
                name=name), self.spectral_norm, train)
    x = x_BxHxWxC.astype(self.dtype)
    # OptimizedResBlockDisc1: MeanPoolConv shortcut; conv3x3 -> ReLU -> ConvMeanPool.
    shortcut = conv(1, _GLOROT, "block1_shortcut")(mean_pool(x))
    h = nn.relu(conv(3, _HE, "block1_conv1")(x))
    h = shortcut + mean_pool(conv(3, _HE, "block1_conv2")(h))
    for i, resample in ((2, "down"), (3, None), (4, None)):
      h = ResBlock(self.dim, resample, self.norm, self.dtype,
                   spectral_norm=self.spectral_norm, name=f"block{i}")(h, train)
    pool = jnp.sum if self.pooling == "sum" else jnp.mean
    phi_BxD = pool(nn.relu(h), axis=(1, 2))
    self.sow("intermediates", "phi", phi_BxD)   # the features psi and the projection read
    # psi(phi(x)), plus embed(y) . phi(x) when conditional (Miyato & Koyama 2018, Eq. 3).
    return class_conditioning.discriminator_logits(
        phi_BxD, labels_B, self.num_classes, _GLOROT, self.dtype,
        readout_bias=self.readout_bias, normalize=self.spectral_norm, train=train)
