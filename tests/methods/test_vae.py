"""VAE / IWAE math (gen_jax/methods/vae.py), the paper networks (gen_jax/models/vae.py) and
the binarization options of the data pipeline."""
import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
import scipy.stats
from smoke import load_config

from gen_jax import data
from gen_jax.core.state import count_params
from gen_jax.methods import vae as V
from gen_jax.models.vae import build_vae

IMAGE = (28, 28, 1)


def tiny_problem(seed=0, batch=3, latent=4, hidden=(16,)):
  """A small random Bernoulli VAE, binary images, and its posterior (mean, log_var)."""
  model = build_vae(arch="mlp", image_shape=IMAGE, latent_dim=latent, hidden=hidden,
                    params_per_value=1)
  k_init, k_x = jax.random.split(jax.random.key(seed))
  x = (jax.random.uniform(k_x, (batch, *IMAGE)) < 0.3).astype(jnp.float32)
  params = jax.jit(model.init)(k_init, x)["params"]
  encode = jax.jit(lambda p, x: model.apply({"params": p}, x, method=model.encode))
  mean, log_var = encode(params, x)
  decode = lambda z: model.apply({"params": params}, z, method=model.decode)
  return decode, x, mean, log_var


# ------------------------------------------------------------------------ distributions


def test_analytic_kl_matches_monte_carlo():
  # K&W App. B against E_q[log q(z|x) - log p(z)] from 200k samples; tolerance = 5 standard
  # errors of the Monte-Carlo mean.
  k1, k2, k3 = jax.random.split(jax.random.key(1), 3)
  mean = jax.random.normal(k1, (3, 5))
  log_var = 0.8 * jax.random.normal(k2, (3, 5))
  eps = jax.random.normal(k3, (200_000, 3, 5))
  z = V.reparameterize(mean, log_var, eps)
  samples = np.asarray(V.posterior_log_prob(eps, log_var) - V.standard_normal_log_prob(z))
  mc, se = samples.mean(0), samples.std(0) / math.sqrt(samples.shape[0])
  analytic = np.asarray(V.kl_to_standard_normal(mean, log_var))
  assert np.all(np.abs(analytic - mc) < 5 * se), (analytic, mc, se)
  assert np.all(analytic > 0)


def test_posterior_log_prob_is_the_gaussian_density():
  mean, log_var = jnp.array([[0.3, -1.0]]), jnp.array([[0.2, -0.7]])
  eps = jnp.array([[[0.5, -1.5]]])
  z = V.reparameterize(mean, log_var, eps)
  expected = scipy.stats.norm.logpdf(np.asarray(z), np.asarray(mean),
                                     np.exp(0.5 * np.asarray(log_var))).sum(-1)
  np.testing.assert_allclose(V.posterior_log_prob(eps, log_var), expected, rtol=1e-5)
  np.testing.assert_allclose(V.standard_normal_log_prob(z),
                             scipy.stats.norm.logpdf(np.asarray(z)).sum(-1), rtol=1e-5)


def test_bernoulli_log_prob_hand_computed():
  # x = 1 0 / 1 0 with p = .8 .3 / .5 .9: log .8 + log .7 + log .5 + log .1
  x = jnp.array([1.0, 0.0, 1.0, 0.0]).reshape(1, 2, 2, 1)
  p = jnp.array([0.8, 0.3, 0.5, 0.9]).reshape(1, 2, 2, 1)
  expected = math.log(0.8) + math.log(0.7) + math.log(0.5) + math.log(0.1)
  np.testing.assert_allclose(V.bernoulli_log_prob(x, jnp.log(p / (1 - p))), [expected],
                             rtol=1e-6)
  # Stable far in the tails (no log(0)): p = sigmoid(-100) for an "on" pixel.
  assert np.isclose(float(V.bernoulli_log_prob(jnp.ones((1, 1, 1, 1)),
                                               jnp.full((1, 1, 1, 1), -100.0))[0]), -100.0)


