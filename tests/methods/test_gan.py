"""GAN math and DCGAN networks: losses at known logits, the gradient penalty in closed form,
which player each update changes, the batch split, shapes, parameter counts, init, BatchNorm
when sampling, the DCGAN code's alternating minibatches and L2 (the ResNet and the WGAN-GP
recipes: tests/methods/test_gan_resnet.py)."""
import importlib

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from smoke import load_config

from gen_jax.core.state import count_params
from gen_jax.methods import gan, gan_latents, gan_objectives
from gen_jax.methods.gan import D, G, GANMethod
from gen_jax.models import dcgan

MNIST = (28, 28, 1)


# ------------------------------------------------------------------------------ losses

REAL = jnp.array([0.5, 2.0, -1.0])
FAKE = jnp.array([-2.0, 0.0, 1.0])


def _log_sigmoid(logits):
  return np.log(1.0 / (1.0 + np.exp(-np.asarray(logits, np.float64))))


def test_non_saturating_losses_match_cross_entropy():
  # -E log D(x) - E log(1 - D(G(z))) and -E log D(G(z)), D = sigmoid(logit).
  want_d = -_log_sigmoid(REAL).mean() - np.log(1.0 - np.exp(_log_sigmoid(FAKE))).mean()
  want_g = -_log_sigmoid(FAKE).mean()
  np.testing.assert_allclose(gan_objectives.d_loss_non_saturating(REAL, FAKE), want_d, rtol=1e-6)
  np.testing.assert_allclose(gan_objectives.g_loss_non_saturating(FAKE), want_g, rtol=1e-6)
  # D undecided (all logits 0): 2 log 2 and log 2.
  zeros = jnp.zeros(4)
  np.testing.assert_allclose(gan_objectives.d_loss_non_saturating(zeros, zeros), 2 * np.log(2),
                             rtol=1e-6)
  np.testing.assert_allclose(gan_objectives.g_loss_non_saturating(zeros), np.log(2), rtol=1e-6)
  # Stable at extreme logits (softplus, not log(sigmoid)).
  assert np.isfinite(gan_objectives.d_loss_non_saturating(jnp.array([-200.0]), jnp.array([200.0])))


def test_hinge_losses():
  # max(0, 1 - [0.5, 2, -1]) = [0.5, 0, 2]; max(0, 1 + [-2, 0, 1]) = [0, 1, 2].
  np.testing.assert_allclose(gan_objectives.d_loss_hinge(REAL, FAKE), 2.5 / 3 + 1.0, rtol=1e-6)
  np.testing.assert_allclose(gan_objectives.g_loss_hinge(FAKE), 1.0 / 3, rtol=1e-6)


def test_wasserstein_losses():
  # E D(fake) - E D(real) = -1/3 - 1.5/3; G: -E D(fake).
  np.testing.assert_allclose(gan_objectives.d_loss_wasserstein(REAL, FAKE), -1.0 / 3 - 0.5,
                             rtol=1e-6)
  np.testing.assert_allclose(gan_objectives.g_loss_wasserstein(FAKE), 1.0 / 3, rtol=1e-6)


@pytest.mark.parametrize("w_norm", [0.3, 2.5])
def test_gradient_penalty_of_a_linear_critic_is_closed_form(w_norm):
  # D(x) = <w, x> + b has grad_x D = w everywhere, so GP = lambda (||w|| - 1)^2 for any
  # interpolate, and d GP / d w = 2 lambda (||w|| - 1) w / ||w||.
  k_w, k_r, k_f, k_e = jax.random.split(jax.random.key(0), 4)
  w = jax.random.normal(k_w, (4, 4, 2))
  w = w * w_norm / jnp.linalg.norm(w)
  real = jax.random.normal(k_r, (5, 4, 4, 2))
  fake = jax.random.normal(k_f, (5, 4, 4, 2))
  eps = jax.random.uniform(k_e, (5,))

  def gp_of(w):
    critic = lambda x: jnp.sum(x * w, axis=(1, 2, 3)) + 0.7
    return gan_objectives.gradient_penalty(critic, real, fake, eps, weight=10.0)

  gp, grad_w = jax.value_and_grad(gp_of)(w)
  np.testing.assert_allclose(gp, 10.0 * (w_norm - 1.0) ** 2, rtol=1e-5)
  np.testing.assert_allclose(grad_w, 2 * 10.0 * (w_norm - 1.0) * w / w_norm, rtol=1e-4, atol=1e-6)


