"""The KL autoencoder family (gen_jax/methods/autoencoder.py): its loss terms against hand
computations, a few updates on a fixed batch, config checks, and SD weights through the
method's `init_from` hook."""
import math
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from smoke import load_config

from gen_jax.core.errors import ConfigError
from gen_jax.methods import autoencoder as A
from gen_jax.methods import build_method

FIXTURE = pathlib.Path(__file__).resolve().parent.parent / "fixtures" / "autoencoder_kl_tiny"


def test_kl_hand_computed_and_against_monte_carlo():
  # Entries (mean, logvar): (1, 0) -> 1/2 (1 + 1 - 1 - 0) = 1/2; (0, ln 2) -> 1/2 (2 - 1 - ln 2);
  # (0, 0) -> 0. Summed over every latent entry of each image.
  mean = jnp.array([1.0, 0.0, 0.0, 0.0]).reshape(1, 2, 1, 2)
  logvar = jnp.array([0.0, math.log(2.0), 0.0, 0.0]).reshape(1, 2, 1, 2)
  np.testing.assert_allclose(A.kl_to_standard_normal(mean, logvar),
                             [0.5 + 0.5 * (1.0 - math.log(2.0))], rtol=1e-6)
  # E_q[log q(z) - log p(z)] from 200k samples, within 5 standard errors.
  k1, k2, k3 = jax.random.split(jax.random.key(0), 3)
  mean = jax.random.normal(k1, (2, 2, 2, 1))
  logvar = 0.8 * jax.random.normal(k2, (2, 2, 2, 1))
  eps = jax.random.normal(k3, (200_000, 2, 2, 2, 1))
  z = mean + jnp.exp(0.5 * logvar) * eps
  log_ratio = np.asarray(jnp.sum(-0.5 * (logvar + eps**2) + 0.5 * z**2, axis=(2, 3, 4)))
  mc, se = log_ratio.mean(0), log_ratio.std(0) / math.sqrt(log_ratio.shape[0])
  analytic = np.asarray(A.kl_to_standard_normal(mean, logvar))
  assert np.all(np.abs(analytic - mc) < 5 * se), (analytic, mc, se)


def test_reconstruction_losses_and_psnr_hand_computed():
  x = jnp.zeros((1, 2, 2, 1))
  x_rec = jnp.array([0.5, -0.5, 0.0, 1.0]).reshape(1, 2, 2, 1)
  np.testing.assert_allclose(A.reconstruction_loss("l1", x, x_rec), [2.0])
  np.testing.assert_allclose(A.reconstruction_loss("mse", x, x_rec), [1.5])
  # An offset of 0.1 in [-1, 1] is 0.05 in [0, 1]: PSNR = -10 log10(0.05^2) = 26.02 dB.
  np.testing.assert_allclose(A.psnr(x, x + 0.1), [-10 * math.log10(0.0025)], rtol=1e-5)
  np.testing.assert_allclose(A.psnr(x, x + 5.0), A.psnr(x, x + 1.0))   # clipped to [-1, 1]


@pytest.fixture(scope="module")
def smoke_method():
  return build_method(load_config("autoencoder", "smoke", **{"train.lr": 2e-3}), (28, 28, 1))


def test_a_few_updates_reduce_the_loss_on_a_fixed_batch(smoke_method):
  method = smoke_method
  assert method.latent_shape == (14, 14, 2) and method.model.downsampling_factor == 2
  x = jax.random.uniform(jax.random.key(1), (8, 28, 28, 1), minval=-1.0, maxval=1.0)
  state = method.init(jax.random.key(0), {"image": x})
  step = jax.jit(method.train_step)
  losses = []
  for i in range(12):
    state, metrics = step(state, {"image": x}, jax.random.key(i))
    losses.append(float(metrics["loss"]))
    # The loss is Eq. (1): recon + kl_weight * KL, per image.
    np.testing.assert_allclose(metrics["loss"],
                               metrics["recon"] + method.kl_weight * metrics["kl"], rtol=1e-5)
  assert losses[-1] < 0.8 * losses[0], losses


@pytest.mark.parametrize("overrides, match", [
    ({"model.block_out_channels": (8, 8, 8, 8)}, "f=8, which must divide the image size 28x28"),
    ({"model.block_out_channels": (8, 10)}, "multiple of model.norm_num_groups=4"),
    ({"autoencoder.recon_loss": "l2"}, "recon_loss='l2'"),
    ({"autoencoder.kl_weight": -1.0}, "kl_weight=-1.0 must be >= 0"),
])
def test_bad_configs_fail_before_compiling(overrides, match):
  with pytest.raises(ConfigError, match=match):
    build_method(load_config("autoencoder", "smoke", **overrides), (28, 28, 1))


def test_diffusers_weights_through_the_init_from_hook():
  # The fixture's network (3 channels, widths 8, 16, groups 4) as a config, on 16x12 RGB.
  config = load_config("autoencoder", "smoke", **{
      "model.block_out_channels": (8, 16), "model.latent_channels": 4,
      "model.norm_num_groups": 4})
  method = build_method(config, (16, 12, 3))
  assert method.init_from_formats() == ("diffusers_vae",)
  abstract = jax.eval_shape(method.init, jax.random.key(0), None).params
  params = method.load_foreign_params(f"diffusers_vae:{FIXTURE}", abstract)
  out = np.load(FIXTURE / "outputs.npz")
  mean, logvar = jax.jit(method.encode)(params, out["x"])
  np.testing.assert_allclose(mean, out["mean"], atol=2e-5, rtol=1e-4)
  np.testing.assert_allclose(logvar, out["logvar"], atol=2e-5, rtol=1e-4)
