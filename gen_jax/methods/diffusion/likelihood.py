"""DDPM negative log-likelihood in bits/dim from the variational bound.

Ho, Jain, Abbeel 2020 (arXiv:2006.11239), Eq. 5 and §3.3:

  L = L_T + sum_{t>1} L_{t-1} + L_0, where
  L_T     = KL(q(x_T | x_0) || N(0, I))                          (the prior term),
  L_{t-1} = KL(q(x_{t-1} | x_t, x_0) || p_theta(x_{t-1} | x_t))   (t = 2..T),
  L_0     = -log p_theta(x_0 | x_1)      (the discretized Gaussian decoder, Eq. 13).

E_q[L] >= -log p_theta(x_0), so bits/dim = L / (D ln 2) is an upper bound on the NLL. It is
estimated, as in the authors' code (`calc_bpd_loop`), with one x_t ~ q(x_t | x_0) per t.

Data are 8-bit images scaled to [-1, 1] (gen_jax.data's `scale_to_symmetric_range`, x / 127.5 - 1):
256 bins of width 2/255. Timesteps are 0-based as in `gen_jax.methods.diffusion.method`: index t
is the paper's t+1, so the term at index t is the paper's L_t (index 0: the decoder L_0).
"""
from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from gen_jax.core.probability import discretized_gaussian_log_likelihood, normal_kl
from gen_jax.methods.diffusion.process import (
  TARGETS,
  VARIANCES,
  Schedule,
  clipped_log_posterior_variance,
  model_log_variance,
  predict_x0_eps,
  q_posterior_mean_variance,
  q_sample,
  split_output,
)

# (params, x_t [B, H, W, C], t [B]) -> the network output for the method's target.
ApplyFn = Callable[[Any, jax.Array, jax.Array], jax.Array]


def _per_image(values_T: jax.Array, t_B: jax.Array, ndim: int) -> jax.Array:
  """values[t] for each image, shaped to broadcast against [B, ...] arrays of rank ndim."""
  return values_T[t_B].reshape((-1,) + (1,) * (ndim - 1))


def _sum_per_image(a: jax.Array) -> jax.Array:
  return a.reshape(a.shape[0], -1).sum(axis=1)


def prior_kl(sched: Schedule, x0: jax.Array) -> jax.Array:
  """L_T = KL(q(x_T | x_0) || N(0, I)) per image [B], nats; q(x_T | x_0) from Eq. 4."""
  abar_T = sched.alphas_cumprod[-1]
  kl = normal_kl(jnp.sqrt(abar_T) * x0, jnp.log1p(-abar_T), 0.0, 0.0)
  return _sum_per_image(kl)


def vlb_terms_from_output(sched: Schedule, output: jax.Array, x0: jax.Array, t_B: jax.Array,
                          noise: jax.Array, *, target: str = "eps", variance: str = "beta",
                          clip_x0: bool = True) -> jax.Array:
  """The bound's term at each image's timestep, per image [B], in nats, from the network
  output at x_t = q_sample(x_0, t, noise) (Eq. 4).

  The model mean mu_theta(x_t, t) is the posterior mean (Eq. 7) at the predicted x_0, as in
  the samplers, and sigma_t^2 is `process.model_log_variance` (fixed, or the
  network's learned one). In the paper's 1-based notation, index t gives L_t:
    t >= 1: KL(q(x_t | x_{t+1}, x_0) || N(mu_theta, sigma^2 I))  (Eq. 5-7);
    t == 0: -log p_theta(x_0 | x_1), the discretized Gaussian decoder (Eq. 13) with mean
            mu_theta (= x0_hat) and standard deviation sigma.
  q's variance at index 0 is 0 (log -inf); it is replaced by beta~ at index 1 there, where
  the KL is computed but not used. The same terms are the training objective 'kl' and the
  L_vlb part of 'hybrid' (`gen_jax.methods.diffusion.method.diffusion_loss`).

  Args:
    output: [B, H, W, C] network output for `target` ('eps', 'x0', 'v' or 'mu'), with a
      learned variance's C more channels after it ([B, H, W, 2C]).
    x0: [B, H, W, C] data in [-1, 1] on the 8-bit grid; t_B: [B] int timesteps in [0, T).
    noise: [B, H, W, C] standard normal noise of x_t.
    variance: one of `process.VARIANCES`.
    clip_x0: clip the predicted x_0 to [-1, 1], as the sampler and the authors' bpd code do.
  """
  if target not in TARGETS:
    raise ValueError(f"target={target!r}; expected one of {TARGETS}.")
  if variance not in VARIANCES:
    raise ValueError(f"variance={variance!r}; expected one of {VARIANCES}.")
  xt = q_sample(sched, x0, t_B, noise)
  mean_out, var_out = split_output(output.astype(jnp.float32), variance)
  x0_hat, _ = predict_x0_eps(sched, mean_out, xt, t_B, target)
  if clip_x0:
    x0_hat = jnp.clip(x0_hat, -1.0, 1.0)
  model_mean, _ = q_posterior_mean_variance(sched, x0_hat, xt, t_B)
  model_logvar = model_log_variance(sched, variance, var_out, t_B, x0.ndim)

  true_mean, _ = q_posterior_mean_variance(sched, x0, xt, t_B)
  true_logvar = _per_image(clipped_log_posterior_variance(sched), t_B, x0.ndim)

  kl = _sum_per_image(normal_kl(true_mean, true_logvar, model_mean, model_logvar))
  decoder_nll = -_sum_per_image(
      discretized_gaussian_log_likelihood(x0, model_mean, 0.5 * model_logvar))
  return jnp.where(t_B == 0, decoder_nll, kl)