def test_gradient_penalty_uses_the_interpolate():
  # D(x) = sum(x^2)/2 has grad x, so the norm is ||eps real + (1 - eps) fake|| per example.
  real, fake = jnp.full((2, 1, 1, 1), 3.0), jnp.full((2, 1, 1, 1), -1.0)
  eps = jnp.array([0.0, 0.5])   # x^ = -1 and 1: norms 1 and 1 -> GP 0
  critic = lambda x: 0.5 * jnp.sum(x**2, axis=(1, 2, 3))
  np.testing.assert_allclose(gan_objectives.gradient_penalty(critic, real, fake, eps), 0.0,
                             atol=1e-6)
  eps = jnp.array([1.0, 1.0])   # x^ = 3: (3 - 1)^2 * 10
  np.testing.assert_allclose(gan_objectives.gradient_penalty(critic, real, fake, eps), 40.0,
                             rtol=1e-5)


# ------------------------------------------------------------------------------ latents


def test_slerp_endpoints_and_norm():
  z0 = jnp.array([[3.0, 0.0, 0.0]])
  z1 = jnp.array([[0.0, 3.0, 0.0]])
  t = jnp.linspace(0, 1, 5)[:, None]
  path = gan_latents.slerp(z0, z1, t)
  np.testing.assert_allclose(path[0], z0[0], atol=1e-6)
  np.testing.assert_allclose(path[-1], z1[0], atol=1e-6)
  np.testing.assert_allclose(jnp.linalg.norm(path, axis=-1), 3.0, rtol=1e-5)   # on the sphere
  # Parallel vectors fall back to linear interpolation (no 0/0).
  np.testing.assert_allclose(gan_latents.slerp(z0, 2 * z0, jnp.array([[0.5]])), 1.5 * z0, rtol=1e-6)


def test_critic_slices_take_every_n_critic_th_row():
  x = jnp.arange(12.0).reshape(12, 1, 1, 1)
  slices = gan.critic_slices(x, 3)
  assert slices.shape == (3, 4, 1, 1, 1)
  for k in range(3):
    np.testing.assert_array_equal(slices[k, :, 0, 0, 0], np.arange(12)[k::3])
  with pytest.raises(ValueError, match="divisible by gan.n_critic=5"):
    gan.critic_slices(x, 5)


# ------------------------------------------------------------------------------ networks


def _init(module, x, rng=0):
  return jax.eval_shape(lambda: module.init(jax.random.key(rng), x, train=False))


@pytest.mark.parametrize("size", [28, 32, 64])
def test_shapes_for_supported_sizes(size):
  C = 1 if size == 28 else 3
  g = dcgan.Generator(image_shape=(size, size, C), ngf=4)
  d = dcgan.Discriminator(ndf=4)
  z = jnp.zeros((2, 10))
  x = jax.eval_shape(lambda: g.apply(g.init(jax.random.key(0), z, train=False), z, train=False))
  assert x.shape == (2, size, size, C) and x.dtype == jnp.float32
  imgs = jnp.zeros((2, size, size, C))
  logits = jax.eval_shape(lambda: d.apply(d.init(jax.random.key(0), imgs, train=False), imgs,
                                          train=False))
  assert logits.shape == (2,)


def test_unsupported_image_size_raises():
  g = dcgan.Generator(image_shape=(30, 30, 1))
  with pytest.raises(ValueError, match=r"28x28.*32x32.*64x64.*got 30x30"):
    g.init(jax.random.key(0), jnp.zeros((1, 8)), train=False)
  with pytest.raises(ValueError, match="got 32x28"):
    dcgan.Discriminator().init(jax.random.key(0), jnp.zeros((1, 32, 28, 3)), train=False)