def test_gaussian_log_prob_matches_scipy():
  k1, k2, k3 = jax.random.split(jax.random.key(2), 3)
  x, mean = jax.random.uniform(k1, (2, 4, 4, 1), minval=-1), jax.random.normal(k2, (2, 4, 4, 1))
  log_var = jax.random.normal(k3, (2, 4, 4, 1))
  expected = scipy.stats.norm.logpdf(np.asarray(x), np.asarray(mean),
                                     np.exp(0.5 * np.asarray(log_var))).sum((1, 2, 3))
  np.testing.assert_allclose(V.gaussian_log_prob(x, mean, log_var), expected, rtol=1e-5)


@pytest.mark.parametrize("mean,log_var", [(0.1, -3.0), (-0.95, -8.0), (0.99, 0.0), (0.3, -12.0)])
def test_discretized_gaussian_is_a_distribution_over_the_256_levels(mean, log_var):
  # The decoder output is (mean, log sigma^2) per pixel; summing P over every pixel level
  # must give 1 (per pixel), including the open edge bins.
  levels = (jnp.arange(256, dtype=jnp.float32) / 127.5 - 1.0).reshape(256, 1, 1, 1)
  log_p_fn = lambda m, v: V.data_log_prob(
      "discretized_gaussian", levels,
      jnp.concatenate([jnp.full_like(levels, m), jnp.full_like(levels, v)], axis=-1))
  log_p = log_p_fn(mean, log_var)
  np.testing.assert_allclose(float(jnp.sum(jnp.exp(log_p))), 1.0, atol=2e-4)
  # sigma = exp(log_var / 2): the (interior) level nearest the mean against scipy.
  w, sigma, k = 1.0 / 255.0, math.exp(0.5 * log_var), round((mean + 1.0) * 127.5)
  x = float(levels[k, 0, 0, 0])
  cdf = lambda t: scipy.stats.norm.cdf(t, mean, sigma)
  np.testing.assert_allclose(float(log_p[k]), np.log(cdf(x + w) - cdf(x - w)), rtol=1e-4)
  # A bin far from the mean is tiny, not -inf or NaN; so are the gradients (the VAE trains
  # through it).
  assert np.all(np.isfinite(np.asarray(log_p)))
  grads = jax.grad(lambda m, v: jnp.sum(log_p_fn(m, v)), argnums=(0, 1))(mean, log_var)
  assert np.all(np.isfinite(np.asarray(grads)))


# ------------------------------------------------------------------------------ bounds


def test_iwae_bound_with_k1_equals_the_elbo_of_the_same_sample():
  decode, x, mean, log_var = tiny_problem()
  eps = V.sample_eps(jax.random.key(3), jnp.arange(1), (x.shape[0], mean.shape[-1]))

  @jax.jit
  def both(eps):
    log_w = V.log_importance_weights(decode, "bernoulli", x, mean, log_var, eps)
    # K&W Eq. 6 (generic SGVB, L=1) at the same z: log p(x|z) + log p(z) - log q(z|x).
    z = V.reparameterize(mean, log_var, eps[0])
    sgvb_a = (V.bernoulli_log_prob(x, decode(z)) + V.standard_normal_log_prob(z)
              - V.posterior_log_prob(eps[0], log_var))
    return V.iwae_bound(log_w), sgvb_a

  bound, sgvb_a = both(eps)
  np.testing.assert_allclose(bound, sgvb_a, rtol=1e-6)


