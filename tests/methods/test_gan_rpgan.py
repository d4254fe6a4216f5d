"""RpGAN + R1 + R2 (Huang et al. 2024, gen_jax/methods/gan_objectives.py and gan.py): the
penalties against central finite differences of a closed-form D, the relativistic losses
and their gradients against their closed forms, the gamma and EMA schedules, config errors.
No training here (tests/engine/test_rpgan_e2e.py trains and resumes)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from smoke import load_config

from gen_jax.core.errors import ConfigError
from gen_jax.core.optimizer import learning_rate_schedule
from gen_jax.core.state import count_params
from gen_jax.data.spec import DataSpec
from gen_jax.experiments.huang2024_r3gan import cifar10 as r3gan_cifar10
from gen_jax.methods import build_method, gan_objectives
from gen_jax.methods.gan import D, G, adam_b2_schedule
from gen_jax.models import r3gan

REAL = np.array([1.0, 0.0, -2.0, 3.0], np.float32)
FAKE = np.array([0.5, 0.0, 1.0, -1.0], np.float32)


def _critic(x, w, c, xp):
  """A closed-form D: sum_i w_i sin(x_i) + c sum_i x_i^2 per example (numpy or jax.numpy)."""
  axes = tuple(range(1, x.ndim))
  return xp.sum(w * xp.sin(x), axis=axes) + c * xp.sum(x ** 2, axis=axes)


def _fd_penalty(x, w, c, gamma, h=1e-5):
  """gamma/2 E ||grad_x D||^2 with grad_x D by central differences, in float64."""
  grads = np.zeros_like(x)
  for idx in np.ndindex(*x.shape[1:]):
    e = np.zeros_like(x)
    e[(slice(None), *idx)] = h
    grads[(slice(None), *idx)] = (_critic(x + e, w, c, np) - _critic(x - e, w, c, np)) / (2 * h)
  return 0.5 * gamma * np.mean(np.sum(grads ** 2, axis=(1, 2, 3)))


def test_r1_r2_penalty_matches_central_finite_differences():
  rng = np.random.default_rng(0)
  x = rng.normal(size=(3, 2, 2, 1))
  w = rng.normal(size=(2, 2, 1))
  c, gamma = 0.3, 0.7
  penalty = lambda c: gan_objectives.zero_centered_gradient_penalty(
      lambda x: _critic(x, jnp.asarray(w, jnp.float32), c, jnp), jnp.asarray(x, jnp.float32),
      gamma)
  np.testing.assert_allclose(penalty(c), _fd_penalty(x, w, c, gamma), rtol=1e-5)
  # Differentiable w.r.t. D's parameters (double backprop): d penalty / dc against central
  # differences of the finite-difference penalty.
  dc = 1e-4
  want = (_fd_penalty(x, w, c + dc, gamma) - _fd_penalty(x, w, c - dc, gamma)) / (2 * dc)
  np.testing.assert_allclose(jax.grad(penalty)(c), want, rtol=1e-3)
  # Zero-centered: a D flat in x has no penalty, whatever its value.
  flat = gan_objectives.zero_centered_gradient_penalty(lambda x: jnp.sum(0 * x, (1, 2, 3)) + 5,
                                                       jnp.asarray(x, jnp.float32), gamma)
  assert float(flat) == 0.0


def test_rpgan_losses_match_their_closed_form():
  # D: E log(1 + exp(D(G(z_b)) - D(x_b))); G: E log(1 + exp(D(x_b) - D(G(z_b)))), row by row.
  d = gan_objectives.d_loss_relativistic_pairing(REAL, FAKE)
  g = gan_objectives.g_loss_relativistic_pairing(REAL, FAKE)
  np.testing.assert_allclose(d, np.mean(np.log1p(np.exp(FAKE - REAL))), rtol=1e-6)
  np.testing.assert_allclose(g, np.mean(np.log1p(np.exp(REAL - FAKE))), rtol=1e-6)
  # Pairs, not batch means: permuting the fakes changes the loss (a non-relativistic or
  # "relativistic average" loss would not change).
  perm = gan_objectives.d_loss_relativistic_pairing(REAL, FAKE[::-1].copy())
  assert abs(float(perm) - float(d)) > 1e-3
  # A shift of every logit by the same constant leaves both losses alone.
  np.testing.assert_allclose(gan_objectives.d_loss_relativistic_pairing(REAL + 4, FAKE + 4), d,
                             rtol=1e-6)


def test_rpgan_gradients_are_as_the_paper_states():
  # G's gradient w.r.t. fake logit b: -sigmoid(D(x_b) - D(G(z_b))) / B (large while the fake
  # scores below its partner); w.r.t. real logit b: the opposite. D's: sigmoid(f_b - r_b) / B
  # on the fake, its negative on the real.
  B = len(REAL)
  sig = lambda t: 1 / (1 + np.exp(-t))
  g_real, g_fake = jax.grad(gan_objectives.g_loss_relativistic_pairing, (0, 1))(REAL, FAKE)
  np.testing.assert_allclose(g_fake, -sig(REAL - FAKE) / B, rtol=1e-6)
  np.testing.assert_allclose(g_real, sig(REAL - FAKE) / B, rtol=1e-6)
  d_real, d_fake = jax.grad(gan_objectives.d_loss_relativistic_pairing, (0, 1))(REAL, FAKE)
  np.testing.assert_allclose(d_fake, sig(FAKE - REAL) / B, rtol=1e-6)
  np.testing.assert_allclose(d_real, -sig(FAKE - REAL) / B, rtol=1e-6)


def test_gamma_and_ema_follow_the_releases_cosine_schedules():
  method = build_method(load_config("dcgan", "smoke,loss=rpgan", **{
      "gan.gamma": 0.05, "gan.gamma_final_ratio": 0.1, "gan.ema_halflife_steps": 40.0,
      "train.num_steps": 300, "train.decay_steps": 100}), DataSpec.for_images((28, 28, 1)))
  at = lambda f, step: float(f(jnp.asarray(step)))
  # gamma: 0.05 at step 0, halfway along the cosine at 50, 0.005 at the horizon and after.
  np.testing.assert_allclose([at(method.gamma_at, s) for s in (0, 50, 100, 300)],
                             [0.05, 0.0275, 0.005, 0.005], rtol=1e-5)
  # EMA: half-life 0 at step 0 (the average is the weights), H/2 halfway, H at the horizon.
  np.testing.assert_allclose([at(method.ema_decay_at, s) for s in (0, 50, 100, 300)],
                             [0.0, 0.5 ** (1 / 20), 0.5 ** (1 / 40), 0.5 ** (1 / 40)],
                             rtol=1e-5, atol=1e-30)


@pytest.mark.parametrize("overrides,match", [
    ({"gan.d_norm": "batch"}, "without BatchNorm"),
    ({"gan.g_batch_multiple": 2}, "paired with one real"),
    ({"gan.gamma": -1.0}, "must be >= 0"),
    ({"gan.arch": "r3gan"}, "makes 32x32 images; the data is 28x28"),
])
def test_bad_rpgan_settings_are_config_errors(overrides, match):
  config = load_config("dcgan", "smoke,loss=rpgan", **overrides)
  with pytest.raises(ConfigError, match=match):
    build_method(config, DataSpec.for_images((28, 28, 1)))


def test_r3gan_cifar10_experiment_is_the_released_configuration():
  # train.py's CIFAR10 preset with --batch=512 --cond=1 --mirror=1 (the experiment's
  # docstring); the networks by shapes only.
  config = r3gan_cifar10.get_config()
  assert (config.gan.arch, config.gan.loss, config.model.num_classes) == ("r3gan", "rpgan", 10)
  assert config.train.batch_size == 2 * 512 and config.gan.alternate_minibatches
  assert config.train.decay_steps == 39_063 and config.data.random_flip
  assert config.gan.ema_halflife_steps == 5e6 / 512
  method = build_method(config, DataSpec.for_images((32, 32, 3)))
  state = jax.eval_shape(method.init, jax.random.key(0),
                         {"image": jnp.zeros((2, 32, 32, 3)), "label": jnp.zeros((2,), int)})
  counts = (count_params(state.params[G]), count_params(state.params[D]))
  assert counts == r3gan.CIFAR10_PARAM_COUNTS["conditional"]
  # Schedules: gamma 0.05 -> 0.005; G's Adam lr 2e-4 -> 5e-5 and beta2 0.9 -> 0.99 (D's
  # the same over its updates).
  np.testing.assert_allclose(float(method.gamma_at(jnp.asarray(39_063))), 0.005, rtol=1e-5)
  for step, lr, b2 in ((0, 2e-4, 0.9), (39_063, 5e-5, 0.99)):
    np.testing.assert_allclose([float(learning_rate_schedule(config.train)(step)),
                                float(adam_b2_schedule(config, 1)(step))], [lr, b2], rtol=1e-5)
  # G's Adam takes its beta2 from the schedule.
  assert float(method.tx_g.init({"w": jnp.zeros(2)}).hyperparams["b2"]) == pytest.approx(0.9)

