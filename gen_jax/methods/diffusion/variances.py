"""The reverse process's variances of a DDPM, p_theta(x_{t-1} | x_t) = N(mu_theta, sigma_t^2 I).

Fixed beta or beta~ (Ho et al. 2020, §3.2), learned diagonal (Ho et al. Table 2) and Nichol
& Dhariwal's learned interpolation (arXiv:2102.09672, Eq. 15). Timesteps are 0-based.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from gen_jax.methods.diffusion.core import Schedule, at_timesteps

# The reverse variance sigma_t^2 of p_theta(x_{t-1} | x_t): fixed beta_t or beta~_t (Ho et
# al. §3.2), 'learned' (the network outputs log sigma_t^2 per pixel: Ho et al. Table 2's
# "learned diagonal Sigma"), or 'learned_range' (the network outputs v in [-1, 1],
# interpolating log beta_t and log beta~_t: Nichol & Dhariwal 2021, Eq. 15).
VARIANCES = ("beta", "beta_tilde", "learned", "learned_range")
LEARNED_VARIANCES = ("learned", "learned_range")


def output_channels(image_channels: int, variance: str) -> int:
  """Channels the network outputs: the target's, and as many again for a learned variance
  (Nichol & Dhariwal 2021, §3.1: "the model outputs a vector v ... per dimension")."""
  if variance not in VARIANCES:
    raise ValueError(f"variance={variance!r}; expected one of {VARIANCES}.")
  return 2 * image_channels if variance in LEARNED_VARIANCES else image_channels


def split_output(output: jax.Array, variance: str) -> tuple[jax.Array, jax.Array | None]:
  """(the target's prediction, the variance output or None) from the network output
  [B, H, W, C or 2C]: a learned variance's channels come last."""
  if variance not in LEARNED_VARIANCES:
    return output, None
  C = output.shape[-1] // 2
  return output[..., :C], output[..., C:]


def clipped_log_posterior_variance(sched: Schedule) -> jax.Array:
  """log beta~_t [T], with beta~ at index 1 in place of index 0's 0 (log -inf), as the
  authors' code does (`posterior_log_variance_clipped`)."""
  post = sched.posterior_variance
  return jnp.log(post.at[0].set(post[1]))


def fixed_log_variance(sched: Schedule, variance: str) -> jax.Array:
  """log sigma_t^2 [T] of a fixed reverse variance (Ho et al. 2020, §3.2).

  'beta': sigma_t^2 = beta_t; 'beta_tilde': sigma_t^2 = beta~_t (Eq. 7). At index 0 (the
  decoder, whose variance the sampler never uses, and where beta~ = 0) both take beta~ at
  index 1, as the authors' code does ('fixedlarge' and 'fixedsmall' in diffusion_utils_2.py).
  """
  if variance not in ("beta", "beta_tilde"):
    raise ValueError(f"variance={variance!r} is not fixed; expected 'beta' or 'beta_tilde'.")
  post = sched.posterior_variance
  var_T = sched.betas if variance == "beta" else post
  return jnp.log(var_T.at[0].set(post[1]))


def interpolated_log_variance(log_beta: jax.Array, log_beta_tilde: jax.Array,
                              v: jax.Array) -> jax.Array:
  """Nichol & Dhariwal 2021, Eq. 15: Sigma = exp(v log beta + (1 - v) log beta~).

  v = 1 gives beta, v = 0 gives beta~; arrays broadcast.
  """
  return v * log_beta + (1.0 - v) * log_beta_tilde


def model_log_variance(sched: Schedule, variance: str, var_out: jax.Array | None,
                       t_B: jax.Array, ndim: int = 4) -> jax.Array:
  """log sigma_t^2 of p_theta(x_{t-1} | x_t), broadcastable against [B, H, W, C].

  Args:
    variance: one of `VARIANCES`.
    var_out: the variance half of the network output [B, H, W, C] (`split_output`), used
      by the learned variances: 'learned' takes it as log sigma^2; 'learned_range' maps it
      from [-1, 1] to v = (var_out + 1) / 2 of Eq. 15, as the authors' code does.
    t_B: [B] timesteps.
    ndim: rank of the images (for the fixed variances' [B, 1, 1, 1] shape).
  """
  if variance in ("beta", "beta_tilde"):
    return fixed_log_variance(sched, variance)[t_B].reshape((-1,) + (1,) * (ndim - 1))
  if var_out is None:
    raise ValueError(f"variance={variance!r} needs the network's variance output.")
  if variance == "learned":
    return var_out
  if variance != "learned_range":
    raise ValueError(f"variance={variance!r}; expected one of {VARIANCES}.")
  log_beta = at_timesteps(jnp.log(sched.betas), t_B)
  log_beta_tilde = at_timesteps(clipped_log_posterior_variance(sched), t_B)
  return interpolated_log_variance(log_beta, log_beta_tilde, (var_out + 1.0) / 2.0)
