"""Denoising diffusion probabilistic models: Algorithm 1 (training) and 2 (sampling).

Ho, Jain, Abbeel 2020, "Denoising Diffusion Probabilistic Models" (arXiv:2006.11239): the
simplified objective L_simple (Eq. 14), the bound's terms L_t (Eq. 5-7, 13) and Table 2's
parameterizations (targets eps and mu~; fixed or learned variances). Nichol & Dhariwal 2021
(arXiv:2102.09672): the hybrid objective L_simple + lambda L_vlb (§3.1, Eq. 16) and
improved-diffusion's rescaled KL (`use_kl`). Salimans & Ho 2022: the v target.

  Algorithm 1 (`ddpm_objective`): t ~ U{1..T}, eps ~ N(0, I),
      gradient step on || eps - eps_theta(sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps, t) ||^2.
  Algorithm 2 (`ddpm_sample`): x_T ~ N(0, I); for t = T..1:
      x_{t-1} = 1/sqrt(alpha_t) (x_t - beta_t / sqrt(1 - abar_t) eps_theta(x_t, t)) + sigma_t z.

The process itself (the schedule, q(x_t | x_0), the posterior) is in `core.py`, the reverse
variances in `variances.py`. Timesteps are 0-based: index t in [0, T) is the paper's t+1.
"""
from __future__ import annotations

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from gen_jax.core.probability import discretized_gaussian_log_likelihood, normal_kl
from gen_jax.methods.diffusion import core
from gen_jax.methods.diffusion.core import (
  Schedule,
  at_timesteps,
  ddpm_coefficients,
  q_posterior_mean_variance,
  q_sample,
)
from gen_jax.methods.diffusion.variances import (
  LEARNED_VARIANCES,
  VARIANCES,
  clipped_log_posterior_variance,
  model_log_variance,
  split_output,
)

# (x_t [B,H,W,C], t [B]) -> network output [B,H,W,C], or [B,H,W,2C] with a learned variance.
NetworkFn = Callable[[jax.Array, jax.Array], jax.Array]

# (x_t [B,H,W,C], t [B], labels [B] or None: the null class) -> network output: a
# class-conditional network.
LabelledNetworkFn = Callable[[jax.Array, jax.Array, jax.Array | None], jax.Array]

# What the network predicts: the noise (Ho et al. Eq. 14), the clean image,
# v = sqrt(abar) eps - sqrt(1 - abar) x0 (Salimans & Ho 2022), or the posterior mean
# mu~_t(x_t, x_0) of Eq. 7 ('mu', Ho et al. Table 2's "mu~ prediction").
TARGETS = ("eps", "x0", "v", "mu")

# What the network is trained on: 'simple' (Ho et al. Eq. 14: the squared error of its
# target; for target 'mu', Table 2's ||mu~ - mu_theta||^2); 'kl' (the true bound L, Eq. 5:
# the per-timestep term in bits/dim, as Ho et al.'s code trains it); 'rescaled_kl' (T times
# that: improved-diffusion's LossType.RESCALED_KL, `use_kl=True`, an estimate of the whole
# bound L - L_T); 'hybrid' (Nichol & Dhariwal Eq. 16: L_simple + lambda L_vlb, the mean
# held fixed in L_vlb).
LOSSES = ("simple", "kl", "rescaled_kl", "hybrid")


# ----------------------------------------------------------------- targets and conversions


def training_target(sched: Schedule, x0, noise, t_B, target: str) -> jax.Array:
  """What the network regresses: eps (Eq. 14), x0, v = sqrt(abar) eps - sqrt(1-abar) x0,
  or mu = mu~_t(x_t, x_0) (Eq. 7) at x_t = q_sample(x0, t, noise)."""
  if target == "mu":
    return q_posterior_mean_variance(sched, x0, q_sample(sched, x0, t_B, noise), t_B)[0]
  return core.prediction_target(target, x0, noise, ddpm_coefficients(sched, t_B))


