"""Gulrajani et al.'s networks and recipes: the ResNet G/D of gan_cifar_resnet.py and the tflib
DCGAN of gan_cifar.py (parameter counts from the authors' code, by shapes only), tflib's
initializers, the two CIFAR-10 experiment configs, the linear learning-rate decay."""
import importlib
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from smoke import load_config

from gen_jax.core.optimizer import learning_rate_schedule
from gen_jax.core.state import count_params
from gen_jax.methods.gan import D, G, GANMethod
from gen_jax.models import dcgan, resnet_gan

CIFAR = (32, 32, 3)


def _shapes(module, x):
  return jax.eval_shape(lambda: module.init(jax.random.key(0), x, train=False))


def _resnet_counts(dim):
  """gan_cifar_resnet.py, CONDITIONAL=False, counted from its tflib calls (a conv k x k
  C_in -> C_out has k^2 C_in C_out weights + C_out biases; a BatchNorm 2 C)."""
  conv = lambda k, cin, cout: k * k * cin * cout + cout
  up_block = conv(1, dim, dim) + 2 * dim + conv(3, dim, dim) + 2 * dim + conv(3, dim, dim)
  g = (128 * 16 * dim + 16 * dim          # Generator.Input (linear, bias)
       + 3 * up_block                     # Generator.1-3 (shortcut, N1, Conv1, N2, Conv2)
       + 2 * dim + conv(3, dim, 3))       # Generator.OutputN, Generator.Output
  d = (conv(1, 3, dim) + conv(3, 3, dim) + conv(3, dim, dim)      # OptimizedResBlockDisc1
       + conv(1, dim, dim) + 2 * conv(3, dim, dim)                # Discriminator.2 (down)
       + 2 * 2 * conv(3, dim, dim)                                # Discriminator.3, .4
       + dim + 1)                                                 # Discriminator.Output
  return g, d


def test_resnet_parameter_counts_match_the_authors_graph():
  g_want, d_want = _resnet_counts(128)
  assert (g_want, d_want) == (1_204_483, 1_053_825)
  g = _shapes(resnet_gan.Generator(image_shape=CIFAR, dim=128), jnp.zeros((1, 128)))
  d = _shapes(resnet_gan.Discriminator(dim=128), jnp.zeros((1, *CIFAR)))
  assert count_params(g["params"]) == g_want
  assert count_params(d["params"]) == d_want
  # 7 BatchNorms (N1, N2 of 3 blocks, OutputN) x 128 x {mean, var}: the TF graph's
  # non-trainable moving statistics, which its "Total param count" for G includes.
  assert count_params(g["batch_stats"]) == 1_792
  assert count_params(g["params"]) + count_params(g["batch_stats"]) == 1_206_275
  assert "batch_stats" not in d                     # NORMALIZATION_D = False
  # Block structure: up-blocks have a learned shortcut, the plain critic blocks do not.
  assert "shortcut" in g["params"]["block1"] and "shortcut" not in d["params"]["block3"]
  assert d["params"]["block2"]["conv1"]["kernel"].shape == (3, 3, 128, 128)
  assert sorted(d["params"]) == ["block1_conv1", "block1_conv2", "block1_shortcut", "block2",
                                 "block3", "block4", "logit"]


def test_tflib_dcgan_parameter_counts_match_gan_cifar():
  # gan_cifar.py, DIM = 128: every layer with a bias; BN1 over axis [0] of the flat
  # 4*4*4*DIM projection (one scale/offset per feature), BN2/BN3 per channel.
  g_want = (128 * 8192 + 8192 + 2 * 8192                      # Generator.Input, BN1
            + 25 * 512 * 256 + 256 + 2 * 256                  # Generator.2, BN2
            + 25 * 256 * 128 + 128 + 2 * 128                  # Generator.3, BN3
            + 25 * 128 * 3 + 3)                               # Generator.5
  d_want = (25 * 3 * 128 + 128 + 25 * 128 * 256 + 256 + 25 * 256 * 512 + 512
            + 4 * 4 * 512 + 1)
  assert (g_want, d_want) == (5_179_907, 4_114_689)
  g = _shapes(dcgan.Generator(image_shape=CIFAR, ngf=128, style="tflib"), jnp.zeros((1, 128)))
  d = _shapes(dcgan.Discriminator(ndf=128, norm="none", style="tflib"), jnp.zeros((1, *CIFAR)))
  assert count_params(g["params"]) == g_want and count_params(d["params"]) == d_want
  assert g["params"]["project_bn"]["scale"].shape == (8192,)


