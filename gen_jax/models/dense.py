"""`nn.Dense` whose matmuls reach XLA as plain 2-D matrix products (a speed fix for XLA:CPU,
no paper).

`nn.Dense` applied to activations [B, T, D] contracts the last axis with a 3-D
`dot_general`; autodiff turns it into weight-gradient products that contract over two
axes (B and T) at once. XLA:CPU (jax 0.10.2) lowers those with a physically transposed
copy of the [B, T, F] activation gradient, fused into the elementwise loop that produces
it (the GELU's backward pass, say), and its loop emitter writes a transposed output ~10x
slower than a plain one: on `configs/gpt.py:baby` the four MLP copies alone took 19% of
the train step. Flattening the leading axes first (a free reshape) makes the forward
product and both gradients (dx = dy W^T, dW = x^T dy) ordinary 2-D GEMMs: the baby GPT's
train step runs 1.33x faster on the 2-core CPU (a round-robin A/B of the two compiled steps
in one process; benchmarks/lm.py measures the result). The math, the parameters and their names are
`nn.Dense`'s; accelerators get the same product with one contracting axis fewer.
"""
from __future__ import annotations

import functools

import flax.linen as nn
import jax
from jax import lax


def flat_dot_general(lhs: jax.Array, rhs: jax.Array, dimension_numbers, precision=None,
                     preferred_element_type=None) -> jax.Array:
  """`lax.dot_general` for `nn.Dense`: lhs [..., D] @ rhs [D, F] as a [N, D] @ [D, F] GEMM.

  Any other contraction is passed to `lax.dot_general` unchanged.
  """
  (lhs_contract, rhs_contract), (lhs_batch, rhs_batch) = dimension_numbers
  if (tuple(lhs_contract) != (lhs.ndim - 1,) or tuple(rhs_contract) != (0,) or lhs_batch
      or rhs_batch or rhs.ndim != 2 or lhs.ndim <= 2):
    return lax.dot_general(lhs, rhs, dimension_numbers, precision=precision,
                           preferred_element_type=preferred_element_type)
  out_NxF = lax.dot_general(lhs.reshape(-1, lhs.shape[-1]), rhs, (((1,), (0,)), ((), ())),
                            precision=precision, preferred_element_type=preferred_element_type)
  return out_NxF.reshape(*lhs.shape[:-1], rhs.shape[-1])


# Drop-in for nn.Dense (same fields, same "kernel"/"bias" parameters).
Dense = functools.partial(nn.Dense, dot_general=flat_dot_general)
