"""The continuous-time core: noise processes and the conversions between network predictions.

Every process here writes a noised image as

  x_t = alpha(t) x_0 + sigma(t) eps,   eps ~ N(0, I),

with time running from data (small t) to noise (large t):

  'vp'      Song et al. 2021 (arXiv:2011.13456), Eq. 32-33, the continuous VP SDE with
            beta(t) = beta_min + t (beta_max - beta_min), beta_min = 0.1, beta_max = 20:
            alpha(t) = exp(-t^2 (beta_max - beta_min) / 4 - t beta_min / 2),
            sigma(t) = sqrt(1 - alpha(t)^2), t in [1e-3, 1].
  'edm'     Karras et al. 2022 (arXiv:2206.00364), §2 and Table 1: alpha = 1, sigma(t) = t,
            t in [0.002, 80].
  'linear'  the linear interpolant of rectified flow (Liu et al. 2023, arXiv:2209.03003,
            Eq. 1) and SiT (Ma et al. 2024, arXiv:2401.08740, §3): alpha = 1 - t, sigma = t,
            t in [0, 1]. SiT's code runs time the other way (t = 1 is data); here t = 1 is
            noise for every process, so one sampler serves all.
  'gvp'     SiT's generalized VP path: alpha = cos(pi t / 2), sigma = sin(pi t / 2).

The discrete DDPM process (Ho et al. 2020) is the same form at integer steps, with
alpha_t = sqrt(abar_t) and sigma_t = sqrt(1 - abar_t) (gen_jax/methods/diffusion/ddpm.py).

What a network predicts (`PREDICTIONS`), each a function of (x_0, eps) at x_t:
  'eps'       the noise (Ho et al. 2020, Eq. 14);
  'x0'        the clean image;
  'v'         v = alpha eps - sigma x_0 (Salimans & Ho 2022, arXiv:2202.00512, §4), for the
              variance-preserving processes (alpha^2 + sigma^2 = 1);
  'score'     grad log p_t(x_t) = -eps / sigma (Song et al. 2021, Eq. 4 for Gaussian q);
  'velocity'  dx_t/dt = alpha'(t) x_0 + sigma'(t) eps (Lipman et al. 2023, arXiv:2210.02747,
              Eq. 20; rectified flow's X_1 - X_0);
  'edm'       EDM's preconditioned D(x; sigma) (Karras et al. Eq. 7), which is an x_0
              prediction once the network is wrapped with `edm.denoised`; here it converts
              as 'x0'.

The probability-flow ODE of every process is dx/dt = alpha'(t) E[x_0 | x_t] + sigma'(t)
E[eps | x_t] (`ode_velocity`); the reverse SDEs with the same marginals add a score term
and noise (`reverse_sde`).
"""
from __future__ import annotations

import math

import flax.struct
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

PROCESSES = ("ddpm", "vp", "edm", "linear", "gvp")
CONTINUOUS_PROCESSES = ("vp", "edm", "linear", "gvp")
PREDICTIONS = ("eps", "x0", "v", "score", "velocity", "edm")
VARIANCE_PRESERVING = ("ddpm", "vp", "gvp")

# Song et al. 2021, App. C (VP SDE): beta_min, beta_max, and the smallest time sampled.
VP_BETA_MIN, VP_BETA_MAX, VP_T_MIN = 0.1, 20.0, 1e-3
# Karras et al. 2022, §5 / Table 1: the sampling range of sigma.
EDM_SIGMA_MIN, EDM_SIGMA_MAX = 0.002, 80.0
# The network's time input for the processes on [0, 1]: (M - 1) t with M = 1000, the range
# of the DDPM U-Net's integer timesteps (Karras et al. Table 1, VP's c_noise).
UNIT_TIME_NOISE_SCALE = 999.0


class Coefficients(flax.struct.PyTreeNode):
  """alpha, sigma and their time derivatives at some t, each broadcastable against x_t."""

  alpha: jax.Array
  sigma: jax.Array
  d_alpha: jax.Array
  d_sigma: jax.Array

  @property
  def noise_level(self) -> jax.Array:
    """sigma / alpha: the noise level of x_t / alpha in EDM's sense (Karras et al. §2), the
    one scale on which the guidance interval (Kynkäänniemi et al. 2024) is stated."""
    return self.sigma / self.alpha