def test_parameter_counts_by_hand():
  # MNIST, ngf = ndf = 64, Z = 100, 5x5 kernels. BN = 2 params per channel; layers before
  # a normalization have no bias.
  g28 = (100 * 7 * 7 * 128 + 2 * 128        # z -> 7x7x128, BN
         + 5 * 5 * 128 * 64 + 2 * 64        # 7 -> 14, 64 ch, BN
         + 5 * 5 * 64 * 1 + 1)              # 14 -> 28, 1 ch + bias, tanh
  d28 = (5 * 5 * 1 * 64 + 64                # 28 -> 14, bias, no BN
         + 5 * 5 * 64 * 128 + 2 * 128       # 14 -> 7, BN
         + 7 * 7 * 128 + 1)                 # linear read-out
  assert (g28, d28) == (833_985, 212_993)
  g = dcgan.Generator(image_shape=MNIST, ngf=64)
  d = dcgan.Discriminator(ndf=64)
  assert count_params(_init(g, jnp.zeros((1, 100)))["params"]) == g28
  assert count_params(_init(d, jnp.zeros((1, *MNIST)))["params"]) == d28
  # Radford et al. Fig. 1 / the authors' 64x64 code: ngf = 128, 100 -> 4x4x1024 -> ... -> 3.
  g64 = (100 * 16 * 1024 + 2 * 1024 + 25 * 1024 * 512 + 2 * 512 + 25 * 512 * 256 + 2 * 256
         + 25 * 256 * 128 + 2 * 128 + 25 * 128 * 3 + 3)
  g = dcgan.Generator(image_shape=(64, 64, 3), ngf=128)
  assert count_params(_init(g, jnp.zeros((1, 100)))["params"]) == g64 == 18_855_043
  # The LayerNorm critic has the same count as the BatchNorm one (scale + offset per channel).
  ln = dcgan.Discriminator(ndf=64, norm="layer")
  assert count_params(_init(ln, jnp.zeros((1, *MNIST)))["params"]) == d28
  # Without normalization the second conv gets its bias back instead: -2*128 + 128.
  none = dcgan.Discriminator(ndf=64, norm="none")
  assert count_params(_init(none, jnp.zeros((1, *MNIST)))["params"]) == d28 - 128


def test_init_is_normal_with_std_0_02():
  g = dcgan.Generator(image_shape=MNIST, ngf=64)
  params = g.init(jax.random.key(1), jnp.zeros((1, 100)), train=False)["params"]
  for name in ("project", "deconv1"):   # 627,200 and 204,800 weights
    kernel = np.asarray(params[name]["kernel"])
    assert abs(kernel.std() - 0.02) < 5e-4 and abs(kernel.mean()) < 5e-4, name
  scale = np.asarray(params["project_bn"]["scale"])
  assert abs(scale.mean() - 1.0) < 0.01 and 0.01 < scale.std() < 0.03
  assert np.all(np.asarray(params["deconv2"]["bias"]) == 0)
  assert "bias" not in params["project"] and "bias" not in params["deconv1"]


def test_batchnorm_placement_and_critic_without_batchnorm():
  x = jnp.zeros((1, *MNIST))
  bn = _init(dcgan.Discriminator(ndf=8, norm="batch"), x)
  assert sorted(bn["batch_stats"]) == ["conv1_bn"]                      # not on the input layer
  g = _init(dcgan.Generator(image_shape=(32, 32, 3), ngf=8), jnp.zeros((1, 10)))
  assert sorted(g["batch_stats"]) == ["deconv1_bn", "deconv2_bn", "project_bn"]  # not the output
  for norm in ("layer", "none"):
    critic = _init(dcgan.Discriminator(ndf=8, norm=norm), x)
    assert "batch_stats" not in critic
    assert not any("bn" in name for name in critic["params"])


@pytest.mark.parametrize("norm,independent", [("batch", False), ("layer", True), ("none", True)])
def test_critic_treats_examples_independently(norm, independent):
  # The per-example gradient penalty needs D(x_0) not to depend on x_1 (in training mode).
  d = dcgan.Discriminator(ndf=4, norm=norm)
  x = jax.random.normal(jax.random.key(0), (3, *MNIST))
  variables = d.init(jax.random.key(1), x, train=False)
  out = jax.jit(lambda x: d.apply(variables, x, train=True, mutable=["batch_stats"])[0])
  changed = out(x.at[1].multiply(3.0))[0] - out(x)[0]
  assert (abs(float(changed)) < 1e-6) == independent


# ------------------------------------------------------------------------------ method


@pytest.fixture(scope="module")
def method_and_state():
  config = load_config("dcgan", **{"train.ema_decay": 0.5, "train.ema_warmup": False})
  method = GANMethod.from_config(config, MNIST)
  state = jax.jit(method.init)(jax.random.key(0), None)
  real = jax.random.uniform(jax.random.key(1), (8, *MNIST), minval=-1, maxval=1)
  return method, state, real


def _same(a, b):
  return all(np.array_equal(x, y)
             for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True))


