"""The DDPM variational bound in bits/dim, checked against float64 numpy/scipy written from
the paper (Ho et al. 2020, Eq. 5, 7, 13) and against exact identities of an oracle model."""
import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
import scipy.stats

from gen_jax.core import probability
from gen_jax.methods.diffusion import core as dc
from gen_jax.methods.diffusion import ddpm as dp
from gen_jax.methods.diffusion import likelihood as dl
from gen_jax.methods.diffusion import method as d
from gen_jax.models.unet import UNet

T = 5
BETAS = dc.linear_betas(T, 0.01, 0.5)   # float64; few steps, so abar_T ~ 0.2 (a real prior term)
SHAPE = (3, 4, 4, 1)
GRID = np.arange(256) / 127.5 - 1.0    # the 8-bit data grid in [-1, 1]


@pytest.fixture(scope="module")
def sched():
  return dc.make_schedule(BETAS)


def _images(seed=0, shape=SHAPE):
  """Images on the 8-bit grid, including both edge values -1 and 1."""
  k = np.random.default_rng(seed).integers(0, 256, shape)
  k.reshape(-1)[:2] = (0, 255)
  return (k / 127.5 - 1.0).astype(np.float32)


def stand_in(params, x, t_B):
  """A fixed nonlinear 'network' depending on x_t, t and its params (jnp)."""
  return params["scale"] * jnp.tanh(0.8 * x) + 0.05 * t_B[:, None, None, None]


def stand_in_np(params, x, t):
  return params["scale"] * np.tanh(0.8 * x) + 0.05 * t


def _noise(rng, t, shape):
  """The documented noise of timestep t in `bits_per_dim`."""
  return np.asarray(jax.random.normal(jax.random.fold_in(rng, t), shape, jnp.float32), np.float64)


# ----------------------------------------------------------------------------- decoder


def test_decoder_probabilities_over_the_256_bins_sum_to_one():
  # Means inside and outside [-1, 1], on and between bin centres; scales from far below the
  # bin width (2/255) to far above it.
  means = jnp.array([0.0, 0.3, -1.0, 1.0, 1.7, -3.0, 1.0 / 255.0])[:, None, None]
  log_scales = jnp.log(jnp.array([1e-4, 3e-3, 0.1, 1.0, 10.0]))[None, :, None]
  x = jnp.asarray(GRID, jnp.float32)[None, None, :]
  log_probs = jax.jit(probability.discretized_gaussian_log_likelihood)(x, means, log_scales)
  probs = np.exp(np.asarray(log_probs, np.float64))    # [means, scales, 256 bins]
  assert probs.shape == (7, 5, 256) and np.all(np.isfinite(log_probs))
  np.testing.assert_allclose(probs.sum(axis=-1), 1.0, atol=2e-5)


def test_decoder_log_likelihood_matches_scipy_including_deep_tails():
  norm = scipy.stats.norm
  w = 1.0 / 255.0

  def log_mass(lo, hi):   # float64 log(Phi(hi) - Phi(lo)), in the tail where lo, hi share a sign
    if lo > 0:
      return norm.logsf(lo) + np.log(-np.expm1(norm.logsf(hi) - norm.logsf(lo)))
    return norm.logcdf(hi) + np.log(-np.expm1(norm.logcdf(lo) - norm.logcdf(hi)))

  cases = [  # (x, mean, scale, float64 log-probability)
      (0.2, 0.0, 0.3, np.log(norm.cdf((0.2 + w) / 0.3) - norm.cdf((0.2 - w) / 0.3))),
      (0.0, 0.0, 1e-3, np.log(norm.cdf(w / 1e-3) - norm.cdf(-w / 1e-3))),
      (-1.0, 0.1, 0.2, norm.logcdf((-1.0 + w - 0.1) / 0.2)),
      (1.0, 0.0, 0.01, norm.logsf((1.0 - w) / 0.01)),               # about -4960
      (-1.0, 0.0, 0.01, norm.logcdf((-1.0 + w) / 0.01)),
      (GRID[191], 0.0, 0.01, log_mass((GRID[191] - w) / 0.01, (GRID[191] + w) / 0.01)),
      (GRID[64], 0.0, 0.01, log_mass((GRID[64] - w) / 0.01, (GRID[64] + w) / 0.01)),
  ]
  x, mean, scale, expected = (np.array(c, np.float32) for c in zip(*cases, strict=True))
  got = probability.discretized_gaussian_log_likelihood(x, mean, np.log(scale))
  assert np.all(np.isfinite(got))
  np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)