def x0_and_eps(sched: Schedule, output, xt, t_B, target: str) -> tuple[jax.Array, jax.Array]:
  """(x0_hat, eps_hat) that the network output (for `target`) implies at x_t, via Eq. 4
  (`core.x0_and_eps`); for 'mu' by inverting Eq. 7 (its x_0 coefficient is 1 at index 0
  and positive everywhere)."""
  c = ddpm_coefficients(sched, t_B)
  if target == "mu":
    x0 = ((output - at_timesteps(sched.posterior_mean_coef_xt, t_B) * xt)
          / at_timesteps(sched.posterior_mean_coef_x0, t_B))
    return x0, (xt - c.alpha * x0) / c.sigma
  return core.x0_and_eps(target, output, xt, c)


def eps_from_x0(sched: Schedule, x0, xt, t_B) -> jax.Array:
  """eps = (x_t - sqrt(abar_t) x_0) / sqrt(1 - abar_t) (Eq. 4 solved for eps)."""
  return core.x0_and_eps("x0", x0, xt, ddpm_coefficients(sched, t_B))[1]


# -------------------------------------------------------------------- the bound's terms


def _sum_per_image(a: jax.Array) -> jax.Array:
  return a.reshape(a.shape[0], -1).sum(axis=1)


def vlb_terms_from_output(sched: Schedule, output: jax.Array, x0: jax.Array, t_B: jax.Array,
                          noise: jax.Array, *, target: str = "eps", variance: str = "beta",
                          clip_x0: bool = True) -> jax.Array:
  """The bound's term at each image's timestep, per image [B], in nats, from the network
  output at x_t = q_sample(x_0, t, noise) (Eq. 4).

  The model mean mu_theta(x_t, t) is the posterior mean (Eq. 7) at the predicted x_0, as in
  the samplers, and sigma_t^2 is `variances.model_log_variance` (fixed, or the network's
  learned one). In the paper's 1-based notation, index t gives L_t:
    t >= 1: KL(q(x_t | x_{t+1}, x_0) || N(mu_theta, sigma^2 I))  (Eq. 5-7);
    t == 0: -log p_theta(x_0 | x_1), the discretized Gaussian decoder (Eq. 13) with mean
            mu_theta (= x0_hat) and standard deviation sigma.
  q's variance at index 0 is 0 (log -inf); it is replaced by beta~ at index 1 there, where
  the KL is computed but not used. The same terms are the training objectives 'kl',
  'rescaled_kl' and the L_vlb part of 'hybrid' (`ddpm_objective`), and what
  `likelihood.bits_per_dim` sums.

  Args:
    output: [B, H, W, C] network output for `target` ('eps', 'x0', 'v' or 'mu'), with a
      learned variance's C more channels after it ([B, H, W, 2C]).
    x0: [B, H, W, C] data in [-1, 1] on the 8-bit grid; t_B: [B] int timesteps in [0, T).
    noise: [B, H, W, C] standard normal noise of x_t.
    variance: one of `variances.VARIANCES`.
    clip_x0: clip the predicted x_0 to [-1, 1], as the sampler and the authors' bpd code do.

  Raises:
    ValueError: an unknown target or variance.
  """
  if target not in TARGETS:
    raise ValueError(f"target={target!r}; expected one of {TARGETS}.")
  if variance not in VARIANCES:
    raise ValueError(f"variance={variance!r}; expected one of {VARIANCES}.")
  xt = q_sample(sched, x0, t_B, noise)
  mean_out, var_out = split_output(output.astype(jnp.float32), variance)
  x0_hat, _ = x0_and_eps(sched, mean_out, xt, t_B, target)
  if clip_x0:
    x0_hat = jnp.clip(x0_hat, -1.0, 1.0)
  model_mean, _ = q_posterior_mean_variance(sched, x0_hat, xt, t_B)
  model_logvar = model_log_variance(sched, variance, var_out, t_B, x0.ndim)

  true_mean, _ = q_posterior_mean_variance(sched, x0, xt, t_B)
  true_logvar = clipped_log_posterior_variance(sched)[t_B].reshape((-1,) + (1,) * (x0.ndim - 1))

  kl = _sum_per_image(normal_kl(true_mean, true_logvar, model_mean, model_logvar))
  decoder_nll = -_sum_per_image(
      discretized_gaussian_log_likelihood(x0, model_mean, 0.5 * model_logvar))
  return jnp.where(t_B == 0, decoder_nll, kl)


