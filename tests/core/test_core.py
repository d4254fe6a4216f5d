"""gen_jax/core: the shared update (state creation, one optimizer step, step + EMA), the
optimizer from config, and the discretized Gaussian likelihood (Ho et al. 2020, Eq. 13)."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import scipy.stats
from smoke import load_config

from gen_jax.core import optimizer, probability, state

LEVELS = np.arange(256) / 127.5 - 1.0    # the 8-bit pixel levels in [-1, 1]


# -------------------------------------------------------------------------------- state


def test_create_with_one_optimizer_per_part_inits_each_on_its_part():
  params = {"generator": {"w": jnp.ones(2)}, "discriminator": {"v": jnp.ones(3)}}
  tx = {"generator": optax.adam(1e-3), "discriminator": optax.sgd(0.1, momentum=0.9)}
  s = state.TrainState.create(params, tx, model_state={"generator": {}, "discriminator": {}})
  expected = {name: t.init(params[name]) for name, t in tx.items()}
  assert jax.tree.structure(s.opt_state) == jax.tree.structure(expected)
  assert int(s.step) == 0 and s.ema_params is params
  with pytest.raises(ValueError, match="One optimizer per top-level entry"):
    state.TrainState.create(params, {"generator": optax.adam(1e-3)})


def test_optimizer_step_on_a_part_and_finish_step():
  tx = optax.sgd(0.5)
  params, opt_state, norms = state.optimizer_step(
      tx, {"w": jnp.array([1.0, 1.0])}, tx.init({"w": jnp.zeros(2)}),
      {"w": jnp.array([3.0, 4.0])})
  np.testing.assert_allclose(params["w"], [-0.5, -1.0])
  assert float(norms["grad_norm"]) == pytest.approx(5.0)
  assert float(norms["update_norm"]) == pytest.approx(2.5)

  s = state.TrainState.create({"w": jnp.zeros(2)}, tx)
  s = s.replace(step=jnp.array(90, jnp.int32))
  new = state.finish_step(s, 0.999, True, params=params, model_state={"n": jnp.ones(())})
  assert int(new.step) == 91 and float(new.model_state["n"]) == 1.0
  # The decay of the step just taken (warmup at step 90: 0.91), on the new params.
  np.testing.assert_allclose(new.ema_params["w"], 0.09 * np.array([-0.5, -1.0]), rtol=1e-6)
  tracked = state.finish_step(s, 0.0, params=params)
  np.testing.assert_array_equal(tracked.ema_params["w"], params["w"])


def test_a_gradient_tree_that_does_not_match_the_params_fails_at_trace_time():
  tx = optax.sgd(0.5)
  params = {"w": jnp.zeros(2), "b": jnp.zeros(())}
  with pytest.raises(AssertionError, match="shapes"):
    state.optimizer_step(tx, params, tx.init(params), {"w": jnp.zeros(3), "b": jnp.zeros(())})
  with pytest.raises(AssertionError):
    state.optimizer_step(tx, params, tx.init(params), {"w": jnp.zeros(2)})


# ---------------------------------------------------------------------------- optimizer


def _train_cfg(**fields):
  """The GPT smoke config's `train` group (it has every optimizer field), no warmup, decay,
  weight decay or clipping unless `fields` say so."""
  cfg = load_config("gpt").train
  cfg.update(dict(lr_decay="constant", warmup_steps=0, weight_decay=0.0, grad_clip=0.0))
  cfg.update(fields)
  return cfg


def test_adagrad_adds_the_l2_gradient_before_scaling():
  # Kingma & Welling §5: Adagrad; weight_decay is an L2 penalty: g + wd * w goes into the
  # accumulator (optax's initial value 0.1), so the first update is -lr g' / sqrt(0.1 + g'^2).
  tx = optimizer.make_optimizer(_train_cfg(optimizer="adagrad", lr=0.1, eps=1e-7,
                                           weight_decay=0.5))
  params = {"w": jnp.array([2.0, -4.0])}
  updates, _ = tx.update({"w": jnp.array([1.0, 0.0])}, tx.init(params), params)
  g = np.array([1.0 + 0.5 * 2.0, 0.5 * -4.0])
  np.testing.assert_allclose(updates["w"], -0.1 * g / np.sqrt(0.1 + g**2 + 1e-7), rtol=1e-6)
  with pytest.raises(ValueError, match="train.optimizer='sgd'"):
    optimizer.make_optimizer(_train_cfg(optimizer="sgd"))


def test_a_given_schedule_replaces_the_configs():
  tx = optimizer.make_optimizer(_train_cfg(optimizer="adam", lr=1.0, eps=1e-4),
                                schedule=lambda count: 0.1 * (count + 1))
  params = {"w": jnp.zeros(())}
  opt_state = tx.init(params)
  for count in range(3):   # Adam's step is lr * g / (|g| + eps) while the moments agree
    updates, opt_state = tx.update({"w": jnp.ones(())}, opt_state, params)
    np.testing.assert_allclose(float(updates["w"]), -0.1 * (count + 1) / (1 + 1e-4), rtol=1e-4)


def test_schedule_stretched_over_updates_per_step_follows_the_train_steps():
  # A GAN's critic takes n_critic updates per train step: update n_critic * t has the
  # learning rate of train step t, through warmup and cosine decay to decay_steps.
  cfg = _train_cfg(lr=1e-3, lr_decay="cosine", warmup_steps=10, decay_steps=60,
                   num_steps=110)
  base, stretched = (optimizer.learning_rate_schedule(cfg),
                     optimizer.learning_rate_schedule(cfg, updates_per_step=5))
  for t in (0, 3, 10, 35, 60, 100):
    assert float(stretched(5 * t)) == pytest.approx(float(base(t)), rel=1e-5), t
  assert float(stretched(50)) == pytest.approx(1e-3)    # warmup ends at 5 x 10 updates


# ------------------------------------------------ discretized Gaussian (Ho et al. Eq. 13)


def _reference_log_likelihood(x, mean, log_scale):
  """Float64 log P(x) from scipy.stats.norm: the bin [x - 1/255, x + 1/255], open at the edge
  levels; each mass taken on the side where it is not a difference of numbers near 1."""
  norm = scipy.stats.norm
  x, mean, log_scale = np.broadcast_arrays(*(np.asarray(a, np.float64)
                                             for a in (x, mean, log_scale)))
  out = np.empty(x.shape)
  for i in np.ndindex(x.shape):
    s = np.exp(log_scale[i])
    lo, hi = (x[i] - mean[i] - 1 / 255) / s, (x[i] - mean[i] + 1 / 255) / s
    if x[i] < -0.999:
      out[i] = norm.logcdf(hi)
    elif x[i] > 0.999:
      out[i] = norm.logsf(lo)
    elif lo > 0:
      out[i] = norm.logsf(lo) + np.log(-np.expm1(norm.logsf(hi) - norm.logsf(lo)))
    elif hi < 0:
      out[i] = norm.logcdf(hi) + np.log(-np.expm1(norm.logcdf(lo) - norm.logcdf(hi)))
    else:
      out[i] = np.log(norm.cdf(hi) - norm.cdf(lo))
  return out


MEANS = np.array([-3.0, -1.0, -0.5, 0.0, 1.0 / 255.0, 0.3, 1.0, 1.7])
LOG_SCALES = np.array([-10.0, -6.0, -4.0, -2.0, 0.0, 2.0, 5.0])


def test_discretized_gaussian_matches_scipy_on_a_grid():
  # Every level x every mean x every scale, from 1e-6 of a bin width to 150 (float64: the
  # formula; float32: what training sees).
  x, mean, log_scale = LEVELS[:, None, None], MEANS[None, :, None], LOG_SCALES[None, None, :]
  expected = _reference_log_likelihood(x, mean, log_scale)
  with jax.enable_x64(True):
    got64 = probability.discretized_gaussian_log_likelihood(
        *(jnp.asarray(a, jnp.float64) for a in (x, mean, log_scale)))
  np.testing.assert_allclose(got64, expected, rtol=1e-8)
  got32 = probability.discretized_gaussian_log_likelihood(
      *(jnp.asarray(a, jnp.float32) for a in (x, mean, log_scale)))
  # float32: a bin much narrower than the scale is a difference of nearby CDF values
  # (relative error ~2e-4 at scale e^5); elsewhere ~3e-5.
  # Values below float32's range (e.g. -7e-50) read -0.
  np.testing.assert_allclose(got32, expected, rtol=3e-4, atol=1e-30)
  np.testing.assert_allclose(got32[..., :-1], expected[..., :-1], rtol=5e-5, atol=1e-30)


def test_discretized_gaussian_probabilities_of_the_256_levels_sum_to_one():
  x = jnp.asarray(LEVELS, jnp.float32)[:, None, None]
  log_p = probability.discretized_gaussian_log_likelihood(
      x, jnp.asarray(MEANS, jnp.float32)[:, None], jnp.asarray(LOG_SCALES, jnp.float32))
  np.testing.assert_allclose(np.exp(np.asarray(log_p, np.float64)).sum(0), 1.0, atol=2e-5)


def test_discretized_gaussian_gradients_are_finite_on_extreme_inputs():
  # The VAE trains through it: means far outside [-1, 1], scales from 1e-13 to 5e8, the edge
  # levels and interior ones. (Below a scale of ~1e-17 the true gradient, ~(x - mean) /
  # scale^2, exceeds float32.)
  x = jnp.asarray(LEVELS[[0, 1, 64, 128, 129, 200, 254, 255]], jnp.float32)[:, None, None]
  mean = jnp.array([-1e4, -100.0, -3.0, -1.0, -0.5, 0.0, 1.0 / 255.0, 0.5, 1.0, 3.0, 100.0,
                    1e4])[:, None]
  log_scale = jnp.array([-30.0, -20.0, -10.0, -5.0, -1.0, 0.0, 5.0, 20.0])
  f = probability.discretized_gaussian_log_likelihood
  assert np.all(np.isfinite(f(x, mean, log_scale)))
  for argnum in (0, 1, 2):
    grad = jax.grad(lambda *a: jnp.sum(f(*jnp.broadcast_arrays(*a))), argnums=argnum)(
        x, mean, log_scale)
    assert np.all(np.isfinite(grad)), argnum


def test_discretized_gaussian_gradients_match_the_closed_form():
  # d/d mean log P = (phi(lo) - phi(hi)) / (s P), P = Phi(hi) - Phi(lo), in float64 (written
  # with log P, so deep-tail bins are compared too).
  x, mean, log_scale = np.meshgrid(LEVELS[[1, 100, 128, 250]], [-0.7, 0.0, 0.4],
                                   [-3.0, -1.0, 0.5], indexing="ij")
  s = np.exp(log_scale)
  lo, hi = (x - mean - 1 / 255) / s, (x - mean + 1 / 255) / s
  log_p = _reference_log_likelihood(x, mean, log_scale)
  logpdf = scipy.stats.norm.logpdf
  expected = (np.exp(logpdf(lo) - log_p) - np.exp(logpdf(hi) - log_p)) / s
  with jax.enable_x64(True):
    got = jax.grad(lambda m: jnp.sum(probability.discretized_gaussian_log_likelihood(
        jnp.asarray(x), m, jnp.asarray(log_scale))))(jnp.asarray(mean))
  np.testing.assert_allclose(got, expected, rtol=1e-6)
