"""The diffusion forward process: noise schedules, q(x_t | x_0) and its posterior.

Ho, Jain, Abbeel 2020 (arXiv:2006.11239): the linear schedule (§4), q(x_t|x_0) (Eq. 4) and
the posterior q(x_{t-1}|x_t,x_0) (Eq. 6-7). Nichol & Dhariwal 2021 (arXiv:2102.09672,
Eq. 17): the cosine schedule. Salimans & Ho 2022 (arXiv:2202.00512, §4): the v target.
The reverse process's variances: fixed beta or beta~ (Ho et al. §3.2), learned diagonal
(Ho et al. Table 2) and Nichol & Dhariwal's learned interpolation (Eq. 15).
The training loss, the samplers and the bound build on these
(`gen_jax/methods/diffusion/method.py`, `gen_jax/methods/diffusion/likelihood.py`).

Timesteps are 0-based: index t in [0, T) is the paper's t+1.
"""
from __future__ import annotations

import flax.struct
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

# What the network predicts: the noise (Ho et al. Eq. 14), the clean image,
# v = sqrt(abar) eps - sqrt(1 - abar) x0 (Salimans & Ho 2022), or the posterior mean
# mu~_t(x_t, x_0) of Eq. 7 ('mu', Ho et al. Table 2's "mu~ prediction").
TARGETS = ("eps", "x0", "v", "mu")
# The reverse variance sigma_t^2 of p_theta(x_{t-1} | x_t): fixed beta_t or beta~_t (Ho et
# al. §3.2), 'learned' (the network outputs log sigma_t^2 per pixel: Ho et al. Table 2's
# "learned diagonal Sigma"), or 'learned_range' (the network outputs v in [-1, 1],
# interpolating log beta_t and log beta~_t: Nichol & Dhariwal 2021, Eq. 15).
VARIANCES = ("beta", "beta_tilde", "learned", "learned_range")
LEARNED_VARIANCES = ("learned", "learned_range")

# ----------------------------------------------------------------------------- schedules


def linear_betas(T: int, beta_start: float = 1e-4, beta_end: float = 0.02) -> np.ndarray:
  """Ho et al. 2020 §4: betas increase linearly from 1e-4 to 0.02 over T=1000."""
  return np.linspace(beta_start, beta_end, T, dtype=np.float64)


def cosine_alpha_bar(t_over_T: np.ndarray, s: float = 0.008) -> np.ndarray:
  """Nichol & Dhariwal 2021, Eq. 17: f(t) = cos^2(((t/T + s) / (1 + s)) * pi/2)."""
  return np.cos((t_over_T + s) / (1 + s) * np.pi / 2) ** 2


def cosine_betas(T: int, s: float = 0.008, max_beta: float = 0.999) -> np.ndarray:
  """Nichol & Dhariwal 2021, Eq. 17: beta_t = min(1 - abar_t / abar_{t-1}, 0.999)."""
  steps = np.arange(T + 1, dtype=np.float64) / T
  abar = cosine_alpha_bar(steps, s) / cosine_alpha_bar(np.zeros(()), s)
  return np.minimum(1.0 - abar[1:] / abar[:-1], max_beta)


class Schedule(flax.struct.PyTreeNode):
  """Per-timestep constants of the forward process and its posterior, shape [T] each."""

  betas: jax.Array
  alphas_cumprod: jax.Array        # abar_t = prod_{s<=t} (1 - beta_s)
  alphas_cumprod_prev: jax.Array   # abar_{t-1}, with abar_{-1} = 1
  posterior_variance: jax.Array    # beta~_t, Eq. 7
  posterior_mean_coef_x0: jax.Array  # Eq. 7: sqrt(abar_{t-1}) beta_t / (1 - abar_t)
  posterior_mean_coef_xt: jax.Array  # Eq. 7: sqrt(alpha_t) (1 - abar_{t-1}) / (1 - abar_t)

  @property
  def num_timesteps(self) -> int:
    return self.betas.shape[0]


