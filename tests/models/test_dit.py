"""Tests for the DiT (Peebles & Xie 2023; facebookresearch/DiT `models.py`).

The paper's models are only traced with `jax.eval_shape` (nothing allocated or compiled); one
tiny DiT is initialized and run for the identities of the authors' initialization and of
label dropout. Parity with the authors' PyTorch code: tests/interop/test_dit_interop.py.
"""

import functools
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gen_jax.models.dit import (
  DIT_SIZES,
  DiT,
  dit_kwargs,
  sincos_2d_position_embedding,
  timestep_embedding,
)


def _param_count(model: DiT) -> int:
  x = jax.ShapeDtypeStruct((1, model.input_size, model.input_size, model.in_channels),
                           jnp.float32)
  t = jax.ShapeDtypeStruct((1,), jnp.float32)
  y = jax.ShapeDtypeStruct((1,), jnp.int32)
  variables = jax.eval_shape(model.init, jax.random.key(0), x, t, y)
  return sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(variables["params"]))


# The authors' counts, sum(p.numel() for p in model.parameters()) for 32x32x4 latents, 1000
# classes and learned sigma (ImageNet 256): the frozen pos_embed is counted there.
@pytest.mark.parametrize("size, authors_total", [
    ("DiT-XL/2", 675_129_632), ("DiT-L/2", 458_102_816), ("DiT-B/2", 130_512_416),
    ("DiT-S/2", 32_963_360)])
def test_paper_models_have_the_authors_parameter_counts(size, authors_total):
  model = DiT(input_size=32, in_channels=4, num_classes=1000, learn_sigma=True,
              class_dropout_prob=0.1, **dit_kwargs(size))
  trainable = _param_count(model)
  assert trainable + model.fixed_parameter_count == authors_total
  if size == "DiT-XL/2":
    assert trainable == 674_834_720   # the authors' requires_grad parameters
    assert model.fixed_parameter_count == 256 * 1152


def test_size_table_is_the_papers():
  assert len(DIT_SIZES) == 12
  assert DIT_SIZES["DiT-XL/2"] == dict(depth=28, hidden_size=1152, num_heads=16, patch_size=2)
  assert DIT_SIZES["DiT-S/8"] == dict(depth=12, hidden_size=384, num_heads=6, patch_size=8)
  with pytest.raises(ValueError, match="DiT-XXL/2"):
    dit_kwargs("DiT-XXL/2")


def test_position_embedding_encodes_column_then_row():
  D, g = 8, 3
  emb = sincos_2d_position_embedding(D, g).reshape(g, g, D)   # [row, col, D]
  assert emb.dtype == np.float32
  # First half: the column's [sin(c w), cos(c w)] with w = (1, 1/100); second half: the row's.
  c = np.arange(g, dtype=np.float64)
  expected_col = np.stack([np.sin(c), np.sin(c / 100), np.cos(c), np.cos(c / 100)], axis=1)
  np.testing.assert_allclose(emb[1, :, :4], expected_col, atol=1e-6)
  np.testing.assert_allclose(emb[:, 2, 4:], expected_col, atol=1e-6)


def test_timestep_embedding_is_cos_then_sin():
  emb = np.asarray(timestep_embedding(jnp.array([0.0, 2.0]), dim=4))
  # f = (1, 10000^-1/2) = (1, 0.01)
  np.testing.assert_allclose(emb[0], [1, 1, 0, 0], atol=1e-7)
  np.testing.assert_allclose(emb[1], [np.cos(2), np.cos(0.02), np.sin(2), np.sin(0.02)],
                             rtol=1e-6)


TINY: dict[str, Any] = dict(input_size=8, patch_size=2, in_channels=3, hidden_size=32, depth=2,
                            num_heads=4, num_classes=5, class_dropout_prob=0.5, learn_sigma=True)


@pytest.fixture(scope="module")
def tiny():
  model = DiT(**TINY)
  x = jax.random.normal(jax.random.key(1), (4, 8, 8, 3))
  t = jnp.array([0.0, 10.0, 500.0, 999.0])
  y = jnp.array([0, 1, 4, 2])
  params = model.init(jax.random.key(0), x, t, y)["params"]
  return model, params, (x, t, y)


