"""EDM's non-leaky geometric augmentation of training images, with its conditioning labels.

Karras, Aittala, Aila, Laine 2022, "Elucidating the Design Space of Diffusion-Based
Generative Models" (arXiv:2206.00364), augmentation regularization: each training image is
augmented with probability p and the network is told how (the 9 augment labels, SongUNet's
`augment_labels_BxA`), so it learns the augmented distribution as a separate condition and
sampling with zero labels gives un-augmented images. The pipeline is the authors'
`training/augment.py` `AugmentPipe` (after ADA, Karras et al. 2020, arXiv:2006.06676) with
the arguments their train.py `--augment=0.12` sets: xflip=1e8, yflip=1, scale=1,
rotate_frac=1, aniso=1, translate_frac=1 and the default strengths.

Per image, in the authors' order (u ~ U(0, 1) a fresh draw for each gate):
  x-flip with probability 1/2 (xflip * p >= 1 for p >= 1e-8: the gate opens), y-flip with
  probability p / 2; isotropic scaling 2^(0.2 z), z ~ N(0, 1); rotation by an angle
  ~ U(-pi, pi); anisotropic scaling 2^(0.2 z) along an axis at an angle ~ U(-pi, pi) (that
  angle itself kept with probability 1/2, whatever p); translation by 0.125 * (W, H) * z,
  z ~ N(0, 1)^2. Each geometric transform is kept with probability p, else it is the
  identity and its labels are 0.

The 9 labels, as the authors encode them: [xflip (0/1), yflip (0/1), scale z,
cos(angle) - 1, sin(angle), aniso z * cos(axis), aniso z * sin(axis), translate z_x,
translate z_y].

Resampling is the authors': reflect padding, 2x upsampling with the sym6 wavelet, bilinear
sampling, sym6 downsampling (tests/data/test_edm_augment.py checks images and labels
against their code for fixed random draws). Their padding is as wide as the batch's largest
transformed image needs (its size is data dependent); here every image is padded by the
largest width their code can choose (W - 1, H - 1) and the pixels beyond the batch's margin
are masked to zero, which gives the same values with static shapes (so it jits), at the
cost of upsampling a larger image (94x94 for 32x32 images). As in their code, that margin is
shared by the batch.

Layout NHWC; images are returned in their input dtype, labels in float32.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

# The probability multipliers of EDM's train.py (`--augment`).
XFLIP, YFLIP, SCALE, ROTATE, ANISO, TRANSLATE = 1e8, 1.0, 1.0, 1.0, 1.0, 1.0
AUGMENT_DIM = 9


class Strengths(NamedTuple):
  """How strong each geometric transform is (the authors' AugmentPipe defaults, which EDM
  uses).

  Attributes:
    scale_std: log2 standard deviation of the isotropic scaling.
    rotate_frac_max: range of the rotation, 1 = the full circle.
    aniso_std: log2 standard deviation of the anisotropic scaling.
    aniso_rotate_prob: probability that the anisotropic scaling's axis is rotated.
    translate_frac_std: standard deviation of the translation, relative to the image size.
  """
  scale_std: float = 0.2
  rotate_frac_max: float = 1.0
  aniso_std: float = 0.2
  aniso_rotate_prob: float = 0.5
  translate_frac_std: float = 0.125


EDM_STRENGTHS = Strengths()

# Low-pass filter of the Symlet-6 wavelet (the authors' `wavelets['sym6']`, PyWavelets' dec_lo).
SYM6 = np.array([
    0.015404109327027373, 0.0034907120842174702, -0.11799011114819057, -0.048311742585633,
    0.4910559419267466, 0.787641141030194, 0.3379294217276218, -0.07263752278646252,
    -0.021060292512300564, 0.04472490177066578, 0.0017677118642428036, -0.007800708325034148,
], dtype=np.float32)


class AugmentDraws(NamedTuple):
  """The random numbers one batch's augmentation uses, in the authors' order ([B] each).

  `*_bit` are 0/1 draws, `*_u` are U(0, 1) (the `*_gate_u` ones decide whether a transform
  happens), `*_z` are N(0, 1).
  """
  xflip_bit: jax.Array
  xflip_gate_u: jax.Array
  yflip_bit: jax.Array
  yflip_gate_u: jax.Array
  scale_z: jax.Array
  scale_gate_u: jax.Array
  rotate_u: jax.Array
  rotate_gate_u: jax.Array
  aniso_z: jax.Array
  aniso_axis_u: jax.Array
  aniso_gate_u: jax.Array
  aniso_axis_gate_u: jax.Array
  translate_z: jax.Array       # [2, B]: x, y
  translate_gate_u: jax.Array


def draw(rng: jax.Array, batch_size: int) -> AugmentDraws:
  """Draws the random numbers of one batch's augmentation.

  Args:
    rng: a jax PRNG key.
    batch_size: B.

  Returns:
    `AugmentDraws` of [B] arrays (translate_z [2, B]), float32 (bits int32).
  """
  # Two draws for all (one of 11 uniform rows, one of 4 normal rows): fewer random-number
  # programs to compile than one draw per field.
  key_u, key_z = jax.random.split(rng)
  u = iter(jax.random.uniform(key_u, (11, batch_size)))
  z = jax.random.normal(key_z, (4, batch_size))
  bit = lambda: (next(u) < 0.5).astype(jnp.int32)
  return AugmentDraws(
      xflip_bit=bit(), xflip_gate_u=next(u), yflip_bit=bit(), yflip_gate_u=next(u),
      scale_z=z[0], scale_gate_u=next(u), rotate_u=next(u), rotate_gate_u=next(u),
      aniso_z=z[1], aniso_axis_u=next(u), aniso_gate_u=next(u), aniso_axis_gate_u=next(u),
      translate_z=z[2:], translate_gate_u=next(u))


def _matrix(rows) -> jax.Array:
  """[B, 3, 3] from 3 rows of 3 entries, each a [B] array or a number."""
  B = next(jnp.shape(e)[0] for row in rows for e in row if jnp.ndim(e))
  return jnp.stack([jnp.stack([jnp.broadcast_to(jnp.asarray(e, jnp.float32), (B,)) for e in row],
                              axis=-1) for row in rows], axis=-2)


def _scale2d(sx, sy) -> jax.Array:
  return _matrix([[sx, 0, 0], [0, sy, 0], [0, 0, 1]])


def _rotate2d(theta) -> jax.Array:
  return _matrix([[jnp.cos(theta), jnp.sin(-theta), 0], [jnp.sin(theta), jnp.cos(theta), 0],
                  [0, 0, 1]])


def _translate2d(tx, ty) -> jax.Array:
  return _matrix([[1, 0, tx], [0, 1, ty], [0, 0, 1]])


def labels_and_inverse_transform(
    draws: AugmentDraws, height: int, width: int, p: float,
    strengths: Strengths = EDM_STRENGTHS) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
  """The flips, the 9 labels and the inverse geometric transform of each image.

  The authors' AugmentPipe: a transform happens where its gate u < multiplier * p; G_inv
  maps output pixel coordinates (centred on the image) to input ones, composed in the
  order scale, rotation, anisotropic scaling, translation.

  Args:
    draws: the batch's random numbers.
    height: H of the images.
    width: W of the images.
    p: augmentation probability.
    strengths: the transforms' strengths.

  Returns:
    (xflip [B] bool, yflip [B] bool, labels [B, 9] float32, G_inv [B, 3, 3] float32).
  """
  gate = lambda gate_u, multiplier, value: jnp.where(gate_u < multiplier * p, value, 0)
  xflip = gate(draws.xflip_gate_u, XFLIP, draws.xflip_bit)
  yflip = gate(draws.yflip_gate_u, YFLIP, draws.yflip_bit)

  scale_z = gate(draws.scale_gate_u, SCALE, draws.scale_z)
  s = jnp.exp2(scale_z * strengths.scale_std)
  G_inv = _scale2d(1 / s, 1 / s)

  angle = (draws.rotate_u * 2 - 1) * (np.pi * strengths.rotate_frac_max)
  angle = gate(draws.rotate_gate_u, ROTATE, angle)
  G_inv = G_inv @ _rotate2d(angle)                         # rotate2d_inv(-angle)

  aniso_z = gate(draws.aniso_gate_u, ANISO, draws.aniso_z)
  axis = jnp.where(draws.aniso_axis_gate_u < strengths.aniso_rotate_prob,
                   (draws.aniso_axis_u * 2 - 1) * np.pi, 0)
  s = jnp.exp2(aniso_z * strengths.aniso_std)
  G_inv = G_inv @ _rotate2d(-axis) @ _scale2d(1 / s, s) @ _rotate2d(axis)

  translate_z = gate(draws.translate_gate_u, TRANSLATE, draws.translate_z)
  G_inv = G_inv @ _translate2d(-translate_z[0] * (width * strengths.translate_frac_std),
                               -translate_z[1] * (height * strengths.translate_frac_std))

  labels = jnp.stack([
      xflip.astype(jnp.float32), yflip.astype(jnp.float32), scale_z,
      jnp.cos(angle) - 1, jnp.sin(angle), aniso_z * jnp.cos(axis), aniso_z * jnp.sin(axis),
      translate_z[0], translate_z[1]], axis=1).astype(jnp.float32)
  return xflip == 1, yflip == 1, labels, G_inv


def _filter_1d(x: jax.Array, taps: np.ndarray, axis: int, *, stride: int = 1,
               dilation: int = 1, padding: int) -> jax.Array:
  """Correlates every channel of `x` with `taps` along `axis`, as torch's conv2d with
  `padding` zeros on each side and an output `stride`, after stuffing `dilation - 1` zeros
  between the input samples (2 = the upsampler's zero insertion).

  Written as a sum of shifted slices, which XLA fuses: XLA:CPU ran the equivalent dilated
  depthwise convolution 27 times slower (2-core AMD EPYC, AVX2, shared with other jobs;
  the upsampling of a batch of 64 padded 32x32 images)."""
  if dilation > 1:
    n = x.shape[axis]
    zeros = jnp.zeros_like(x)
    x = jnp.stack([x] + [zeros] * (dilation - 1), axis=axis + 1)
    x = x.reshape(x.shape[:axis] + (n * dilation,) + x.shape[axis + 2:])
    x = jax.lax.slice_in_dim(x, 0, (n - 1) * dilation + 1, axis=axis)
  pads = [(0, 0)] * x.ndim
  pads[axis] = (padding, padding)
  x = jnp.pad(x, pads)
  out_len = (x.shape[axis] - len(taps)) // stride + 1
  window = lambda t: jax.lax.slice_in_dim(x, t, t + stride * (out_len - 1) + 1, stride, axis)
  out = float(taps[0]) * window(0)
  for t in range(1, len(taps)):
    out = out + float(taps[t]) * window(t)
  return out


def _bilinear(images_BxHxWxC: jax.Array, x_BxHoxWo: jax.Array,
              y_BxHoxWo: jax.Array) -> jax.Array:
  """Bilinear samples at pixel coordinates (x, y), zero outside the image (grid_sample with
  padding_mode='zeros')."""
  B, H, W, C = images_BxHxWxC.shape
  flat = images_BxHxWxC.reshape(B, H * W, C)
  x0, y0 = jnp.floor(x_BxHoxWo), jnp.floor(y_BxHoxWo)
  out = 0
  for dx, dy in ((0, 0), (1, 0), (0, 1), (1, 1)):
    xi, yi = x0 + dx, y0 + dy
    weight = (1 - jnp.abs(x_BxHoxWo - xi)) * (1 - jnp.abs(y_BxHoxWo - yi))
    inside = (xi >= 0) & (xi <= W - 1) & (yi >= 0) & (yi <= H - 1)
    index = (jnp.clip(yi, 0, H - 1) * W + jnp.clip(xi, 0, W - 1)).astype(jnp.int32)
    values = jnp.take_along_axis(flat, index.reshape(B, -1, 1), axis=1)
    out = out + jnp.where(inside, weight, 0).reshape(B, -1, 1) * values
  return out.reshape(x_BxHoxWo.shape + (C,))


def transform(images_BxHxWxC: jax.Array, G_inv: jax.Array) -> jax.Array:
  """Resamples every image by its inverse transform, as the authors' AugmentPipe does.

  Reflect padding, 2x upsampling with sym6, bilinear sampling at G_inv of each output
  pixel, sym6 downsampling (module docstring: the padding is the widest the authors' code
  can choose, masked to the batch's margin).

  Args:
    images_BxHxWxC: float images.
    G_inv: [B, 3, 3] maps centred output pixel coordinates to centred input ones.

  Returns:
    [B, H, W, C] float32 resampled images.
  """
  B, H, W, C = images_BxHxWxC.shape
  cx, cy = (W - 1) / 2, (H - 1) / 2
  hz_pad = len(SYM6) // 4

  # The authors' margin: the batch's transformed corners plus the filters' reach, clamped
  # to what reflect padding allows, rounded up.
  corners_3x4 = jnp.array([[-cx, cx, cx, -cx], [-cy, -cy, cy, cy], [1, 1, 1, 1]], jnp.float32)
  corners_Bx3x4 = G_inv @ corners_3x4
  reach = jnp.stack([(-corners_Bx3x4[:, 0]).max(), (-corners_Bx3x4[:, 1]).max(),
                     corners_Bx3x4[:, 0].max(), corners_Bx3x4[:, 1].max()])
  reach = reach + jnp.array([hz_pad * 2 - cx, hz_pad * 2 - cy] * 2, jnp.float32)
  reach = jnp.clip(reach, 0, jnp.array([W - 1, H - 1] * 2, jnp.float32))
  mx0, my0, mx1, my1 = jnp.ceil(reach).astype(jnp.int32)

  # Pad by the widest margin and zero what lies beyond the batch's margin.
  px, py = W - 1, H - 1
  images = jnp.pad(images_BxHxWxC.astype(jnp.float32), ((0, 0), (py, py), (px, px), (0, 0)),
                   mode="reflect")
  col = jnp.arange(W + 2 * px) - px                      # input column of each padded column
  row = jnp.arange(H + 2 * py) - py
  keep = (((row >= -my0) & (row <= H - 1 + my1))[:, None]
          & ((col >= -mx0) & (col <= W - 1 + mx1))[None, :])
  images = images * keep[None, :, :, None]

  # 2x upsampling: zeros between the samples, then the reversed sym6 (the authors' padding),
  # first along W, then H. Upsampled index 2 q holds padded pixel q.
  taps_up = SYM6[::-1]
  up_pad = (len(SYM6) + 1) // 2
  images = _filter_1d(images, taps_up, axis=2, dilation=2, padding=up_pad)
  images = _filter_1d(images, taps_up, axis=1, dilation=2, padding=up_pad)
  # The authors' upsampled image ends at their padding; beyond it, grid_sample reads zeros.
  col_up = jnp.arange(images.shape[2]) - 2 * px
  row_up = jnp.arange(images.shape[1]) - 2 * py
  keep_up = (((row_up >= -2 * my0) & (row_up <= 2 * (H + my1) - 1))[:, None]
             & ((col_up >= -2 * mx0) & (col_up <= 2 * (W + mx1) - 1))[None, :])
  images = images * keep_up[None, :, :, None]

  # Sample the output at twice the resolution, with a border of hz_pad pixels: output
  # column j is pixel j / 2 - hz_pad, centred (j / 2 - hz_pad - cx); its source is the
  # centred input point G_inv @ (ox, oy, 1), upsampled index 2 (that + cx + px).
  Wo, Ho = (W + 2 * hz_pad) * 2, (H + 2 * hz_pad) * 2
  ox = jnp.arange(Wo, dtype=jnp.float32) / 2 - hz_pad - cx
  oy = jnp.arange(Ho, dtype=jnp.float32) / 2 - hz_pad - cy
  src = jnp.einsum("bij,jyx->biyx", G_inv[:, :2], jnp.stack(jnp.broadcast_arrays(
      ox[None, :], oy[:, None], jnp.ones((Ho, Wo), jnp.float32))))
  images = _bilinear(images, 2 * (src[:, 0] + cx + px), 2 * (src[:, 1] + cy + py))

  # 2x downsampling with sym6 and the authors' padding, then the border is cropped.
  down_pad = (len(SYM6) - 1) // 2
  images = _filter_1d(images, SYM6, axis=2, stride=2, padding=down_pad)[:, :, hz_pad:-hz_pad]
  images = _filter_1d(images, SYM6, axis=1, stride=2, padding=down_pad)[:, hz_pad:-hz_pad]
  return images


def augment_with_draws(images_BxHxWxC: jax.Array, draws: AugmentDraws, p: float = 0.12,
                       strengths: Strengths = EDM_STRENGTHS) -> tuple[jax.Array, jax.Array]:
  """`augment` with given random numbers (the authors' pipeline, deterministic).

  Args:
    images_BxHxWxC: float images, e.g. in [-1, 1].
    draws: the batch's random numbers (`draw`).
    p: augmentation probability.
    strengths: the transforms' strengths.

  Returns:
    (augmented images [B, H, W, C] in the input dtype, labels [B, 9] float32).
  """
  _, H, W, _ = images_BxHxWxC.shape
  xflip, yflip, labels, G_inv = labels_and_inverse_transform(draws, H, W, p, strengths)
  images = jnp.where(xflip[:, None, None, None], images_BxHxWxC[:, :, ::-1], images_BxHxWxC)
  images = jnp.where(yflip[:, None, None, None], images[:, ::-1], images)
  return transform(images, G_inv).astype(images_BxHxWxC.dtype), labels


def augment(rng: jax.Array, images_BxHxWxC: jax.Array,
            p: float = 0.12) -> tuple[jax.Array, jax.Array]:
  """EDM's non-leaky augmentation of a batch (module docstring), with its labels.

  Args:
    rng: a jax PRNG key.
    images_BxHxWxC: float images, e.g. in [-1, 1].
    p: augmentation probability (EDM's CIFAR-10 setting: 0.12).

  Returns:
    (augmented images [B, H, W, C] in the input dtype, augment labels [B, 9] float32, the
    `augment_labels_BxA` of gen_jax.models.song_unet.SongUNet).

  Raises:
    ValueError: if p is outside [0, 1] or the images are not [B, H, W, C].
  """
  if not 0 <= p <= 1:
    raise ValueError(f"augment probability p must be in [0, 1]; got {p}.")
  if images_BxHxWxC.ndim != 4:
    raise ValueError(f"augment expects images [B, H, W, C]; got {images_BxHxWxC.shape}.")
  return augment_with_draws(images_BxHxWxC, draw(rng, images_BxHxWxC.shape[0]), p)