def test_normal_kl_is_zero_for_equal_gaussians_and_matches_closed_form():
  m, lv = jnp.array([0.3, -2.0]), jnp.array([0.1, -4.0])
  np.testing.assert_allclose(probability.normal_kl(m, lv, m, lv), 0.0, atol=1e-7)
  # KL(N(1, 2) || N(-0.5, 0.5)) = 0.5 (log(0.5/2) + (2 + 1.5^2) / 0.5 - 1).
  expected = 0.5 * (np.log(0.5 / 2.0) + (2.0 + 1.5**2) / 0.5 - 1.0)
  got = probability.normal_kl(1.0, np.log(2.0), -0.5, np.log(0.5))
  assert float(got) == pytest.approx(expected, rel=1e-6)
  swapped = probability.normal_kl(-0.5, np.log(0.5), 1.0, np.log(2.0))
  assert float(swapped) != pytest.approx(expected)


# ------------------------------------------------------------------------------ the bound


def _reference_bound(params, x0, rng, target, variance, clip_x0):
  """Float64 terms [B, T] and prior [B] in nats, written from the paper: posterior by
  Bayes' rule for Gaussians, Gaussian KL in variances, decoder by scipy's CDF."""
  x0 = x0.astype(np.float64)
  B = x0.shape[0]
  alphas, abar = 1 - BETAS, np.cumprod(1 - BETAS)
  abar_prev = np.append(1.0, abar[:-1])
  post_var = np.array([0.0] + [1.0 / (1.0 / (1.0 - abar_prev[t]) + alphas[t] / BETAS[t])
                               for t in range(1, T)])
  model_var = (BETAS if variance == "beta" else post_var).copy()
  model_var[0] = post_var[1]     # the decoder's variance (authors' code, both choices)
  terms = np.zeros((B, T))
  for t in range(T):
    xt = np.sqrt(abar[t]) * x0 + np.sqrt(1 - abar[t]) * _noise(rng, t, x0.shape)
    out = stand_in_np(params, xt, t)
    x0_hat = {"eps": (xt - np.sqrt(1 - abar[t]) * out) / np.sqrt(abar[t]), "x0": out,
              "v": np.sqrt(abar[t]) * xt - np.sqrt(1 - abar[t]) * out}[target]
    if clip_x0:
      x0_hat = np.clip(x0_hat, -1, 1)
    if t == 0:   # q(x_0 | x_1, x_0) is a point mass at x_0, so mu_theta = x0_hat
      s = np.sqrt(model_var[0])
      hi = np.where(x0 > 0.999, np.inf, x0 + 1 / 255)
      lo = np.where(x0 < -0.999, -np.inf, x0 - 1 / 255)
      p = scipy.stats.norm.cdf((hi - x0_hat) / s) - scipy.stats.norm.cdf((lo - x0_hat) / s)
      terms[:, 0] = -np.log(p).reshape(B, -1).sum(1)
    else:
      post_mean = lambda x0_, t=t, xt=xt: post_var[t] * (
          np.sqrt(abar_prev[t]) * x0_ / (1 - abar_prev[t]) + np.sqrt(alphas[t]) * xt / BETAS[t])
      v1, v2 = post_var[t], model_var[t]
      kl = 0.5 * (np.log(v2 / v1) + (v1 + (post_mean(x0) - post_mean(x0_hat)) ** 2) / v2 - 1)
      terms[:, t] = kl.reshape(B, -1).sum(1)
  var_T = 1 - abar[-1]
  prior = 0.5 * (-np.log(var_T) + var_T + abar[-1] * x0**2 - 1).reshape(B, -1).sum(1)
  return terms, prior


