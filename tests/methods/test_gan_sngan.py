"""Miyato et al.'s ResNets and recipes (pfnet-research/sngan_projection): the 'sngan' layer
style (summed features, no read-out bias, BatchNorm eps 2e-5), the SN-GAN and projection
CIFAR-10 experiments (parameter counts from the authors' code, by shapes only), and the
dequantized real images of Gulrajani et al. and Miyato et al."""
import importlib

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from smoke import load_config

from gen_jax.core.state import count_params
from gen_jax.methods.gan import D_SN, D, G, GANMethod
from gen_jax.methods.gan_real_images import dequantize_uniform
from gen_jax.models import resnet_gan

CIFAR = (32, 32, 3)


def _experiment(paper):
  return importlib.import_module(f"gen_jax.experiments.{paper}.cifar10").get_config()


def _counts(ch_g, ch_d, K):
  """resnet_32.py ResNetGenerator(ch_g) and snresnet_32.py SNResNetProjectionDiscriminator(ch_d),
  n_classes = K, counted from their links (a conv k x k C_in -> C_out has k^2 C_in C_out
  weights + C_out biases; a BatchNorm 2 C, a conditional one 2 K C)."""
  conv = lambda k, cin, cout: k * k * cin * cout + cout
  bn = 2 * ch_g * (K or 1)
  up_block = conv(1, ch_g, ch_g) + bn + conv(3, ch_g, ch_g) + bn + conv(3, ch_g, ch_g)
  g = 128 * 16 * ch_g + 16 * ch_g + 3 * up_block + 2 * ch_g + conv(3, ch_g, 3)
  d = (conv(1, 3, ch_d) + conv(3, 3, ch_d) + conv(3, ch_d, ch_d)      # OptimizedBlock
       + conv(1, ch_d, ch_d) + 2 * conv(3, ch_d, ch_d)                # block2 (down)
       + 2 * 2 * conv(3, ch_d, ch_d)                                  # block3, block4
       + ch_d                                                         # l5, nobias
       + K * ch_d)                                                    # l_y
  return g, d


def test_sngan_and_projection_experiments_are_the_authors_configs():
  for paper, K in (("miyato2018_sngan", 0), ("miyato2018_projection", 10)):
    c = _experiment(paper)
    assert (c.gan.arch, c.gan.layer_style, c.gan.loss, c.gan.d_spectral_norm) == (
        "resnet", "sngan", "hinge", True)
    assert (c.gan.n_critic, c.gan.g_batch_multiple, c.gan.z_dim, c.gan.ngf, c.gan.ndf) == (
        5, 2, 128, 256, 128)
    t = c.train
    assert (t.batch_size, t.num_steps, t.lr, t.b1, t.b2, t.lr_decay, t.min_lr_ratio) == (
        320, 50_000, 2e-4, 0.0, 0.9, "linear", 0.0)
    assert (c.data.dequantize, c.data.random_flip, c.sample.batch_norm) == ("uniform", False,
                                                                            "running")
    assert (c.eval.feature_extractor, c.eval.num_samples, c.eval.sample_batch_size) == (
        "inception", 50_000, 100)
    assert c.model.num_classes == K
    method = GANMethod.from_config(c, CIFAR)
    g, d = method.generator, method.discriminator
    assert isinstance(g, resnet_gan.Generator) and isinstance(d, resnet_gan.Discriminator)
    assert (g.bn_epsilon, d.pooling, d.readout_bias, d.spectral_norm) == (2e-5, "sum", False,
                                                                          True)
    state = jax.eval_shape(method.init, jax.random.key(0), None)
    assert (count_params(state.params[G]), count_params(state.params[D])) == _counts(256, 128, K)
    # One u per spectrally normalized weight: 10 convolutions, psi (and the class table).
    assert len(jax.tree.leaves(state.model_state[D_SN])) == 11 + (K > 0)
  assert _counts(256, 128, 0) == (4_276_739, 1_053_824)