def test_train_step_is_algorithm_1_and_each_update_changes_only_its_player():
  # Gulrajani et al. Alg. 1 replayed by hand from the public pieces and raw optax, with
  # n_critic = 2 and BatchNorm in D: D update k on real slice k with key k of
  # split(d_rng, 2); then one G update, starting from the *initial* G params (the D updates
  # leave G alone) and leaving D's params, optimizer state and running averages alone.
  config = load_config("dcgan", **{"gan.n_critic": 2})
  method = GANMethod.from_config(config, MNIST)
  state = jax.jit(method.init)(jax.random.key(0), None)
  real = jax.random.uniform(jax.random.key(1), (8, *MNIST), minval=-1, maxval=1)
  rng = jax.random.key(2)

  @jax.jit
  def by_hand(state):
    params_d, opt_d, stats = state.params[D], state.opt_state[D], state.model_state
    d_rng, g_rng = jax.random.split(rng)
    for k, key in enumerate(jax.random.split(d_rng, 2)):
      z_key, gp_key = jax.random.split(key)
      rows = (real[k::2], gan.sample_latents(z_key, (4, method.z_dim), method.z_prior),
              jax.random.uniform(gp_key, (4,)))
      (_, (stats, _)), grads = method.discriminator_grads(params_d, state.params[G], stats, rows)
      updates, opt_d = method.tx_d.update(grads, opt_d, params_d)
      params_d = optax.apply_updates(params_d, updates)
    z = gan.sample_latents(g_rng, (4, method.z_dim), method.z_prior)
    (_, after_g), grads = method.generator_grads(state.params[G], params_d, stats, z)
    updates, opt_g = method.tx_g.update(grads, state.opt_state[G], state.params[G])
    return (params_d, opt_d, stats[D]), (optax.apply_updates(state.params[G], updates), opt_g,
                                         after_g[G])

  (params_d, opt_d, stats_d), (params_g, opt_g, stats_g) = by_hand(state)
  new, metrics = jax.jit(method.train_step)(state, {"image": real}, rng)
  close = lambda a, b: jax.tree.map(
      lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-7), a, b)
  close(new.params[D], params_d)
  close(new.opt_state[D], opt_d)
  close(new.model_state[D], stats_d)     # the G update does not move D's running averages
  close(new.params[G], params_g)
  close(new.opt_state[G], opt_g)
  close(new.model_state[G], stats_g)
  # Every part of both players moved, and the step was counted once.
  for part in ("params", "opt_state", "model_state"):
    for player in (G, D):
      assert not _same(getattr(new, part)[player], getattr(state, part)[player]), (part, player)
  assert int(new.step) == 1
  assert np.isfinite(float(metrics["d_loss"])) and np.isfinite(float(metrics["g_loss"]))


def test_train_step_updates_both_nets_ema_and_sampling_uses_ema(method_and_state):
  method, state, real = method_and_state
  new, metrics = jax.jit(method.train_step)(state, {"image": real}, jax.random.key(4))
  assert int(new.step) == 1
  for key in ("loss", "d_loss", "g_loss", "d_real", "d_fake", "d_grad_norm", "g_grad_norm",
              "d_update_norm", "g_update_norm"):
    assert np.isfinite(float(metrics[key])), key
  assert float(metrics["loss"]) == float(metrics["d_loss"])
  # One G step per iteration: its update norm is how far G's params moved.
  moved = jax.tree.map(lambda a, b: a - b, new.params[G], state.params[G])
  np.testing.assert_allclose(float(metrics["g_update_norm"]),
                             float(jnp.sqrt(sum(jnp.sum(x**2) for x in jax.tree.leaves(moved)))),
                             rtol=1e-4)
  # ema = 0.5 old + 0.5 new with ema_decay=0.5, no warmup.
  for e, p0, p1 in zip(jax.tree.leaves(new.ema_params), jax.tree.leaves(state.params),
                       jax.tree.leaves(new.params), strict=True):
    np.testing.assert_allclose(e, 0.5 * p0 + 0.5 * p1, rtol=1e-6, atol=1e-7)
  sample = jax.jit(method.sample, static_argnums=(2, 3))
  ema, raw = sample(new, jax.random.key(5), 4, True), sample(new, jax.random.key(5), 4, False)
  assert ema.images.shape == (4, *MNIST) and ema.grids["interpolation"].shape == (4, *MNIST)
  assert not np.allclose(ema.images, raw.images)
  again = sample(new, jax.random.key(5), 4, True)   # fixed key -> same latents, same images
  np.testing.assert_array_equal(again.images, ema.images)
  assert float(jnp.abs(ema.images).max()) <= 1.0


