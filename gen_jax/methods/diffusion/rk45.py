"""Adaptive Dormand-Prince 5(4) ("RK45") for the probability-flow ODE, with the step-size
control of `scipy.integrate.solve_ivp(method='RK45')`, which the rectified-flow code uses to
sample (Liu et al. 2023, Table 1's "RK45" rows, rtol = atol = 1e-5) and to write reflow
pairs.

Dormand & Prince 1980, "A family of embedded Runge-Kutta formulae" (the 5th-order solution
with the embedded 4th-order error estimate, first-same-as-last); the initial step of
Hairer, Norsett, Wanner, "Solving ODEs I", §II.4; the error of a step is the RMS over
every element of the batch of err / (atol + rtol max(|y|, |y_new|)), so the whole batch
shares one step size, as solve_ivp on the authors' flattened batch. One compiled
`lax.while_loop`; the number of network evaluations is returned with the result.
"""
from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

# The Dormand-Prince tableau: nodes C, stage weights A, 5th-order weights B, and the error
# weights E = B - B* (B* the embedded 4th-order weights, over the 6 stages and f(y_new)).
C = np.array([0.0, 1 / 5, 3 / 10, 4 / 5, 8 / 9, 1.0])
A = [[],
     [1 / 5],
     [3 / 40, 9 / 40],
     [44 / 45, -56 / 15, 32 / 9],
     [19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729],
     [9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656]]
B = np.array([35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84])
E = np.array([-71 / 57600, 0.0, 71 / 16695, -71 / 1920, 17253 / 339200, -22 / 525, 1 / 40])
# Step-size control: safety factor and the bounds on a step's change.
SAFETY, MIN_FACTOR, MAX_FACTOR = 0.9, 0.2, 10.0
ERROR_EXPONENT = -1 / 5   # -1 / (error estimator order + 1)

# dy/dt = f(y, t) for a scalar t.
OdeFn = Callable[[jax.Array, jax.Array], jax.Array]


def _rms(x: jax.Array) -> jax.Array:
  return jnp.sqrt(jnp.mean(jnp.square(x)))


def initial_step(fun: OdeFn, t0, y0: jax.Array, f0: jax.Array, interval: float,
                 rtol: float, atol: float) -> jax.Array:
  """Hairer-Norsett-Wanner's starting step (one evaluation of `fun`): h0 from |y0| / |f0|,
  h1 from the change of f over h0, and min(100 h0, h1, the interval)."""
  scale = atol + jnp.abs(y0) * rtol
  d0, d1 = _rms(y0 / scale), _rms(f0 / scale)
  h0 = jnp.where((d0 < 1e-5) | (d1 < 1e-5), 1e-6, 0.01 * d0 / d1)
  h0 = jnp.minimum(h0, interval)
  f1 = fun(y0 + h0 * f0, t0 + h0)
  d2 = _rms((f1 - f0) / scale) / h0
  h1 = jnp.where((d1 <= 1e-15) & (d2 <= 1e-15), jnp.maximum(1e-6, h0 * 1e-3),
                 (0.01 / jnp.maximum(d1, d2)) ** (1 / 5))
  return jnp.minimum(jnp.minimum(100 * h0, h1), interval)


def solve(fun: OdeFn, y0: jax.Array, t0: float, t1: float, *, rtol: float = 1e-5,
          atol: float = 1e-5, max_steps: int = 10_000) -> tuple[jax.Array, jax.Array]:
  """Integrates dy/dt = fun(y, t) from t0 to t1 > t0 with adaptive RK45 steps.

  Args:
    fun: f(y, t), t a float32 scalar.
    y0: the state at t0 (any shape; the error norm is over all of it).
    t0, t1: the interval, t1 > t0.
    rtol, atol: the local error tolerances.
    max_steps: attempted steps before giving up (the result is then at some t < t1).

  Returns:
    (y at t1, the number of evaluations of `fun`, int32).
  """
  y0 = y0.astype(jnp.float32)
  t0_, t1_ = jnp.float32(t0), jnp.float32(t1)
  f0 = fun(y0, t0_)
  h = initial_step(fun, t0_, y0, f0, t1 - t0, rtol, atol)

  def attempt(carry):
    t, y, f, h_abs, rejected, nfe, steps = carry
    h = jnp.minimum(h_abs, t1_ - t)
    K = [f]
    for s in range(1, 6):
      dy = sum(a * k for a, k in zip(A[s], K, strict=True))
      K.append(fun(y + h * dy, t + C[s] * h))
    y_new = y + h * sum(b * k for b, k in zip(B, K, strict=True))
    f_new = fun(y_new, t + h)
    K.append(f_new)
    scale = atol + jnp.maximum(jnp.abs(y), jnp.abs(y_new)) * rtol
    error = _rms(h * sum(e * k for e, k in zip(E, K, strict=True)) / scale)
    accept = error < 1.0
    grow = jnp.where(error == 0.0, MAX_FACTOR,
                     jnp.minimum(MAX_FACTOR, SAFETY * error ** ERROR_EXPONENT))
    grow = jnp.where(rejected, jnp.minimum(1.0, grow), grow)
    shrink = jnp.maximum(MIN_FACTOR, SAFETY * error ** ERROR_EXPONENT)
    return (jnp.where(accept, t + h, t), jnp.where(accept, y_new, y),
            jnp.where(accept, f_new, f), h * jnp.where(accept, grow, shrink), ~accept,
            nfe + 6, steps + 1)

  def running(carry):
    t, steps = carry[0], carry[-1]
    return (t < t1_) & (steps < max_steps)

  carry = (t0_, y0, f0, h, jnp.bool_(False), jnp.int32(2), jnp.int32(0))
  _, y, _, _, _, nfe, _ = jax.lax.while_loop(running, attempt, carry)
  return y, nfe


def sample(velocity_fn: Callable[[jax.Array, jax.Array], jax.Array], noise: jax.Array, *,
           t_start: float = 1.0, t_end: float = 0.0, rtol: float = 1e-5,
           atol: float = 1e-5) -> tuple[jax.Array, jax.Array]:
  """The probability-flow ODE dx/dt = v(x, t) from noise at t_start down to t_end, with
  `solve` in s = t_start - t (increasing).

  Args:
    velocity_fn: v(x_t, t_B) (t = 1 is noise, as in flow.py).
    noise: x at t_start [B, ...].
    t_start, t_end: the interval, t_start > t_end.
    rtol, atol: the tolerances (the rectified-flow code's 1e-5).

  Returns:
    (x at t_end, the number of network evaluations).
  """
  batch = noise.shape[0]
  return solve(lambda x, s: -velocity_fn(x, jnp.full((batch,), t_start - s, jnp.float32)),
               noise, 0.0, t_start - t_end, rtol=rtol, atol=atol)
