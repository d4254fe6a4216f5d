"""Likelihoods in bits/dim: DDPM's variational bound, and the probability-flow ODE of the
continuous processes (`ode_log_likelihood`, at the end).

Ho, Jain, Abbeel 2020 (arXiv:2006.11239), Eq. 5 and §3.3:

  L = L_T + sum_{t>1} L_{t-1} + L_0, where
  L_T     = KL(q(x_T | x_0) || N(0, I))                          (the prior term),
  L_{t-1} = KL(q(x_{t-1} | x_t, x_0) || p_theta(x_{t-1} | x_t))   (t = 2..T),
  L_0     = -log p_theta(x_0 | x_1)      (the discretized Gaussian decoder, Eq. 13).

E_q[L] >= -log p_theta(x_0), so bits/dim = L / (D ln 2) is an upper bound on the NLL. It is
estimated, as in the authors' code (`calc_bpd_loop`), with one x_t ~ q(x_t | x_0) per t.

Data are 8-bit images scaled to [-1, 1] (gen_jax.data's `scale_to_symmetric_range`, x / 127.5 - 1):
256 bins of width 2/255. Timesteps are 0-based as in `gen_jax.methods.diffusion.ddpm`: index t
is the paper's t+1, so the term at index t is the paper's L_t (index 0: the decoder L_0).
"""
from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from gen_jax.core.probability import normal_kl
from gen_jax.methods.diffusion import core
from gen_jax.methods.diffusion.core import Schedule, q_sample
from gen_jax.methods.diffusion.ddpm import TARGETS, vlb_terms_from_output
from gen_jax.methods.diffusion.variances import VARIANCES

# (params, x_t [B, H, W, C], t [B]) -> the network output for the method's target.
ApplyFn = Callable[[Any, jax.Array, jax.Array], jax.Array]


def _sum_per_image(a: jax.Array) -> jax.Array:
  return a.reshape(a.shape[0], -1).sum(axis=1)


def prior_kl(sched: Schedule, x0: jax.Array) -> jax.Array:
  """L_T = KL(q(x_T | x_0) || N(0, I)) per image [B], nats; q(x_T | x_0) from Eq. 4."""
  abar_T = sched.alphas_cumprod[-1]
  kl = normal_kl(jnp.sqrt(abar_T) * x0, jnp.log1p(-abar_T), 0.0, 0.0)
  return _sum_per_image(kl)


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


# ------------------------------------------------- continuous processes: the ODE likelihood

# (x_t [B, H, W, C], t_B [B]) -> (x0_hat, eps_hat): the model of a continuous process.
X0EpsFn = Callable[[jax.Array, jax.Array], tuple[jax.Array, jax.Array]]
TRACES = ("hutchinson", "exact")


def likelihood_times(process: str, steps: int, prediction: str) -> np.ndarray:
  """The ascending times the likelihood ODE is integrated over: `steps` intervals from
  t_min to t_max (`core.time_range`), on EDM's sigma grid (Karras et al. Eq. 5, rho = 7)
  for 'edm' and uniform in t otherwise."""
  t_min, t_max = core.time_range(process, prediction)
  if process == "edm":
    i = np.arange(steps + 1, dtype=np.float64) / steps
    lo, hi = t_min ** (1.0 / 7.0), t_max ** (1.0 / 7.0)
    return (lo + i * (hi - lo)) ** 7.0
  return np.linspace(t_min, t_max, steps + 1)