def test_iwae_k1_and_analytic_elbo_agree_in_expectation():
  # Eq. 6 (sampled KL) and Eq. 10 (analytic KL) estimate the same ELBO: over 4000 samples
  # their means agree within 5 standard errors of the difference.
  decode, x, mean, log_var = tiny_problem()
  eps = V.sample_eps(jax.random.key(4), jnp.arange(4000), (x.shape[0], mean.shape[-1]))
  log_px, log_pz, log_qz = jax.jit(
      lambda e: V.sample_log_probs(decode, "bernoulli", x, mean, log_var, e))(eps)
  diff = np.asarray((log_px + log_pz - log_qz) - (log_px - V.kl_to_standard_normal(mean, log_var)))
  se = diff.std(0) / math.sqrt(diff.shape[0])
  assert np.all(np.abs(diff.mean(0)) < 5 * se + 1e-4), (diff.mean(0), se)
  recon, kl = V.elbo_terms(log_px, mean, log_var)
  np.testing.assert_allclose(recon, np.asarray(log_px).mean(0), rtol=1e-6)


def test_iwae_bound_increases_with_k_on_average():
  # Burda et al. Theorem 1: E L_1 <= E L_5 <= E L_50. 400 independent estimates of each;
  # for this untrained model the steps are many standard errors wide (a bug that, e.g.,
  # averages log w instead of log-mean-exp would make all three equal).
  decode, x, mean, log_var = tiny_problem(batch=2)
  B, L = x.shape[0], mean.shape[-1]
  means, ses = {}, {}
  for k in (1, 5, 50):
    reps = 400
    eps = V.sample_eps(jax.random.key(k), jnp.arange(reps * k), (B, L)).reshape(reps, k, B, L)
    bounds = jax.jit(jax.vmap(lambda e: V.iwae_bound(
        V.log_importance_weights(decode, "bernoulli", x, mean, log_var, e))))(eps)
    bounds = np.asarray(bounds)
    means[k], ses[k] = bounds.mean(0), bounds.std(0) / math.sqrt(reps)
  for lo, hi in ((1, 5), (5, 50)):
    assert np.all(means[hi] - means[lo] > 3 * np.sqrt(ses[hi]**2 + ses[lo]**2)), (means, ses)


def test_chunked_k_sample_estimate_equals_unchunked():
  decode, x, mean, log_var = tiny_problem()
  B, L, k = x.shape[0], mean.shape[-1], 120
  rng = jax.random.key(5)
  log_w_fn = lambda eps: V.log_importance_weights(decode, "bernoulli", x, mean, log_var, eps)
  direct = jax.jit(lambda r: V.iwae_bound(log_w_fn(V.sample_eps(r, jnp.arange(k), (B, L)))))(rng)
  estimate = jax.jit(V.iwae_log_likelihood, static_argnums=(0, 2, 3, 4))
  one_chunk, elbo_one = estimate(log_w_fn, rng, k, k, (B, L))
  many, elbo_many = estimate(log_w_fn, rng, k, 12, (B, L))
  np.testing.assert_allclose(one_chunk, direct, rtol=1e-5)
  np.testing.assert_allclose(many, direct, rtol=1e-5)
  np.testing.assert_allclose(elbo_many, elbo_one, rtol=1e-5)
  assert np.all(np.asarray(many) >= np.asarray(elbo_many))   # Jensen, same samples
  with pytest.raises(ValueError, match="multiple of chunk"):
    V.iwae_log_likelihood(log_w_fn, rng, k, 7, (B, L))


# ----------------------------------------------------------------------------- networks


def _dense(n_in, n_out):
  return n_in * n_out + n_out


def test_burda_network_shapes_and_parameter_count():
  model = build_vae(arch="mlp", image_shape=IMAGE, latent_dim=50, hidden=(200, 200),
                    params_per_value=1)
  x = jnp.zeros((2, *IMAGE))
  params = jax.eval_shape(model.init, jax.random.key(0), x)["params"]
  # encoder 784-200-200-(50 mean, 50 log-var); decoder 50-200-200-784
  expected = (_dense(784, 200) + _dense(200, 200) + 2 * _dense(200, 50)
              + _dense(50, 200) + _dense(200, 200) + _dense(200, 784))
  assert expected == 425_284
  assert count_params(params) == expected
  mean, log_var = jax.eval_shape(lambda p: model.apply({"params": p}, x, method=model.encode),
                                 params)
  assert mean.shape == log_var.shape == (2, 50)
  out = jax.eval_shape(lambda p: model.apply({"params": p}, jnp.zeros((7, 2, 50)),
                                             method=model.decode), params)
  assert out.shape == (7, 2, 28, 28, 1)