# -------------------------------------------------------------------------- Algorithm 1


def sample_t_and_noise(sched: Schedule, rng: jax.Array,
                       shape_BxHxWxC: tuple[int, ...]) -> tuple[jax.Array, jax.Array]:
  """Per-example t ~ U{0, ..., T-1} [B] and eps ~ N(0, I) [B, H, W, C] (Ho et al., Alg. 1)."""
  t_rng, noise_rng = jax.random.split(rng)
  t_B = jax.random.randint(t_rng, (shape_BxHxWxC[0],), 0, sched.num_timesteps)
  return t_B, jax.random.normal(noise_rng, shape_BxHxWxC, jnp.float32)


def ddpm_objective(sched: Schedule, network: NetworkFn, x0: jax.Array, t_B: jax.Array,
                   noise: jax.Array, *, target: str = "eps", loss: str = "simple",
                   variance: str = "beta", hybrid_lambda: float = 1e-3) -> jax.Array:
  """The training objective at given t and eps, a scalar in float32 (a bfloat16 network's
  output is cast first). One network call at x_t = q_sample(x0, t, noise) (Eq. 4).

    simple:      mean over examples and pixels of (target - prediction)^2 (Eq. 14).
    kl:          mean over examples of the bound's term L_t at each example's t, in
                 bits/dim (`vlb_terms_from_output`): an unbiased estimate of (L - L_T) / T,
                 as Ho et al.'s code trains 'kl'; x0_hat is not clipped (as there).
    rescaled_kl: T times 'kl', an estimate of L - L_T itself, as improved-diffusion's
                 RESCALED_KL (`terms["loss"] *= self.num_timesteps`).
    hybrid:      simple + hybrid_lambda * T * (the kl term with the mean's output under
                 stop_gradient, so L_vlb trains only the variance): Nichol & Dhariwal
                 Eq. 16, lambda = 0.001, with L_vlb = sum_t L_t estimated as T L_t.

  Args:
    network: (x_t, t_B) -> output [B, H, W, C] (the target), with C more channels for a
      learned `variance`.
    x0: [B, H, W, C] data; t_B: [B] timesteps; noise: [B, H, W, C].
    target, variance: the parameterization (`TARGETS`, `variances.VARIANCES`).

  Raises:
    ValueError: an unknown loss.
  """
  if loss not in LOSSES:
    raise ValueError(f"diffusion.loss={loss!r}; expected one of {LOSSES}.")
  output = network(q_sample(sched, x0, t_B, noise), t_B).astype(jnp.float32)
  mean_out, var_out = split_output(output, variance)
  mse = jnp.mean((training_target(sched, x0, noise, t_B, target) - mean_out) ** 2)
  if loss == "simple":
    return mse
  if loss == "hybrid":
    mean_out = jax.lax.stop_gradient(mean_out)
  vlb_output = mean_out if var_out is None else jnp.concatenate([mean_out, var_out], axis=-1)
  terms_B = vlb_terms_from_output(sched, vlb_output, x0, t_B, noise, target=target,
                                  variance=variance, clip_x0=False)
  vlb_bpd = jnp.mean(terms_B) / (math.prod(x0.shape[1:]) * math.log(2.0))
  if loss == "kl":
    return vlb_bpd
  if loss == "rescaled_kl":
    return sched.num_timesteps * vlb_bpd
  return mse + hybrid_lambda * sched.num_timesteps * vlb_bpd


# -------------------------------------------------------------------------- Algorithm 2