@pytest.mark.parametrize("shape,gain_sq,stride,transposed,fan_sum", [
    ((5, 5, 64, 128), 2.0, 2, False, 25 * 64 + 25 * 128 / 4),   # conv2d.py, stride 2
    ((5, 5, 128, 64), 2.0, 2, True, 25 * 128 / 4 + 25 * 64),    # deconv2d.py
    ((3, 3, 64, 64), 1.0, 1, False, 9 * 64 + 9 * 64),           # he_init=False
    ((200, 300), 1.0, 1, False, 500),                           # linear.py, Glorot
])
def test_tflib_uniform_bounds_and_std(shape, gain_sq, stride, transposed, fan_sum):
  w = np.asarray(dcgan.tflib_uniform(gain_sq, stride, transposed)(jax.random.key(0), shape))
  std = math.sqrt(gain_sq * 2.0 / fan_sum)
  assert np.abs(w).max() <= math.sqrt(3.0) * std * (1 + 1e-6)
  assert abs(w.std() / std - 1.0) < 0.02


def test_tflib_style_init_and_resnet_layers():
  g = dcgan.Generator(image_shape=CIFAR, ngf=8, style="tflib")
  p = g.init(jax.random.key(0), jnp.zeros((1, 16)), train=False)["params"]
  np.testing.assert_array_equal(p["project_bn"]["scale"], 1.0)   # tflib BN: scale 1
  np.testing.assert_array_equal(p["deconv1"]["bias"], 0.0)
  x = jnp.arange(2 * 4 * 4 * 3, dtype=jnp.float32).reshape(2, 4, 4, 3)
  up = resnet_gan.upsample(x)
  assert up.shape == (2, 8, 8, 3)
  np.testing.assert_array_equal(up[:, ::2, ::2], x)
  np.testing.assert_array_equal(up[:, 1::2, 1::2], x)
  np.testing.assert_allclose(resnet_gan.mean_pool(up), x)     # pooling undoes nearest upsampling
  np.testing.assert_allclose(resnet_gan.mean_pool(x)[0, 0, 0],
                             x[0, :2, :2].reshape(4, 3).mean(0))


def test_resnet_forward_shapes_and_critic_treats_examples_independently():
  g = resnet_gan.Generator(image_shape=CIFAR, dim=4)
  d = resnet_gan.Discriminator(dim=4)
  z = jax.random.normal(jax.random.key(0), (3, 8))
  gv = g.init(jax.random.key(1), z, train=False)
  dv = d.init(jax.random.key(2), jnp.zeros((1, *CIFAR)), train=False)

  @jax.jit
  def run(z):
    x, _ = g.apply(gv, z, train=True, mutable=["batch_stats"])
    return x, d.apply(dv, x, train=True)

  x, logits = run(z)
  assert x.shape == (3, *CIFAR) and logits.shape == (3,) and float(jnp.abs(x).max()) <= 1.0
  # The critic (no normalization) scores example 0 the same whatever example 1 is.
  moved = jax.jit(lambda x: d.apply(dv, x, train=True))(x.at[1].multiply(-1.0))
  np.testing.assert_allclose(moved[0], logits[0], rtol=1e-6)
  with pytest.raises(ValueError, match="32x32 CIFAR-10 ResNet; got 28x28"):
    GANMethod.from_config(load_config("dcgan", **{"gan.arch": "resnet"}), (28, 28, 1))


