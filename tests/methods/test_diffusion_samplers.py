"""The continuous-time core, its samplers and the ODE likelihood against closed forms.

No network: the model is the optimal denoiser of Gaussian data x_0 ~ N(m, s^2 I), whose
probability-flow ODE has an exact solution (each x_t is Gaussian with mean alpha m and
variance alpha^2 s^2 + sigma^2, and the ODE maps one standardized value to the same one),
and whose log-density is known (Karras et al. 2022, App. B.3 takes the same route with a
finite data set).
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gen_jax.methods.diffusion import core, guidance, likelihood, samplers

M, S = 0.3, 0.5   # the data's mean and standard deviation
SHAPE = (16, 2, 1, 1)


def gaussian_x0_eps(process):
  """E[x_0 | x_t] and E[eps | x_t] of Gaussian data: the exact (x0_hat, eps_hat)."""
  def x0_eps(x, t_B):
    c = core.coefficients(process, t_B.reshape(-1, 1, 1, 1))
    var = c.alpha**2 * S**2 + c.sigma**2
    # Cov(x_0, x_t) = alpha s^2 and Cov(eps, x_t) = sigma: no division by sigma, so t = 0
    # of 'linear' is fine.
    return (M + c.alpha * S**2 / var * (x - c.alpha * M),
            c.sigma / var * (x - c.alpha * M))
  return x0_eps


def exact_flow(process, x_from, t_from, t_to):
  """The probability-flow ODE's exact map of Gaussian data from t_from to t_to."""
  a, b = core.coefficients(process, t_from), core.coefficients(process, t_to)
  std = lambda c: jnp.sqrt(c.alpha**2 * S**2 + c.sigma**2)
  return b.alpha * M + std(b) / std(a) * (x_from - a.alpha * M)


@pytest.mark.parametrize("process,prediction", [
    ("vp", "eps"), ("edm", "edm"), ("linear", "velocity"), ("gvp", "v"), ("linear", "score")])
def test_predictions_convert_back_and_velocity_is_the_time_derivative(process, prediction):
  x0 = jnp.linspace(-1, 1, 8).reshape(8, 1, 1, 1)
  eps = jnp.cos(jnp.arange(8.0)).reshape(8, 1, 1, 1)
  t = jnp.linspace(0.2, 0.8, 8).reshape(8, 1, 1, 1) * (10.0 if process == "edm" else 1.0)
  c = core.coefficients(process, t)
  x_t = c.alpha * x0 + c.sigma * eps
  out = core.prediction_target(prediction, x0, eps, c)
  x0_hat, eps_hat = core.x0_and_eps(prediction, out, x_t, c)
  np.testing.assert_allclose(x0_hat, x0, atol=2e-5)
  np.testing.assert_allclose(eps_hat, eps, atol=2e-5)
  # d x_t / dt by central differences equals alpha' x0 + sigma' eps (the velocity).
  h = 1e-3
  def x_at(s):
    c_s = core.coefficients(process, s)
    return c_s.alpha * x0 + c_s.sigma * eps
  np.testing.assert_allclose((x_at(t + h) - x_at(t - h)) / (2 * h),
                             core.ode_velocity(x0, eps, c), rtol=2e-3, atol=2e-3)


def sampler_error(process, sampler, steps, prediction="velocity"):
  """Max error of a sampler's output against the exact ODE solution from its own x_T."""
  rng = jax.random.key(0)
  x = samplers.sample(gaussian_x0_eps(process), process, rng, SHAPE, sampler=sampler,
                      steps=steps, prediction=prediction)
  times = samplers.time_grid(process, steps, prediction, sampler)
  x_T = core.prior_sample(process, jax.random.split(rng)[0], SHAPE, float(times[0]))
  exact = exact_flow(process, x_T, jnp.float32(times[0]), jnp.float32(times[-1]))
  return float(jnp.max(jnp.abs(x - exact)))


@pytest.mark.parametrize("process", ["linear", "edm"])
def test_ode_samplers_converge_at_their_order(process):
  # Doubling the steps divides Euler's (and DDIM's, a first-order ODE step) error by ~2
  # and Heun's by ~4 (Karras et al. 2022, §3: "Heun's 2nd order method").
  prediction = "edm" if process == "edm" else "velocity"
  err = {(s, n): sampler_error(process, s, n, prediction)
         for s in ("euler", "heun", "ddim") for n in (8, 16)}
  assert 1.6 < err["euler", 8] / err["euler", 16] < 2.6, err
  assert 1.6 < err["ddim", 8] / err["ddim", 16] < 2.6, err
  assert err["heun", 8] / err["heun", 16] > 3.2, err


