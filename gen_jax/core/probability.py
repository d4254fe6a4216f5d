"""Probability helpers shared by the families: Gaussian KL divergences and the
discretized Gaussian likelihood of 8-bit images (Ho et al. 2020, Eq. 13), used by DDPM's
bound (`gen_jax/methods/diffusion/likelihood.py`) and the VAE decoder (`gen_jax/methods/vae.py`).
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from jax.scipy.special import erf, log_ndtr


def normal_kl(mean1, logvar1, mean2, logvar2) -> jax.Array:
  """Elementwise KL(N(mean1, exp(logvar1)) || N(mean2, exp(logvar2))) in nats:

    0.5 * (logvar2 - logvar1 + exp(logvar1 - logvar2) + (mean1 - mean2)^2 exp(-logvar2) - 1).
  """
  return 0.5 * (logvar2 - logvar1 + jnp.exp(logvar1 - logvar2)
                + (mean1 - mean2) ** 2 * jnp.exp(-logvar2) - 1.0)


def _log_normal_mass(lo: jax.Array, hi: jax.Array) -> jax.Array:
  """log(Phi(hi) - Phi(lo)) for lo < hi, without cancellation in either tail.

  The interval is reflected into the lower half (Phi(hi) - Phi(lo) = Phi(-lo) - Phi(-hi)).
  There, an interval that holds 0 is a sum of two erf terms of opposite sign (no
  cancellation), and one below 0 is a difference of log-CDFs from `log_ndtr`, accurate far
  into the tail: log Phi(hi) + log(1 - exp(log Phi(lo) - log Phi(hi))).
  """
  tiny = jnp.finfo(jnp.result_type(lo, hi)).tiny
  flip = lo + hi > 0
  lo, hi = jnp.where(flip, -hi, lo), jnp.where(flip, -lo, hi)
  central = 0.5 * (erf(hi / math.sqrt(2.0)) - erf(lo / math.sqrt(2.0)))
  log_cdf_hi = log_ndtr(hi)
  tail = log_cdf_hi + jnp.log(jnp.maximum(-jnp.expm1(log_ndtr(lo) - log_cdf_hi), tiny))
  return jnp.where(hi > 0, jnp.log(jnp.maximum(central, tiny)), tail)


def discretized_gaussian_log_likelihood(x, mean, log_scale) -> jax.Array:
  """Elementwise log p(x) of 8-bit data x in [-1, 1] under Ho et al. 2020, Eq. 13.

  p(x) = Phi((x + 1/255 - mean) / s) - Phi((x - 1/255 - mean) / s), s = exp(log_scale),
  except that the bin of x = -1 extends down to -inf and the bin of x = 1 up to +inf, so
  the 256 probabilities sum to 1 for any mean and scale. Computed with `log_ndtr` in log
  space (see `_log_normal_mass`), so tiny scales and far-off means give finite values.

  Args:
    x: data on the grid k / 127.5 - 1, k = 0..255.
    mean, log_scale: the decoder's mean and log standard deviation, broadcastable to x.

  Returns:
    log-probabilities in nats, the broadcast shape of the inputs.
  """
  x, mean, log_scale = jnp.broadcast_arrays(x, mean, log_scale)
  inv_scale = jnp.exp(-log_scale)
  lo = (x - mean - 1.0 / 255.0) * inv_scale
  hi = (x - mean + 1.0 / 255.0) * inv_scale
  return jnp.where(x < -0.999, log_ndtr(hi),            # P(X < x + 1/255)
                   jnp.where(x > 0.999, log_ndtr(-lo),  # P(X > x - 1/255)
                             _log_normal_mass(lo, hi)))