def test_sngan_critic_sums_phi_and_has_no_readout_bias():
  x = jax.random.normal(jax.random.key(0), (2, *CIFAR))
  mean_d = resnet_gan.Discriminator(dim=4)
  sum_d = resnet_gan.Discriminator(dim=4, pooling="sum", readout_bias=False)
  variables = jax.jit(lambda x: sum_d.init(jax.random.key(1), x, train=False))(x)
  assert "bias" not in variables["params"]["logit"]
  run = jax.jit(lambda d, v, x: d.apply(v, x, train=False, mutable=["intermediates"]),
                static_argnums=0)
  logits, inter = run(sum_d, variables, x)
  with_bias = {"params": {**variables["params"], "logit": {
      **variables["params"]["logit"], "bias": jnp.zeros((1,))}}}
  _, mean_inter = run(mean_d, with_bias, x)
  phi_sum, phi_mean = inter["intermediates"]["phi"][0], mean_inter["intermediates"]["phi"][0]
  np.testing.assert_allclose(phi_sum, 8 * 8 * phi_mean, rtol=1e-5, atol=1e-5)   # 8x8 maps
  np.testing.assert_allclose(logits, phi_sum @ variables["params"]["logit"]["kernel"][:, 0],
                             rtol=1e-5, atol=1e-5)


def test_every_batchnorm_of_the_sngan_generator_has_chainers_eps():
  epsilons = []

  def record(next_fun, args, kwargs, context):
    if isinstance(context.module, nn.BatchNorm) and context.method_name == "__call__":
      epsilons.append(context.module.epsilon)
    return next_fun(*args, **kwargs)

  for K, y in ((0, None), (10, jnp.zeros((1,), jnp.int32))):
    epsilons.clear()
    g = resnet_gan.Generator(image_shape=CIFAR, dim=4, num_classes=K, bn_epsilon=2e-5)
    with nn.intercept_methods(record):
      jax.eval_shape(lambda g=g, y=y: g.init(jax.random.key(0), jnp.zeros((1, 8)), train=False,
                                             labels_B=y))
    assert epsilons == [2e-5] * 7     # 3 blocks x 2 (plain or conditional) + the output's


def test_uniform_dequantization_spreads_each_pixel_value_over_its_own_bin():
  # gan_cifar_resnet.py: 2 (x / 256 - 0.5) + U(0, 1/128); datasets/cifar10.py the same.
  x = np.arange(256, dtype=np.float32)
  pipeline = jnp.asarray(np.tile(x / np.float32(127.5) - np.float32(1.0), (400, 1)))
  out = np.asarray(jax.jit(dequantize_uniform)(pipeline, jax.random.key(0)))
  low = x / 128.0 - 1.0
  assert np.all(out >= low) and np.all(out <= low + 1.0 / 128)   # float32 may round up
  np.testing.assert_allclose(out.mean(0), low + 0.5 / 128, atol=0.1 / 128)   # U(0, 1/128) mean
  assert out.min() >= -1.0 and out.max() < 1.0


def test_the_train_step_feeds_the_dequantized_images():
  # dequantize='uniform' is 'none' fed the images dequantized with the key fold_in(rng, 2).
  overrides = {"gan.n_critic": 1, "train.batch_size": 4}
  noisy = GANMethod.from_config(
      load_config("dcgan", "smoke", **overrides, **{"data.dequantize": "uniform"}), (28, 28, 1))
  plain = GANMethod.from_config(load_config("dcgan", "smoke", **overrides), (28, 28, 1))
  state = jax.jit(plain.init)(jax.random.key(0), None)
  rng = jax.random.key(1)
  image = jnp.round(jax.random.uniform(jax.random.key(2), (4, 28, 28, 1)) * 255) / 127.5 - 1
  got, _ = jax.jit(noisy.train_step)(state, {"image": image}, rng)
  by_hand = {"image": dequantize_uniform(image, jax.random.fold_in(rng, 2))}
  plain_step = jax.jit(plain.train_step)
  want, _ = plain_step(state, by_hand, rng)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7),
               got.params, want.params)
  untouched, _ = plain_step(state, {"image": image}, rng)
  assert not np.allclose(untouched.params[D]["logit"]["kernel"], got.params[D]["logit"]["kernel"])


def test_sngan_style_and_dequantization_are_checked_before_compiling():
  with pytest.raises(ValueError, match="layer_style='sngan'.*needs gan.arch='resnet'"):
    GANMethod.from_config(load_config("dcgan", "smoke", **{"gan.layer_style": "sngan"}),
                          (28, 28, 1))
  with pytest.raises(ValueError, match="data.dequantize='gaussian'; expected one of"):
    GANMethod.from_config(load_config("dcgan", "smoke", **{"data.dequantize": "gaussian"}),
                          (28, 28, 1))
