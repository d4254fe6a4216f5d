"""DDIM: deterministic and stochastic sampling over a subsequence of a DDPM's timesteps.

Song, Meng, Ermon 2021 (arXiv:2010.02502): DDIM (Eq. 12, 16), sigma-hat (§5.1, their code's
`ddpm_steps`) and the 'uniform' and 'quad' subsequences of their released code
(`runners/diffusion.py`, `functions/denoising.py`). Nichol & Dhariwal 2021 (arXiv:2102.09672,
§4): ancestral sampling over a subsequence with the model's (learned) variance rescaled to
the strided chain. The same update on a continuous process is `samplers.ddim_step`.

Timesteps are 0-based: index t in [0, T) is the paper's t+1.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from gen_jax.methods.diffusion.core import Schedule
from gen_jax.methods.diffusion.ddpm import NetworkFn, reverse_scan, x0_and_eps_at_step
from gen_jax.methods.diffusion.variances import interpolated_log_variance

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


def ddim_sample(network: NetworkFn, sched: Schedule, rng: jax.Array, shape: tuple[int, ...], *,
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
    _, x0, eps, var_out = x0_and_eps_at_step(network, sched, x, t, target, variance, clip_x0)
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

  return reverse_scan(step, rng, shape, seq)