def test_kingma_welling_network_parameter_count():
  # One hidden layer of 500 units (K&W §5), latent 20, Gaussian decoder for continuous data:
  # mean and log-variance per pixel.
  model = build_vae(arch="mlp", image_shape=IMAGE, latent_dim=20, hidden=(500,),
                    params_per_value=2)
  params = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, *IMAGE)))["params"]
  expected = _dense(784, 500) + 2 * _dense(500, 20) + _dense(20, 500) + _dense(500, 2 * 784)
  assert count_params(params) == expected == 1_208_608


def test_decoder_parameter_blocks_are_mean_then_log_var():
  # The Gaussian decoder's output splits into (mean, log_var) per pixel: with the output
  # layer's log-variance half of the bias set to 7, only the second block reads 7.
  model = build_vae(arch="mlp", image_shape=(4, 4, 3), latent_dim=2, hidden=(8,),
                    params_per_value=2)
  params = model.init(jax.random.key(0), jnp.zeros((1, 4, 4, 3)))["params"]
  out_layer = params["decoder"]["out"]
  bias = np.zeros((4 * 4 * 3, 2), np.float32)
  bias[:, 1] = 7.0   # the Dense features are ordered (pixel, channel, parameter)
  out_layer["bias"] = jnp.asarray(bias.reshape(-1))
  out_layer["kernel"] = jnp.zeros_like(out_layer["kernel"])
  out = model.apply({"params": params}, jnp.zeros((1, 2)), method=model.decode)
  mean, log_var = V.split_decoder_output("discretized_gaussian", out)
  assert np.all(np.asarray(mean) == 0) and np.all(np.asarray(log_var) == 7)


@pytest.mark.parametrize("shape", [(28, 28, 1), (32, 32, 3)])
def test_conv_variant_shapes(shape):
  model = build_vae(arch="conv", image_shape=shape, latent_dim=8, hidden=(32,),
                    params_per_value=2, conv_channels=(4, 8), activation="relu")
  x = jnp.zeros((3, *shape))
  params = jax.eval_shape(model.init, jax.random.key(0), x)["params"]
  mean, _ = jax.eval_shape(lambda p: model.apply({"params": p}, x, method=model.encode), params)
  assert mean.shape == (3, 8)
  out = jax.eval_shape(lambda p: model.apply({"params": p}, jnp.zeros((5, 3, 8)),
                                             method=model.decode), params)
  assert out.shape == (5, 3, *shape[:2], 2 * shape[2])
  with pytest.raises(ValueError, match="divisible by 8"):
    build_vae(arch="conv", image_shape=(28, 28, 1), latent_dim=8, hidden=(32,),
              params_per_value=1, conv_channels=(4, 8, 16))


