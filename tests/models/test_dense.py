"""models/dense.py: nn.Dense's math and parameters, without transposed gradient copies."""
import re

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from gen_jax.models.dense import Dense, flat_dot_general


def _layers_and_input():
  x_BxTxD = jax.random.normal(jax.random.key(0), (3, 5, 8))
  ours, flax_dense = Dense(6, name="c_fc"), nn.Dense(6, name="c_fc")
  params = flax_dense.init(jax.random.key(1), x_BxTxD)
  return ours, flax_dense, params, x_BxTxD


def test_same_parameters_outputs_and_gradients_as_nn_dense():
  ours, flax_dense, params, x = _layers_and_input()
  assert jax.tree.map(jnp.shape, ours.init(jax.random.key(1), x)) == jax.tree.map(
      jnp.shape, params)
  np.testing.assert_allclose(ours.apply(params, x), flax_dense.apply(params, x), rtol=1e-6)
  loss = lambda layer: lambda p, x: jnp.sum(jnp.sin(layer.apply(p, x)))
  (gp_ours, gx_ours), (gp_flax, gx_flax) = (jax.grad(loss(m), argnums=(0, 1))(params, x)
                                            for m in (ours, flax_dense))
  np.testing.assert_allclose(gx_ours, gx_flax, rtol=1e-5, atol=1e-6)
  chex.assert_trees_all_close(gp_ours, gp_flax, rtol=1e-5, atol=1e-6)


def _transposed_gradient_copies(layer, params, x_BxTxD) -> int:
  """Instructions of the compiled gradient that hold dy [B*T, F] transposed to [F, B*T]."""
  grads = jax.grad(lambda p, x: jnp.sum(layer.apply(p, x) ** 2), argnums=(0, 1))
  hlo = jax.jit(grads).lower(params, x_BxTxD).compile().as_text()
  B, T, _ = x_BxTxD.shape
  return len(re.findall(rf"= f32\[6,{B * T}\]\S* fusion\(", hlo))


def test_weight_gradient_reads_the_output_gradient_in_place():
  # nn.Dense on [B, T, D]: dW = x^T dy contracts B and T together, and XLA:CPU makes a
  # transposed copy of dy for it (slow when fused into dy's producer); ours flattens B*T
  # first, so every product reads its operands as they are.
  ours, flax_dense, params, x = _layers_and_input()
  assert _transposed_gradient_copies(flax_dense, params, x) == 1   # what this module avoids
  assert _transposed_gradient_copies(ours, params, x) == 0


def test_other_contractions_pass_through_to_lax_dot_general():
  a, b = jnp.ones((2, 3, 4)), jnp.ones((2, 4, 5))
  batched = (((2,), (1,)), ((0,), (0,)))
  np.testing.assert_array_equal(flat_dot_general(a, b, batched),
                                jax.lax.dot_general(a, b, batched))
  m = jnp.arange(12.0).reshape(3, 4)
  np.testing.assert_array_equal(flat_dot_general(m, m.T, (((1,), (0,)), ((), ()))), m @ m.T)
