"""The DDPM++ / NCSN++ U-Net of Song et al. 2021 as the EDM code builds it.

Song, Sohl-Dickstein, Kingma, Kumar, Ermon, Poole 2021, "Score-Based Generative Modeling
through Stochastic Differential Equations" (arXiv:2011.13456), Appendix H ("Architecture
improvements"), in the re-implementation of Karras, Aittala, Aila, Laine 2022, "Elucidating
the Design Space of Diffusion-Based Generative Models" (arXiv:2206.00364): NVlabs/edm
`training/networks.py`, class `SongUNet` and the layers under it (`Linear`, `Conv2d` with
resampling filters, `GroupNorm`, `UNetBlock`, `PositionalEmbedding`, `FourierEmbedding`,
`weight_init`).

EDM's CIFAR-10 network (NVlabs/edm train.py `--arch=ddpmpp`; `ddpmpp_cifar10_kwargs()`):
positional noise embedding, standard encoder and decoder, box resampling filter [1, 1],
model_channels 128, channel_mult (2, 2, 2), 4 blocks per resolution, attention at 16x16,
dropout 0.13, and augment_dim 9 for the non-leaky augmentation labels
(`gen_jax/data/edm_augment.py`). It has 55,733,891 parameters, exactly as the authors'
code (tests/models/test_song_unet.py pins the count; the class-conditional one, label_dim
10, has 55,735,299).

Layout: gen_jax is NHWC. Images are [B, H, W, C]; conv kernels are [kh, kw, in, out] and
dense kernels [in, out] (the authors' [out, in, kh, kw] and [out, in], transposed). Module
names are the authors' (`enc.32x32_block0.conv0.weight` is
`params['enc_32x32_block0']['conv0']['kernel']`), GroupNorm's weight is `scale`, so a
state dict converts name by name (tools/make_song_unet_fixture.py does it). The channels of
the attention's qkv convolution keep the authors' order (head, channel, q/k/v), so the
converted kernels need no permutation.

Initialization is the authors' `weight_init`: every kernel and bias is drawn from the
named distribution with the kernel's fans (fan_in = in * k * k, fan_out = out * k * k)
and multiplied by `init_weight` / `init_bias`. SongUNet uses xavier_uniform everywhere,
bias scale 0, weight scale 1e-5 for the last convolution of every block, of every
attention and of the output (`init_zero`) and sqrt(0.2) for the attention's qkv
(`init_attn`).

Class labels: the authors' network takes one-hot rows [B, label_dim]; `SongUNet` takes
integer classes [B] and one-hot encodes them, so a class equal to label_dim (or a call with
no labels) is the all-zero row, the "null" label that label dropout (classifier-free
guidance, Ho & Salimans 2022) trains, and that EDM's wrapper passes when it gets none.

The NCSN++ Fourier embedding's random frequencies are a buffer in the authors' code; here
they are a parameter (`map_noise/freqs`, drawn as N(0, 16^2) at init) behind
`stop_gradient`, so an NCSN++ network has noise_channels / 2 more parameters than the
authors' count, and an optimizer without weight decay leaves them as drawn.

Mixed precision: convolutions, dense layers and attention matmuls run in `dtype`;
parameters stay float32; GroupNorm, the embeddings and the attention softmax run in float32;
the output is float32.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np


class InitScheme(NamedTuple):
  """One of the authors' initializations: `weight_init(mode)` scaled by weight and bias.

  Attributes:
    mode: 'xavier_uniform', 'xavier_normal', 'kaiming_uniform' or 'kaiming_normal'.
    init_weight: multiplier of the drawn kernel.
    init_bias: multiplier of the drawn bias (drawn with the kernel's fans, as the authors').
  """
  mode: str = "kaiming_normal"
  init_weight: float = 1.0
  init_bias: float = 0.0


def weight_init(mode: str, fan_in: int, fan_out: int, gain: float) -> nn.initializers.Initializer:
  """The authors' unified initializer (NVlabs/edm `weight_init`), times `gain`.

  xavier_uniform: U(-a, a), a = sqrt(6 / (fan_in + fan_out)) (Glorot & Bengio 2010);
  xavier_normal: N(0, 2 / (fan_in + fan_out)); kaiming_uniform: U(-a, a), a = sqrt(3 / fan_in);
  kaiming_normal: N(0, 1 / fan_in) (He et al. 2015 without the ReLU gain of 2).

  Args:
    mode: one of the four names above.
    fan_in: the kernel's input fan (in_channels * kernel * kernel).
    fan_out: the kernel's output fan (out_channels * kernel * kernel).
    gain: multiplier of the drawn values (the authors' init_weight or init_bias).

  Returns:
    An initializer `(key, shape, dtype) -> array`.

  Raises:
    ValueError: for an unknown mode.
  """
  if mode == "xavier_uniform":
    scale, uniform = math.sqrt(6 / (fan_in + fan_out)), True
  elif mode == "xavier_normal":
    scale, uniform = math.sqrt(2 / (fan_in + fan_out)), False
  elif mode == "kaiming_uniform":
    scale, uniform = math.sqrt(3 / fan_in), True
  elif mode == "kaiming_normal":
    scale, uniform = math.sqrt(1 / fan_in), False
  else:
    raise ValueError(f"Unknown init mode {mode!r}; use 'xavier_uniform', 'xavier_normal', "
                     f"'kaiming_uniform' or 'kaiming_normal'.")

  def init(key, shape, dtype=jnp.float32):
    if uniform:
      draw = jax.random.uniform(key, shape, jnp.float32, -1.0, 1.0)
    else:
      draw = jax.random.normal(key, shape, jnp.float32)
    return (gain * scale * draw).astype(dtype)
  return init


class Linear(nn.Module):
  """Fully connected layer with the authors' initialization (NVlabs/edm `Linear`)."""
  features: int
  use_bias: bool = True
  init: InitScheme = InitScheme()
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x_BxI: jax.Array) -> jax.Array:
    in_features = x_BxI.shape[-1]
    draw = lambda gain: weight_init(self.init.mode, in_features, self.features, gain)
    kernel_IxO = self.param("kernel", draw(self.init.init_weight), (in_features, self.features))
    y_BxO = x_BxI.astype(self.dtype) @ kernel_IxO.astype(self.dtype)
    if self.use_bias:
      bias_O = self.param("bias", draw(self.init.init_bias), (self.features,))
      y_BxO = y_BxO + bias_O.astype(self.dtype)
    return y_BxO


