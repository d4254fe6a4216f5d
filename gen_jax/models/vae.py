"""Encoder and decoder networks of a VAE with one stochastic layer (Kingma & Welling 2014;
the IWAE networks of Burda, Grosse, Salakhutdinov 2016).

Kingma & Welling 2014, "Auto-Encoding Variational Bayes" (arXiv:1312.6114):
  App. C.2, Gaussian MLP encoder:  h = tanh(W3 x + b3), mu = W4 h + b4, log sigma^2 = W5 h + b5;
  App. C.1, Bernoulli MLP decoder: y = sigmoid(W2 tanh(W1 z + b1) + b2);
  App. C.2, Gaussian MLP decoder:  mu and log sigma^2 as linear heads on the last hidden layer.
  §5: one hidden layer of 500 units for MNIST; weights ~ N(0, 0.01).
Burda, Grosse, Salakhutdinov 2016, "Importance Weighted Autoencoders" (arXiv:1509.00519),
  §5 (Table 1, one stochastic layer): 784 -> 200 -> 200 -> 50 latent on each side, tanh.

`MLPEncoder`/`MLPDecoder` cover both papers (`hidden=(500,)` or `(200, 200)`); `ConvEncoder`/
`ConvDecoder` are a small strided-convolution variant for colour/larger images (not from
either paper). The modules only map x -> (mean, log_var) and z -> per-pixel decoder
parameters; the likelihoods, bounds and sampling live in gen_jax/methods/vae.py.

Shapes: x [B, H, W, C]; z [..., L] with any leading dims (e.g. [K, B, L] for K importance
samples); decoder output [..., H, W, C * P] with P parameters per pixel value (1 for Bernoulli
logits, 2 for Gaussian mean and log-variance, in that order along the last axis).
Compute runs in `dtype`; parameters and outputs are float32.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "tanh": jnp.tanh, "relu": nn.relu, "softplus": nn.softplus}


def kernel_init(init_std: float) -> nn.initializers.Initializer:
  """N(0, init_std^2) (Kingma & Welling §5 use 0.01); 0 means flax's default lecun_normal."""
  return nn.initializers.normal(init_std) if init_std > 0 else nn.initializers.lecun_normal()


def _activation(name: str) -> Callable[[jax.Array], jax.Array]:
  if name not in ACTIVATIONS:
    raise ValueError(f"model.activation={name!r}; expected one of {sorted(ACTIVATIONS)}.")
  return ACTIVATIONS[name]


class Network(nn.Module):
  """What every network here takes, by keyword: the `activation` of its hidden layers (the
  heads have none), the N(0, init_std^2) weight init (0: lecun_normal) and the compute
  `dtype`; and the dense layers built from them."""

  _: dataclasses.KW_ONLY
  activation: str = "tanh"
  init_std: float = 0.0
  dtype: Any = jnp.float32

  def dense(self, features: int, name: str) -> nn.Dense:
    return nn.Dense(features, dtype=self.dtype, kernel_init=kernel_init(self.init_std), name=name)

  def hidden_layers(self, h: jax.Array, widths: Sequence[int]) -> jax.Array:
    """act(dense(h)) for each width, as `hidden_0`, `hidden_1`, ..."""
    act = _activation(self.activation)
    for i, width in enumerate(widths):
      h = act(self.dense(width, f"hidden_{i}")(h))
    return h


class GaussianHeads(Network):
  """Two linear read-outs of h: the posterior mean and log-variance (K&W App. C.2, W4/W5)."""

  latent_dim: int

  @nn.compact
  def __call__(self, h: jax.Array) -> tuple[jax.Array, jax.Array]:
    return (self.dense(self.latent_dim, "mean")(h).astype(jnp.float32),
            self.dense(self.latent_dim, "log_var")(h).astype(jnp.float32))


class MLPEncoder(Network):
  """q(z|x): x [B, H, W, C] -> (mean [B, L], log_var [B, L]) through `hidden` dense layers."""

  hidden: Sequence[int]
  latent_dim: int

  @nn.compact
  def __call__(self, x_BxHxWxC: jax.Array) -> tuple[jax.Array, jax.Array]:
    h = x_BxHxWxC.reshape(x_BxHxWxC.shape[0], -1).astype(self.dtype)
    h = self.hidden_layers(h, self.hidden)
    return GaussianHeads(self.latent_dim, init_std=self.init_std, dtype=self.dtype,
                         name="heads")(h)


class MLPDecoder(Network):
  """p(x|z) parameters: z [..., L] -> [..., H, W, C * params_per_value]."""

  hidden: Sequence[int]
  image_shape: tuple[int, int, int]
  params_per_value: int = 1

  @nn.compact
  def __call__(self, z: jax.Array) -> jax.Array:
    h = self.hidden_layers(z.astype(self.dtype), self.hidden)
    H, W, C = self.image_shape
    out = self.dense(H * W * C * self.params_per_value, "out")(h)
    # Dense features are ordered (pixel, channel, parameter); the parameter blocks end up
    # contiguous along the last axis: [..., H, W, C * P] = (param 0 for C channels, ...).
    out = out.reshape(*z.shape[:-1], H, W, C, self.params_per_value)
    out = jnp.moveaxis(out, -1, -2).reshape(*z.shape[:-1], H, W, C * self.params_per_value)
    return out.astype(jnp.float32)