def coefficients(process: str, t: jax.Array) -> Coefficients:
  """alpha(t), sigma(t), alpha'(t), sigma'(t) of a continuous process (module docstring).

  Args:
    process: one of `CONTINUOUS_PROCESSES`.
    t: times, any shape (float32).

  Returns:
    `Coefficients` of t's shape.

  Raises:
    ValueError: an unknown process.
  """
  t = jnp.asarray(t, jnp.float32)
  if process == "vp":
    b0, b1 = VP_BETA_MIN, VP_BETA_MAX
    log_alpha = -0.25 * t**2 * (b1 - b0) - 0.5 * t * b0
    alpha = jnp.exp(log_alpha)
    d_alpha = -0.5 * (b0 + t * (b1 - b0)) * alpha
    sigma = jnp.sqrt(-jnp.expm1(2.0 * log_alpha))
    return Coefficients(alpha, sigma, d_alpha, -alpha * d_alpha / sigma)
  if process == "edm":
    return Coefficients(jnp.ones_like(t), t, jnp.zeros_like(t), jnp.ones_like(t))
  if process == "linear":
    return Coefficients(1.0 - t, t, -jnp.ones_like(t), jnp.ones_like(t))
  if process == "gvp":
    h = 0.5 * math.pi
    return Coefficients(jnp.cos(h * t), jnp.sin(h * t), -h * jnp.sin(h * t), h * jnp.cos(h * t))
  raise ValueError(f"diffusion.process={process!r}; expected one of {CONTINUOUS_PROCESSES}.")


def time_range(process: str, prediction: str) -> tuple[float, float]:
  """(t_min, t_max) a sampler integrates between (from t_max down to t_min).

  'linear' and 'gvp' reach alpha = 0 at t = 1, where an eps or score prediction says
  nothing about x_0; those start at t = 1 - 1e-3 (as SiT's samplers stop short of it).
  """
  if process == "vp":
    return VP_T_MIN, 1.0
  if process == "edm":
    return EDM_SIGMA_MIN, EDM_SIGMA_MAX
  if process in ("linear", "gvp"):
    return 0.0, (1.0 - 1e-3 if prediction in ("eps", "score") else 1.0)
  raise ValueError(f"diffusion.process={process!r}; expected one of {CONTINUOUS_PROCESSES}.")


def noise_labels(process: str, t_B: jax.Array) -> jax.Array:
  """The network's time input for times t [B]: ln(sigma) / 4 for 'edm' (Karras et al.
  Table 1, c_noise), (M - 1) t for the processes on [0, 1]."""
  if process == "edm":
    return 0.25 * jnp.log(t_B)
  return UNIT_TIME_NOISE_SCALE * t_B


def prior_sample(process: str, rng: jax.Array, shape: tuple[int, ...],
                 t_max: float) -> jax.Array:
  """x at t_max: N(0, sigma(t_max)^2 I) (alpha(t_max) x_0 is neglected; it is 0 for
  'linear' and 'gvp' at t = 1 and below 1e-4 for 'vp' at t = 1)."""
  sigma = coefficients(process, jnp.float32(t_max)).sigma
  return sigma * jax.random.normal(rng, shape, jnp.float32)


# ------------------------------------------------------------------------- conversions


def validate_prediction(process: str, prediction: str) -> None:
  """Raises ValueError for a prediction the process cannot convert."""
  if prediction not in PREDICTIONS:
    raise ValueError(f"diffusion.prediction={prediction!r}; expected one of {PREDICTIONS}.")
  if prediction == "v" and process not in VARIANCE_PRESERVING:
    raise ValueError(f"diffusion.prediction='v' is defined for the variance-preserving "
                     f"processes {VARIANCE_PRESERVING}; for process={process!r} use "
                     "'velocity' (the time derivative of x_t) or 'x0'.")


def x0_and_eps(prediction: str, output: jax.Array, x_t: jax.Array,
               c: Coefficients) -> tuple[jax.Array, jax.Array]:
  """(x_0, eps) that the network's `output` (for `prediction`) implies at x_t.

  Solves x_t = alpha x_0 + sigma eps together with the prediction's definition (module
  docstring); 'edm' output is D(x; sigma), i.e. x_0.
  """
  a, s = c.alpha, c.sigma
  if prediction == "eps":
    return (x_t - s * output) / a, output
  if prediction in ("x0", "edm"):
    return output, (x_t - a * output) / s
  if prediction == "v":    # alpha^2 + sigma^2 = 1
    return a * x_t - s * output, s * x_t + a * output
  if prediction == "score":
    eps = -s * output
    return (x_t - s * eps) / a, eps
  if prediction == "velocity":
    det = a * c.d_sigma - s * c.d_alpha
    return (c.d_sigma * x_t - s * output) / det, (a * output - c.d_alpha * x_t) / det
  raise ValueError(f"diffusion.prediction={prediction!r}; expected one of {PREDICTIONS}.")


def prediction_target(prediction: str, x0: jax.Array, eps: jax.Array,
                      c: Coefficients) -> jax.Array:
  """What a network trained for `prediction` regresses at x_t = alpha x0 + sigma eps."""
  if prediction == "eps":
    return eps
  if prediction in ("x0", "edm"):
    return x0
  if prediction == "v":
    return c.alpha * eps - c.sigma * x0
  if prediction == "score":
    return -eps / c.sigma
  if prediction == "velocity":
    return c.d_alpha * x0 + c.d_sigma * eps
  raise ValueError(f"diffusion.prediction={prediction!r}; expected one of {PREDICTIONS}.")


