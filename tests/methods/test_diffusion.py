"""The DDPM/DDIM math, checked against independent derivations (no U-Net compiled here)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gen_jax.methods.diffusion import core as dc
from gen_jax.methods.diffusion import ddim as dd
from gen_jax.methods.diffusion import ddpm as dp
from gen_jax.methods.diffusion import method as d
from gen_jax.methods.diffusion import variances as dv

T = 50
BETAS = dc.linear_betas(T, 1e-3, 0.2)   # float64


@pytest.fixture(scope="module")
def sched():
  return dc.make_schedule(BETAS)


def l_simple(sched, network, x0, rng, target):
  """Ho et al. 2020, Eq. 14 (for target='eps') at a t ~ U{0..T-1} and eps ~ N(0, I) per
  example: the 'simple' objective of `ddpm_objective` (Alg. 1)."""
  t_B, noise = dp.sample_t_and_noise(sched, rng, x0.shape)
  return dp.ddpm_objective(sched, network, x0, t_B, noise, target=target)


def toy_denoiser(x, t_B):
  """A fixed nonlinear stand-in for eps_theta that depends on x and t."""
  return jnp.tanh(0.7 * x + 0.01 * t_B[:, None, None, None].astype(jnp.float32)) * 0.9


def test_linear_schedule_matches_paper_endpoints():
  betas = dc.linear_betas(1000)
  assert betas[0] == pytest.approx(1e-4) and betas[-1] == pytest.approx(0.02)
  assert np.all(np.diff(betas) > 0)


def test_closed_form_q_equals_composed_one_step_process(sched):
  # x_t = sqrt(1-beta_t) x_{t-1} + sqrt(beta_t) eps: the x_0 coefficient and the variance
  # after t steps, by recursion in float64, must equal sqrt(abar_t) and 1 - abar_t (Eq. 4).
  betas = BETAS
  coef, var = 1.0, 0.0
  for t in range(T):
    coef, var = np.sqrt(1 - betas[t]) * coef, (1 - betas[t]) * var + betas[t]
    np.testing.assert_allclose(coef, np.sqrt(sched.alphas_cumprod[t]), rtol=1e-5)
    np.testing.assert_allclose(var, 1 - sched.alphas_cumprod[t], rtol=1e-5, atol=1e-7)


def test_q_sample_statistics_match_composed_chain(sched):
  # Monte Carlo: run the one-step chain to t and compare with q_sample at t.
  n, t = 20000, 30
  x0 = jnp.full((n, 1, 1, 1), 0.8)
  x = x0
  for s, key in enumerate(jax.random.split(jax.random.key(0), t + 1)):
    noise = jax.random.normal(key, x.shape)
    x = jnp.sqrt(1 - sched.betas[s]) * x + jnp.sqrt(sched.betas[s]) * noise
  closed = dc.q_sample(sched, x0, jnp.full((n,), t), jax.random.normal(jax.random.key(1), x0.shape))
  se = float(jnp.std(closed)) / np.sqrt(n)
  assert abs(float(x.mean() - closed.mean())) < 5 * np.sqrt(2) * se
  assert float(x.var()) == pytest.approx(float(closed.var()), rel=0.05)


def test_posterior_coefficients_equal_gaussian_conditioning(sched):
  # q(x_{t-1}|x_0) = N(sqrt(abar_{t-1}) x_0, 1-abar_{t-1}),
  # q(x_t|x_{t-1}) = N(sqrt(a_t) x_{t-1}, b_t).
  # Bayes' rule for Gaussians gives the posterior of Eq. 6-7 independently of its closed form.
  betas = BETAS
  abar = np.cumprod(1 - betas)
  for t in range(1, T):
    prior_var, alpha = 1 - abar[t - 1], 1 - betas[t]
    post_var = 1.0 / (1.0 / prior_var + alpha / betas[t])
    np.testing.assert_allclose(sched.posterior_variance[t], post_var, rtol=1e-5)
    np.testing.assert_allclose(sched.posterior_mean_coef_x0[t],
                               post_var * np.sqrt(abar[t - 1]) / prior_var, rtol=1e-5)
    np.testing.assert_allclose(sched.posterior_mean_coef_xt[t],
                               post_var * np.sqrt(alpha) / betas[t], rtol=1e-5)
  assert float(sched.posterior_variance[0]) == 0.0   # x_0 is known given x_1 and x_0


def test_cosine_schedule_matches_its_formula():
  n = 1000
  sched = dc.make_schedule(dc.cosine_betas(n))
  f = lambda t: np.cos(((t / n + 0.008) / 1.008) * np.pi / 2) ** 2
  t = np.arange(1, n + 1)
  expected = f(t) / f(0)
  unclipped = dc.cosine_betas(n) < 0.999
  np.testing.assert_allclose(np.asarray(sched.alphas_cumprod)[unclipped][:-1],
                             expected[unclipped][:-1], rtol=2e-5, atol=1e-7)
  assert dc.cosine_betas(n).max() == pytest.approx(0.999)


@pytest.mark.parametrize("target", dp.TARGETS)
def test_targets_invert_and_oracle_has_zero_loss(sched, target):
  key = jax.random.key(3)
  x0 = jax.random.uniform(key, (6, 4, 4, 1), minval=-1, maxval=1)
  noise = jax.random.normal(jax.random.key(4), x0.shape)
  t_B = jnp.arange(6) * 9
  xt = dc.q_sample(sched, x0, t_B, noise)
  out = dp.training_target(sched, x0, noise, t_B, target)
  x0_hat, eps_hat = dp.x0_and_eps(sched, out, xt, t_B, target)
  np.testing.assert_allclose(x0_hat, x0, atol=2e-4)
  np.testing.assert_allclose(eps_hat, noise, atol=2e-4)

  # An oracle that knows x_0 predicts the exact target, so L_simple vanishes.
  def oracle(x_t, t):
    eps = dp.eps_from_x0(sched, x0, x_t, t)
    return dp.training_target(sched, x0, eps, t, target)
  assert float(l_simple(sched, oracle, x0, key, target)) < 1e-8
  assert float(l_simple(sched, lambda x, t: jnp.zeros_like(x), x0, key, target)) > 1e-2


def test_posterior_mean_at_predicted_x0_is_algorithm_2(sched):
  x = jax.random.normal(jax.random.key(5), (4, 3, 3, 1))
  t_B = jnp.array([1, 10, 25, 49])
  eps = toy_denoiser(x, t_B)
  x0, _ = dp.x0_and_eps(sched, eps, x, t_B, "eps")
  mean, _ = dc.q_posterior_mean_variance(sched, x0, x, t_B)
  beta, abar = sched.betas[t_B][:, None, None, None], sched.alphas_cumprod[t_B][:, None, None, None]
  alg2 = (x - beta / jnp.sqrt(1 - abar) * eps) / jnp.sqrt(1 - beta)
  np.testing.assert_allclose(mean, alg2, rtol=1e-4, atol=1e-5)


def test_ddim_eta1_all_steps_uses_ddpm_posterior_variance(sched):
  t = jnp.arange(1, T)
  np.testing.assert_allclose(dd.ddim_sigma(sched, t, t - 1, 1.0) ** 2,
                             sched.posterior_variance[1:], rtol=1e-4)
  assert float(dd.ddim_sigma(sched, jnp.array(0), jnp.array(-1), 1.0)) == 0.0


@pytest.mark.parametrize("clip_x0", [False, True])
def test_ddim_eta1_over_all_steps_is_the_ddpm_sampler(sched, clip_x0):
  key, shape = jax.random.key(7), (3, 4, 4, 1)
  ddpm = dp.ddpm_sample(toy_denoiser, sched, key, shape, variance="beta_tilde", clip_x0=clip_x0)
  ddim = dd.ddim_sample(toy_denoiser, sched, key, shape, num_steps=T, eta=1.0, clip_x0=clip_x0)
  np.testing.assert_allclose(ddim, ddpm, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("sampler", ["ddpm", "ddim"])
def test_samplers_are_pure_functions_of_their_key(sched, sampler):
  shape = (2, 4, 4, 1)
  run = jax.jit(lambda key: dp.ddpm_sample(toy_denoiser, sched, key, shape) if sampler == "ddpm"
                else dd.ddim_sample(toy_denoiser, sched, key, shape, num_steps=10, eta=0.5))
  a, b, c = run(jax.random.key(0)), run(jax.random.key(0)), run(jax.random.key(1))
  np.testing.assert_array_equal(a, b)
  assert not np.allclose(a, c)


def test_ddim_timesteps():
  np.testing.assert_array_equal(dd.ddim_timesteps(1000, 1000), np.arange(1000))
  ts = dd.ddim_timesteps(1000, 50)
  assert len(ts) == 50 and ts[0] == 0 and ts[-1] == 999 and np.all(np.diff(ts) > 0)
  with pytest.raises(ValueError, match="sample.steps"):
    dd.ddim_timesteps(10, 11)
  with pytest.raises(ValueError, match="sample.timesteps='cubic'"):
    dd.ddim_timesteps(10, 5, "cubic")


@pytest.mark.parametrize("T_,S", [(1000, 10), (1000, 20), (1000, 50), (1000, 100),
                                  (1000, 1000), (1000, 30), (4000, 100), (100, 7)])
def test_ddim_timesteps_are_song_et_al_released_code_formulas(T_, S):
  # ermongroup/ddim runners/diffusion.py, sample_image: skip_type 'uniform' is
  # range(0, T, T // S); 'quad' is [int(s) for s in linspace(0, sqrt(0.8 T), S) ** 2].
  uniform = list(range(0, T_, T_ // S))
  quad = [int(s) for s in list(np.linspace(0, np.sqrt(T_ * 0.8), S) ** 2)]
  np.testing.assert_array_equal(dd.ddim_timesteps(T_, S, "uniform"), uniform)
  np.testing.assert_array_equal(dd.ddim_timesteps(T_, S, "quad"), quad)
  assert dd.ddim_timesteps(T_, S, "linspace")[-1] == T_ - 1
  if S == 30:   # 1000 // 30 = 33: 31 steps, as the authors' code runs
    assert len(uniform) == 31


def test_mu_prediction_of_the_true_posterior_mean_has_zero_mean_loss(sched):
  # Ho et al. Table 2's mu~ prediction: a model that outputs mu~(x_t, x_0) has zero
  # ||mu~ - mu_theta||^2, and its bound terms for t >= 1 are only the variance mismatch,
  # zero with sigma^2 = beta~.
  x0 = jax.random.uniform(jax.random.key(2), (T, 4, 4, 1), minval=-1, maxval=1)
  t_B, noise = jnp.arange(T), jax.random.normal(jax.random.key(3), (T, 4, 4, 1))
  true_mean = lambda x_t, t: dc.q_posterior_mean_variance(sched, x0, x_t, t)[0]
  loss = lambda kind, var: float(dp.ddpm_objective(sched, true_mean, x0, t_B, noise,
                                                  target="mu", loss=kind, variance=var))
  assert loss("simple", "beta") == pytest.approx(0.0, abs=1e-10)
  from gen_jax.methods.diffusion import likelihood as dl
  kl = dl.vlb_terms(lambda p, x, t: true_mean(x, t), None, sched, x0, t_B, noise, target="mu",
                    variance="beta_tilde", clip_x0=False)
  np.testing.assert_allclose(kl[1:], 0.0, atol=1e-3)
  assert float(dp.ddpm_objective(sched, lambda x, t: 0 * x, x0, t_B, noise, target="mu")) > 0.1


def test_learned_range_variance_reduces_to_beta_and_beta_tilde_at_its_endpoints(sched):
  # Nichol & Dhariwal Eq. 15: Sigma = exp(v log beta_t + (1 - v) log beta~_t); the network's
  # output o in [-1, 1] is v = (o + 1) / 2, so o = 1 gives beta_t and o = -1 beta~_t.
  t_B = jnp.arange(1, T)
  ones = jnp.ones((T - 1, 2, 2, 1))
  at = lambda o: np.exp(np.asarray(dv.model_log_variance(sched, "learned_range", o * ones, t_B)))
  np.testing.assert_allclose(at(1.0)[:, 0, 0, 0], sched.betas[1:], rtol=1e-5)
  np.testing.assert_allclose(at(-1.0)[:, 0, 0, 0], sched.posterior_variance[1:], rtol=1e-5)
  np.testing.assert_allclose(dv.interpolated_log_variance(-3.0, -5.0, 0.25), -4.5)
  mid = at(0.0)[:, 0, 0, 0]
  assert np.all(mid < sched.betas[1:]) and np.all(mid > sched.posterior_variance[1:])
  # 'learned' is the network's log variance itself; fixed ones ignore the output.
  np.testing.assert_allclose(dv.model_log_variance(sched, "learned", -2.0 * ones, t_B), -2.0)
  assert dv.output_channels(3, "learned_range") == 6 and dv.output_channels(3, "beta") == 3


def learned_range_denoiser(x, t_B):
  return jnp.concatenate([toy_denoiser(x, t_B), jnp.tanh(x - 0.02 * t_B[:, None, None, None])], -1)


@pytest.mark.parametrize("variance", ["beta", "learned_range"])
def test_ddim_model_sigma_over_all_steps_is_the_ddpm_sampler(sched, variance):
  # Every sampler uses the model's variance: ancestral steps with sigma='model' over all T
  # steps are Alg. 2 with that variance (learned: from the network's second half).
  key, shape = jax.random.key(8), (3, 4, 4, 1)
  net = learned_range_denoiser if variance == "learned_range" else toy_denoiser
  ddpm = dp.ddpm_sample(net, sched, key, shape, variance=variance, clip_x0=False)
  ddim = dd.ddim_sample(net, sched, key, shape, num_steps=T, sigma="model", variance=variance,
                       clip_x0=False)
  np.testing.assert_allclose(ddim, ddpm, rtol=1e-4, atol=1e-4)
  mean_half = lambda x, t: net(x, t)[..., :1]
  other = dp.ddpm_sample(mean_half, sched, key, shape, variance="beta_tilde", clip_x0=False)
  assert not np.allclose(ddpm, other, atol=1e-3)


def test_flips_never_touch_eval_streams():
  # Random flips are training augmentation: the in-order eval stream (shuffle=False) reads
  # the same images with and without data.random_flip; the training stream flips some.
  import ml_collections

  from gen_jax.data import pipeline
  cfg = lambda flip: ml_collections.ConfigDict(dict(dataset="mnist_5k", data_dir="",
                                                    manual_dir="", random_flip=flip))
  read = lambda flip, shuffle: next(iter(pipeline.make_image_loader(
      cfg(flip), split="test", global_batch_size=64, seed=0, shuffle=shuffle,
      num_epochs=1)))["image"]
  np.testing.assert_array_equal(read(True, False), read(False, False))
  train_flip, train = read(True, True), read(False, True)
  assert not np.array_equal(train_flip, train)
  np.testing.assert_array_equal(np.sort(train_flip.ravel()), np.sort(train.ravel()))


def test_paper_configs_pin_the_authors_choices():
  # Song et al.'s code for CIFAR-10: quad subsequence, no x0 clipping in generalized_steps,
  # sigma-hat by ddpm_steps (ancestral, beta, clipped); Table 1's 5 x 5 grid over ONE
  # trained checkpoint (sampler fields only). Defaults of configs/ddpm.py are unchanged.
  from gen_jax.configs import ddpm
  from gen_jax.experiments.ho2020_ddpm import cifar10 as ho
  from gen_jax.experiments.song2021_ddim import cifar10 as song
  from gen_jax.experiments.song2021_ddim import mnist as song_mnist
  base = ddpm.get_config()
  assert (base.sample.timesteps, base.sample.ddim_sigma, base.sample.clip_x0) == (
      "linspace", "eta", True)
  assert (base.diffusion.loss, base.diffusion.variance, base.eval.checkpoint_from) == (
      "simple", "fixed", "")
  assert ho.get_config().eval.bpd_num_images == 10_000   # the whole CIFAR-10 test set
  c = song.get_config()
  assert (c.sample.timesteps, c.sample.clip_x0, c.eval.checkpoint_from) == (
      "quad", False, "runs/ddpm_cifar10")
  sweep = song.get_sweep()
  assert len(sweep) == 25 and all(k.startswith("sample.") for o in sweep for k in o)
  assert sorted({o.get("sample.eta") for o in sweep} - {None}) == [0.0, 0.2, 0.5, 1.0]
  hat = [o for o in sweep if o.get("sample.ddim_sigma") == "model"]
  assert len(hat) == 5 and all(o["sample.clip_x0"] and o["sample.variance"] == "beta" for o in hat)
  m = song_mnist.get_config()
  assert m.eval.checkpoint_from.endswith("target=eps,loss=simple,variance=fixed")
  assert all(k.startswith("sample.") for o in song_mnist.get_sweep() for k in o)


def test_table2_rows_and_the_learned_variance_output_head():
  from gen_jax.experiments.ho2020_ddpm import table2_mnist
  rows = table2_mnist.get_sweep()
  assert len(rows) == 7 and {r["diffusion.target"] for r in rows} == {"eps", "mu"}
  params = {}
  for variance in ("fixed", "learned"):
    c = table2_mnist.get_config()
    c.diffusion.variance = variance
    m = d.DiffusionMethod.from_config(c, (28, 28, 1))
    shapes = jax.eval_shape(m.init, jax.random.key(0), None).params
    params[variance] = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(shapes))
    assert shapes["conv_out"]["kernel"].shape[-1] == (2 if variance == "learned" else 1)
  # configs/ddpm.py's U-Net; the learned variance adds one 3x3x16 output channel and bias.
  assert params == {"fixed": 280_177, "learned": 280_177 + 3 * 3 * 16 + 1}
  c = table2_mnist.get_config()
  c.diffusion.loss = "hybrid"
  with pytest.raises(ValueError, match="learned_range"):
    d.DiffusionMethod.from_config(c, (28, 28, 1))