def x0_and_eps_at_step(network: NetworkFn, sched: Schedule, x, t, target: str, variance: str,
                       clip_x0: bool):
  """(t_B, x0_hat, eps_hat, variance output or None) at one reverse step at scalar t;
  x0_hat clipped to [-1, 1] if asked, with eps_hat made consistent with the clipped x0_hat."""
  t_B = jnp.full((x.shape[0],), t)
  mean_out, var_out = split_output(network(x, t_B).astype(jnp.float32), variance)
  x0, eps = x0_and_eps(sched, mean_out, x, t_B, target)
  if clip_x0:
    x0 = jnp.clip(x0, -1.0, 1.0)
    eps = eps_from_x0(sched, x0, x, t_B)
  return t_B, x0, eps, var_out


def reverse_scan(step_fn, rng: jax.Array, shape: tuple[int, ...], timesteps: np.ndarray):
  """Runs x_T ~ N(0, I) through `step_fn(x, (t, t_prev, key))` for t = timesteps[-1] .. [0].

  One `lax.scan`, so the whole chain is one compiled loop. The DDPM and DDIM samplers draw
  their keys in the same way, so with the same key they consume the same noise.
  """
  init_rng, steps_rng = jax.random.split(rng)
  x_T = jax.random.normal(init_rng, shape, jnp.float32)
  t_desc = np.asarray(timesteps[::-1], np.int32)
  t_prev = np.append(t_desc[1:], -1).astype(np.int32)
  keys = jax.random.split(steps_rng, len(t_desc))
  x_0, _ = jax.lax.scan(lambda x, inp: (step_fn(x, inp), None), x_T, (t_desc, t_prev, keys))
  return x_0


def ddpm_sample(network: NetworkFn, sched: Schedule, rng: jax.Array, shape: tuple[int, ...], *,
                target: str = "eps", variance: str = "beta", clip_x0: bool = True) -> jax.Array:
  """Ho et al. 2020, Alg. 2, all T steps:  x_{t-1} = mu_theta(x_t, t) + sigma_t z.

  mu_theta is the posterior mean (Eq. 7) at the predicted x_0; without clipping this
  equals Alg. 2's 1/sqrt(alpha_t) (x_t - beta_t / sqrt(1 - abar_t) eps_theta).
  `variance`: 'beta' (sigma_t^2 = beta_t) or 'beta_tilde' (sigma_t^2 = beta~_t, Eq. 7; the
  paper, §3.2, reports similar results for both), or the network's learned one ('learned',
  'learned_range'; `variances.model_log_variance`). No noise at the last step.

  Returns:
    [*shape] samples x_0 (not clipped).
  """
  if variance not in VARIANCES:
    raise ValueError(f"variance={variance!r}; expected one of {VARIANCES}.")

  def step(x, inp):
    t, _, key = inp
    return ddpm_step(network, sched, x, t, key, target=target, variance=variance,
                     clip_x0=clip_x0)

  return reverse_scan(step, rng, shape, np.arange(sched.num_timesteps))


def ddpm_step(network: NetworkFn, sched: Schedule, x: jax.Array, t: jax.Array, key: jax.Array,
              *, target: str = "eps", variance: str = "beta", clip_x0: bool = True) -> jax.Array:
  """One step of Ho et al. 2020, Alg. 2: x_{t-1} = mu_theta(x_t, t) + sigma_t z, z ~ N(0, I)
  drawn from `key`, no noise at t = 0; `ddpm_sample` scans it over all T steps (the
  arguments are as there). `t` is a scalar (traced or not); x: [B, H, W, C] at index t.
  """
  t_B, x0, _, var_out = x0_and_eps_at_step(network, sched, x, t, target, variance, clip_x0)
  mean, _ = q_posterior_mean_variance(sched, x0, x, t_B)
  if variance in LEARNED_VARIANCES:
    sigma = jnp.exp(0.5 * model_log_variance(sched, variance, var_out, t_B, x.ndim))
  else:
    sigma = jnp.sqrt((sched.betas if variance == "beta" else sched.posterior_variance)[t])
  z = jax.random.normal(key, x.shape, jnp.float32)
  return mean + jnp.where(t > 0, sigma, 0.0) * z