def _resample_1d(x: jax.Array, taps_L: np.ndarray, axis: int, *, up: bool,
                 padding: int) -> jax.Array:
  """2x resampling of every channel along `axis` with the FIR `taps_L`, zero padded.

  Down: correlation with the taps at stride 2 after `padding` zeros on each side (torch's
  conv2d). Up: torch's conv_transpose2d with stride 2, i.e. a zero after every sample but
  the last, L - 1 - padding zeros on each side, correlation with the reversed taps.
  Written as a sum of shifted slices, which XLA fuses: XLA:CPU ran the equivalent depthwise
  transposed convolution 13 (filter (1, 1)) to 32 (filter (1, 3, 3, 1)) times slower
  (2-core AMD EPYC, AVX2, shared with other jobs; 32x16x16x256 activations).
  """
  L = len(taps_L)
  if up:
    n = x.shape[axis]
    x = jnp.stack([x, jnp.zeros_like(x)], axis=axis + 1)
    x = x.reshape(x.shape[:axis] + (2 * n,) + x.shape[axis + 2:])
    x = jax.lax.slice_in_dim(x, 0, 2 * n - 1, axis=axis)
    taps_L, padding, stride = taps_L[::-1], L - 1 - padding, 1
  else:
    stride = 2
  pads = [(0, 0)] * x.ndim
  pads[axis] = (padding, padding)
  x = jnp.pad(x, pads)
  out_len = (x.shape[axis] - L) // stride + 1
  window = lambda t: jax.lax.slice_in_dim(x, t, t + stride * (out_len - 1) + 1, stride, axis)
  out = jnp.asarray(taps_L[0], x.dtype) * window(0)
  for t in range(1, len(taps_L)):
    out = out + jnp.asarray(taps_L[t], x.dtype) * window(t)
  return out


