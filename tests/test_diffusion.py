"""The DDPM/DDIM math, checked against independent derivations (no U-Net compiled here)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gen_jax.methods import diffusion as d
from gen_jax.methods import diffusion_process as dp

T = 50
BETAS = dp.linear_betas(T, 1e-3, 0.2)   # float64


@pytest.fixture(scope="module")
def sched():
  return dp.make_schedule(BETAS)


def toy_denoiser(x, t_B):
  """A fixed nonlinear stand-in for eps_theta that depends on x and t."""
  return jnp.tanh(0.7 * x + 0.01 * t_B[:, None, None, None].astype(jnp.float32)) * 0.9


def test_linear_schedule_matches_paper_endpoints():
  betas = dp.linear_betas(1000)
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
    x = jnp.sqrt(1 - sched.betas[s]) * x + jnp.sqrt(sched.betas[s]) * jax.random.normal(key, x.shape)
  closed = dp.q_sample(sched, x0, jnp.full((n,), t), jax.random.normal(jax.random.key(1), x0.shape))
  se = float(jnp.std(closed)) / np.sqrt(n)
  assert abs(float(x.mean() - closed.mean())) < 5 * np.sqrt(2) * se
  assert float(x.var()) == pytest.approx(float(closed.var()), rel=0.05)


def test_posterior_coefficients_equal_gaussian_conditioning(sched):
  # q(x_{t-1}|x_0) = N(sqrt(abar_{t-1}) x_0, 1-abar_{t-1}), q(x_t|x_{t-1}) = N(sqrt(a_t) x_{t-1}, b_t).
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
  sched = dp.make_schedule(dp.cosine_betas(n))
  f = lambda t: np.cos(((t / n + 0.008) / 1.008) * np.pi / 2) ** 2
  t = np.arange(1, n + 1)
  expected = f(t) / f(0)
  unclipped = dp.cosine_betas(n) < 0.999
  np.testing.assert_allclose(np.asarray(sched.alphas_cumprod)[unclipped][:-1],
                             expected[unclipped][:-1], rtol=2e-5, atol=1e-7)
  assert dp.cosine_betas(n).max() == pytest.approx(0.999)


@pytest.mark.parametrize("target", dp.TARGETS)
def test_targets_invert_and_oracle_has_zero_loss(sched, target):
  key = jax.random.key(3)
  x0 = jax.random.uniform(key, (6, 4, 4, 1), minval=-1, maxval=1)
  noise = jax.random.normal(jax.random.key(4), x0.shape)
  t_B = jnp.arange(6) * 9
  xt = dp.q_sample(sched, x0, t_B, noise)
  out = dp.training_target(sched, x0, noise, t_B, target)
  x0_hat, eps_hat = dp.predict_x0_eps(sched, out, xt, t_B, target)
  np.testing.assert_allclose(x0_hat, x0, atol=2e-4)
  np.testing.assert_allclose(eps_hat, noise, atol=2e-4)

  # An oracle that knows x_0 predicts the exact target, so L_simple vanishes.
  def oracle(x_t, t):
    eps = dp.eps_from_x0(sched, x0, x_t, t)
    return dp.training_target(sched, x0, eps, t, target)
  assert float(d.l_simple(sched, oracle, x0, key, target)) < 1e-8
  assert float(d.l_simple(sched, lambda x, t: jnp.zeros_like(x), x0, key, target)) > 1e-2


def test_posterior_mean_at_predicted_x0_is_algorithm_2(sched):
  x = jax.random.normal(jax.random.key(5), (4, 3, 3, 1))
  t_B = jnp.array([1, 10, 25, 49])
  eps = toy_denoiser(x, t_B)
  x0, _ = dp.predict_x0_eps(sched, eps, x, t_B, "eps")
  mean, _ = dp.q_posterior_mean_variance(sched, x0, x, t_B)
  beta, abar = sched.betas[t_B][:, None, None, None], sched.alphas_cumprod[t_B][:, None, None, None]
  alg2 = (x - beta / jnp.sqrt(1 - abar) * eps) / jnp.sqrt(1 - beta)
  np.testing.assert_allclose(mean, alg2, rtol=1e-4, atol=1e-5)


def test_ddim_eta1_all_steps_uses_ddpm_posterior_variance(sched):
  t = jnp.arange(1, T)
  np.testing.assert_allclose(d.ddim_sigma(sched, t, t - 1, 1.0) ** 2,
                             sched.posterior_variance[1:], rtol=1e-4)
  assert float(d.ddim_sigma(sched, jnp.array(0), jnp.array(-1), 1.0)) == 0.0


@pytest.mark.parametrize("clip_x0", [False, True])
def test_ddim_eta1_over_all_steps_is_the_ddpm_sampler(sched, clip_x0):
  key, shape = jax.random.key(7), (3, 4, 4, 1)
  ddpm = d.ddpm_sample(toy_denoiser, sched, key, shape, variance="beta_tilde", clip_x0=clip_x0)
  ddim = d.ddim_sample(toy_denoiser, sched, key, shape, num_steps=T, eta=1.0, clip_x0=clip_x0)
  np.testing.assert_allclose(ddim, ddpm, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("sampler", ["ddpm", "ddim"])
def test_samplers_are_pure_functions_of_their_key(sched, sampler):
  shape = (2, 4, 4, 1)
  run = jax.jit(lambda key: d.ddpm_sample(toy_denoiser, sched, key, shape) if sampler == "ddpm"
                else d.ddim_sample(toy_denoiser, sched, key, shape, num_steps=10, eta=0.5))
  a, b, c = run(jax.random.key(0)), run(jax.random.key(0)), run(jax.random.key(1))
  np.testing.assert_array_equal(a, b)
  assert not np.allclose(a, c)


def test_ddim_timesteps():
  np.testing.assert_array_equal(d.ddim_timesteps(1000, 1000), np.arange(1000))
  ts = d.ddim_timesteps(1000, 50)
  assert len(ts) == 50 and ts[0] == 0 and ts[-1] == 999 and np.all(np.diff(ts) > 0)
  with pytest.raises(ValueError, match="sample.steps"):
    d.ddim_timesteps(10, 11)