def ode_velocity(x0: jax.Array, eps: jax.Array, c: Coefficients) -> jax.Array:
  """The probability-flow ODE's dx/dt = alpha' x0_hat + sigma' eps_hat (the conditional
  expectations; for EDM, (x - D) / sigma: Karras et al. Eq. 4 with sigma = t)."""
  return c.d_alpha * x0 + c.d_sigma * eps


# The diffusion coefficient D(t) of `reverse_sde` (SiT's `compute_diffusion` forms).
SDE_DIFFUSIONS = ("sbdm", "sigma")


def sde_diffusion(form: str, c: Coefficients, norm: float = 1.0) -> jax.Array:
  """D(t) >= 0 of `reverse_sde`, times `norm` (SiT's `--diffusion-norm`):

  'sbdm'   g^2 / 2 = sigma sigma' - (alpha'/alpha) sigma^2, where g is the diffusion of the
           forward SDE dx = (alpha'/alpha) x dt + g dW with the process's marginals: the
           reverse SDE of Song et al. 2021, Eq. 6 (infinite where alpha = 0);
  'sigma'  sigma(t): the default of SiT's sample scripts (Ma et al. 2024, `--diffusion-form
           sigma`, the sampler of its best FID), finite everywhere.
  """
  if form == "sbdm":
    return norm * jnp.maximum(c.sigma * c.d_sigma - c.d_alpha / c.alpha * c.sigma**2, 0.0)
  if form == "sigma":
    return norm * c.sigma
  raise ValueError(f"sample.sde_diffusion={form!r}; expected one of {SDE_DIFFUSIONS}.")


def reverse_sde(x0: jax.Array, eps: jax.Array, c: Coefficients,
                diffusion: jax.Array) -> tuple[jax.Array, jax.Array]:
  """(drift, noise scale) of the reverse-time SDE with diffusion coefficient D = `diffusion`:

    dx = [v - D grad log p_t] dt + sqrt(2 D) dW,   t running from noise to data,

  with v the probability-flow velocity (`ode_velocity`) and grad log p_t = -eps_hat / sigma.
  Every D >= 0 has the process's marginals (D = 0: the ODE; D = g^2 / 2: Song et al. 2021,
  Eq. 6). This is the family of SiT's `Sampler.sample_sde`, whose `diffusion` is D, in its
  own time, which runs the other way. An Euler-Maruyama step of size h < 0 is
  x + h drift + scale sqrt(-h) z.
  """
  drift = ode_velocity(x0, eps, c) + diffusion * eps / c.sigma
  return drift, jnp.sqrt(2.0 * diffusion)


# ================================================================= the discrete DDPM process
# Ho, Jain, Abbeel 2020 (arXiv:2006.11239): the linear schedule (§4), q(x_t|x_0) (Eq. 4) and
# the posterior q(x_{t-1}|x_t,x_0) (Eq. 6-7); Nichol & Dhariwal 2021 (arXiv:2102.09672,
# Eq. 17): the cosine schedule. Timesteps are 0-based: index t in [0, T) is the paper's t+1.

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


def at_timesteps(values_T: jax.Array, t_B: jax.Array) -> jax.Array:
  """values[t] broadcastable against images [B, H, W, C]."""
  return values_T[t_B][:, None, None, None]


# ----------------------------------------------------------------------- forward process


def q_sample(sched: Schedule, x0: jax.Array, t_B: jax.Array, noise: jax.Array) -> jax.Array:
  """Ho et al. 2020, Eq. 4: x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps."""
  abar = at_timesteps(sched.alphas_cumprod, t_B)
  return jnp.sqrt(abar) * x0 + jnp.sqrt(1.0 - abar) * noise


def q_posterior_mean_variance(sched: Schedule, x0: jax.Array, xt: jax.Array, t_B: jax.Array):
  """Ho et al. 2020, Eq. 6-7: q(x_{t-1} | x_t, x_0) = N(mu~_t(x_t, x_0), beta~_t I)."""
  mean = (at_timesteps(sched.posterior_mean_coef_x0, t_B) * x0
          + at_timesteps(sched.posterior_mean_coef_xt, t_B) * xt)
  return mean, at_timesteps(sched.posterior_variance, t_B)


def ddpm_coefficients(sched: Schedule, t_B: jax.Array) -> Coefficients:
  """alpha_t = sqrt(abar_t), sigma_t = sqrt(1 - abar_t) at timesteps t [B], shaped
  [B, 1, 1, 1]; a discrete process has no time derivatives (NaN)."""
  abar = at_timesteps(sched.alphas_cumprod, t_B)
  nan = jnp.full_like(abar, jnp.nan)
  return Coefficients(jnp.sqrt(abar), jnp.sqrt(1.0 - abar), nan, nan)
