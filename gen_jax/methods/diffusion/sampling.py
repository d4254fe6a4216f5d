"""DDPM and DDIM samplers and DDIM's timestep subsequences.

Ho, Jain, Abbeel 2020 (arXiv:2006.11239): the ancestral sampler (Alg. 2).
Song, Meng, Ermon 2021 (arXiv:2010.02502): DDIM (Eq. 12, 16), sigma-hat (§5.1, their
code's `ddpm_steps`) and the 'uniform' and 'quad' subsequences of their released code
(`runners/diffusion.py`, `functions/denoising.py`).
Nichol & Dhariwal 2021 (arXiv:2102.09672, §4): ancestral sampling over a subsequence with
the model's (learned) variance rescaled to the strided chain.
Ho & Salimans 2022 (arXiv:2207.12598, Alg. 2): classifier-free guidance, a DenoiseFn that
both samplers take (`guided_denoise`).

Timesteps are 0-based: index t in [0, T) is the paper's t+1.
"""
from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from gen_jax.methods.diffusion.process import (
  LEARNED_VARIANCES,
  VARIANCES,
  Schedule,
  eps_from_x0,
  interpolated_log_variance,
  model_log_variance,
  predict_x0_eps,
  q_posterior_mean_variance,
  split_output,
)

# (x_t [B,H,W,C], t [B]) -> network output [B,H,W,C], or [B,H,W,2C] with a learned variance.
DenoiseFn = Callable[[jax.Array, jax.Array], jax.Array]

# (x_t [B,H,W,C], t [B], labels [B]) -> network output: a class-conditional network.
LabelledDenoiseFn = Callable[[jax.Array, jax.Array, jax.Array], jax.Array]

# DDIM subsequences: 'linspace' (round(linspace(0, T-1, S)), always ends at T-1), and Song
# et al.'s released code's 'uniform' (range(0, T, T // S)) and 'quad'
# (int(linspace(0, sqrt(0.8 T), S)^2), their CIFAR-10 choice, App. D.2).
TIMESTEP_SPACINGS = ("linspace", "uniform", "quad")
# The noise of a DDIM step: 'eta' (Eq. 12 with Eq. 16's sigma times sample.eta: the authors'
# `generalized_steps`), or 'model' (ancestral steps, the posterior mean plus the model's own
# variance on the strided chain: Nichol & Dhariwal §4; with the fixed variance beta and
# clipping this is the authors' `ddpm_steps`, Table 1's sigma-hat row, §5.1).
DDIM_SIGMAS = ("eta", "model")