def check_conv_shape(image_shape: tuple[int, ...], num_downsamples: int) -> None:
  """The conv nets halve H and W `num_downsamples` times and must get them back exactly."""
  H, W, _ = image_shape
  f = 2 ** num_downsamples
  if H % f or W % f:
    raise ValueError(f"model.arch='conv' with {num_downsamples} stride-2 layers needs image "
                     f"height and width divisible by {f}; got {H}x{W}. Use fewer "
                     "model.conv_channels or model.arch='mlp'.")


class ConvEncoder(Network):
  """q(z|x) with strided 4x4 convolutions (`channels`, each halving H and W), then one
  dense hidden layer and the Gaussian heads."""

  channels: Sequence[int]
  hidden: int
  latent_dim: int
  _: dataclasses.KW_ONLY
  activation: str = "relu"

  @nn.compact
  def __call__(self, x_BxHxWxC: jax.Array) -> tuple[jax.Array, jax.Array]:
    check_conv_shape(x_BxHxWxC.shape[1:], len(self.channels))
    act = _activation(self.activation)
    h = x_BxHxWxC.astype(self.dtype)
    for i, ch in enumerate(self.channels):
      h = act(nn.Conv(ch, (4, 4), strides=(2, 2), padding="SAME", dtype=self.dtype,
                      kernel_init=kernel_init(self.init_std), name=f"conv_{i}")(h))
    h = h.reshape(h.shape[0], -1)
    h = act(self.dense(self.hidden, "hidden")(h))
    return GaussianHeads(self.latent_dim, init_std=self.init_std, dtype=self.dtype,
                         name="heads")(h)


class ConvDecoder(Network):
  """The mirror of `ConvEncoder`: z -> dense -> feature map at 1/2^n resolution ->
  stride-2 transposed convolutions -> [..., H, W, C * params_per_value]."""

  channels: Sequence[int]   # encoder order; the decoder runs them in reverse
  hidden: int
  image_shape: tuple[int, int, int]
  params_per_value: int = 1
  _: dataclasses.KW_ONLY
  activation: str = "relu"

  @nn.compact
  def __call__(self, z: jax.Array) -> jax.Array:
    H, W, C = self.image_shape
    n = len(self.channels)
    check_conv_shape(self.image_shape, n)
    act = _activation(self.activation)
    # Convolutions take one batch dim: z [..., N, L] -> [N * prod(...), L] with N major. N is
    # the (possibly sharded) batch; keeping it the major factor of the merged dim keeps the
    # merge expressible as a sharding (a minor sharded factor needs an explicit reshard).
    lead, N, L = z.shape[:-2], z.shape[-2], z.shape[-1]
    h = jnp.moveaxis(z, -2, 0).reshape(-1, L).astype(self.dtype)
    h = act(self.dense(self.hidden, "hidden")(h))
    h0, w0, c0 = H // 2**n, W // 2**n, self.channels[-1]
    h = act(self.dense(h0 * w0 * c0, "project")(h)).reshape(-1, h0, w0, c0)
    widths = list(self.channels[::-1][1:]) + [C * self.params_per_value]
    for i, ch in enumerate(widths):
      h = nn.ConvTranspose(ch, (4, 4), strides=(2, 2), padding="SAME", dtype=self.dtype,
                           kernel_init=kernel_init(self.init_std), name=f"deconv_{i}")(h)
      if i < len(widths) - 1:
        h = act(h)
    h = h.reshape(N, *lead, H, W, C * self.params_per_value)
    return jnp.moveaxis(h, 0, len(lead)).astype(jnp.float32)


class VAE(nn.Module):
  """One params tree {"encoder": ..., "decoder": ...}; `encode` and `decode` are applied
  separately (`model.apply(variables, x, method=VAE.encode)`)."""

  encoder: nn.Module
  decoder: nn.Module

  def encode(self, x_BxHxWxC: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(mean [B, L], log_var [B, L]) of q(z|x)."""
    return self.encoder(x_BxHxWxC)

  def decode(self, z: jax.Array) -> jax.Array:
    """Per-pixel parameters of p(x|z), [..., H, W, C * P]."""
    return self.decoder(z)

  def __call__(self, x_BxHxWxC: jax.Array) -> jax.Array:
    """For `init`: decodes the posterior mean (creates both networks' parameters)."""
    mean, _ = self.encode(x_BxHxWxC)
    return self.decode(mean)


def build_vae(*, arch: str, image_shape: tuple[int, int, int], latent_dim: int,
              hidden: Sequence[int], params_per_value: int, activation: str = "tanh",
              conv_channels: Sequence[int] = (32, 64), init_std: float = 0.0,
              dtype: Any = jnp.float32) -> VAE:
  """The encoder/decoder pair for `arch` ('mlp' or 'conv').

  For 'conv', `hidden` must hold one width (the dense layer between the feature map and z).
  """
  height, width, channels = image_shape
  image_shape = (int(height), int(width), int(channels))
  common: dict[str, Any] = dict(activation=activation, init_std=init_std, dtype=dtype)
  if arch == "mlp":
    return VAE(MLPEncoder(tuple(hidden), latent_dim, **common),
               MLPDecoder(tuple(hidden[::-1]), image_shape, params_per_value, **common))
  if arch == "conv":
    if len(hidden) != 1:
      raise ValueError(f"model.arch='conv' takes one dense width in model.hidden; got {hidden}.")
    check_conv_shape(image_shape, len(conv_channels))
    return VAE(ConvEncoder(tuple(conv_channels), hidden[0], latent_dim, **common),
               ConvDecoder(tuple(conv_channels), hidden[0], image_shape, params_per_value,
                           **common))
  raise ValueError(f"model.arch={arch!r}; expected 'mlp' or 'conv'.")