def test_euler_maruyama_and_ancestral_draw_the_data_distribution():
  # The reverse SDE (VP) and the ancestral sampler (linear) end at N(m, s^2).
  shape = (4096, 1, 1, 1)
  for process, sampler, steps in (("vp", "euler_maruyama", 200), ("linear", "ancestral", 100)):
    x = samplers.sample(gaussian_x0_eps(process), process, jax.random.key(2), shape,
                        sampler=sampler, steps=steps, prediction="eps")
    assert float(x.mean()) == pytest.approx(M, abs=0.04), process
    assert float(x.std()) == pytest.approx(S, rel=0.06), process


@pytest.mark.parametrize("process", ["linear", "gvp"])
def test_sit_sde_sampler_equals_the_authors(process):
  # tests/fixtures/sit/sde_parity.npz (tools/make_sit_sde_fixture.py): SiT's sample_sde with
  # its sample scripts' defaults (diffusion sigma_t, 249 Euler-Maruyama steps, a "Mean" last
  # step of 0.04) on the exact velocity of the same Gaussian data, with fixed noise. gen_jax's
  # grid is SiT's with time reversed, and its steps give SiT's samples.
  import os
  fixture = np.load(os.path.join(os.path.dirname(__file__), "..", "fixtures", "sit",
                                 "sde_parity.npz"))
  np.testing.assert_allclose([fixture["m"], fixture["s"]], [M, S])
  sde = samplers.SDEOptions(diffusion="sigma", norm=1.0, last_step=float(fixture["last_step"]))
  times = samplers.time_grid(process, 250, "velocity", "euler_maruyama", sde)
  np.testing.assert_allclose(times, 1.0 - fixture[f"{process}/sit_times"], atol=1e-6)
  x0_eps = gaussian_x0_eps(process)
  noise = jnp.asarray(fixture[f"{process}/noise"])

  @jax.jit
  def step(x, i):
    t, t_next = jnp.float32(times)[i], jnp.float32(times)[i + 1]
    x0, eps = x0_eps(x, jnp.full((x.shape[0],), t))
    c = core.coefficients(process, jnp.full(x.shape, t))
    return samplers.euler_maruyama_step(x, x0, eps, c, t_next - t,
                                        noise[jnp.minimum(i, len(noise) - 1)], i < len(noise),
                                        sde), None

  x, _ = jax.lax.scan(step, jnp.asarray(fixture[f"{process}/x_init"]), jnp.arange(250))
  np.testing.assert_allclose(x, fixture[f"{process}/sample"], rtol=1e-4, atol=1e-4)
  # The same settings through `sample`: its NFE is 250 and it draws the data's Gaussian.
  assert samplers.num_evaluations("euler_maruyama", times) == 250
  x = samplers.sample(x0_eps, process, jax.random.key(3), (4096, 1, 1, 1),
                      sampler="euler_maruyama", steps=250, prediction="velocity", sde=sde)
  assert float(x.mean()) == pytest.approx(M, abs=0.03)
  assert float(x.std()) == pytest.approx(S, rel=0.05)


@pytest.mark.parametrize("variant,overrides,message", [
    ("flow", {"sample.sde_diffusion": "constant"}, "sample.sde_diffusion='constant'; expected"),
    ("flow", {"sample.sde_norm": -1.0}, "sample.sde_norm=-1.0 must be >= 0"),
    ("flow", {"sample.steps": 1, "sample.sde_last_step": 0.04}, "needs sample.steps >= 2"),
    ("flow", {"sample.sde_last_step": 1.5}, "a last step shorter than t in"),
    ("edm", {"sample.sde_last_step": 0.04}, "process 'edm' steps on Karras"),
    ("flow", {"sample.guidance_channels": 2}, "the images have 1 channels"),
    ("flow", {"sample.guidance_channels": -1}, "sample.guidance_channels=-1 must be >= 0"),
])
def test_bad_sampling_options_are_config_errors(variant, overrides, message):
  from smoke import load_config

  from gen_jax.core.errors import ConfigError
  from gen_jax.methods.diffusion.method import DiffusionMethod
  config = load_config("ddpm", f"{variant},smoke", **{"sample.sampler": "euler_maruyama",
                                                       **overrides})
  with pytest.raises(ConfigError, match=message):
    DiffusionMethod.from_config(config, (8, 8, 1))


