"""Classifier-free guidance, with the guidance interval.

Ho & Salimans 2022, "Classifier-Free Diffusion Guidance" (arXiv:2207.12598), Alg. 2:

  eps~(x_t, c) = (1 + w) eps(x_t, c) - w eps(x_t, null).

Kynkäänniemi et al. 2024, "Applying Guidance in a Limited Interval Improves Sample and
Distribution Quality in Diffusion Models" (arXiv:2404.07724), Eq. 3: guidance only at noise
levels sigma in (sigma_lo, sigma_hi], the conditional model elsewhere. The noise level is
EDM's sigma of x_t / alpha(t) (`core.Coefficients.noise_level`), so one interval means the
same for every process.
"""
from __future__ import annotations

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp

from gen_jax.methods.diffusion.ddpm import LabelledNetworkFn, NetworkFn
from gen_jax.methods.diffusion.variances import split_output

# (t_B) -> [B] noise levels sigma / alpha of x_t at those times.
NoiseLevelFn = Callable[[jax.Array], jax.Array]

ALWAYS = (0.0, math.inf)


def guided_network(network: LabelledNetworkFn, labels_B: jax.Array, null_label: int,
                   guidance, variance: str = "beta", *, noise_level: NoiseLevelFn | None = None,
                   interval: tuple[float, float] = ALWAYS, channels: int = 0) -> NetworkFn:
  """The guided network output as a NetworkFn for every sampler.

  Inside the interval: ONE network call per step on the batch [x_t; x_t] with labels
  [c; null] (2B rows). The weights sum to 1 and x0_hat, v, mu, the score and the velocity
  are affine in eps at a given x_t, so guiding the network's output (whatever it
  predicts) is the same as guiding eps. With a learned variance only the target's channels
  are guided; the variance channels are the conditional half's (as guided-diffusion's and
  GLIDE's `model_fn`s do). w = 0 is the conditional model, labels = null the unconditional
  one. Outside the interval: the conditional network alone, one call on B rows (a
  `lax.cond` on the step's time: every row of a step shares it). `channels` > 0 guides only
  the target's first `channels` channels and keeps the conditional output in the others, as
  the DiT and SiT authors' `forward_with_cfg` do with 3 of 4 latent channels ("for exact
  reproducibility reasons"; their papers' FIDs are sampled so).

  Args:
    network: the conditional network, (x_t, t_B, labels_B) -> output.
    labels_B: [B] int classes the samples are drawn for.
    null_label: the null class's id (the network's num_classes).
    guidance: w >= 0 (a float or a traced scalar).
    variance: the model's `variance` (learned ones double the output's channels).
    noise_level: t_B -> [B] noise levels; needed when `interval` is not `ALWAYS`.
    interval: (lo, hi): guide where lo < noise level <= hi.
    channels: how many leading channels of the target to guide; 0: all.

  Returns:
    (x_t, t_B) -> the guided output, [B, H, W, C] (or 2C with a learned variance).

  Raises:
    ValueError: an interval without a noise_level function, or lo >= hi.
  """
  lo, hi = float(interval[0]), float(interval[1])
  if not lo < hi:
    raise ValueError(f"sample.guidance_interval={interval}: expected lo < hi.")
  null_B = jnp.full_like(labels_B, null_label)

  def guided(x, t_B):
    out = network(jnp.concatenate([x, x]), jnp.concatenate([t_B, t_B]),
                  jnp.concatenate([labels_B, null_B])).astype(jnp.float32)
    cond, uncond = jnp.split(out, 2)
    mean_c, var_c = split_output(cond, variance)
    mean_u, _ = split_output(uncond, variance)
    mean = (1.0 + guidance) * mean_c - guidance * mean_u
    if channels:
      mean = jnp.concatenate([mean[..., :channels], mean_c[..., channels:]], axis=-1)
    return mean if var_c is None else jnp.concatenate([mean, var_c], axis=-1)

  if (lo, hi) == ALWAYS:
    return guided
  if noise_level is None:
    raise ValueError("A guidance interval needs the process's noise_level function.")

  def conditional(x, t_B):
    return network(x, t_B, labels_B).astype(jnp.float32)

  def guided_in_interval(x, t_B):
    level = noise_level(t_B)[0]
    return jax.lax.cond((level > lo) & (level <= hi), guided, conditional, x, t_B)

  return guided_in_interval


def guided_steps(noise_levels, interval: tuple[float, float] = ALWAYS) -> int:
  """How many of a chain's steps (at these noise levels, one per network call) fall in the
  guidance interval: each costs two network evaluations instead of one."""
  lo, hi = interval
  return sum(1 for s in noise_levels if lo < float(s) <= hi)