def test_authors_init_zeros_modulation_and_output(tiny):
  model, params, (x, t, y) = tiny
  for i in range(2):
    assert not np.any(params[f"blocks_{i}"]["adaLN_modulation"]["kernel"])
  final = params["final_layer"]
  assert not np.any(final["linear"]["kernel"]) and not np.any(final["adaLN_modulation"]["kernel"])
  out = model.apply({"params": params}, x, t, y)
  assert out.shape == (4, 8, 8, 6) and out.dtype == jnp.float32
  assert not np.any(out)   # adaLN-Zero: the network starts at 0
  # The patch embedding is Xavier-uniform over fan-in p p C = 12 and fan-out D = 32.
  kernel = np.asarray(params["x_embedder"]["kernel"])
  assert kernel.shape == (2, 2, 3, 32)
  bound = math.sqrt(6 / (12 + 32))
  assert 0.9 * bound < np.abs(kernel).max() <= bound
  assert params["y_embedder"]["embedding"].shape == (6, 32)   # 5 classes + the null class
  assert "pos_embed" not in params


def _randomized(params, seed=3):
  """Every parameter drawn at random (so no output is trivially zero)."""
  leaves, tree = jax.tree.flatten(params)
  keys = jax.random.split(jax.random.key(seed), len(leaves))
  return jax.tree.unflatten(tree, [0.2 * jax.random.normal(k, p.shape)
                                   for k, p in zip(keys, leaves, strict=True)])


@functools.lru_cache
def _apply(model: DiT, train: bool, labels: bool):
  def run(params, x, t, y, rng):
    return model.apply({"params": params}, x, t, y if labels else None, train=train,
                       rngs={"dropout": rng})
  return jax.jit(run)


def test_label_dropout_replaces_labels_by_the_null_class(tiny):
  model, params, (x, t, y) = tiny
  params = _randomized(params)
  rng = jax.random.key(7)
  null = _apply(model, False, False)(params, x, t, y, rng)
  cond = _apply(model, False, True)(params, x, t, y, rng)
  assert np.abs(np.asarray(cond - null)).max() > 1e-3
  # Training drops each label with probability 1/2: every row is its conditional or null
  # output, and with these keys both occur.
  dropped = _apply(model, True, True)(params, x, t, y, rng)
  is_null = [np.allclose(dropped[i], null[i], atol=1e-5) for i in range(4)]
  is_cond = [np.allclose(dropped[i], cond[i], atol=1e-5) for i in range(4)]
  assert all(a != b for a, b in zip(is_null, is_cond, strict=True))
  assert any(is_null) and any(is_cond)
  # A caller that drops labels itself turns it off.
  kept = _apply(model.clone(train_label_dropout=False), True, True)(params, x, t, y, rng)
  np.testing.assert_allclose(kept, cond, atol=1e-6)


def test_remat_keeps_parameters_and_output(tiny):
  model, params, (x, t, y) = tiny
  params = _randomized(params)
  rematted = model.clone(remat=True)
  shapes = jax.eval_shape(rematted.init, jax.random.key(0), x, t, y)["params"]
  assert jax.tree.structure(shapes) == jax.tree.structure(params)
  grad = lambda m: jax.grad(lambda p: jnp.sum(m.apply({"params": p}, x, t, y) ** 2))(params)
  np.testing.assert_allclose(jax.tree.leaves(grad(rematted))[0], jax.tree.leaves(grad(model))[0],
                             rtol=1e-5)


def test_bad_inputs_fail_clearly(tiny):
  model, params, (x, t, y) = tiny
  with pytest.raises(ValueError, match="unconditional"):
    jax.eval_shape(DiT(**{**TINY, "num_classes": 0}).init, jax.random.key(0), x, t, y)
  with pytest.raises(ValueError, match="no null class"):
    jax.eval_shape(DiT(**{**TINY, "class_dropout_prob": 0.0}).init, jax.random.key(0), x, t)
  with pytest.raises(ValueError, match="input_size"):
    jax.eval_shape(model.init, jax.random.key(0), x[:, :4], t, y)
  with pytest.raises(ValueError, match="attention_impl"):
    jax.eval_shape(model.clone(attention_impl="flash").init, jax.random.key(0), x, t, y)