@pytest.mark.parametrize("process,prediction", [
    ("linear", "velocity"), ("vp", "eps"), ("edm", "edm")])
def test_ode_log_likelihood_of_gaussian_data_is_its_exact_log_density(process, prediction):
  # log p_{t_min}(x) through the ODE = log N(x; alpha m, alpha^2 s^2 + sigma^2) at t_min
  # (t_min = 0 for 'linear': the data's own density), with Hutchinson's estimate (exact
  # here: the Jacobian is a multiple of I) and with the exact trace. EDM's path spans
  # sigma from 0.002 to 80 and needs more steps for the same accuracy.
  steps, tol = (128, 2e-2) if process == "edm" else (64, 2e-3)
  x = jnp.asarray(np.random.default_rng(0).normal(M, S, (3, 2, 2, 1)), jnp.float32)
  c = core.coefficients(process, jnp.float32(core.time_range(process, prediction)[0]))
  var = float(c.alpha**2 * S**2 + c.sigma**2)
  exact = (-0.5 * ((x - float(c.alpha) * M) ** 2 / var + np.log(2 * np.pi * var))).sum((1, 2, 3))
  for trace in likelihood.TRACES:
    log_p = likelihood.ode_log_likelihood(gaussian_x0_eps(process), process, x,
                                          jax.random.key(1), steps=steps, prediction=prediction,
                                          trace=trace)
    np.testing.assert_allclose(log_p, exact, rtol=tol, atol=tol)


def test_guidance_interval_guides_only_inside_it():
  # Kynkäänniemi et al. 2024: (1 + w) D(x, c) - w D(x, null) for sigma in (lo, hi], the
  # conditional output elsewhere; the NFE counts a guided step twice.
  net = lambda x, t_B, labels: x * (labels[:, None, None, None] + 1.0)
  labels, x = jnp.array([2, 2]), jnp.ones((2, 1, 1, 1))
  guided = guidance.guided_network(net, labels, 0, 2.0, noise_level=lambda t_B: t_B,
                                   interval=(0.5, 2.0))
  inside = guided(x, jnp.array([1.0, 1.0]))
  np.testing.assert_allclose(inside, 3.0 * 3.0 - 2.0 * 1.0)
  for t in (0.5, 3.0):
    np.testing.assert_allclose(guided(x, jnp.array([t, t])), 3.0)
  assert guidance.guided_steps([3.0, 2.0, 1.0, 0.5, 0.1], (0.5, 2.0)) == 2
  assert samplers.num_evaluations("heun", samplers.time_grid("edm", 18, "edm")) == 35


def test_guidance_on_leading_channels_is_the_dit_authors_forward_with_cfg():
  # DiT's (and SiT's) forward_with_cfg: eps[:, :3] = uncond + s (cond - uncond), the rest
  # of the output (eps[:, 3] and the learned variance) the conditional half's. Here with
  # s = 1 + w, on an output of 4 target and 4 variance channels that depend on the label.
  w, labels = 0.5, jnp.array([1, 4])
  net = lambda x, t_B, lab: (jnp.concatenate([x, -x], axis=-1) * (lab[:, None, None, None] + 1.0)
                             + jnp.arange(8.0))
  x = jnp.ones((2, 1, 1, 4))   # latents: 4 channels in, 8 out
  null = 9
  t_B = jnp.zeros((2,))
  cond = net(x, t_B, labels)
  uncond = net(x, t_B, jnp.full_like(labels, null))
  eps = jnp.concatenate([uncond[..., :3] + (1 + w) * (cond[..., :3] - uncond[..., :3]),
                         cond[..., 3:]], axis=-1)
  out = guidance.guided_network(net, labels, null, w, "learned_range", channels=3)(x, t_B)
  np.testing.assert_allclose(out, eps, rtol=1e-6)
  everything = guidance.guided_network(net, labels, null, w, "learned_range")(x, t_B)
  assert not np.allclose(everything[..., 3], out[..., 3])