def ode_log_likelihood(x0_eps: X0EpsFn, process: str, x: jax.Array, rng: jax.Array, *,
                       steps: int, prediction: str, trace: str = "hutchinson") -> jax.Array:
  """log p_{t_min}(x) per image [B], in nats, through the probability-flow ODE.

  Song et al. 2021 (arXiv:2011.13456), App. D.2 (Eq. 39-40), from the instantaneous change
  of variables (Chen et al. 2018): d log p_t(x(t)) / dt = -div u(x(t), t) along
  dx/dt = u = alpha' x0_hat + sigma' eps_hat (`core.ode_velocity`), so

    log p_{t_min}(x) = log N(x(t_max); 0, sigma(t_max)^2 I) + int div u(x(t), t) dt,

  integrated from t_min to t_max with Heun's method on `likelihood_times`. The divergence
  is Hutchinson's estimate eps^T (du/dx) eps with one Rademacher eps per image for the
  whole path (Grathwohl et al. 2019, as Song et al.), or with trace='exact' the sum over
  all D basis vectors (D Jacobian-vector products per evaluation: small images only).

  Args:
    x0_eps: the model as (x_t, t_B) -> (x0_hat, eps_hat).
    process: one of `core.CONTINUOUS_PROCESSES`; prediction: what the network predicts.
    x: [B, H, W, C] data (already dequantized, for bits/dim).
    rng: Hutchinson's probe vectors.
    steps: Heun steps (each two network evaluations, each with its Jacobian-vector product).
    trace: one of `TRACES`.

  Returns:
    [B] float32 log-densities.

  Raises:
    ValueError: an unknown trace.
  """
  if trace not in TRACES:
    raise ValueError(f"eval.bpd_trace={trace!r}; expected one of {TRACES}.")
  B, D = x.shape[0], math.prod(x.shape[1:])
  x = x.astype(jnp.float32)

  def velocity(x, t):
    c = core.coefficients(process, jnp.full((B, 1, 1, 1), t, jnp.float32))
    x0, eps = x0_eps(x, jnp.full((B,), t, jnp.float32))
    return core.ode_velocity(x0, eps, c)

  probe = jax.random.rademacher(rng, x.shape, jnp.float32)
  basis = jnp.eye(D, dtype=jnp.float32).reshape((D, 1, *x.shape[1:]))

  def velocity_and_divergence(x, t):
    u = lambda y: velocity(y, t)
    if trace == "hutchinson":
      u_x, jvp = jax.jvp(u, (x,), (probe,))
      return u_x, _sum_per_image(jvp * probe)
    u_x, linear = jax.linearize(u, x)
    diag = jax.lax.map(lambda e: _sum_per_image(linear(jnp.broadcast_to(e, x.shape)) * e), basis)
    return u_x, diag.sum(axis=0)

  def heun_step(carry, ts):
    x, delta = carry
    t, t_next = ts
    h = t_next - t
    u1, div1 = velocity_and_divergence(x, t)
    u2, div2 = velocity_and_divergence(x + h * u1, t_next)
    return (x + 0.5 * h * (u1 + u2), delta + 0.5 * h * (div1 + div2)), None

  times = likelihood_times(process, steps, prediction)
  ts = (jnp.asarray(times[:-1], jnp.float32), jnp.asarray(times[1:], jnp.float32))
  (x_T, delta), _ = jax.lax.scan(heun_step, (x, jnp.zeros((B,), jnp.float32)), ts)
  sigma_T = float(core.coefficients(process, jnp.float32(times[-1])).sigma)
  prior = -0.5 * _sum_per_image((x_T / sigma_T) ** 2) - D * (math.log(sigma_T)
                                                            + 0.5 * math.log(2 * math.pi))
  return prior + delta


def ode_bits_per_dim(x0_eps: X0EpsFn, process: str, x: jax.Array, rng: jax.Array, *,
                     steps: int, prediction: str, trace: str = "hutchinson"
                     ) -> dict[str, jax.Array]:
  """Bits/dim of 8-bit images x [B, H, W, C] in [-1, 1] under the ODE model, with uniform
  dequantization over each pixel's bin of width 2/255 (Song et al. 2021, App. D.2; Ho et
  al.'s bins): -log P(bin) <= E_u[-log p(x + u)] - D log(2/255), so

    bpd = -log p(x + u) / (D ln 2) + log2(127.5)      (one u per image).

  Returns:
    {'bpd': the batch mean, 'bpd_per_image': [B]}, float32, as `summarize_ode_bits_per_dim`
    reads them.
  """
  deq_rng, probe_rng = jax.random.split(rng)
  u = jax.random.uniform(deq_rng, x.shape, jnp.float32, -1.0 / 255.0, 1.0 / 255.0)
  log_p = ode_log_likelihood(x0_eps, process, x + u, probe_rng, steps=steps,
                             prediction=prediction, trace=trace)
  D = math.prod(x.shape[1:])
  bpd_B = -log_p / (D * math.log(2.0)) + math.log2(127.5)
  return {"bpd": jnp.mean(bpd_B), "bpd_per_image": bpd_B}


def summarize_ode_bits_per_dim(batches: list[dict[str, np.ndarray]]
                               ) -> tuple[dict[str, float], dict]:
  """Combines `ode_bits_per_dim` outputs on the host: `ema/bpd` and its standard error."""
  per_image = np.concatenate([b["bpd_per_image"] for b in batches])
  return ({"ema/bpd": float(per_image.mean()),
           "ema/bpd_stderr": float(per_image.std(ddof=1) / np.sqrt(len(per_image)))},
          {"bpd_num_images": int(len(per_image))})