def ddim_timesteps(num_timesteps: int, num_steps: int, spacing: str = "linspace") -> np.ndarray:
  """The ascending timesteps a DDIM chain visits (it starts at the last one).

  Args:
    num_timesteps: T of the trained model.
    num_steps: S, the length of the subsequence, in [1, T].
    spacing: one of `TIMESTEP_SPACINGS`. 'uniform' gives ceil(T / (T // S)) steps (S when S
      divides T) and 'quad' may repeat a timestep for S close to T, exactly as the authors'
      code (a repeated step leaves x unchanged when sigma = 0).

  Returns:
    int32 [S'] timesteps in [0, T), starting at 0.
  """
  T, S = num_timesteps, num_steps
  if not 1 <= S <= T:
    raise ValueError(f"sample.steps={S} must be in [1, T={T}].")
  if spacing == "linspace":
    return np.unique(np.linspace(0, T - 1, S).round().astype(np.int32))
  if spacing == "uniform":
    return np.arange(0, T, T // S, dtype=np.int32)
  if spacing == "quad":
    return (np.linspace(0, np.sqrt(T * 0.8), S) ** 2).astype(np.int32)
  raise ValueError(f"sample.timesteps={spacing!r}; expected one of {TIMESTEP_SPACINGS}.")


def guided_denoise(denoise: LabelledDenoiseFn, labels_B: jax.Array, null_label: int,
                   guidance, variance: str = "beta") -> DenoiseFn:
  """Ho & Salimans 2022, Alg. 2: classifier-free guidance as a DenoiseFn for `ddpm_sample`,
  `ddpm_step` and `ddim_sample`,

    eps~(x_t, c) = (1 + w) eps(x_t, c) - w eps(x_t, null),

  from ONE network call per step on the batch [x_t; x_t] with labels [c; null] (2B rows).
  The weights sum to 1 and x0_hat, v and mu are affine in eps at a given x_t, so guiding
  the network's target output (x0, v or mu prediction) is the same as guiding eps. With a
  learned variance only the target's channels are guided; the variance channels are the
  conditional half's (as guided-diffusion's and GLIDE's `model_fn`s do). w = 0 is the
  conditional model, labels = null the unconditional one.

  Args:
    denoise: the conditional network, (x_t, t_B, labels_B) -> output.
    labels_B: [B] int classes the samples are drawn for.
    null_label: the null class's id (the network's num_classes).
    guidance: w >= 0 (a float or a traced scalar).
    variance: the model's `variance` (learned ones double the output's channels).

  Returns:
    (x_t, t_B) -> the guided output, [B, H, W, C] (or 2C with a learned variance).
  """
  null_B = jnp.full_like(labels_B, null_label)

  def guided(x, t_B):
    out = denoise(jnp.concatenate([x, x]), jnp.concatenate([t_B, t_B]),
                  jnp.concatenate([labels_B, null_B])).astype(jnp.float32)
    cond, uncond = jnp.split(out, 2)
    mean_c, var_c = split_output(cond, variance)
    mean_u, _ = split_output(uncond, variance)
    mean = (1.0 + guidance) * mean_c - guidance * mean_u
    return mean if var_c is None else jnp.concatenate([mean, var_c], axis=-1)

  return guided


def _denoised(denoise: DenoiseFn, sched: Schedule, x, t, target: str, variance: str,
              clip_x0: bool):
  """(t_B, x0_hat, eps_hat, variance output or None) at one reverse step; x0_hat clipped
  to [-1, 1] if asked, with eps_hat made consistent with the clipped x0_hat."""
  t_B = jnp.full((x.shape[0],), t)
  mean_out, var_out = split_output(denoise(x, t_B).astype(jnp.float32), variance)
  x0, eps = predict_x0_eps(sched, mean_out, x, t_B, target)
  if clip_x0:
    x0 = jnp.clip(x0, -1.0, 1.0)
    eps = eps_from_x0(sched, x0, x, t_B)
  return t_B, x0, eps, var_out


def _reverse_scan(step_fn, rng: jax.Array, shape: tuple[int, ...], timesteps: np.ndarray):
  """Runs x_T ~ N(0, I) through `step_fn(x, (t, t_prev, key))` for t = timesteps[-1] .. [0].

  One `lax.scan`, so the whole chain is one compiled loop. Both samplers draw their
  keys in the same way, so with the same key they consume the same noise.
  """
  init_rng, steps_rng = jax.random.split(rng)
  x_T = jax.random.normal(init_rng, shape, jnp.float32)
  t_desc = np.asarray(timesteps[::-1], np.int32)
  t_prev = np.append(t_desc[1:], -1).astype(np.int32)
  keys = jax.random.split(steps_rng, len(t_desc))
  x_0, _ = jax.lax.scan(lambda x, inp: (step_fn(x, inp), None), x_T, (t_desc, t_prev, keys))
  return x_0


def ddpm_sample(denoise: DenoiseFn, sched: Schedule, rng: jax.Array, shape: tuple[int, ...], *,
                target: str = "eps", variance: str = "beta", clip_x0: bool = True) -> jax.Array:
  """Ho et al. 2020, Alg. 2, all T steps:  x_{t-1} = mu_theta(x_t, t) + sigma_t z.

  mu_theta is the posterior mean (Eq. 7) at the predicted x_0; without clipping this
  equals Alg. 2's 1/sqrt(alpha_t) (x_t - beta_t / sqrt(1 - abar_t) eps_theta).
  `variance`: 'beta' (sigma_t^2 = beta_t) or 'beta_tilde' (sigma_t^2 = beta~_t, Eq. 7; the
  paper, §3.2, reports similar results for both), or the network's learned one ('learned',
  'learned_range'; `process.model_log_variance`). No noise at the last step.
  """
  if variance not in VARIANCES:
    raise ValueError(f"variance={variance!r}; expected one of {VARIANCES}.")

  def step(x, inp):
    t, _, key = inp
    return ddpm_step(denoise, sched, x, t, key, target=target, variance=variance,
                     clip_x0=clip_x0)

  return _reverse_scan(step, rng, shape, np.arange(sched.num_timesteps))


def ddpm_step(denoise: DenoiseFn, sched: Schedule, x: jax.Array, t: jax.Array, key: jax.Array,
              *, target: str = "eps", variance: str = "beta", clip_x0: bool = True) -> jax.Array:
  """One step of Ho et al. 2020, Alg. 2: x_{t-1} = mu_theta(x_t, t) + sigma_t z, z ~ N(0, I)
  drawn from `key`, no noise at t = 0; `ddpm_sample` scans it over all T steps (the
  arguments are as there). `t` is a scalar (traced or not); x: [B, H, W, C] at index t.
  """
  t_B, x0, _, var_out = _denoised(denoise, sched, x, t, target, variance, clip_x0)
  mean, _ = q_posterior_mean_variance(sched, x0, x, t_B)
  if variance in LEARNED_VARIANCES:
    sigma = jnp.exp(0.5 * model_log_variance(sched, variance, var_out, t_B, x.ndim))
  else:
    sigma = jnp.sqrt((sched.betas if variance == "beta" else sched.posterior_variance)[t])
  z = jax.random.normal(key, x.shape, jnp.float32)
  return mean + jnp.where(t > 0, sigma, 0.0) * z


def ddim_sigma(sched: Schedule, t, t_prev, eta: float) -> jax.Array:
  """Song et al. 2021, Eq. 16:
  sigma = eta * sqrt((1 - abar_prev) / (1 - abar_t)) * sqrt(1 - abar_t / abar_prev).
  """
  abar_t = sched.alphas_cumprod[t]
  abar_prev = jnp.where(t_prev >= 0, sched.alphas_cumprod[jnp.maximum(t_prev, 0)], 1.0)
  return eta * jnp.sqrt((1.0 - abar_prev) / (1.0 - abar_t) * (1.0 - abar_t / abar_prev))


def strided_log_variance(sched: Schedule, variance: str, var_out, t, t_prev) -> jax.Array:
  """log sigma^2 of one ancestral step t -> t_prev of a strided chain (Nichol & Dhariwal
  2021, §4): the chain's own beta = 1 - abar_t / abar_prev and beta~ = (1 - abar_prev) /
  (1 - abar_t) beta; 'learned_range' interpolates their logs with the network's v (Eq. 15).
  'learned' takes the network's log variance as it is, as improved-diffusion's respacing
  does (learned for one step of the full chain, it is too small for a stride > 1).
  At the last step (t_prev = -1) beta~ is 0; the sampler adds no noise there.
  """
  abar_t = sched.alphas_cumprod[t]
  abar_prev = jnp.where(t_prev >= 0, sched.alphas_cumprod[jnp.maximum(t_prev, 0)], 1.0)
  beta = 1.0 - abar_t / abar_prev
  log_beta = jnp.log(beta)
  log_beta_tilde = jnp.log(jnp.maximum((1.0 - abar_prev) / (1.0 - abar_t) * beta, 1e-20))
  if variance == "beta":
    return log_beta
  if variance == "beta_tilde":
    return log_beta_tilde
  if variance == "learned":
    return var_out
  return interpolated_log_variance(log_beta, log_beta_tilde, (var_out + 1.0) / 2.0)


def ddim_sample(denoise: DenoiseFn, sched: Schedule, rng: jax.Array, shape: tuple[int, ...], *,
                num_steps: int, eta: float = 0.0, target: str = "eps", clip_x0: bool = True,
                timesteps: str = "linspace", sigma: str = "eta",
                variance: str = "beta") -> jax.Array:
  """Song et al. 2021, Eq. 12, over a subsequence of `num_steps` timesteps (`timesteps`:
  one of `TIMESTEP_SPACINGS`):

    x_prev = sqrt(abar_prev) x0_hat + sqrt(1 - abar_prev - sigma^2) eps_hat + sigma z

  `sigma` (one of `DDIM_SIGMAS`): 'eta' is Eq. 16 (eta=0 deterministic DDIM; eta=1 over all
  T steps is the DDPM ancestral sampler with sigma^2 = beta~: same key, same samples as
  `ddpm_sample(variance='beta_tilde')`); 'model' takes ancestral steps
  x_prev = mu~(x_t, x0_hat) + sigma z on the strided chain with the model's `variance`
  (`strided_log_variance`): over all T steps, `ddpm_sample` itself; with 'beta', Song et
  al.'s sigma-hat sampler (§5.1; `ddpm_steps` in their code, which clips x0_hat).
  `variance` also tells how many channels of the output are the target's.
  """
  if sigma not in DDIM_SIGMAS:
    raise ValueError(f"sample.ddim_sigma={sigma!r}; expected one of {DDIM_SIGMAS}.")
  seq = ddim_timesteps(sched.num_timesteps, num_steps, timesteps)

  def step(x, inp):
    t, t_prev, key = inp
    _, x0, eps, var_out = _denoised(denoise, sched, x, t, target, variance, clip_x0)
    abar_t = sched.alphas_cumprod[t]
    abar_prev = jnp.where(t_prev >= 0, sched.alphas_cumprod[jnp.maximum(t_prev, 0)], 1.0)
    z = jax.random.normal(key, x.shape, jnp.float32)
    if sigma == "model":   # the posterior mean of the strided chain (Eq. 7 with its betas)
      beta = 1.0 - abar_t / abar_prev
      mean = (jnp.sqrt(abar_prev) * beta / (1.0 - abar_t) * x0
              + jnp.sqrt(1.0 - beta) * (1.0 - abar_prev) / (1.0 - abar_t) * x)
      log_var = strided_log_variance(sched, variance, var_out, t, t_prev)
      return mean + jnp.where(t_prev >= 0, jnp.exp(0.5 * log_var), 0.0) * z
    s = ddim_sigma(sched, t, t_prev, eta)
    direction = jnp.sqrt(jnp.maximum(1.0 - abar_prev - s**2, 0.0)) * eps
    return jnp.sqrt(abar_prev) * x0 + direction + s * z

  return _reverse_scan(step, rng, shape, seq)
