"""Muon: momentum orthogonalized by Newton-Schulz (Jordan et al. 2024, modded-nanogpt).

For a hidden weight matrix W with gradient G, Muon keeps SGD's momentum buffer and replaces
the update by the nearest semi-orthogonal matrix to it (UV^T of its SVD USV^T), computed
approximately with a few Newton-Schulz iterations instead of an SVD:

  B_t = mu B_{t-1} + G_t;   M_t = G_t + mu B_t (Nesterov) or B_t;
  W_t = W_{t-1} - lr * sqrt(max(1, fan_out / fan_in)) * NS5(M_t).

NS5 (`newton_schulz_orthogonalize`) normalizes X = M / ||M||_F, so every singular value is
<= 1, then applies 5 times the odd quintic X <- a X + b (X X^T) X + c (X X^T)^2 X with
(a, b, c) = (3.4445, -4.7750, 2.0315): coefficients chosen to maximize the slope at zero, so
that small singular values grow fast; the result is U S' V^T with S' "~ Uniform(0.5, 1.5)"
(modded-nanogpt's docstring) rather than exactly UV^T, which they found trains as well.

As in modded-nanogpt's `train_gpt2.py` (commit 759b8fc7, the 2024-11-24 record; its
`zeropower_via_newtonschulz5` and `Muon.step`), with three differences: our kernels are
[fan_in, fan_out] (PyTorch's are [out, in]; the iteration commutes with transposition, and
the scale is written for our layout); the iteration runs in float32 by default (theirs in
bfloat16, `ns_dtype` chooses); and the momentum coefficient may follow a warmup
(`momentum_schedule`) as their later records do (0.85 -> 0.95 over 300 steps).

optax 0.2.8's `optax.contrib.muon` implements the same orthogonalization and shape scale,
but its momentum is an exponential moving average with Adam-style bias correction
(m = beta m + (1 - beta) g, Nesterov as beta m_hat + (1 - beta) g_hat), and the same
learning rate and Nesterov flag serve its Adam branch; modded-nanogpt uses the plain
SGD buffer above and its own Adam learning rates per parameter role. We keep theirs.
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

NS_COEFFS = (3.4445, -4.7750, 2.0315)
NS_STEPS = 5


def newton_schulz_orthogonalize(g_MxN: jax.Array, steps: int = NS_STEPS,
                                coeffs: tuple[float, float, float] = NS_COEFFS,
                                eps: float = 1e-7, ns_dtype=jnp.float32) -> jax.Array:
  """Approximately U V^T for g = U S V^T (the orthogonal polar factor), by `steps` quintic
  Newton-Schulz iterations (see the module docstring).

  Args:
    g_MxN: a 2-D matrix.
    steps: iterations (modded-nanogpt: 5).
    coeffs: (a, b, c) of X <- a X + b (X X^T) X + c (X X^T)^2 X.
    eps: added to the Frobenius norm before dividing.
    ns_dtype: the dtype the iteration runs in.

  Returns:
    A matrix of g's shape and dtype with g's singular vectors and singular values near 1
    (tests/core/test_muon.py pins how near, against numpy's SVD).

  Raises:
    ValueError: g is not 2-D.
  """
  if g_MxN.ndim != 2:
    raise ValueError(f"Newton-Schulz orthogonalizes matrices; got shape {g_MxN.shape}.")
  a, b, c = coeffs
  x = g_MxN.astype(ns_dtype)
  x = x / (jnp.linalg.norm(x) + eps)   # Frobenius norm >= spectral norm: singular values <= 1
  tall = g_MxN.shape[0] > g_MxN.shape[1]
  if tall:   # iterate on the wide orientation: X X^T is the smaller Gram matrix
    x = x.T
  for _ in range(steps):
    gram = x @ x.T
    x = a * x + (b * gram + c * gram @ gram) @ x
  return (x.T if tall else x).astype(g_MxN.dtype)


class MuonState(NamedTuple):
  count: jax.Array      # updates so far (the momentum schedule's step)
  momentum: optax.Updates   # the SGD momentum buffer B, one per matrix


def scale_by_muon(momentum: float | optax.Schedule = 0.95, nesterov: bool = True,
                  ns_steps: int = NS_STEPS, ns_dtype=jnp.float32
                  ) -> optax.GradientTransformation:
  """Muon's direction: sqrt(max(1, fan_out / fan_in)) * NS5(momentum of the gradients).

  Follow it with the learning rate (`optax.scale_by_learning_rate`). Every leaf must be a
  2-D kernel [fan_in, fan_out].

  Args:
    momentum: mu, or a schedule of it over the update count.
    nesterov: M = G + mu B (True, modded-nanogpt's default) or M = B.
    ns_steps: Newton-Schulz iterations.
    ns_dtype: the dtype of the iterations.
  """
  momentum_at = momentum if callable(momentum) else (lambda _: momentum)

  def init_fn(params):
    return MuonState(count=jnp.zeros((), jnp.int32),
                     momentum=jax.tree.map(jnp.zeros_like, params))

  def update_fn(updates, state, params=None):
    del params
    mu = momentum_at(state.count)
    buffers = jax.tree.map(lambda b, g: mu * b + g, state.momentum, updates)
    directions = (jax.tree.map(lambda g, b: g + mu * b, updates, buffers) if nesterov
                  else buffers)

    def orthogonal_step(m):
      fan_in, fan_out = m.shape
      scale = max(1.0, fan_out / fan_in) ** 0.5
      return scale * newton_schulz_orthogonalize(m, ns_steps, ns_dtype=ns_dtype)

    return (jax.tree.map(orthogonal_step, directions),
            MuonState(count=jnp.asarray(optax.safe_increment(state.count)), momentum=buffers))

  return optax.GradientTransformation(init_fn, update_fn)
