"""Tests for the DDPM U-Net (Ho et al. 2020, Appendix B).

Big configurations are only traced with `jax.eval_shape` (no allocation, no compile); the
behaviour tests run a tiny 28x28x1 model.
"""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gen_jax.models.unet import UNet, timestep_embedding

# A small MNIST-sized model: 28 -> 14, attention at 14 (and in the middle block).
TINY = dict(ch=16, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(14,), dropout=0.1,
            num_groups=8)
B, H, W, C = 2, 28, 28, 1


def _param_count_of(model, image_shape):
  """Counts parameters from shapes alone: nothing is allocated or compiled."""
  x = jax.ShapeDtypeStruct(image_shape, jnp.float32)
  t = jax.ShapeDtypeStruct(image_shape[:1], jnp.int32)
  variables = jax.eval_shape(
      functools.partial(model.init, train=False), jax.random.key(0), x, t)
  return sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(variables["params"]))


def _perturb(params, seed, scale=0.05):
  """Adds Gaussian noise to every parameter, so the (nearly) zero-initialized layers that make
  the freshly initialized network output ~0 everywhere stop hiding its dependencies. (NumPy
  noise: drawing 100+ differently shaped jax.random arrays would compile 100+ kernels.)"""
  rng = np.random.default_rng(seed)
  return jax.tree.map(
      lambda p: p + scale * rng.standard_normal(p.shape, dtype=np.float32), params)


@pytest.fixture(scope="module")
def tiny():
  """(model, perturbed params, jitted apply, x) for the tiny config."""
  model = UNet(**TINY)
  x = jnp.asarray(np.random.default_rng(1).standard_normal((B, H, W, C), dtype=np.float32))
  t = jnp.array([3, 700], jnp.int32)
  params = jax.jit(functools.partial(model.init, train=False))(jax.random.key(0), x, t)["params"]
  apply = jax.jit(
      lambda p, x, t, rng, train: model.apply({"params": p}, x, t, train=train,
                                              rngs={"dropout": rng}),
      static_argnames="train")
  return model, params, _perturb(params, seed=2), apply, x


def test_cifar10_paper_config_has_35_7m_params():
  # Ho et al. 2020, Appendix B: "35.7 million parameters"; the released TF1 code
  # (hojonathanho/diffusion, model unet2d16b2) has exactly 35,746,307.
  model = UNet(ch=128, ch_mult=(1, 2, 2, 2), num_res_blocks=2, attn_resolutions=(16,),
               dropout=0.1)
  n = _param_count_of(model, (1, 32, 32, 3))
  assert round(n / 1e5) / 10 == 35.7
  assert n == 35_746_307


def test_256px_paper_config_has_114m_params():
  # Appendix B: the CelebA-HQ / LSUN 256x256 models have 114M parameters
  # (released code: ch_mult=(1, 1, 2, 2, 4, 4), "# 114M").
  model = UNet(ch=128, ch_mult=(1, 1, 2, 2, 4, 4), num_res_blocks=2, attn_resolutions=(16,),
               dropout=0.0)
  assert round(_param_count_of(model, (1, 256, 256, 3)) / 1e6) == 114


def test_output_shape_and_near_zero_at_init(tiny):
  _, params, _, apply, x = tiny
  out = apply(params, x, jnp.array([3, 700]), jax.random.key(0), train=False)
  assert out.shape == x.shape and out.dtype == jnp.float32
  # conv_out (like every ResBlock's conv2 and attention proj_out) is initialized with
  # variance scale 1e-10, i.e. weights ~1e-5 times the usual size, so the output is ~1e-5.
  assert float(jnp.max(jnp.abs(out))) < 1e-3


def test_out_channels():
  model = UNet(**TINY, out_channels=2)
  x = jax.ShapeDtypeStruct((B, H, W, C), jnp.float32)
  t = jax.ShapeDtypeStruct((B,), jnp.int32)
  out = jax.eval_shape(
      lambda x, t: model.init_with_output(jax.random.key(0), x, t, train=False)[0], x, t)
  assert out.shape == (B, H, W, 2)


def test_output_depends_on_own_timestep_only(tiny):
  _, _, params, apply, x = tiny
  key = jax.random.key(0)
  out_a = apply(params, x, jnp.array([3, 700]), key, train=False)
  out_b = apply(params, x, jnp.array([3, 10]), key, train=False)
  # Sample 1's timestep changed: its prediction changes clearly ...
  assert float(jnp.mean(jnp.abs(out_a[1] - out_b[1]))) > 1e-3 * float(jnp.mean(jnp.abs(out_a[1])))
  # ... while sample 0 is untouched (no batch mixing: GroupNorm and attention are per sample).
  np.testing.assert_allclose(out_a[0], out_b[0], rtol=1e-5, atol=1e-6)