def make_schedule(betas: np.ndarray) -> Schedule:
  """Derives every constant in float64 and stores float32 (as the original code does)."""
  betas = np.asarray(betas, np.float64)
  alphas = 1.0 - betas
  abar = np.cumprod(alphas)
  abar_prev = np.append(1.0, abar[:-1])
  f32 = lambda a: jnp.asarray(a, jnp.float32)
  return Schedule(
      betas=f32(betas),
      alphas_cumprod=f32(abar),
      alphas_cumprod_prev=f32(abar_prev),
      posterior_variance=f32(betas * (1.0 - abar_prev) / (1.0 - abar)),
      posterior_mean_coef_x0=f32(np.sqrt(abar_prev) * betas / (1.0 - abar)),
      posterior_mean_coef_xt=f32(np.sqrt(alphas) * (1.0 - abar_prev) / (1.0 - abar)),
  )


def schedule_from_config(cfg: ml_collections.ConfigDict) -> Schedule:
  if cfg.schedule == "linear":
    return make_schedule(linear_betas(cfg.num_timesteps, cfg.beta_start, cfg.beta_end))
  if cfg.schedule == "cosine":
    return make_schedule(cosine_betas(cfg.num_timesteps))
  raise ValueError(f"diffusion.schedule={cfg.schedule!r}; expected 'linear' or 'cosine'.")


def _at(values_T: jax.Array, t_B: jax.Array) -> jax.Array:
  """values[t] broadcastable against images [B, H, W, C]."""
  return values_T[t_B][:, None, None, None]


# ----------------------------------------------------------------------- forward process


def q_sample(sched: Schedule, x0: jax.Array, t_B: jax.Array, noise: jax.Array) -> jax.Array:
  """Ho et al. 2020, Eq. 4: x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps."""
  abar = _at(sched.alphas_cumprod, t_B)
  return jnp.sqrt(abar) * x0 + jnp.sqrt(1.0 - abar) * noise


def q_posterior_mean_variance(sched: Schedule, x0: jax.Array, xt: jax.Array, t_B: jax.Array):
  """Ho et al. 2020, Eq. 6-7: q(x_{t-1} | x_t, x_0) = N(mu~_t(x_t, x_0), beta~_t I)."""
  mean = _at(sched.posterior_mean_coef_x0, t_B) * x0 + _at(sched.posterior_mean_coef_xt, t_B) * xt
  return mean, _at(sched.posterior_variance, t_B)


def training_target(sched: Schedule, x0, noise, t_B, target: str) -> jax.Array:
  """What the network regresses: eps (Eq. 14), x0, v = sqrt(abar) eps - sqrt(1-abar) x0,
  or mu = mu~_t(x_t, x_0) (Eq. 7) at x_t = q_sample(x0, t, noise)."""
  if target == "eps":
    return noise
  if target == "x0":
    return x0
  if target == "mu":
    return q_posterior_mean_variance(sched, x0, q_sample(sched, x0, t_B, noise), t_B)[0]
  abar = _at(sched.alphas_cumprod, t_B)
  return jnp.sqrt(abar) * noise - jnp.sqrt(1.0 - abar) * x0


def predict_x0_eps(sched: Schedule, output, xt, t_B, target: str) -> tuple[jax.Array, jax.Array]:
  """Converts the network output (for `target`) into (x0_hat, eps_hat) via Eq. 4; for 'mu'
  by inverting Eq. 7 (its x_0 coefficient is 1 at index 0 and positive everywhere)."""
  abar = _at(sched.alphas_cumprod, t_B)
  sqrt_abar, sqrt_1m_abar = jnp.sqrt(abar), jnp.sqrt(1.0 - abar)
  if target == "eps":
    return (xt - sqrt_1m_abar * output) / sqrt_abar, output
  if target == "x0":
    return output, (xt - sqrt_abar * output) / sqrt_1m_abar
  if target == "mu":
    x0 = ((output - _at(sched.posterior_mean_coef_xt, t_B) * xt)
          / _at(sched.posterior_mean_coef_x0, t_B))
    return x0, (xt - sqrt_abar * x0) / sqrt_1m_abar
  return sqrt_abar * xt - sqrt_1m_abar * output, sqrt_1m_abar * xt + sqrt_abar * output


def eps_from_x0(sched: Schedule, x0, xt, t_B) -> jax.Array:
  abar = _at(sched.alphas_cumprod, t_B)
  return (xt - jnp.sqrt(abar) * x0) / jnp.sqrt(1.0 - abar)


# ------------------------------------------------------------------ reverse variances


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
  log_beta = _at(jnp.log(sched.betas), t_B)
  log_beta_tilde = _at(clipped_log_posterior_variance(sched), t_B)
  return interpolated_log_variance(log_beta, log_beta_tilde, (var_out + 1.0) / 2.0)