def test_eval_step_names_the_weights(method_and_state):
  method, state, real = method_and_state
  metrics = jax.jit(method.eval_step)(state, {"image": real}, jax.random.key(6))
  assert sorted(metrics) == ["ema/d_fake", "ema/d_loss", "ema/g_loss", "raw/d_fake",
                             "raw/d_loss", "raw/d_real", "raw/g_loss"]
  # At init ema == raw: the same noise gives the same numbers.
  assert float(metrics["ema/d_loss"]) == float(metrics["raw/d_loss"])


def test_wgan_gp_step_reports_penalty_and_uses_n_critic_slices():
  config = load_config("dcgan", "smoke,loss=wgan_gp")
  assert config.gan.n_critic == 5 and config.train.batch_size == 40
  method = GANMethod.from_config(config, MNIST)
  assert method.discriminator.norm == "layer"     # d_norm='auto' -> no BatchNorm
  state = jax.jit(method.init)(jax.random.key(0), None)
  assert state.model_state[D] == {}
  real = jnp.zeros((40, *MNIST))
  new, metrics = jax.jit(method.train_step)(state, {"image": real}, jax.random.key(1))
  assert float(metrics["gp"]) > 0 and np.isfinite(float(metrics["loss"]))
  # Adam counts: D took n_critic = 5 steps, G one.
  counts = lambda tree: {int(c) for c in jax.tree.leaves(tree) if np.ndim(c) == 0}
  assert counts(new.opt_state[D]) == {5} and counts(new.opt_state[G]) == {1}


@pytest.mark.parametrize("mode,depends", [("batch", True), ("running", False)])
def test_samples_depend_on_the_batch_only_in_batch_statistics_mode(method_and_state, mode,
                                                                   depends):
  # sample.batch_norm='batch' (dcgan_code, WGAN-GP's tflib): G normalizes each generated
  # batch by its own statistics, so sample 0 changes when the other latents do; 'running':
  # each sample depends on its own latent only. The same path serves the eval fakes.
  _, state, _ = method_and_state
  config = load_config("dcgan", **{"sample.batch_norm": mode})
  method = GANMethod.from_config(config, MNIST)
  draw = jax.jit(lambda z: method.draw(state.params[G], state.model_state[G], z))
  z = jax.random.normal(jax.random.key(7), (4, method.z_dim))
  other = z.at[1:].set(3.0 * jax.random.normal(jax.random.key(8), (3, method.z_dim)))
  x, x_other = draw(z), draw(other)
  changed = float(jnp.abs(x_other[0] - x[0]).max())
  assert (changed > 1e-3) == depends, changed
  if not depends:
    np.testing.assert_allclose(x_other[0], x[0], atol=1e-6)
    # Running mode is G in inference mode with the stored averages.
    want = method.generator.apply({"params": state.params[G],
                                   "batch_stats": state.model_state[G]}, z, train=False)
    np.testing.assert_allclose(x, want, atol=1e-6)
  # The sample grid is one such batch, drawn the same way.
  grid = jax.jit(method.sample, static_argnums=(2, 3))(state, jax.random.key(9), 4, False)
  z_grid = gan.sample_latents(jax.random.split(jax.random.key(9))[0], (4, method.z_dim),
                              method.z_prior)
  np.testing.assert_allclose(grid.images, draw(z_grid), atol=1e-6)