def _experiment(name):
  return importlib.import_module(f"gen_jax.experiments.gulrajani2017_wgan_gp.{name}").get_config()


def test_wgan_gp_cifar10_is_gan_cifar_py():
  c = _experiment("cifar10")
  assert (c.gan.arch, c.gan.layer_style, c.gan.loss, c.gan.d_norm) == ("dcgan", "tflib",
                                                                       "wgan_gp", "none")
  assert (c.gan.n_critic, c.gan.gp_weight, c.gan.z_dim, c.gan.ngf, c.gan.ndf) == (
      5, 10.0, 128, 128, 128)
  t = c.train
  assert (t.batch_size, t.num_steps, t.lr, t.b1, t.b2, t.lr_decay) == (320, 200_000, 1e-4, 0.5,
                                                                       0.9, "constant")
  assert c.sample.batch_norm == "batch" and c.gan.g_batch_multiple == 1
  # `samples_100`; real images 2 (x / 255 - 0.5), no noise, in gan_cifar.py.
  assert c.eval.sample_batch_size == 100 and c.data.dequantize == "none"
  method = GANMethod.from_config(c, CIFAR)
  state = jax.eval_shape(method.init, jax.random.key(0), None)
  assert count_params(state.params[G]) == 5_179_907
  assert count_params(state.params[D]) == 4_114_689


def test_wgan_gp_cifar10_resnet_is_gan_cifar_resnet_py():
  c = _experiment("cifar10_resnet")
  assert (c.gan.arch, c.gan.loss, c.gan.d_norm, c.gan.n_critic, c.gan.g_batch_multiple) == (
      "resnet", "wgan_gp", "none", 5, 2)
  assert (c.gan.z_dim, c.gan.ngf, c.gan.ndf, c.gan.gp_weight) == (128, 128, 128, 10.0)
  t = c.train
  assert (t.batch_size, t.num_steps, t.lr, t.b1, t.b2) == (320, 100_000, 2e-4, 0.0, 0.9)
  assert (t.lr_decay, t.min_lr_ratio, t.warmup_steps, t.ema_decay) == ("linear", 0.0, 0, 0.0)
  # Real images dequantized as theirs; `get_inception_score(50000)` on the FID Inception, from
  # 500 batches of 100 (`samples_100`), each normalized by its own BatchNorm statistics.
  assert (c.data.dequantize, c.data.random_flip, c.sample.batch_norm) == ("uniform", False,
                                                                          "batch")
  e = c.eval
  assert (e.sample_metrics, e.feature_extractor, e.num_samples, e.is_splits) == (
      True, "inception", 50_000, 10)
  assert (e.sample_batch_size, e.reference_split) == (100, "train")
  method = GANMethod.from_config(c, CIFAR)
  state = jax.eval_shape(method.init, jax.random.key(0), None)
  assert count_params(state.params[G]) == 1_204_483
  assert count_params(state.params[D]) == 1_053_825


def test_linear_decay_is_lr_times_one_minus_t_over_iters():
  # gan_cifar_resnet.py: decay = max(0, 1 - iteration / ITERS); the critic's schedule is
  # stretched over its n_critic updates per step.
  t = _experiment("cifar10_resnet").train
  g_sched, d_sched = learning_rate_schedule(t), learning_rate_schedule(t, updates_per_step=5)
  for step in (0, 1, 25_000, 99_999, 100_000, 150_000):
    want = 2e-4 * max(0.0, 1.0 - step / 100_000)
    np.testing.assert_allclose(float(g_sched(step)), want, rtol=1e-5, atol=1e-10)
    np.testing.assert_allclose(float(d_sched(5 * step)), want, rtol=1e-5, atol=1e-10)
  t.min_lr_ratio = 0.1
  np.testing.assert_allclose(float(learning_rate_schedule(t)(100_000)), 2e-5, rtol=1e-5)