def _resample(x_BxHxWxC: jax.Array, taps: tuple[float, ...], *, up: bool,
              padding: int) -> jax.Array:
  """The authors' separable resampling by the 2-D filter outer(f, f) / sum(f)^2 (times 4
  when upsampling, to keep the mean), along H then W."""
  f_L = np.asarray(taps, dtype=np.float64)
  f_L = f_L / f_L.sum() * (2 if up else 1)
  x = _resample_1d(x_BxHxWxC, f_L, 1, up=up, padding=padding)
  return _resample_1d(x, f_L, 2, up=up, padding=padding)


class Conv2d(nn.Module):
  """Convolution with optional 2x up- or downsampling by a FIR filter (NVlabs/edm `Conv2d`).

  Upsampling is a transposed depthwise convolution with 4 * filter at stride 2, downsampling
  a depthwise convolution with the filter at stride 2 (the filter outer(f, f) / sum(f)^2 of
  the 1-D taps f, applied separably), each before the kernel-sized
  convolution; `fused_resample` (downsampling only, the NCSN++ residual encoder's) applies
  the kernel first, with the authors' paddings. kernel_size 0 is the resampling alone (no
  parameters).
  """
  features: int
  kernel_size: int
  use_bias: bool = True
  up: bool = False
  down: bool = False
  resample_filter: tuple[float, ...] = (1, 1)
  fused_resample: bool = False
  init: InitScheme = InitScheme()
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x_BxHxWxC: jax.Array) -> jax.Array:
    if self.up and self.down:
      raise ValueError("Conv2d cannot both upsample and downsample.")
    x = x_BxHxWxC.astype(self.dtype)
    C, k = x.shape[-1], self.kernel_size
    kernel = bias = None
    if k:
      draw = lambda gain: weight_init(self.init.mode, C * k * k, self.features * k * k, gain)
      kernel = self.param("kernel", draw(self.init.init_weight),
                          (k, k, C, self.features)).astype(self.dtype)
      if self.use_bias:
        bias = self.param("bias", draw(self.init.init_bias), (self.features,)).astype(self.dtype)
    w_pad, f_pad = k // 2, (len(self.resample_filter) - 1) // 2

    def conv(x: jax.Array, pad: int) -> jax.Array:
      assert kernel is not None
      return jax.lax.conv_general_dilated(x, kernel, (1, 1), [(pad, pad), (pad, pad)],
                                          dimension_numbers=("NHWC", "HWIO", "NHWC"))

    if self.fused_resample and self.up:
      raise ValueError("fused_resample is implemented for downsampling only (all SongUNet uses).")
    if self.fused_resample and self.down and kernel is not None:
      x = conv(x, w_pad + f_pad)
      x = _resample(x, self.resample_filter, up=False, padding=0)
    else:
      if self.up:
        x = _resample(x, self.resample_filter, up=True, padding=f_pad)
      if self.down:
        x = _resample(x, self.resample_filter, up=False, padding=f_pad)
      if kernel is not None:
        x = conv(x, w_pad)
    if bias is not None:
      x = x + bias
    return x