# timestep_batch 2 (3 chunks, the last padded) and 1 (one timestep per chunk) must both
# match: the noise of timestep t does not depend on the chunking, and padding is discarded.
@pytest.mark.parametrize("target,variance,clip_x0,timestep_batch", [
    ("eps", "beta", False, 2), ("v", "beta_tilde", True, 1)])
def test_bits_per_dim_matches_float64_reference(sched, target, variance, clip_x0,
                                                 timestep_batch):
  params, x0, rng = {"scale": 0.9}, _images(), jax.random.key(0)
  run = jax.jit(functools.partial(dl.bits_per_dim, stand_in, sched=sched, target=target,
                                  variance=variance, clip_x0=clip_x0,
                                  timestep_batch=timestep_batch))
  out = run(params, x0=jnp.asarray(x0), rng=rng)
  terms, prior = _reference_bound(params, x0, rng, target, variance, clip_x0)
  to_bpd = 1.0 / (np.prod(SHAPE[1:]) * np.log(2.0))
  total = (prior + terms.sum(1)) * to_bpd
  np.testing.assert_allclose(out["terms_bpd"], terms.mean(0) * to_bpd, rtol=2e-4, atol=1e-6)
  np.testing.assert_allclose(out["bpd_per_image"], total, rtol=1e-4)
  assert float(out["bpd"]) == pytest.approx(total.mean(), rel=1e-4)
  assert float(out["prior_bpd"]) == pytest.approx(prior.mean() * to_bpd, rel=1e-4)
  assert float(out["decoder_bpd"]) == pytest.approx(terms[:, 0].mean() * to_bpd, rel=1e-4)
  assert float(out["diffusion_bpd"]) == pytest.approx(terms[:, 1:].sum(1).mean() * to_bpd,
                                                      rel=1e-4)


def test_every_term_is_non_negative_and_t_can_differ_per_image():
  T10 = 10
  sched = dc.make_schedule(dc.linear_betas(T10, 1e-3, 0.3))
  x0 = jnp.asarray(_images(1, (T10, 4, 4, 1)))
  t_B = jnp.arange(T10)   # image i at timestep i: all T terms in one call
  noise = jax.random.normal(jax.random.key(2), x0.shape)

  @jax.jit
  def all_terms(params):
    return jnp.stack([dl.vlb_terms(stand_in, params, sched, x0, t_B, noise, variance=v)
                      for v in ("beta", "beta_tilde")] + [dl.prior_kl(sched, x0)])

  terms = np.asarray(all_terms({"scale": 1.3}))
  assert terms.shape == (3, T10) and np.all(terms >= 0), terms
  assert not np.allclose(terms[0, 1:], terms[1, 1:])   # sigma^2 = beta vs beta~ for t >= 1


