"""Flow matching on interpolants between data and noise.

Lipman, Chen, Ben-Hamu, Nickel, Le 2023, "Flow Matching for Generative Modeling"
(arXiv:2210.02747): conditional flow matching on the optimal-transport path (Eq. 20-23);
Liu, Gong, Liu 2023, "Flow Straight and Fast: Learning to Generate and Transfer Data with
Rectified Flow" (arXiv:2209.03003): the same straight path with sigma_min = 0 (Eq. 1) and
reflow (gen_jax/methods/diffusion/reflow.py); Ma, Goldstein, Albergo, Boffi,
Vanden-Eijnden, Xie 2024, "SiT: Exploring Flow and Diffusion-based Generative Models with
Scalable Interpolant Transformers" (arXiv:2401.08740): the interpolant x prediction choices
(§3, Table 1-3).

The interpolant, in gen_jax's time direction (t = 0 is data, t = 1 is noise, as EDM's sigma
and DDPM's t grow towards noise):

  x_t = alpha(t) x + sigma(t) eps,    eps ~ N(0, I)

  'linear': alpha = 1 - t, sigma = sigma_min + (1 - sigma_min) t
            (Liu et al.'s rectified flow and SiT's Linear for sigma_min = 0; Lipman et al.'s
            OT path, Eq. 20, for sigma_min > 0)
  'gvp':    alpha = cos(pi t / 2), sigma = sin(pi t / 2) (SiT's generalized VP, alpha^2 +
            sigma^2 = 1)

The velocity is the time derivative of the path, v = alpha'(t) x + sigma'(t) eps (for
'linear' with sigma_min = 0: eps - x), so sampling integrates dx/dt = v from t = 1 down to
t = 0.

The released codes run time the other way: SiT (willisma/SiT, transport/path.py) writes
x_t = alpha_t x1 + sigma_t x0 with x1 the data, x0 the noise and t_SiT = 1 at the data;
torchcfm and Lipman et al. write x_t = t x1 + (1 - t) x0, and the rectified flow code
t x + (1 - t) z0, all with the data at t = 1. So t_SiT = 1 - t, and their velocity u (data
minus noise for the straight path) is -v. Scores and noise predictions are the same in both
directions. tests/methods/test_flow.py checks these functions against SiT's plans and
torchcfm's matchers through that change of variable.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

PATHS = ("linear", "gvp")
PREDICTIONS = ("velocity", "score", "noise")
# SiT's loss weights for score and noise predictions (transport.py, `WeightType`).
LOSS_WEIGHTS = ("none", "velocity", "likelihood")

# The network's output at (x_t, t_B), shaped like x_t (labels closed over).
PredictFn = Callable[[jax.Array, jax.Array], jax.Array]


class Coefficients(NamedTuple):
  """alpha(t), sigma(t) and their time derivatives, each broadcastable against x_t."""

  alpha: jax.Array
  sigma: jax.Array
  d_alpha: jax.Array
  d_sigma: jax.Array


def _check(path: str, prediction: str | None = None) -> None:
  if path not in PATHS:
    raise ValueError(f"path={path!r}; expected one of {PATHS}.")
  if prediction is not None and prediction not in PREDICTIONS:
    raise ValueError(f"prediction={prediction!r}; expected one of {PREDICTIONS}.")


def _per_example(t_B: jax.Array, x: jax.Array) -> jax.Array:
  """t [B] (or a scalar) as [B, 1, ..., 1], broadcastable against x [B, ...]."""
  t_B = jnp.asarray(t_B, jnp.float32)
  return t_B.reshape(t_B.shape + (1,) * (x.ndim - t_B.ndim))


def coefficients(path: str, t: jax.Array, sigma_min: float = 0.0) -> Coefficients:
  """The interpolant x_t = alpha(t) x + sigma(t) eps and its time derivatives.

  Args:
    path: 'linear' or 'gvp'.
    t: times in [0, 1] (0 = data), any shape.
    sigma_min: the noise left at the data end of the 'linear' path (Lipman et al. Eq. 20);
      0 for rectified flow and SiT.

  Returns:
    `Coefficients` shaped like t.

  Raises:
    ValueError: for an unknown path, or sigma_min != 0 with 'gvp'.
  """
  _check(path)
  t = jnp.asarray(t, jnp.float32)
  if path == "linear":
    one = jnp.ones_like(t)
    return Coefficients(alpha=1.0 - t, sigma=sigma_min + (1.0 - sigma_min) * t,
                        d_alpha=-one, d_sigma=(1.0 - sigma_min) * one)
  if sigma_min != 0.0:
    raise ValueError(f"sigma_min={sigma_min} is defined for the 'linear' path only.")
  half_pi = jnp.pi / 2
  return Coefficients(alpha=jnp.cos(half_pi * t), sigma=jnp.sin(half_pi * t),
                      d_alpha=-half_pi * jnp.sin(half_pi * t),
                      d_sigma=half_pi * jnp.cos(half_pi * t))


def interpolate(path: str, x: jax.Array, eps: jax.Array, t_B: jax.Array,
                sigma_min: float = 0.0) -> jax.Array:
  """x_t = alpha(t) x + sigma(t) eps (Lipman et al. Eq. 20; Liu et al. Eq. 1; SiT Eq. 1).

  Args:
    path: 'linear' or 'gvp'.
    x: data [B, ...]; eps: noise shaped like x; t_B: times [B].
    sigma_min: see `coefficients`.

  Returns:
    x_t shaped like x.
  """
  c = coefficients(path, _per_example(t_B, x), sigma_min)
  return c.alpha * x + c.sigma * eps


def training_target(path: str, prediction: str, x: jax.Array, eps: jax.Array,
                    t_B: jax.Array, sigma_min: float = 0.0) -> jax.Array:
  """What the network regresses at x_t = interpolate(path, x, eps, t).

  'velocity': the conditional vector field u_t(x_t | x, eps) = alpha' x + sigma' eps
  (Lipman et al. Eq. 21-23; Liu et al. Eq. 1's X_1 - X_0 reversed; SiT Eq. 2).
  'noise': eps. 'score': the conditional score grad log p_t(x_t | x) = -eps / sigma(t).

  Args:
    path, prediction: see `PATHS`, `PREDICTIONS`.
    x: data [B, ...]; eps: noise shaped like x; t_B: times [B].
    sigma_min: see `coefficients`.

  Returns:
    the target shaped like x.

  Raises:
    ValueError: for an unknown path or prediction.
  """
  _check(path, prediction)
  c = coefficients(path, _per_example(t_B, x), sigma_min)
  if prediction == "velocity":
    return c.d_alpha * x + c.d_sigma * eps
  if prediction == "noise":
    return eps
  return -eps / c.sigma


def sde_coefficients(path: str, t: jax.Array, sigma_min: float = 0.0
                     ) -> tuple[jax.Array, jax.Array]:
  """(f(t), g(t)^2) of the forward SDE dx = f x dt + g dW whose marginals are the path's.

  f = alpha'/alpha and g^2 = 2 (sigma sigma' - f sigma^2), so the probability-flow ODE is
  v = f x_t - g^2 / 2 * score (SiT §2.2; `compute_drift`, which returns -f x_t and g^2 / 2
  in its own time direction). Both are infinite at alpha = 0 (t = 1).

  Args:
    path: 'linear' or 'gvp'; t: times, any shape; sigma_min: see `coefficients`.

  Returns:
    (f, g^2) shaped like t.
  """
  c = coefficients(path, t, sigma_min)
  f = c.d_alpha / c.alpha
  return f, 2.0 * (c.sigma * c.d_sigma - f * c.sigma ** 2)


def noise_from(prediction: str, path: str, output: jax.Array, x_t: jax.Array, t_B: jax.Array,
               sigma_min: float = 0.0) -> jax.Array:
  """E[eps | x_t] from a network output for `prediction`.

  From velocity: v = (alpha'/alpha) x_t + (sigma' - (alpha'/alpha) sigma) eps, solved for
  eps (SiT's `get_noise_from_velocity`); from score: eps = -sigma score.

  Args:
    prediction: what `output` is; path: the interpolant; output, x_t: [B, ...];
    t_B: times [B]; sigma_min: see `coefficients`.

  Returns:
    the noise prediction shaped like x_t.
  """
  _check(path, prediction)
  c = coefficients(path, _per_example(t_B, x_t), sigma_min)
  if prediction == "noise":
    return output
  if prediction == "score":
    return -c.sigma * output
  ratio = c.alpha / c.d_alpha
  return (ratio * output - x_t) / (ratio * c.d_sigma - c.sigma)


def score_from(prediction: str, path: str, output: jax.Array, x_t: jax.Array, t_B: jax.Array,
               sigma_min: float = 0.0) -> jax.Array:
  """grad log p_t(x_t) from a network output for `prediction`: -E[eps | x_t] / sigma(t)
  (SiT's `get_score_from_velocity` for velocity; Args as `noise_from`)."""
  if prediction == "score":
    _check(path, prediction)
    return output
  c = coefficients(path, _per_example(t_B, x_t), sigma_min)
  return -noise_from(prediction, path, output, x_t, t_B, sigma_min) / c.sigma


def velocity_from(prediction: str, path: str, output: jax.Array, x_t: jax.Array,
                  t_B: jax.Array, sigma_min: float = 0.0) -> jax.Array:
  """The probability-flow velocity dx_t/dt from a network output for `prediction`:
  v = (alpha'/alpha) x_t + (sigma' - (alpha'/alpha) sigma) eps_hat (SiT's
  `get_velocity_from_score` and the noise/score ODE drifts; Args as `noise_from`)."""
  if prediction == "velocity":
    _check(path, prediction)
    return output
  c = coefficients(path, _per_example(t_B, x_t), sigma_min)
  f = c.d_alpha / c.alpha
  eps = noise_from(prediction, path, output, x_t, t_B, sigma_min)
  return f * x_t + (c.d_sigma - f * c.sigma) * eps


def data_from(prediction: str, path: str, output: jax.Array, x_t: jax.Array, t_B: jax.Array,
              sigma_min: float = 0.0) -> jax.Array:
  """E[x | x_t] = (x_t - sigma eps_hat) / alpha (Args as `noise_from`); for a velocity,
  directly x = (sigma' x_t - sigma v) / (alpha sigma' - sigma alpha'), finite at t = 0."""
  c = coefficients(path, _per_example(t_B, x_t), sigma_min)
  if prediction == "velocity":
    _check(path, prediction)
    return (c.d_sigma * x_t - c.sigma * output) / (c.alpha * c.d_sigma - c.sigma * c.d_alpha)
  return (x_t - c.sigma * noise_from(prediction, path, output, x_t, t_B, sigma_min)) / c.alpha


def loss(path: str, prediction: str, output: jax.Array, x: jax.Array, eps: jax.Array,
         t_B: jax.Array, weighting: str = "none", sigma_min: float = 0.0) -> jax.Array:
  """The flow-matching regression, per pixel (SiT's `training_losses` before `mean_flat`).

  'velocity': ||output - u_t||^2 (Lipman et al. Eq. 9 / 23; Liu et al. Eq. 1), unweighted.
  'noise': w ||output - eps||^2. 'score': w ||sigma output + eps||^2 = w sigma^2
  ||output + eps / sigma||^2, as SiT writes it. w is SiT's weight: 'none' (1), 'velocity'
  ((g^2 / 2) / sigma)^2 or 'likelihood' (g^2 / 2) / sigma^2 (`sde_coefficients`).

  Args:
    path, prediction: see `PATHS`, `PREDICTIONS`.
    output: the network's prediction at x_t = interpolate(path, x, eps, t_B).
    x: data; eps: noise; t_B: times [B].
    weighting: one of `LOSS_WEIGHTS` (score and noise only).
    sigma_min: see `coefficients`.

  Returns:
    the loss [B, ...] shaped like x, float32.

  Raises:
    ValueError: for an unknown path, prediction or weighting.
  """
  _check(path, prediction)
  if weighting not in LOSS_WEIGHTS:
    raise ValueError(f"weighting={weighting!r}; expected one of {LOSS_WEIGHTS}.")
  if prediction == "velocity":
    return (output - training_target(path, "velocity", x, eps, t_B, sigma_min)) ** 2
  t = _per_example(t_B, x)
  c = coefficients(path, t, sigma_min)
  half_g2 = 0.5 * sde_coefficients(path, t, sigma_min)[1]
  weight = {"none": jnp.ones_like(t), "velocity": (half_g2 / c.sigma) ** 2,
            "likelihood": half_g2 / c.sigma ** 2}[weighting]
  if prediction == "noise":
    return weight * (output - eps) ** 2
  return weight * (c.sigma * output + eps) ** 2


def training_time(rng: jax.Array, num: int, t_min: float = 0.0, t_max: float = 1.0
                  ) -> jax.Array:
  """t ~ U[t_min, t_max] [num] (SiT's `Transport.sample`; rectified flow's U[eps, 1] in its
  own time is t_max = 1 - 1e-3 here; see `time_interval`).

  Args:
    rng: PRNG key; num: batch size; t_min, t_max: the interval.

  Returns:
    float32 times [num].
  """
  return jax.random.uniform(rng, (num,), jnp.float32, t_min, t_max)


def time_interval(path: str, prediction: str, eps: float = 1e-3) -> tuple[float, float]:
  """SiT's training interval (`check_interval`): [0, 1] for velocity, where the path is
  regular everywhere; [eps, 1 - eps] for score and noise, whose weights and conversions
  divide by sigma (0 at t = 0) and alpha (0 at t = 1). SiT's default eps is 1e-3.

  Args:
    path, prediction: see `PATHS`, `PREDICTIONS`; eps: the margin.

  Returns:
    (t_min, t_max).
  """
  _check(path, prediction)
  if prediction == "velocity":
    return 0.0, 1.0
  return eps, 1.0 - eps


def euler_sample(velocity_fn: PredictFn, noise: jax.Array, num_steps: int,
                 t_start: float = 1.0, t_end: float = 0.0) -> jax.Array:
  """Euler's method on dx/dt = v from t_start (noise) to t_end (data) in equal steps (Liu
  et al. §2.2, "Euler method with uniform step size"; num_steps = 1 is the one-step
  generator of a reflowed model, x_0 = x_1 - v(x_1, 1)).

  Args:
    velocity_fn: v(x_t, t_B) (e.g. `velocity_from` around the network).
    noise: x at t_start [B, ...].
    num_steps: N >= 1, one network evaluation each.
    t_start, t_end: the interval.

  Returns:
    x at t_end, float32.
  """
  ts = jnp.linspace(t_start, t_end, num_steps + 1, dtype=jnp.float32)
  batch = noise.shape[0]

  def step(x, t_pair):
    t, t_next = t_pair
    return x + (t_next - t) * velocity_fn(x, jnp.full((batch,), t, jnp.float32)), None

  x, _ = jax.lax.scan(step, noise.astype(jnp.float32), (ts[:-1], ts[1:]))
  return x