def group_norm(x_BxHxWxC: jax.Array, eps: float, name: str) -> jax.Array:
  """The authors' GroupNorm: min(32, C // 4) groups, in float32 (NVlabs/edm `GroupNorm`).

  Must be called inside a compact module's method (it binds a submodule `name`).
  """
  C = x_BxHxWxC.shape[-1]
  return nn.GroupNorm(num_groups=min(32, C // 4), epsilon=eps, use_fast_variance=False,
                      dtype=jnp.float32, param_dtype=jnp.float32, name=name)(x_BxHxWxC)


def positional_embedding(x_B: jax.Array, num_channels: int, max_positions: int = 10000,
                         endpoint: bool = False) -> jax.Array:
  """Transformer sinusoids of a scalar per row (NVlabs/edm `PositionalEmbedding`), float32.

  Frequencies (1 / max_positions)^(i / (num_channels/2 - endpoint)), i = 0 .. num_channels/2 - 1
  (Vaswani et al. 2017, Section 3.5); cosines first, as the authors' layer returns them.

  Args:
    x_B: [B] positions (EDM's c_noise).
    num_channels: embedding width (even).
    max_positions: the base of the frequencies.
    endpoint: True makes the last frequency exactly 1 / max_positions (DDPM++ in EDM).

  Returns:
    [B, num_channels] float32 [cos, sin].
  """
  half = num_channels // 2
  freqs_F = jnp.arange(half, dtype=jnp.float32) / (half - (1 if endpoint else 0))
  freqs_F = (1 / max_positions) ** freqs_F
  angles_BxF = x_B.astype(jnp.float32)[:, None] * freqs_F[None, :]
  return jnp.concatenate([jnp.cos(angles_BxF), jnp.sin(angles_BxF)], axis=1)


class FourierEmbedding(nn.Module):
  """Random Fourier features of the noise level (NVlabs/edm `FourierEmbedding`; NCSN++).

  Returns [cos(2 pi f x), sin(2 pi f x)] with f ~ N(0, scale^2) drawn once at init (the
  `freqs` parameter, held fixed by stop_gradient; Tancik et al. 2020).
  """
  num_channels: int
  scale: float = 16.0

  @nn.compact
  def __call__(self, x_B: jax.Array) -> jax.Array:
    freqs_F = self.param(
        "freqs", lambda key, shape: self.scale * jax.random.normal(key, shape, jnp.float32),
        (self.num_channels // 2,))
    angles_BxF = x_B.astype(jnp.float32)[:, None] * (2 * np.pi * jax.lax.stop_gradient(freqs_F))
    return jnp.concatenate([jnp.cos(angles_BxF), jnp.sin(angles_BxF)], axis=1)


class UNetBlock(nn.Module):
  """The authors' residual block with optional resampling and self-attention, as SongUNet
  uses it (NVlabs/edm `UNetBlock` with adaptive_scale=False; the ADM-only options are left out):

  h = conv1(dropout(silu(GN1(conv0(silu(GN0(x))) + affine(emb)))));
  x = (h + skip(x)) * skip_scale, skip a 1x1 (or resample-only) projection when the width or
  resolution changes; then, with attention, x = (proj(attn(GN2(x))) + x) * skip_scale, the
  attention softmax(q k / sqrt(d)) v over all H * W positions, in float32.
  """
  out_channels: int
  up: bool = False
  down: bool = False
  attention: bool = False
  num_heads: int = 1
  dropout: float = 0.0
  skip_scale: float = 1.0
  eps: float = 1e-5
  resample_filter: tuple[float, ...] = (1, 1)
  resample_proj: bool = False
  init: InitScheme = InitScheme()
  init_zero: InitScheme = InitScheme(init_weight=0.0)
  init_attn: InitScheme | None = None
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x_BxHxWxC: jax.Array, emb_BxE: jax.Array, train: bool) -> jax.Array:
    # `train` is positional so that `nn.remat(UNetBlock, static_argnums=(3,))` keeps it static.
    out, C = self.out_channels, x_BxHxWxC.shape[-1]
    resampling_conv = lambda kernel, name: Conv2d(
        out, kernel, up=self.up, down=self.down, resample_filter=self.resample_filter,
        init=self.init, dtype=self.dtype, name=name)
    orig = x_BxHxWxC
    x = resampling_conv(3, "conv0")(nn.silu(group_norm(x_BxHxWxC, self.eps, "norm0")))

    emb_Bx1x1xO = Linear(out, init=self.init, dtype=self.dtype, name="affine")(emb_BxE)
    x = x + emb_Bx1x1xO[:, None, None, :].astype(x.dtype)
    x = nn.silu(group_norm(x, self.eps, "norm1").astype(x.dtype))

    x = nn.Dropout(self.dropout, deterministic=not train)(x)
    x = Conv2d(out, 3, init=self.init_zero, dtype=self.dtype, name="conv1")(x)
    if out != C or self.up or self.down:
      kernel = 1 if self.resample_proj or out != C else 0
      orig = resampling_conv(kernel, "skip")(orig)
    x = (x + orig.astype(x.dtype)) * self.skip_scale

    if self.attention:
      B, H, W, _ = x.shape
      num_heads = self.num_heads
      d = out // num_heads
      qkv = Conv2d(out * 3, 1, init=self.init_attn if self.init_attn is not None else self.init,
                   dtype=self.dtype, name="qkv")(group_norm(x, self.eps, "norm2"))
      # Channel c of the qkv conv is (head, channel, q/k/v) = divmod chains of c, as the
      # authors' reshape(B * heads, d, 3, HW) reads it.
      qkv_BxNxHDx3 = qkv.reshape(B, H * W, num_heads, d, 3)
      q, k, v = (qkv_BxNxHDx3[..., i] for i in range(3))
      logits_BxHDxNxN = jnp.einsum("bqhd,bkhd->bhqk", q.astype(jnp.float32),
                                   (k / np.sqrt(d)).astype(jnp.float32))
      w_BxHDxNxN = jax.nn.softmax(logits_BxHDxNxN, axis=-1).astype(q.dtype)
      a = jnp.einsum("bhqk,bkhd->bqhd", w_BxHDxNxN, v).reshape(B, H, W, out)
      x = (Conv2d(out, 1, init=self.init_zero, dtype=self.dtype, name="proj")(a) + x)
      x = x * self.skip_scale
    return x


class SongUNet(nn.Module):
  """DDPM++ / NCSN++ (Song et al. 2021) as NVlabs/edm's `SongUNet`, in NHWC.

  Attributes (the authors' constructor arguments, with their defaults):
    img_resolution: image height and width at input and output.
    in_channels: channels of the input image.
    out_channels: channels of the output.
    label_dim: number of classes, 0 = unconditional.
    augment_dim: width of the augmentation labels, 0 = no augmentation conditioning.
    model_channels: base width.
    channel_mult: width multiplier per resolution level; level i runs at img_resolution / 2^i.
    channel_mult_emb: the embedding MLP's width is model_channels * channel_mult_emb.
    num_blocks: residual blocks per level in the encoder (num_blocks + 1 in the decoder).
    attn_resolutions: resolutions whose blocks end in self-attention.
    dropout: dropout probability inside the blocks (the 'dropout' rng when training).
    label_dropout: probability of dropping a class label to the null label while training
      (classifier-free guidance; the 'dropout' rng).
    embedding_type: 'positional' (DDPM++) or 'fourier' (NCSN++) noise embedding.
    channel_mult_noise: the noise embedding's width is model_channels * channel_mult_noise.
    encoder_type: 'standard' (DDPM++), 'skip' or 'residual' (NCSN++) input pyramid.
    decoder_type: 'standard' or 'skip' output pyramid.
    resample_filter: 1-D taps of the up/downsampling filter: (1, 1) for DDPM++, (1, 3, 3, 1)
      for NCSN++.
    remat: recompute each block in the backward pass (less activation memory, same params).
    dtype: compute dtype (module docstring); params stay float32.
  """
  img_resolution: int
  in_channels: int
  out_channels: int
  label_dim: int = 0
  augment_dim: int = 0
  model_channels: int = 128
  channel_mult: tuple[int, ...] = (1, 2, 2, 2)
  channel_mult_emb: int = 4
  num_blocks: int = 4
  attn_resolutions: tuple[int, ...] = (16,)
  dropout: float = 0.10
  label_dropout: float = 0.0
  embedding_type: str = "positional"
  channel_mult_noise: int = 1
  encoder_type: str = "standard"
  decoder_type: str = "standard"
  resample_filter: tuple[float, ...] = (1, 1)
  remat: bool = False
  dtype: Any = jnp.float32

  def _check(self, x_BxHxWxC: jax.Array, noise_labels_B: jax.Array,
             class_labels_B: jax.Array | None, augment_labels_BxA: jax.Array | None) -> None:
    """Validates the options and input shapes at trace time, before anything compiles."""
    if self.embedding_type not in ("positional", "fourier"):
      raise ValueError(f"embedding_type must be 'positional' or 'fourier'; got "
                       f"{self.embedding_type!r}.")
    if self.encoder_type not in ("standard", "skip", "residual"):
      raise ValueError(f"encoder_type must be 'standard', 'skip' or 'residual'; got "
                       f"{self.encoder_type!r}.")
    if self.decoder_type not in ("standard", "skip"):
      raise ValueError(f"decoder_type must be 'standard' or 'skip'; got "
                       f"{self.decoder_type!r}.")
    factor = 2 ** (len(self.channel_mult) - 1)
    if not self.channel_mult or self.img_resolution % factor:
      raise ValueError(f"img_resolution {self.img_resolution} must be divisible by "
                       f"2**(len(channel_mult) - 1) = {factor} (channel_mult="
                       f"{self.channel_mult}).")
    expected = (self.img_resolution, self.img_resolution, self.in_channels)
    if x_BxHxWxC.ndim != 4 or x_BxHxWxC.shape[1:] != expected:
      raise ValueError(f"SongUNet expects images [B, {expected[0]}, {expected[1]}, "
                       f"{expected[2]}] (NHWC); got {x_BxHxWxC.shape}.")
    B = x_BxHxWxC.shape[0]
    if noise_labels_B.shape != (B,):
      raise ValueError(f"SongUNet expects noise labels of shape [B]=({B},); got "
                       f"{noise_labels_B.shape}.")
    if class_labels_B is not None and not self.label_dim:
      raise ValueError("SongUNet got class labels but label_dim=0; set label_dim to the "
                       "number of classes to condition on them.")
    if class_labels_B is not None and class_labels_B.shape != (B,):
      raise ValueError(f"SongUNet expects class labels of shape [B]=({B},); got "
                       f"{class_labels_B.shape}.")
    if augment_labels_BxA is not None and not self.augment_dim:
      raise ValueError("SongUNet got augment labels but augment_dim=0; set augment_dim "
                       "(9 for gen_jax.data.edm_augment) to condition on them.")
    if augment_labels_BxA is not None and augment_labels_BxA.shape != (B, self.augment_dim):
      raise ValueError(f"SongUNet expects augment labels of shape [B, augment_dim]="
                       f"({B}, {self.augment_dim}); got {augment_labels_BxA.shape}.")

  @nn.compact
  def __call__(self, x_BxHxWxC: jax.Array, noise_labels_B: jax.Array,
               class_labels_B: jax.Array | None = None,
               augment_labels_BxA: jax.Array | None = None, *, train: bool) -> jax.Array:
    """The network F of EDM's D(x; sigma) = c_skip x + c_out F(c_in x; c_noise).

    Args:
      x_BxHxWxC: [B, img_resolution, img_resolution, in_channels] input images.
      noise_labels_B: [B] float noise conditioning (EDM's c_noise = ln(sigma) / 4).
      class_labels_B: [B] int classes in [0, label_dim]; label_dim (and None) is the null
        label. Only when label_dim > 0.
      augment_labels_BxA: [B, augment_dim] augmentation labels, or None (no augmentation
        conditioning, as at sampling time). Only when augment_dim > 0.
      train: enables dropout and label dropout, which then need the 'dropout' rng.

    Returns:
      [B, img_resolution, img_resolution, out_channels] float32 output.
    """
    self._check(x_BxHxWxC, noise_labels_B, class_labels_B, augment_labels_BxA)
    B = x_BxHxWxC.shape[0]
    emb_channels = self.model_channels * self.channel_mult_emb
    noise_channels = self.model_channels * self.channel_mult_noise
    init = InitScheme("xavier_uniform")
    init_zero = InitScheme("xavier_uniform", init_weight=1e-5)
    init_attn = InitScheme("xavier_uniform", init_weight=math.sqrt(0.2))
    block_cls = nn.remat(UNetBlock, static_argnums=(3,)) if self.remat else UNetBlock
    block = lambda out, name, **kw: block_cls(
        out, num_heads=1, dropout=self.dropout, skip_scale=math.sqrt(0.5), eps=1e-6,
        resample_filter=self.resample_filter, resample_proj=True,
        init=init, init_zero=init_zero, init_attn=init_attn, dtype=self.dtype, name=name, **kw)
    conv = lambda out, k, name, init=init, **kw: Conv2d(
        out, k, resample_filter=self.resample_filter, init=init, dtype=self.dtype, name=name,
        **kw)
    linear = lambda out, name, **kw: Linear(out, init=init, dtype=self.dtype, name=name, **kw)

    # Mapping: noise embedding [sin, cos] (+ class and augment embeddings) -> 2-layer MLP.
    if self.embedding_type == "positional":
      emb = positional_embedding(noise_labels_B, noise_channels, endpoint=True)
    else:
      emb = FourierEmbedding(noise_channels, name="map_noise")(noise_labels_B)
    emb = jnp.concatenate(jnp.split(emb, 2, axis=1)[::-1], axis=1)   # swap cos/sin
    if self.label_dim:
      labels_B = (jnp.full((B,), self.label_dim, jnp.int32) if class_labels_B is None
                  else class_labels_B)
      onehot_BxL = jax.nn.one_hot(labels_B, self.label_dim, dtype=jnp.float32)   # null -> 0
      if train and self.label_dropout:
        keep_Bx1 = jax.random.uniform(self.make_rng("dropout"), (B, 1)) >= self.label_dropout
        onehot_BxL = onehot_BxL * keep_Bx1
      emb = emb + linear(noise_channels, "map_label")(onehot_BxL * np.sqrt(self.label_dim))
    if self.augment_dim and augment_labels_BxA is not None:
      emb = emb + linear(noise_channels, "map_augment", use_bias=False)(augment_labels_BxA)
    emb = nn.silu(linear(emb_channels, "map_layer0")(emb))
    emb = nn.silu(linear(emb_channels, "map_layer1")(emb))

    # Encoder. `skips` holds the output of every non-aux encoder layer, in order.
    x = x_BxHxWxC.astype(self.dtype)
    aux = x
    skips = []
    for level, mult in enumerate(self.channel_mult):
      res = self.img_resolution >> level
      prefix = f"enc_{res}x{res}"
      if level == 0:
        x = conv(self.model_channels, 3, f"{prefix}_conv")(x)
        skips.append(x)
      else:
        x = block(x.shape[-1], f"{prefix}_down", down=True)(x, emb, train)
        skips.append(x)
        if self.encoder_type == "skip":
          aux = conv(aux.shape[-1], 0, f"{prefix}_aux_down", down=True)(aux)
          x = skips[-1] = x + conv(x.shape[-1], 1, f"{prefix}_aux_skip")(aux)
        if self.encoder_type == "residual":
          residual = conv(x.shape[-1], 3, f"{prefix}_aux_residual", down=True,
                          fused_resample=True)(aux)
          x = skips[-1] = aux = (x + residual) / np.sqrt(2)
      for idx in range(self.num_blocks):
        x = block(self.model_channels * mult, f"{prefix}_block{idx}",
                  attention=res in self.attn_resolutions)(x, emb, train)
        skips.append(x)

    # Decoder: every `block{idx}` takes one skip, concatenated on channels.
    aux = None
    for level, mult in reversed(list(enumerate(self.channel_mult))):
      res = self.img_resolution >> level
      prefix = f"dec_{res}x{res}"
      if level == len(self.channel_mult) - 1:
        x = block(x.shape[-1], f"{prefix}_in0", attention=True)(x, emb, train)
        x = block(x.shape[-1], f"{prefix}_in1")(x, emb, train)
      else:
        x = block(x.shape[-1], f"{prefix}_up", up=True)(x, emb, train)
      for idx in range(self.num_blocks + 1):
        x = jnp.concatenate([x, skips.pop()], axis=-1)
        attn = idx == self.num_blocks and res in self.attn_resolutions
        x = block(self.model_channels * mult, f"{prefix}_block{idx}", attention=attn)(
            x, emb, train)
      if self.decoder_type == "skip" or level == 0:
        if self.decoder_type == "skip" and level < len(self.channel_mult) - 1:
          assert aux is not None, "the lowest level writes aux first"
          aux = conv(self.out_channels, 0, f"{prefix}_aux_up", up=True)(aux)
        tmp = group_norm(x, 1e-6, f"{prefix}_aux_norm").astype(self.dtype)
        tmp = conv(self.out_channels, 3, f"{prefix}_aux_conv", init=init_zero)(nn.silu(tmp))
        aux = tmp if aux is None else tmp + aux
    assert not skips and aux is not None, "every skip is consumed and level 0 writes aux"
    return aux.astype(jnp.float32)


def ddpmpp_cifar10_kwargs(label_dim: int = 0) -> dict[str, Any]:
  """EDM's DDPM++ settings for CIFAR-10 (NVlabs/edm train.py `--arch=ddpmpp`, `--augment`).

  The authors' train.py defaults with --arch=ddpmpp: model_channels 128, channel_mult (2, 2, 2),
  positional embedding, standard encoder and decoder, resample filter (1, 1), dropout 0.13,
  augment_dim 9 (the non-leaky augmentation at p = 0.12); 55,733,891 parameters
  unconditional.

  Args:
    label_dim: 10 for the class-conditional model, 0 for the unconditional one.

  Returns:
    Keyword arguments of `SongUNet`.
  """
  return dict(
      img_resolution=32, in_channels=3, out_channels=3, label_dim=label_dim, augment_dim=9,
      model_channels=128, channel_mult=(2, 2, 2), channel_mult_emb=4, num_blocks=4,
      attn_resolutions=(16,), dropout=0.13, label_dropout=0.0, embedding_type="positional",
      channel_mult_noise=1, encoder_type="standard", decoder_type="standard",
      resample_filter=(1, 1))


def ncsnpp_cifar10_kwargs(label_dim: int = 0) -> dict[str, Any]:
  """EDM's NCSN++ settings for CIFAR-10 (NVlabs/edm train.py `--arch=ncsnpp`, `--augment`).

  Fourier embedding of width 2 * 128, residual encoder, resample filter (1, 3, 3, 1),
  otherwise as `ddpmpp_cifar10_kwargs`.

  Args:
    label_dim: 10 for the class-conditional model, 0 for the unconditional one.

  Returns:
    Keyword arguments of `SongUNet`.
  """
  return dict(ddpmpp_cifar10_kwargs(label_dim), embedding_type="fourier",
              channel_mult_noise=2, encoder_type="residual", resample_filter=(1, 3, 3, 1))