@pytest.mark.parametrize("target,variance", [("x0", "beta"), ("eps", "beta_tilde")])
def test_oracle_x0_predictor_leaves_only_variance_mismatch(sched, target, variance):
  # A model that knows x_0 has mu_theta = mu~ exactly, so for t >= 1 each KL is the
  # variance mismatch D/2 (r - 1 - log r), r = beta~_t / sigma_t^2 (0 for sigma^2 = beta~),
  # and the decoder is a discretized Gaussian centred on the true pixel.
  x0 = _images(5)
  D = np.prod(SHAPE[1:])

  def oracle(x0_params, xt, t_B):
    eps = dp.eps_from_x0(sched, x0_params, xt, t_B)
    return dp.training_target(sched, x0_params, eps, t_B, target)

  run = jax.jit(functools.partial(dl.bits_per_dim, oracle, target=target, variance=variance))
  out = run(jnp.asarray(x0), sched, jnp.asarray(x0), jax.random.key(6))
  abar = np.cumprod(1 - BETAS)
  post_var = BETAS * np.append(1.0, 1 - abar[:-1]) / (1 - abar)
  r = post_var[1:] / (BETAS[1:] if variance == "beta" else post_var[1:])
  kl_bpd = D / 2 * (r - 1 - np.log(r)) / (D * np.log(2))
  half_bin = (1 / 255) / np.sqrt(post_var[1])
  n_edge = np.sum(np.abs(x0) == 1.0)
  decoder_nats = -(n_edge * scipy.stats.norm.logcdf(half_bin)
                   + (x0.size - n_edge) * np.log(2 * scipy.stats.norm.cdf(half_bin) - 1))
  decoder_bpd = decoder_nats / x0.shape[0] / (D * np.log(2))
  np.testing.assert_allclose(out["terms_bpd"][1:], kl_bpd, atol=1e-5)
  assert float(out["decoder_bpd"]) == pytest.approx(decoder_bpd, rel=1e-5)
  if variance == "beta_tilde":
    assert float(out["diffusion_bpd"]) == pytest.approx(0.0, abs=1e-5)


def test_method_bits_per_dim_runs_the_unet_in_eval_mode_with_the_method_variance(
    sched, monkeypatch):
  sample_cfg = ml_collections.ConfigDict({"variance": "beta_tilde", "clip_x0": False})
  method = d.DiffusionMethod(
      model=UNet(ch=8, ch_mult=(1,), num_res_blocks=1, attn_resolutions=(), dropout=0.5,
                 num_groups=4),
      schedule=sched, tx=optax.sgd(0.1), image_shape=SHAPE[1:], target="v", ema_decay=0.9,
      ema_warmup=False, sample_cfg=sample_cfg, eval_cfg=ml_collections.ConfigDict(),
      variance="beta_tilde")
  params = jax.eval_shape(method.init, jax.random.key(0), None).params
  x0, rng = jax.ShapeDtypeStruct(SHAPE, jnp.float32), jax.random.key(1)
  # Traced with the real U-Net (nothing is compiled): the returned dict's shapes.
  out = jax.eval_shape(method.bits_per_dim, params, x0, rng)
  assert out["terms_bpd"].shape == (T,) and out["bpd_per_image"].shape == (SHAPE[0],)
  assert out["bpd"].shape == () and out["bpd"].dtype == jnp.float32

  seen = {}
  monkeypatch.setattr(dl, "bits_per_dim", lambda *args, **kw: seen.update(args=args, kw=kw))
  method.bits_per_dim(params, x0, rng, timestep_batch=3)
  assert seen["kw"] == dict(target="v", variance="beta_tilde", clip_x0=False, timestep_batch=3)
  # train=False: the U-Net applies without a dropout rng (train=True would need one).
  y = jax.eval_shape(seen["args"][0], params, x0, jax.ShapeDtypeStruct((SHAPE[0],), jnp.int32))
  assert y.shape == SHAPE


def test_bad_arguments_raise_clear_errors(sched):
  x0 = jnp.zeros(SHAPE)
  with pytest.raises(ValueError, match="variance='fixedlarge'"):
    dl.bits_per_dim(stand_in, {"scale": 1.0}, sched, x0, jax.random.key(0), variance="fixedlarge")
  with pytest.raises(ValueError, match="target='score'"):
    dl.bits_per_dim(stand_in, {"scale": 1.0}, sched, x0, jax.random.key(0), target="score")


# ------------------------------------------- the training objectives are the bound's terms