def vlb_terms(apply_fn: ApplyFn, params, sched: Schedule, x0: jax.Array, t_B: jax.Array,
              noise: jax.Array, *, target: str = "eps", variance: str = "beta",
              clip_x0: bool = True) -> jax.Array:
  """`vlb_terms_from_output` with the network output `apply_fn(params, x_t, t_B)`, per
  image [B], in nats.

  Args:
    apply_fn: (params, x_t, t_B) -> network output for `target` (and a learned variance).
    x0, t_B, noise, target, variance, clip_x0: as in `vlb_terms_from_output`.
  """
  if target not in TARGETS:
    raise ValueError(f"target={target!r}; expected one of {TARGETS}.")
  if variance not in VARIANCES:
    raise ValueError(f"variance={variance!r}; expected one of {VARIANCES}.")
  output = apply_fn(params, q_sample(sched, x0, t_B, noise), t_B)
  return vlb_terms_from_output(sched, output, x0, t_B, noise, target=target, variance=variance,
                               clip_x0=clip_x0)


def bits_per_dim(apply_fn: ApplyFn, params, sched: Schedule, x0: jax.Array, rng: jax.Array, *,
                 target: str = "eps", variance: str = "beta", clip_x0: bool = True,
                 timestep_batch: int = 10) -> dict[str, jax.Array]:
  """The variational bound (Ho et al. 2020, Eq. 5) of a batch of images, in bits/dim.

  All T terms are evaluated: a `lax.map` over chunks of `timestep_batch` timesteps, each
  chunk one (vmapped) network call on timestep_batch * B images, which bounds memory. The
  noise of timestep t is `jax.random.normal(jax.random.fold_in(rng, t), x0.shape)`, one
  fresh sample per t, independent of `timestep_batch`. Jittable (close over `apply_fn`).

  Args:
    apply_fn, target, variance, clip_x0: the model, as in `vlb_terms`.
    params: passed to apply_fn unchanged.
    sched: the schedule the model was trained with (T >= 2).
    x0: [B, H, W, C] images in [-1, 1] on the 8-bit grid.
    rng: PRNG key for the noise.

  Returns:
    A dict of float32 arrays, bits/dim (nats / (D ln 2), D = H*W*C), batch means unless
    the name says otherwise:
      bpd: the bound L_T + sum_t L_{t-1} + L_0;  bpd_per_image: [B], the same per image;
      prior_bpd: L_T;  decoder_bpd: L_0;  diffusion_bpd: sum of L_{t-1}, t = 2..T;
      terms_bpd: [T], index t holds the paper's L_t (index 0: L_0), prior not included.
  """
  T = sched.num_timesteps
  if T < 2:
    raise ValueError(f"bits_per_dim needs T >= 2 timesteps; got T={T}.")
  if timestep_batch < 1:
    raise ValueError(f"timestep_batch={timestep_batch} must be >= 1.")
  B = x0.shape[0]
  D = math.prod(x0.shape[1:])
  x0 = x0.astype(jnp.float32)

  def term_at(t):
    noise = jax.random.normal(jax.random.fold_in(rng, t), x0.shape, jnp.float32)
    return vlb_terms(apply_fn, params, sched, x0, jnp.full((B,), t, jnp.int32), noise,
                     target=target, variance=variance, clip_x0=clip_x0)

  # Chunks of K timesteps, the last one padded with repeats of T-1 (discarded), so the
  # network is compiled once, for K * B images.
  K = min(timestep_batch, T)
  num_chunks = -(-T // K)
  t_CxK = jnp.minimum(jnp.arange(num_chunks * K, dtype=jnp.int32), T - 1).reshape(num_chunks, K)
  terms_TxB = jax.lax.map(jax.vmap(term_at), t_CxK).reshape(num_chunks * K, B)[:T]
  to_bpd = 1.0 / (D * math.log(2.0))
  terms_BxT = terms_TxB.T * to_bpd
  prior_B = prior_kl(sched, x0) * to_bpd
  total_B = prior_B + terms_BxT.sum(axis=1)
  return {
      "bpd": total_B.mean(),
      "bpd_per_image": total_B,
      "prior_bpd": prior_B.mean(),
      "decoder_bpd": terms_BxT[:, 0].mean(),
      "diffusion_bpd": terms_BxT[:, 1:].sum(axis=1).mean(),
      "terms_bpd": terms_BxT.mean(axis=0),
  }


def summarize_bits_per_dim(batches: list[dict[str, np.ndarray]]) -> tuple[dict[str, float], dict]:
  """Combines the `bits_per_dim` outputs of equal-sized batches (on the host).

  Returns (scalar metrics, breakdown), named relative to `eval/`: `ema/bpd` (the mean
  bound), its standard error over images and its prior / decoder / diffusion parts; the
  breakdown holds the [T] vector of per-timestep terms (index t: the paper's L_t; index 0:
  L_0) and the number of images.
  """
  per_image = np.concatenate([b["bpd_per_image"] for b in batches])
  mean = {k: np.mean([b[k] for b in batches], axis=0) for k in batches[0] if k != "bpd_per_image"}
  metrics = {"ema/bpd": float(mean["bpd"]),
             "ema/bpd_stderr": float(per_image.std(ddof=1) / np.sqrt(len(per_image))),
             "ema/bpd_prior": float(mean["prior_bpd"]),
             "ema/bpd_decoder": float(mean["decoder_bpd"]),
             "ema/bpd_diffusion": float(mean["diffusion_bpd"])}
  breakdown = {"ema/bpd_terms": [float(v) for v in mean["terms_bpd"]],
               "bpd_num_images": int(len(per_image))}
  return metrics, breakdown
