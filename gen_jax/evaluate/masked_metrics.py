"""PSNR and SSIM restricted to a region of the image (the filled pixels of an inpainting).

Images are in [-1, 1] and are compared in [0, 1] (max value 1), as dm-pix expects.
PSNR: 10 log10(1 / MSE) with the MSE over the region's pixels (all channels) only.
SSIM (Wang et al. 2004, Eq. 13): dm-pix's SSIM map (11x11 Gaussian window, sigma 1.5, 'valid'
convolution) averaged over the windows whose centre pixel lies in the region, so known
pixels far from the region do not count; the map of an HxW image covers the centres
(f//2 .. H-1-f//2) only, and an image whose region holds none of them gets NaN.
"""
from __future__ import annotations

import dm_pix
import jax.numpy as jnp
import numpy as np

SSIM_FILTER_SIZE = 11   # dm-pix's (and Wang et al.'s) window


def _to_unit(images: np.ndarray) -> jnp.ndarray:
  return (jnp.asarray(images, jnp.float32) + 1.0) / 2.0


def masked_psnr(a_NxHxWxC, b_NxHxWxC, region_NxHxWx1) -> np.ndarray:
  """PSNR in dB between `a` and `b` over the pixels where `region` is True, per image.

  Args:
    a_NxHxWxC, b_NxHxWxC: images in [-1, 1].
    region_NxHxWx1: bool, the pixels that count (broadcast over channels).

  Returns:
    float [N]: inf where the region matches exactly, NaN where it is empty.
  """
  a, b = _to_unit(a_NxHxWxC), _to_unit(b_NxHxWxC)
  weight = jnp.broadcast_to(jnp.asarray(region_NxHxWx1, jnp.float32), a.shape)
  count = weight.sum(axis=(1, 2, 3))
  mse = ((a - b) ** 2 * weight).sum(axis=(1, 2, 3)) / count
  with np.errstate(divide="ignore", invalid="ignore"):
    return np.asarray(-10.0 * np.log10(np.asarray(mse, np.float64)))


def masked_ssim(a_NxHxWxC, b_NxHxWxC, region_NxHxWx1) -> np.ndarray:
  """SSIM between `a` and `b` averaged over the windows centred in `region`, per image.

  Args:
    a_NxHxWxC, b_NxHxWxC: images in [-1, 1], at least 11x11.
    region_NxHxWx1: bool, the pixels whose windows count.

  Returns:
    float [N], NaN for an image with no window centre in its region.
  """
  ssim_map = np.asarray(dm_pix.ssim(_to_unit(a_NxHxWxC), _to_unit(b_NxHxWxC), max_val=1.0,
                                    filter_size=SSIM_FILTER_SIZE, return_map=True),
                        np.float64)   # [N, H-10, W-10, C]
  _, h, w, _ = ssim_map.shape
  r = SSIM_FILTER_SIZE // 2   # map pixel (i, j) is the window centred at (i + r, j + r)
  centres = np.asarray(region_NxHxWx1, bool)[:, r:r + h, r:r + w]
  weight = np.broadcast_to(centres, ssim_map.shape).astype(np.float64)
  with np.errstate(invalid="ignore"):
    return (ssim_map * weight).sum(axis=(1, 2, 3)) / weight.sum(axis=(1, 2, 3))
