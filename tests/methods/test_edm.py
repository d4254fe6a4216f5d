"""EDM (gen_jax/methods/diffusion/edm.py): parity with NVlabs/edm and closed forms.

The fixture tests/fixtures/diffusion_parity/edm.npz was written by
tools/make_diffusion_parity.py (torch 2.13 CPU) from NVlabs/edm at the commit it stores:
`EDMPrecond` around a tiny fixed network, `EDMLoss` with its draws, and `edm_sampler`
(deterministic, and with churn and its per-step draws). No torch is needed here.
"""
from __future__ import annotations

import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from smoke import FIXTURES

from gen_jax.experiments.karras2022_edm import cifar10
from gen_jax.methods.diffusion import edm


@pytest.fixture(scope="module")
def ref():
  return dict(np.load(os.path.join(FIXTURES, "diffusion_parity", "edm.npz")))


def tiny_net(ref):
  """The fixture's F(x_in, c_noise) = tanh(x_in W + b + a c_noise), per pixel, NHWC."""
  W, b, a = (jnp.asarray(ref[k]) for k in ("net_W", "net_b", "net_a"))

  def net_fn(x_in, c_noise_B):
    return jnp.tanh(x_in @ W + b + a * c_noise_B[:, None, None, None])
  return net_fn


def denoise_fn(ref):
  net_fn = tiny_net(ref)
  return lambda x, sigma_B: edm.denoised(net_fn, x, sigma_B)


def test_denoiser_matches_edm_precond(ref):
  """D(x; sigma) equals `EDMPrecond.forward` at sigma = 0.003, 0.9 and 60."""
  D = denoise_fn(ref)(jnp.asarray(ref["precond_x"], jnp.float32), ref["precond_sigma"])
  np.testing.assert_allclose(D, ref["precond_D"], rtol=1e-5, atol=1e-5)


def test_loss_matches_edm_loss(ref):
  """Eq. 8 with lambda(sigma), from the reference's rnd_normal and noise, equals `EDMLoss`."""
  sigma_B = edm.training_sigma(jnp.asarray(ref["loss_rnd_normal"], jnp.float32))
  loss = edm.loss(denoise_fn(ref), jnp.asarray(ref["loss_images"], jnp.float32), sigma_B,
                  jnp.asarray(ref["loss_noise"], jnp.float32))
  np.testing.assert_allclose(loss, ref["loss_value"], rtol=2e-5, atol=1e-5)


def test_heun_sampler_matches_edm_sampler(ref):
  """Alg. 2 equals `edm_sampler`: the 18-step deterministic default, and 6 steps with
  S_churn = 40 in [S_min, S_max] = [0.05, 30] fed the reference's per-step draws."""
  latents = jnp.asarray(ref["sampler_latents"], jnp.float32)
  sample = jax.jit(lambda lat: edm.heun_sample(denoise_fn(ref), lat, None))
  np.testing.assert_allclose(sample(latents), ref["sampler_deterministic"], atol=2e-5)
  churned = edm.heun_sample(
      denoise_fn(ref), latents, None, num_steps=int(ref["churn_num_steps"]), s_churn=40.0,
      s_tmin=0.05, s_tmax=30.0, s_noise=1.003,
      churn_noise=jnp.asarray(ref["churn_noise"], jnp.float32))
  np.testing.assert_allclose(churned, ref["sampler_churn"], atol=2e-5)
  # The churn noise matters: without it the result differs.
  assert np.abs(np.asarray(sample(latents)) - ref["sampler_churn"]).max() > 1e-2


def test_preconditioning_closed_forms():
  """Table 1: c_in scales x to unit variance, lambda = 1 / c_out^2 (unit effective weight,
  §5), c_skip -> 1 and c_out -> 0 as sigma -> 0, and c_noise = ln(sigma) / 4."""
  sigma = jnp.asarray([1e-4, 0.5, 3.0, 80.0])
  c_skip, c_out, c_in, c_noise = edm.preconditioning(sigma)
  np.testing.assert_allclose(c_in ** 2 * (sigma ** 2 + 0.25), 1.0, rtol=1e-6)
  np.testing.assert_allclose(edm.loss_weight(sigma) * c_out ** 2, 1.0, rtol=1e-5)
  np.testing.assert_allclose([c_skip[0], c_out[0]], [1.0, 1e-4], rtol=1e-4)
  np.testing.assert_allclose(c_skip[1], 0.5, rtol=1e-6)
  np.testing.assert_allclose(c_noise, np.log(sigma) / 4, rtol=1e-6)


def test_sampling_sigmas_and_training_sigma():
  """Eq. 5's ends, 0 appended, decreasing; ln sigma ~ N(-1.2, 1.2^2) from a key."""
  sigmas = edm.sampling_sigmas(18)
  assert sigmas.shape == (19,) and sigmas[-1] == 0.0
  np.testing.assert_allclose(sigmas[[0, 17]], [80.0, 0.002], rtol=1e-12)
  assert np.all(np.diff(sigmas) < 0)
  log_sigma = np.log(np.asarray(edm.training_sigma(jax.random.PRNGKey(0), 20_000)))
  np.testing.assert_allclose([log_sigma.mean(), log_sigma.std()], [-1.2, 1.2], atol=0.03)
  with pytest.raises(ValueError, match="num"):
    edm.training_sigma(jax.random.PRNGKey(0))


def test_heun_is_second_order_on_gaussian_data():
  """App. B.3: for data ~ N(0, s^2) the ideal denoiser is D = s^2 / (s^2 + sigma^2) x and
  the ODE's solution is x(sigma) = x(sigma_max) sqrt(s^2 + sigma^2) / sqrt(s^2 +
  sigma_max^2). Doubling the steps divides Heun's error by about 4."""
  s2 = 0.25
  latents = jax.random.normal(jax.random.PRNGKey(0), (8, 2))
  exact = latents * 80.0 * math.sqrt(s2) / math.sqrt(s2 + 80.0 ** 2)
  errors = [float(jnp.abs(edm.heun_sample(
      lambda x, sigma_B: s2 / (s2 + sigma_B[:, None] ** 2) * x, latents, None,
      num_steps=n) - exact).max()) for n in (16, 32)]
  assert errors[0] / errors[1] > 3.5, errors


def test_cifar10_experiment_is_the_authors_recipe():
  """experiments/karras2022_edm/cifar10.py: train.py's CIFAR-10 defaults in steps of 512
  (200 Mimg, lr ramp-up over 10 Mimg, EMA half-life 0.5 Mimg), DDPM++ with EDM's
  preconditioning and augmentation, Alg. 1 with 18 steps; the sweep is Table 2's two
  models."""
  config = cifar10.get_config()
  assert (config.train.batch_size, config.train.num_steps, config.train.warmup_steps) == (
      512, 390_625, 19_531)
  np.testing.assert_allclose(config.train.ema_decay ** (500_000 / 512), 0.5, rtol=1e-12)
  assert (config.model.ch, tuple(config.model.ch_mult), config.model.num_res_blocks,
          config.model.dropout) == (128, (2, 2, 2), 4, 0.13)
  assert (config.model.architecture, config.diffusion.process, config.diffusion.prediction,
          config.data.augment, config.data.random_flip) == ("ddpmpp", "edm", "edm", "edm",
                                                            False)
  assert (config.sample.sampler, config.sample.steps, config.sample.s_churn) == (
      "edm_heun", 18, 0.0)
  assert cifar10.get_config("cond").model.num_classes == 10
  assert cifar10.get_sweep() == [{"model.num_classes": 0}, {"model.num_classes": 10}]