def test_dropout_only_in_train_mode(tiny):
  _, _, params, apply, x = tiny
  t = jnp.array([3, 700])
  k1, k2 = jax.random.key(10), jax.random.key(11)
  train_1 = apply(params, x, t, k1, train=True)
  train_1_again = apply(params, x, t, k1, train=True)
  train_2 = apply(params, x, t, k2, train=True)
  np.testing.assert_array_equal(train_1, train_1_again)
  assert float(jnp.max(jnp.abs(train_1 - train_2))) > 1e-4
  eval_1 = apply(params, x, t, k1, train=False)
  eval_2 = apply(params, x, t, k2, train=False)
  np.testing.assert_array_equal(eval_1, eval_2)
  assert float(jnp.max(jnp.abs(eval_1 - train_1))) > 1e-4


def test_bfloat16_compute_keeps_float32_params_and_output(tiny):
  _, _, params, apply, x = tiny
  t = jnp.array([3, 700])
  bf16 = UNet(**TINY, dtype=jnp.bfloat16)
  bf16_params = jax.eval_shape(
      functools.partial(bf16.init, train=False), jax.random.key(0), x, t)["params"]
  assert {p.dtype for p in jax.tree.leaves(bf16_params)} == {jnp.dtype(jnp.float32)}
  out32 = apply(params, x, t, jax.random.key(0), train=False)
  out16 = jax.jit(functools.partial(bf16.apply, train=False))({"params": params}, x, t)
  assert out16.dtype == jnp.float32
  rel = float(jnp.linalg.norm(out16 - out32) / jnp.linalg.norm(out32))
  assert rel < 0.05, rel


def test_timestep_embedding_is_sin_then_cos():
  t = jnp.array([0.0, 5.0, 999.0])
  emb = timestep_embedding(t, 16)
  assert emb.shape == (3, 16) and emb.dtype == jnp.float32
  # Frequency i is 10000**(-i / 7) for i = 0..7: first sines, then cosines.
  freqs = 10000.0 ** (-np.arange(8) / 7)
  np.testing.assert_allclose(emb[:, :8], np.sin(np.asarray(t)[:, None] * freqs), atol=1e-4)
  np.testing.assert_allclose(emb[:, 8:], np.cos(np.asarray(t)[:, None] * freqs), atol=1e-4)
  odd = timestep_embedding(t, 17)
  assert odd.shape == (3, 17) and float(jnp.max(jnp.abs(odd[:, -1]))) == 0.0


def _init_shapes(model, image_shape, t_shape=None):
  x = jax.ShapeDtypeStruct(image_shape, jnp.float32)
  t = jax.ShapeDtypeStruct(image_shape[:1] if t_shape is None else t_shape, jnp.int32)
  return jax.eval_shape(functools.partial(model.init, train=False), jax.random.key(0), x, t)


def test_mnist_needs_three_levels_not_four():
  # 28 -> 14 -> 7 works; a fourth level would need 7 -> 3.5.
  _init_shapes(UNet(ch=32, ch_mult=(1, 2, 2), attn_resolutions=(14,)), (1, 28, 28, 1))
  with pytest.raises(ValueError, match=r"28x28 is not divisible by .* = 8"):
    _init_shapes(UNet(ch=32, ch_mult=(1, 2, 2, 2), attn_resolutions=(14,)), (1, 28, 28, 1))


def test_channels_not_divisible_by_groups_raise():
  with pytest.raises(ValueError, match=r"12 channels, which num_groups=8 does not divide"):
    _init_shapes(UNet(ch=12, ch_mult=(1, 2), num_groups=8, attn_resolutions=(14,)),
                 (1, 28, 28, 1))


def test_bad_shapes_and_unused_attention_raise():
  with pytest.raises(ValueError, match=r"timesteps of shape \[B\]"):
    _init_shapes(UNet(**TINY), (2, 28, 28, 1), t_shape=(3,))
  with pytest.raises(ValueError, match=r"\[B, H, W, C\]"):
    _init_shapes(UNet(**TINY), (2, 28, 28))
  with pytest.raises(ValueError, match=r"attn_resolutions \(16,\) never occur"):
    _init_shapes(UNet(**{**TINY, "attn_resolutions": (16,)}), (1, 28, 28, 1))
