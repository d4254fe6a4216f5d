"""Class-conditional DDPM with classifier-free guidance (Ho & Salimans 2022, Alg. 1-2).

A tiny U-Net (8x8 images, one level, T = 8) whose parameters are perturbed away from their
(nearly) zero-initialized output layers, so that labels change the samples.
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gen_jax.configs import ddpm as ddpm_config
from gen_jax.methods.diffusion.core import linear_betas, make_schedule
from gen_jax.methods.diffusion.ddim import ddim_sample
from gen_jax.methods.diffusion.ddpm import ddpm_sample
from gen_jax.methods.diffusion.guidance import guided_network
from gen_jax.methods.diffusion.method import DiffusionMethod
from gen_jax.models.unet import UNet

K, B, SHAPE = 10, 4, (4, 8, 8, 1)


def _unet(num_classes: int) -> UNet:
  return UNet(ch=8, ch_mult=(1,), num_res_blocks=1, attn_resolutions=(), dropout=0.0,
              num_groups=4, num_classes=num_classes)


def _count(model: UNet) -> int:
  variables = jax.eval_shape(lambda: model.init(
      jax.random.key(0), jnp.zeros((1, 8, 8, 1)), jnp.zeros((1,), jnp.int32), train=False))
  return sum(math.prod(p.shape) for p in jax.tree.leaves(variables["params"]))


def test_conditional_unet_adds_only_the_label_embedding():
  # (K + 1) rows (the last the null class) of the timestep embedding's width 4 ch = 32.
  assert _count(_unet(K)) == _count(_unet(0)) + (K + 1) * 4 * 8
  assert _count(_unet(0)) == 10593   # the unconditional tiny U-Net, as before conditioning


def test_unconditional_unet_rejects_labels():
  with pytest.raises(ValueError, match="num_classes=0"):
    _unet(0).init(jax.random.key(0), jnp.zeros((1, 8, 8, 1)), jnp.zeros((1,), jnp.int32),
                  jnp.zeros((1,), jnp.int32), train=False)


@pytest.fixture(scope="module")
def net():
  model = _unet(K)

  @jax.jit
  def perturbed_params():
    params = model.init(jax.random.key(0), jnp.zeros((1, 8, 8, 1)),
                        jnp.zeros((1,), jnp.int32), train=False)["params"]
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.key(1), len(leaves))
    return jax.tree.unflatten(tree, [p + 0.3 * jax.random.normal(k, p.shape)
                                     for p, k in zip(leaves, keys, strict=True)])

  params = perturbed_params()
  calls = []

  def apply(x, t, y=None):
    calls.append(x.shape[0])
    return model.apply({"params": params}, x, t, y, train=False)

  return apply, calls, make_schedule(linear_betas(8, 1e-3, 0.2))


def _samplers(sched):
  return {"ddpm": lambda d, key: ddpm_sample(d, sched, key, SHAPE),
          "ddim": lambda d, key: ddim_sample(d, sched, key, SHAPE, num_steps=4, eta=0.5)}


@pytest.mark.parametrize("sampler", ["ddpm", "ddim"])
def test_guidance_limits_are_the_conditional_and_unconditional_samplers(net, sampler):
  apply, calls, sched = net
  draw, key = _samplers(sched)[sampler], jax.random.key(3)
  labels = jnp.array([0, 3, 7, 9])
  del calls[:]
  w0 = draw(guided_network(apply, labels, K, 0.0), key)
  # One network call per step (the scan's body is traced once) on the 2B-row batch.
  assert calls == [2 * B]
  conditional = draw(lambda x, t: apply(x, t, labels), key)
  np.testing.assert_allclose(w0, conditional, atol=1e-5)
  if sampler == "ddim":
    return   # the null-label limit is the wrapper's algebra, checked once on DDPM below
  null = draw(guided_network(apply, jnp.full((B,), K), K, 3.0), key)
  unconditional = draw(lambda x, t: apply(x, t), key)   # no labels: the null class
  np.testing.assert_allclose(null, unconditional, atol=1e-4)
  # The labels matter (else both limits would hold trivially).
  assert np.abs(np.asarray(conditional) - np.asarray(unconditional)).max() > 1e-2


def test_guidance_combines_the_target_and_keeps_the_conditional_variance():
  # A fake network: target channel = label + t, variance channel = 10 * label.
  def denoise(x, t, y):
    y = y.astype(jnp.float32)[:, None, None, None] * jnp.ones_like(x)
    return jnp.concatenate([y + t[:, None, None, None], 10.0 * y], axis=-1)

  x, t = jnp.zeros((2, 2, 2, 1)), jnp.array([5, 5])
  out = guided_network(denoise, jnp.array([1, 2]), 4, 2.0, variance="learned_range")(x, t)
  # (1 + w) (c + t) - w (null + t) = 3 (c + 5) - 2 (4 + 5); variance: 10 c.
  np.testing.assert_allclose(out[..., 0], np.broadcast_to([[[0.0]], [[3.0]]], (2, 2, 2)))
  np.testing.assert_allclose(out[..., 1], np.broadcast_to([[[10.0]], [[20.0]]], (2, 2, 2)))


def _method(**sample):
  config = ddpm_config.get_config("conditional,smoke")
  config.sample.update(sample)
  return DiffusionMethod.from_config(config, (28, 28, 1))


def test_label_dropout_rate_is_p_uncond():
  method = _method()
  labels = jnp.arange(200_000) % K
  dropped = np.asarray(method.drop_labels(labels, jax.random.key(0)))
  is_null = dropped == K
  p = method.p_uncond
  assert abs(is_null.mean() - p) < 4 * math.sqrt(p * (1 - p) / labels.size)
  np.testing.assert_array_equal(dropped[~is_null], np.asarray(labels)[~is_null])


def test_conditional_config_and_sample_labels():
  config = ddpm_config.get_config("conditional")
  assert (config.model.num_classes, config.sample.num, config.diffusion.p_uncond,
          config.sample.guidance, config.sample.label) == (10, 100, 0.1, 1.0, -1)
  assert ddpm_config.get_config().model.num_classes == 0
  method = _method(label=-1)
  np.testing.assert_array_equal(method.sample_labels(100), np.repeat(np.arange(10), 10))
  assert method.sample_tag == "ddim5_w1_nfe10"   # a guided step is two evaluations
  sevens = _method(label=7, guidance=3.0)
  assert (sevens.sample_labels(3) == 7).all() and sevens.sample_tag == "ddim5_label7_w3_nfe10"


def test_guidance_without_classes_is_a_clear_error():
  config = ddpm_config.get_config("smoke")
  config.sample.guidance = 3.0
  with pytest.raises(ValueError, match="class-conditional"):
    DiffusionMethod.from_config(config, (28, 28, 1))
  with pytest.raises(ValueError, match="sample.label=10"):
    _method(label=10)