def test_ddpmpp_with_edm_augmentation_trains_on_the_augment_labels():
  # configs/ddpm.py:edm,smoke with model.architecture='ddpmpp' and data.augment='edm': the
  # train step augments the images and feeds their 9 labels to SongUNet's map_augment
  # (Karras et al. 2022, App. C.4), whose weights the update then moves; sampling passes
  # no augment labels.
  from smoke import load_config

  from gen_jax.methods.diffusion.method import DiffusionMethod
  from gen_jax.models.song_unet import SongUNet
  config = load_config("ddpm", "edm,smoke", **{
      "model.architecture": "ddpmpp", "data.augment": "edm", "data.augment_p": 1.0,
      "model.ch": 8, "model.ch_mult": (1,), "model.num_res_blocks": 1,
      "model.attn_resolutions": (), "train.warmup_steps": 0})
  method = DiffusionMethod.from_config(config, (8, 8, 1))
  assert isinstance(method.model, SongUNet) and method.model.augment_dim == 9
  batch = {"image": jnp.linspace(-1, 1, 4 * 64).reshape(4, 8, 8, 1)}
  state = method.init(jax.random.key(0), batch)
  new_state, metrics = jax.jit(method.train_step)(state, batch, jax.random.key(1))
  assert np.isfinite(float(metrics["loss"]))
  moved = jax.tree.map(lambda a, b: float(jnp.abs(a - b).max()),
                       state.params["map_augment"], new_state.params["map_augment"])
  assert max(jax.tree.leaves(moved)) > 0
  assert method.sample_tag == "edm_heun5_nfe9"


@pytest.mark.parametrize("process,prediction,sampler,steps", [
    ("linear", "velocity", "euler", 50), ("edm", "edm", "edm_heun", 18)])
def test_replacement_inpainting_on_a_continuous_process_conditions_the_unknown_pixels(
    process, prediction, sampler, steps):
  # Gaussian data whose two pixels are correlated (rho = 0.9): knowing pixel 0 = 1.0, the
  # replacement method's fill of pixel 1 (Song et al. 2021, App. I.2) moves from the prior
  # mean toward the conditional mean m + rho (1.0 - m); the known pixel ends near its value
  # (the model's last step from a re-noised copy of it, as RePaint's code returns it).
  # EDM's Heun sampler replaces before each step's churn (edm.heun_sample's before_step).
  rho, n = 0.9, 2048
  cov = S**2 * np.array([[1.0, rho], [rho, 1.0]])

  def x0_eps(x, t_B):
    c = core.coefficients(process, t_B.reshape(-1, 1, 1, 1))
    a, s = c.alpha[:, 0, 0], c.sigma[:, 0, 0]                # [B, 1]
    flat = x.reshape(x.shape[0], 2)
    var = a[:, :, None] ** 2 * cov + (s**2)[:, :, None] * np.eye(2)   # [B, 2, 2]
    resid = jnp.linalg.solve(var, (flat - a * M)[..., None])[..., 0]
    x0 = M + a * (resid @ cov)
    return x0.reshape(x.shape), (s * resid).reshape(x.shape)

  x0 = jnp.ones((n, 2, 1, 1))
  known = jnp.asarray(np.array([True, False]).reshape(1, 2, 1, 1))
  replace = samplers.known_pixels_replaced(process, x0, known)
  out = samplers.sample(x0_eps, process, jax.random.key(3), (n, 2, 1, 1), sampler=sampler,
                        steps=steps, prediction=prediction, replace=replace)
  assert float(jnp.abs(out[:, 0] - 1.0).mean()) < 0.05
  # Replacement is known to under-condition (Lugmayr et al. 2022, §4.1): measured 0.61
  # (linear, Euler) and 0.57 (EDM's Heun) of the exact 0.93; an unconditioned fill stays at
  # the prior mean 0.3.
  assert M + 0.3 * rho * (1.0 - M) < float(out[:, 1].mean()) < M + rho * (1.0 - M)
  with pytest.raises(ValueError, match="not 'rk45'"):   # adaptive: no step to replace before
    samplers.sample(x0_eps, process, jax.random.key(3), (n, 2, 1, 1), sampler="rk45",
                    steps=0, prediction=prediction, replace=replace)