def test_conv_decoder_leading_dims_are_independent_decodes():
  # [K, B, L] must give decode(z[k]) at [k] (the decoder folds K into its batch dim).
  model = build_vae(arch="conv", image_shape=IMAGE, latent_dim=8, hidden=(16,),
                    params_per_value=1, conv_channels=(4, 8), activation="relu")
  params = jax.jit(model.init)(jax.random.key(0), jnp.zeros((1, *IMAGE)))["params"]
  decode = jax.jit(lambda z: model.apply({"params": params}, z, method=model.decode))
  z = jax.random.normal(jax.random.key(1), (2, 3, 8))
  np.testing.assert_allclose(decode(z)[1], decode(z[1]), rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------- schedule, grid, config


def test_burda_learning_rate_schedule():
  sched = V.burda2016_lr_schedule(1e-3, steps_per_epoch=10, num_stages=8)
  # stage i covers 3^i epochs: epochs [0,1) [1,4) [4,13) [13,40) ... [1093, 3280) (the paper's
  # 3280 epochs in 8 stages)
  for count, stage in [(0, 0), (9, 0), (10, 1), (39, 1), (40, 2), (129, 2), (130, 3),
                       (10_929, 6), (10_930, 7), (32_799, 7), (10**6, 7)]:
    np.testing.assert_allclose(float(sched(count)), 1e-3 * 10 ** (-stage / 7), rtol=1e-5,
                               err_msg=f"count {count}")


def test_adam_settings_and_schedule_reach_the_optimizer():
  config = load_config("vae", **{"vae.lr_schedule": "burda2016", "vae.train_examples": 40,
                                 "train.batch_size": 4, "train.lr": 1.0, "train.eps": 1e-4})
  tx = V.VAEMethod.from_config(config, IMAGE).tx
  params = {"w": jnp.zeros(())}
  state = tx.init(params)
  # Adam's first update is -lr * g / (|g| + eps); steps/epoch = 10, so update 10 is stage 1.
  for count in range(11):
    updates, state = tx.update({"w": jnp.ones(())}, state, params)
    lr = 1.0 if count < 10 else 10 ** (-1 / 7)
    np.testing.assert_allclose(float(updates["w"]), -lr / (1 + 1e-4), rtol=1e-4)


def test_manifold_latents_follow_the_inverse_gaussian_cdf():
  z = V.manifold_latents(5)
  assert z.shape == (25, 2)
  u = scipy.stats.norm.cdf(z)
  np.testing.assert_allclose(np.sort(np.unique(u[:, 1].round(6))), (np.arange(5) + 0.5) / 5,
                             rtol=1e-5)
  assert z[0, 0] > z[-1, 0] and z[0, 1] < z[-1, 1]   # z1 down the rows, z2 along them


def test_config_errors_are_clear():
  from gen_jax.methods.vae import VAEMethod
  bad = load_config("vae", **{"data.binarize": "none"})
  with pytest.raises(ValueError, match="Bernoulli decoder needs binary data"):
    VAEMethod.from_config(bad, IMAGE)
  bad = load_config("vae", **{"vae.eval_k": 25})
  with pytest.raises(ValueError, match="multiple of vae.eval_chunk"):
    VAEMethod.from_config(bad, IMAGE)
  bad = load_config("vae", **{"vae.lr_schedule": "stepwise"})
  with pytest.raises(ValueError, match="lr_schedule"):
    VAEMethod.from_config(bad, IMAGE)


# --------------------------------------------------------------------------- method


def test_train_steps_reduce_the_loss_on_a_fixed_batch():
  config = load_config("vae", **{"train.lr": 1e-2})
  method = V.VAEMethod.from_config(config, IMAGE)
  state = jax.jit(method.init, static_argnums=1)(jax.random.key(0), None)
  x = (jax.random.uniform(jax.random.key(1), (16, *IMAGE)) < 0.2).astype(jnp.float32)
  step = jax.jit(method.train_step)
  losses = []
  for i in range(30):
    state, metrics = step(state, {"image": x}, jax.random.key(i))
    losses.append(float(metrics["loss"]))
  assert losses[-1] < losses[0] - 50, losses
  np.testing.assert_allclose(metrics["loss"], metrics["kl"] - metrics["recon"], rtol=1e-5)


def test_iwae_objective_trains_and_matches_the_bound():
  config = load_config("vae", **{"vae.objective": "iwae", "vae.train_k": 5})
  method = V.VAEMethod.from_config(config, IMAGE)
  state = jax.jit(method.init, static_argnums=1)(jax.random.key(0), None)
  x = (jax.random.uniform(jax.random.key(1), (8, *IMAGE)) < 0.2).astype(jnp.float32)
  rng = jax.random.key(2)

  @jax.jit
  def bound_and_mean_log_w(params):
    eps = V.sample_eps(rng, jnp.arange(5), (x.shape[0], method.latent_dim))
    bound, _, _ = method.bound_at_eps(params, x, eps, "iwae")
    mean, log_var = method.encode(params, x)
    log_w = V.log_importance_weights(method.decode_fn(params), "bernoulli", x, mean,
                                     log_var, eps)
    return bound, log_w.mean(0)

  bound, mean_log_w = bound_and_mean_log_w(state.params)
  _, metrics = jax.jit(method.train_step)(state, {"image": x}, rng)
  np.testing.assert_allclose(metrics["loss"], -jnp.mean(bound), rtol=1e-5)
  assert np.isfinite(float(metrics["grad_norm"]))
  # Same 5 samples: log-mean-exp of the weights is above their mean log (Jensen).
  assert np.all(np.asarray(bound) > np.asarray(mean_log_w))


def test_monte_carlo_elbo_trains_the_mean_log_weight_and_k1_iwae_equals_it():
  # vae.elbo='monte_carlo' (K&W Eq. 6; yburda/iwae's VAE: T.sum(log_ws) / num_samples).
  config = load_config("vae", **{"vae.elbo": "monte_carlo"})
  method = V.VAEMethod.from_config(config, IMAGE)
  state = jax.jit(method.init, static_argnums=1)(jax.random.key(0), None)
  x = (jax.random.uniform(jax.random.key(1), (8, *IMAGE)) < 0.2).astype(jnp.float32)
  rng = jax.random.key(2)
  shape = (x.shape[0], method.latent_dim)

  @jax.jit
  def bounds(params, eps):
    mean, log_var = method.encode(params, x)
    log_w = V.log_importance_weights(method.decode_fn(params), "bernoulli", x, mean, log_var,
                                     eps)
    return (method.bound_at_eps(params, x, eps, "elbo", "monte_carlo")[0],
            method.bound_at_eps(params, x, eps, "iwae")[0],
            method.bound_at_eps(params, x, eps, "elbo", "analytic_kl")[0], log_w)

  # One sample: the IWAE bound L_1 and the Monte-Carlo ELBO are the same number.
  mc1, iwae1, _, log_w1 = bounds(state.params, V.sample_eps(rng, jnp.arange(1), shape))
  np.testing.assert_array_equal(mc1, iwae1)
  np.testing.assert_array_equal(mc1, log_w1[0])
  _, metrics = jax.jit(method.train_step)(state, {"image": x}, rng)
  np.testing.assert_allclose(metrics["loss"], -jnp.mean(mc1), rtol=1e-6)
  # Many samples: its mean matches the analytic-KL ELBO (both estimate the same bound)
  # within 5 standard errors of the per-sample difference.
  eps = V.sample_eps(jax.random.key(3), jnp.arange(4000), shape)
  mc, _, analytic, log_w = bounds(state.params, eps)
  np.testing.assert_allclose(mc, np.asarray(log_w).mean(0), rtol=1e-5)
  mean, log_var = method.encode(state.params, x)
  log_px, _, _ = V.sample_log_probs(method.decode_fn(state.params), "bernoulli", x, mean,
                                    log_var, eps)
  per_sample_analytic = np.asarray(log_px - V.kl_to_standard_normal(mean, log_var))
  se = (np.asarray(log_w) - per_sample_analytic).std(0) / math.sqrt(4000)
  assert np.all(np.abs(np.asarray(mc) - np.asarray(analytic)) < 5 * se + 1e-3), (mc, analytic, se)


def test_elbo_estimator_defaults_per_recipe():
  import importlib
  assert load_config("vae", None).vae.elbo == "analytic_kl"
  burda = importlib.import_module("gen_jax.experiments.burda2016_iwae.mnist")
  assert burda.get_config().vae.elbo == "monte_carlo"
  assert burda.get_config("objective=iwae,k=5").vae.objective == "iwae"
  kingma = importlib.import_module("gen_jax.experiments.kingma2014_vae.mnist")
  assert kingma.get_config().vae.elbo == "analytic_kl"
  with pytest.raises(ValueError, match="vae.elbo='exact'"):
    V.VAEMethod.from_config(load_config("vae", **{"vae.elbo": "exact"}), IMAGE)


def test_continuous_eval_reports_psnr_and_ssim():
  config = load_config("vae", "smoke,continuous")
  method = V.VAEMethod.from_config(config, IMAGE)
  state = jax.jit(method.init, static_argnums=1)(jax.random.key(0), None)
  x = jax.random.randint(jax.random.key(1), (4, *IMAGE), 0, 256) / 127.5 - 1.0
  metrics = jax.jit(method.eval_step)(state, {"image": x}, jax.random.key(2))
  assert {"ema/recon_psnr", "ema/recon_ssim", "raw/nll_iwae_k20"} <= set(metrics)
  assert -1.0 <= float(metrics["ema/recon_ssim"]) <= 1.0 and float(metrics["ema/recon_psnr"]) > 0
  assert float(metrics["ema/nll_iwae_k20"]) <= -float(metrics["ema/elbo_k20"]) + 1e-3


# --------------------------------------------------------------------- binarization


def _loader(data_dir, binarize, seed, batch=500, **extra):
  cfg = ml_collections.ConfigDict(dict(dataset="mnist_5k", data_dir=data_dir, manual_dir="",
                                       random_flip=False, num_workers=0, binarize=binarize,
                                       **extra))
  return iter(data.make_image_loader(cfg, split="train", global_batch_size=batch, seed=seed,
                                     shuffle=False))


def test_dynamic_binarization_resamples_each_epoch_deterministically(data_dir):
  # mnist_5k train has 4500 images: with batch 500 and no shuffling, batch 9 holds the same
  # images as batch 0, seen in the second epoch.
  it = _loader(data_dir, "dynamic", seed=0)
  first = [next(it)["image"] for _ in range(10)]
  again = _loader(data_dir, "dynamic", seed=0)
  other_seed = _loader(data_dir, "dynamic", seed=1)
  epoch1, epoch2 = first[0], first[9]
  assert set(np.unique(epoch1)) <= {0.0, 1.0}
  assert np.mean(epoch1 != epoch2) > 0.01                   # resampled in the next epoch
  np.testing.assert_array_equal(next(again)["image"], epoch1)   # same seed, same samples
  assert np.mean(next(other_seed)["image"] != epoch1) > 0.01
  # P(pixel = 1) = intensity / 255 = (x + 1) / 2 for the [-1, 1] image x.
  x = next(_loader(data_dir, "none", seed=0))["image"]
  np.testing.assert_allclose(epoch1.mean(), ((x + 1) / 2).mean(), atol=3e-3)
  assert np.all(epoch1[x == -1.0] == 0) and np.all(epoch1[x == 1.0] == 1)


def test_fixed_binarization_is_one_sample_per_image(data_dir):
  it = _loader(data_dir, "fixed", seed=0)
  batches = [next(it)["image"] for _ in range(10)]
  np.testing.assert_array_equal(batches[0], batches[9])   # same sample in every epoch
  np.testing.assert_array_equal(next(_loader(data_dir, "fixed", seed=3))["image"], batches[0])
  other = next(_loader(data_dir, "fixed", seed=0, binarize_seed=1))["image"]
  assert np.mean(other != batches[0]) > 0.01
  assert set(np.unique(batches[0])) <= {0.0, 1.0}


def test_unknown_binarization_is_rejected(data_dir):
  with pytest.raises(ValueError, match="data.binarize"):
    _loader(data_dir, "otsu", seed=0)