def two_channel_stand_in(params, x, t_B):
  """A stand-in whose output has a target half and a variance half (in [-1, 1])."""
  variance_half = jnp.tanh(0.5 * x - 0.1 * t_B[:, None, None, None])
  return jnp.concatenate([stand_in(params, x, t_B), variance_half], axis=-1)


@pytest.mark.parametrize("target,variance", [
    ("eps", "beta"), ("mu", "beta_tilde"), ("x0", "learned"), ("v", "learned_range")])
def test_kl_and_hybrid_objectives_equal_the_bits_per_dim_terms(sched, target, variance):
  # Ho et al.'s 'kl' objective and the L_vlb part of Nichol & Dhariwal's hybrid are the
  # bound's per-timestep terms that bits/dim sums, at the same x_0, t and noise (t = 0 is
  # the decoder), in bits/dim; unclipped, as trained.
  params = {"scale": 0.7}
  net = two_channel_stand_in if variance in dp.LEARNED_VARIANCES else stand_in
  x0 = jnp.asarray(_images(2, (T, 4, 4, 1)))
  t_B = jnp.arange(T)
  noise = jax.random.normal(jax.random.key(3), x0.shape)
  terms = dl.vlb_terms(net, params, sched, x0, t_B, noise, target=target, variance=variance,
                       clip_x0=False)
  terms_bpd = np.asarray(terms) / (16 * np.log(2.0))
  loss = lambda kind, lam=1e-3: float(dp.ddpm_objective(
      sched, lambda x, t: net(params, x, t), x0, t_B, noise, target=target, loss=kind,
      variance=variance, hybrid_lambda=lam))
  assert loss("kl") == pytest.approx(terms_bpd.mean(), rel=1e-5)
  # improved-diffusion's LossType.RESCALED_KL (use_kl=True): the same term times T.
  assert loss("rescaled_kl") == pytest.approx(T * loss("kl"), rel=1e-6)
  if variance in dp.LEARNED_VARIANCES:
    assert loss("hybrid", 0.02) == pytest.approx(loss("simple") + 0.02 * T * terms_bpd.mean(),
                                                 rel=1e-5)
  # The bits/dim of `bits_per_dim` at the same noise is the prior plus the sum of the terms.
  out = dl.bits_per_dim(net, params, sched, x0[:1], jax.random.key(9), target=target,
                        variance=variance, clip_x0=False)
  noise_t = jnp.stack([jax.random.normal(jax.random.fold_in(jax.random.key(9), t), x0[:1].shape)[0]
                       for t in range(T)])
  per_t = dp.ddpm_objective(sched, lambda x, t: net(params, x, t),
                           jnp.repeat(x0[:1], T, axis=0), t_B, noise_t, target=target,
                           loss="kl", variance=variance)
  assert float(per_t) * T == pytest.approx(float(out["bpd"] - out["prior_bpd"]), rel=1e-4)


def test_hybrid_trains_the_mean_only_through_l_simple(sched):
  # Nichol & Dhariwal §3.1: stop-gradient on the mean in L_vlb, so the gradient of the
  # target half is exactly L_simple's, while the variance half gets L_vlb's gradient.
  x0 = jnp.asarray(_images(3, (T, 4, 4, 1)))
  t_B, noise = jnp.arange(T), jax.random.normal(jax.random.key(4), x0.shape)
  def grads(kind):
    def f(mean_scale, var_shift):
      net = lambda x, t: jnp.concatenate([mean_scale * jnp.tanh(x), 0 * x + var_shift], -1)
      return dp.ddpm_objective(sched, net, x0, t_B, noise, loss=kind, variance="learned_range")
    return jax.grad(f, argnums=(0, 1))(0.5, 0.1)
  (g_mean_h, g_var_h), (g_mean_s, g_var_s) = grads("hybrid"), grads("simple")
  assert float(g_mean_h) == pytest.approx(float(g_mean_s), rel=1e-6)
  assert float(g_var_s) == 0.0 and abs(float(g_var_h)) > 1e-6