def test_alternating_minibatches_g_first_on_its_own_turn_with_g_batch_multiple():
  # dcgan_code: updates alternate over successive minibatches, G first; G's minibatch of
  # real images is never read. With n_critic = 1 the step's 8 images are 2 slices of 4:
  # slice 0 (rows 0, 2, ...) is G's turn, slice 1 feeds D. g_batch_multiple = 2: G's update
  # takes 8 fakes.
  config = load_config("dcgan", **{"gan.alternate_minibatches": True,
                                   "gan.g_batch_multiple": 2})
  method = GANMethod.from_config(config, MNIST)
  state = jax.jit(method.init)(jax.random.key(0), None)
  real = jax.random.uniform(jax.random.key(1), (8, *MNIST), minval=-1, maxval=1)
  rng = jax.random.key(2)
  step = jax.jit(method.train_step)
  new, _ = step(state, {"image": real}, rng)
  # G's turn: the update from the initial state on 8 latents from g_rng.
  _, g_rng = jax.random.split(rng)
  z = gan.sample_latents(g_rng, (8, method.z_dim), method.z_prior)
  params_g, _, _, _ = jax.jit(method.generator_update)(state.params, state.opt_state,
                                                       state.model_state, z)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7),
               new.params[G], params_g)
  # The images of G's slice are unused: changing them changes nothing.
  again, _ = step(state, {"image": real.at[0::2].set(0.5)}, rng)
  assert _same(again.params, new.params) and _same(again.model_state, new.model_state)
  changed, _ = step(state, {"image": real.at[1::2].set(0.5)}, rng)
  assert not _same(changed.params[D], new.params[D])
  with pytest.raises(ValueError, match=r"divisible by gan.n_critic=1 \+ 1"):
    GANMethod.from_config(load_config("dcgan", **{"gan.alternate_minibatches": True,
                                                  "train.batch_size": 9}), MNIST)


def test_l2_is_added_to_the_gradient_before_adam():
  # dcgan_code's Regularizer: g + l2 * theta is what Adam sees (coupled L2, every parameter).
  config = load_config("dcgan", **{"gan.l2": 1e-2})
  method = GANMethod.from_config(config, MNIST)
  params = {"w": jnp.array([1.0, -2.0, 3.0])}
  grads = {"w": jnp.array([0.5, 0.0, -0.25])}
  adam = optax.adam(config.train.lr, b1=config.train.b1, b2=config.train.b2, eps=config.train.eps)
  for tx in (method.tx_g, method.tx_d):
    got, _ = tx.update(grads, tx.init(params), params)
    want, _ = adam.update(jax.tree.map(lambda g, p: g + 1e-2 * p, grads, params),
                          adam.init(params), params)
    np.testing.assert_allclose(got["w"], want["w"], rtol=1e-6)


@pytest.mark.parametrize("overrides,message", [
    ({"gan.loss": "wgan_gp", "gan.d_norm": "batch"}, "without BatchNorm"),
    ({"gan.n_critic": 3}, "divisible by gan.n_critic=3"),
    ({"gan.loss": "lsgan"}, "gan.loss='lsgan'"),
    ({"gan.z_prior": "cauchy"}, "gan.z_prior"),
    ({"sample.batch_norm": "ema"}, "sample.batch_norm='ema'"),
    ({"gan.arch": "stylegan"}, "gan.arch='stylegan'"),
    ({"gan.layer_style": "keras"}, "gan.layer_style='keras'"),
    ({"gan.arch": "resnet", "gan.d_norm": "batch"}, r"arch='resnet'; expected 'auto' or one"),
    ({"gan.g_batch_multiple": 0}, "g_batch_multiple=0"),
])
def test_invalid_gan_config_fails_clearly(overrides, message):
  with pytest.raises(ValueError, match=message):
    GANMethod.from_config(load_config("dcgan", **overrides), MNIST)
  with pytest.raises(ValueError, match="got 30x30"):
    GANMethod.from_config(load_config("dcgan"), (30, 30, 1))


def test_dcgan_experiment_variants_are_the_authors_loop():
  # dcgan_code: l2 = 1e-5 on every parameter; one minibatch of 128 per update, G and D in
  # turn, so 25 epochs of 60,000 digits are 25 * 60000 / 256 = 5,859 steps of 2 x 128.
  mnist = importlib.import_module("gen_jax.experiments.radford2016_dcgan.mnist")
  base, l2, alt, code = (mnist.get_config(a) for a in (None, "l2", "alternate", "code"))
  assert (base.gan.l2, base.gan.alternate_minibatches, base.train.batch_size) == (0.0, False, 128)
  assert (base.train.num_steps, base.sample.batch_norm) == (11_700, "batch")
  assert (l2.gan.l2, l2.gan.alternate_minibatches, l2.train.num_steps) == (1e-5, False, 11_700)
  assert (alt.gan.l2, alt.gan.alternate_minibatches) == (0.0, True)
  assert (alt.train.batch_size, alt.train.num_steps) == (256, 5_859)
  assert (code.gan.l2, code.gan.alternate_minibatches, code.train.num_steps) == (1e-5, True, 5_859)
  with pytest.raises(ValueError, match="unknown variant"):
    mnist.get_config("weight_decay")
