"""Samplers shared by the continuous processes of `core.py` (VP, EDM, linear, GVP).

Each integrates from noise at t_max down to t_min on a grid of `steps` intervals
(`time_grid`), calling the network once per evaluation through an `X0EpsFn` (the network's
prediction converted to (x0_hat, eps_hat) by `core.x0_and_eps`):

  'euler', 'heun'    the probability-flow ODE dx/dt = alpha' x0_hat + sigma' eps_hat
                     (`core.ode_velocity`; Song et al. 2021, Eq. 13; Karras et al. 2022,
                     Alg. 1 for Heun's second-order correction, skipped on a last step that
                     ends at t = 0, as there);
  'euler_maruyama'   a reverse SDE with the process's marginals (`core.reverse_sde`), its
                     diffusion coefficient set by `SDEOptions`: Song et al. 2021's Eq. 6
                     ('sbdm', the default) or SiT's sigma(t) ('sigma'); every step adds
                     noise but the last, which moves by the drift alone (SiT's "Mean" last
                     step), over the grid's spacing or `SDEOptions.last_step`;
  'ddim', 'ancestral'  Song, Meng, Ermon 2021, Eq. 12 on the process's (alpha, sigma):
                     x_s = alpha_s x0_hat + sqrt(sigma_s^2 - s^2) eps_hat + s z, with
                     s^2 = eta^2 sigma_s^2 (1 - (alpha_t sigma_s / (alpha_s sigma_t))^2), the
                     posterior variance of q(x_s | x_t, x_0) times eta^2 (eta = 0: DDIM; the
                     ancestral sampler is eta = 1);
  'edm_heun'         Karras et al. 2022, Alg. 2 (`edm.heun_sample`) on process 'edm';
  'rk45'             the probability-flow ODE with adaptive Dormand-Prince steps at
                     rtol = atol = 1e-5 (`rk45.sample`, the rectified-flow code's sampler);
                     `steps` is unused and the NFE varies with the batch.

The discrete DDPM process keeps its own samplers (`ddpm.ddpm_sample`, `ddim.ddim_sample`).
Every sampler's NFE (network evaluations per sample) is `num_evaluations`. Every one but
'rk45' can re-noise inpainting's known pixels before each step (`known_pixels_replaced`).
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from gen_jax.methods.diffusion import core, edm, rk45

# (x_t [B, H, W, C], t_B [B] float times) -> (x0_hat, eps_hat), each [B, H, W, C].
X0EpsFn = Callable[[jax.Array, jax.Array], tuple[jax.Array, jax.Array]]

SAMPLERS = ("ancestral", "ddim", "euler", "heun", "euler_maruyama", "edm_heun", "rk45")
# The samplers with fixed steps, before each of which inpainting can replace the known pixels.
REPLACING_SAMPLERS = tuple(s for s in SAMPLERS if s != "rk45")
# Karras et al. 2022, Eq. 5: the exponent of the sigma grid (their choice for every process).
EDM_RHO = 7.0


@dataclasses.dataclass(frozen=True)
class SDEOptions:
  """The reverse SDE of 'euler_maruyama' (`sample.sde_*` of a config).

  Attributes:
    diffusion: D(t)'s form, one of `core.SDE_DIFFUSIONS`.
    norm: D's scale (SiT's `--diffusion-norm`).
    last_step: the length in t of the last, noiseless step, which ends at t_min; 0: the
      grid's own spacing (all steps equal). SiT's sample scripts take 0.04 (`--last-step
      Mean --last-step-size 0.04`): 249 noisy steps over t in [0.04, 1], then one to 0.
  """

  diffusion: str = "sbdm"
  norm: float = 1.0
  last_step: float = 0.0

  @classmethod
  def from_config(cls, sample_cfg) -> SDEOptions:
    return cls(diffusion=sample_cfg.sde_diffusion, norm=float(sample_cfg.sde_norm),
               last_step=float(sample_cfg.sde_last_step))


def time_grid(process: str, steps: int, prediction: str, sampler: str = "euler",
              sde: SDEOptions = SDEOptions()) -> np.ndarray:
  """The descending times a sampler visits: `steps` + 1 of them, from t_max to t_min.

  'edm': Karras et al.'s sigma grid (Eq. 5, rho = 7) from 80 to 0.002, then 0 (as their
  Alg. 1). The other processes: uniform in t over `core.time_range`. 'euler_maruyama' with
  the 'sbdm' diffusion stops short of alpha = 0 (t = 1 on 'linear' and 'gvp', where its
  drift's alpha'/alpha is infinite) by starting at 1 - 1e-3 (SiT's sample_eps for score and
  noise models). With `sde.last_step` > 0 the 'euler_maruyama' grid is uniform down to
  t_min + last_step, then t_min.

  Returns:
    float64 [steps + 1].

  Raises:
    ValueError: steps < 1, or a last step that leaves no room for the others.
  """
  if steps < 1:
    raise ValueError(f"sample.steps={steps} must be >= 1 for a continuous process.")
  if process == "edm":
    return np.asarray(edm.sampling_sigmas(steps, core.EDM_SIGMA_MIN, core.EDM_SIGMA_MAX,
                                          EDM_RHO), np.float64)
  t_min, t_max = core.time_range(process, prediction)
  if sampler != "euler_maruyama":
    return np.linspace(t_max, t_min, steps + 1)
  if sde.diffusion == "sbdm":
    t_max = min(t_max, 1.0 - 1e-3)
  if sde.last_step <= 0:
    return np.linspace(t_max, t_min, steps + 1)
  if steps < 2 or t_min + sde.last_step >= t_max:
    raise ValueError(f"sample.sde_last_step={sde.last_step} needs sample.steps >= 2 (it is "
                     f"{steps}) and a last step shorter than t in [{t_min}, {t_max}].")
  return np.append(np.linspace(t_max, t_min + sde.last_step, steps), t_min)


def num_evaluations(sampler: str, times: np.ndarray) -> int:
  """Network evaluations per sample of `sampler` on the grid `times` (NFE): one per step;
  Heun two, less one where the last step ends at t = 0 (Karras et al. count 35 for 18
  steps)."""
  steps = len(times) - 1
  if sampler in ("heun", "edm_heun"):
    return 2 * steps - int(times[-1] == 0.0)
  return steps


# (x_t, t, key) -> x_t with its known pixels replaced (inpainting; `known_pixels_replaced`).
ReplaceFn = Callable[[jax.Array, jax.Array, jax.Array], jax.Array]


def known_pixels_replaced(process: str, x0: jax.Array, known: jax.Array) -> ReplaceFn:
  """The replacement method of inpainting on a continuous process (Song et al. 2021,
  App. I.2): before each step the known pixels of x_t are a fresh draw of
  q(x_t | x_0) = N(alpha(t) x_0, sigma(t)^2 I), the model then steps the whole image.

  Args:
    x0: [B, H, W, C] images; only their known pixels are read.
    known: bool [B, H, W, 1] (or broadcastable), True where the pixel is kept.
  """
  def replace(x, t, key):
    c = core.coefficients(process, t)
    noised = c.alpha * x0 + c.sigma * jax.random.normal(key, x.shape, jnp.float32)
    return jnp.where(known, noised, x)
  return replace


def euler_maruyama_step(x: jax.Array, x0: jax.Array, eps: jax.Array, c: core.Coefficients,
                        h: jax.Array, z: jax.Array, noisy: jax.Array | bool,
                        sde: SDEOptions) -> jax.Array:
  """One Euler-Maruyama step of size h < 0 of `core.reverse_sde` from x at time t:
  x + h drift + sqrt(2 D(t)) sqrt(-h) z, the last term only where `noisy` (SiT's
  `__Euler_Maruyama_step`; its "Mean" last step is the step without it).

  Args:
    x: x_t; x0, eps: the model's (x0_hat, eps_hat) at x_t; c: the coefficients at t.
    h: t_next - t; z: standard normal noise shaped like x; noisy: add the noise term.
    sde: the SDE's diffusion coefficient.
  """
  drift, scale = core.reverse_sde(x0, eps, c, core.sde_diffusion(sde.diffusion, c, sde.norm))
  return x + h * drift + jnp.where(noisy, scale * jnp.sqrt(-h), 0.0) * z


def _step_fn(sampler: str, process: str, x0_eps: X0EpsFn, eta: float, sde: SDEOptions):
  """(x, (t, t_next, key, is_last)) -> x at t_next, for the scan of `sample`."""

  def coeffs(t, x):
    return core.coefficients(process, jnp.full((x.shape[0], 1, 1, 1), t, jnp.float32))

  def velocity(x, t):
    x0, eps = x0_eps(x, jnp.full((x.shape[0],), t, jnp.float32))
    return core.ode_velocity(x0, eps, coeffs(t, x))

  def step(x, inp):
    t, t_next, key, is_last = inp
    h = t_next - t
    if sampler == "euler":
      return x + h * velocity(x, t)
    if sampler == "heun":
      d = velocity(x, t)
      x_euler = x + h * d
      corrected = lambda: x + 0.5 * h * (d + velocity(x_euler, t_next))
      return jax.lax.cond(t_next > 0, corrected, lambda: x_euler)
    x0, eps = x0_eps(x, jnp.full((x.shape[0],), t, jnp.float32))
    z = jax.random.normal(key, x.shape, jnp.float32)
    if sampler == "euler_maruyama":
      return euler_maruyama_step(x, x0, eps, coeffs(t, x), h, z, ~is_last, sde)
    c, s = coeffs(t, x), coeffs(t_next, x)
    ratio = jnp.where(s.sigma > 0, c.alpha * s.sigma / (s.alpha * c.sigma), 0.0)
    s_eta = eta * s.sigma * jnp.sqrt(jnp.maximum(1.0 - ratio**2, 0.0))
    return (s.alpha * x0 + jnp.sqrt(jnp.maximum(s.sigma**2 - s_eta**2, 0.0)) * eps
            + s_eta * z)

  return step


def sample(x0_eps: X0EpsFn, process: str, rng: jax.Array, shape: tuple[int, ...], *,
           sampler: str, steps: int, prediction: str, eta: float = 0.0,
           edm_options: dict | None = None, sde: SDEOptions = SDEOptions(),
           replace: ReplaceFn | None = None) -> jax.Array:
  """Draws samples with a continuous process's sampler (module docstring).

  Args:
    x0_eps: the model as (x_t, t_B) -> (x0_hat, eps_hat).
    process: one of `core.CONTINUOUS_PROCESSES`.
    rng: x at t_max from its first split, the steps' noise from the second.
    shape: [B, H, W, C] of the samples.
    sampler: one of `SAMPLERS` ('edm_heun' needs process 'edm').
    steps: the number of steps.
    prediction: what the network predicts (it sets where 'linear' and 'gvp' start).
    eta: 'ddim''s noise scale (the ancestral sampler sets 1).
    edm_options: `edm.heun_sample`'s s_churn, s_tmin, s_tmax, s_noise for 'edm_heun'.
    sde: the reverse SDE of 'euler_maruyama'.
    replace: applied to x before each step (`known_pixels_replaced`; a sampler of
      `REPLACING_SAMPLERS`).

  Returns:
    [*shape] samples at t_min (not clipped).

  Raises:
    ValueError: an unknown sampler, 'edm_heun' on another process, or `replace` with 'rk45'.
  """
  if sampler not in SAMPLERS:
    raise ValueError(f"sample.sampler={sampler!r}; expected one of {SAMPLERS}.")
  init_rng, steps_rng = jax.random.split(rng)
  if replace is not None and sampler not in REPLACING_SAMPLERS:
    raise ValueError(f"Inpainting by replacement takes one of {REPLACING_SAMPLERS}, not "
                     f"{sampler!r} (adaptive steps: no fixed step to replace before).")
  if sampler == "edm_heun":
    if process != "edm":
      raise ValueError("sample.sampler='edm_heun' is Karras et al.'s Alg. 2 on process 'edm'; "
                       "use 'heun' for the probability-flow ODE of another process.")
    denoise_fn = lambda x, sigma_B: x0_eps(x, sigma_B)[0]
    latents = jax.random.normal(init_rng, shape, jnp.float32)
    before_step = None
    if replace is not None:   # its own keys, so the churn noise is the sampler's as ever
      replace_rng = jax.random.fold_in(init_rng, 1)
      before_step = lambda x, i, t: replace(x, t, jax.random.fold_in(replace_rng, i))
    return edm.heun_sample(denoise_fn, latents, steps_rng, num_steps=steps,
                           sigma_min=core.EDM_SIGMA_MIN, sigma_max=core.EDM_SIGMA_MAX,
                           rho=EDM_RHO, before_step=before_step, **(edm_options or {}))
  if sampler == "rk45":
    t_min, t_max = core.time_range(process, prediction)
    velocity = lambda x, t_B: core.ode_velocity(
        *x0_eps(x, t_B), core.coefficients(process, t_B.reshape(-1, 1, 1, 1)))
    x = core.prior_sample(process, init_rng, shape, t_max)
    return rk45.sample(velocity, x, t_start=t_max, t_end=t_min)[0]
  times = time_grid(process, steps, prediction, sampler, sde)
  x = core.prior_sample(process, init_rng, shape, float(times[0]))
  is_last = np.arange(steps) == steps - 1
  inputs = (jnp.asarray(times[:-1], jnp.float32), jnp.asarray(times[1:], jnp.float32),
            jax.random.split(steps_rng, steps), jnp.asarray(is_last))
  step = _step_fn(sampler, process, x0_eps, 1.0 if sampler == "ancestral" else eta, sde)

  def replaced_step(x, inp):
    if replace is None:
      return step(x, inp)
    t, _, key, _ = inp
    replace_key, step_key = jax.random.split(key)
    return step(replace(x, t, replace_key), (inp[0], inp[1], step_key, inp[3]))

  x, _ = jax.lax.scan(lambda x, inp: (replaced_step(x, inp), None), x, inputs)
  return x
