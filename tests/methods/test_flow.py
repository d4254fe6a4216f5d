"""Flow matching (gen_jax/methods/diffusion/flow.py): parity with SiT and torchcfm.

The fixture tests/fixtures/diffusion_parity/flow.npz was written by
tools/make_diffusion_parity.py (torch 2.13 CPU) from willisma/SiT (transport/path.py,
transport/transport.py) and atong01/conditional-flow-matching (torchcfm) at the commits it
stores. Both run time with the data at t = 1: their t is 1 - t here, their velocity -v.
Reflow (gen_jax/methods/diffusion/reflow.py) is checked against the closed form of Gaussian
data, and its pairs against the couplings loader (gen_jax/data/couplings.py).
"""
from __future__ import annotations

import dataclasses
import os
import types

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from scipy import integrate
from smoke import FIXTURES, load_config

from gen_jax import data
from gen_jax.core.errors import ConfigError
from gen_jax.data.errors import DatasetUnavailableError
from gen_jax.data.spec import DataSpec
from gen_jax.experiments.liu2023_rectified_flow import cifar10 as rf_cifar10
from gen_jax.experiments.ma2024_sit import mnist as sit_mnist
from gen_jax.methods.diffusion import core, flow, reflow, rk45, samplers
from gen_jax.methods.diffusion.method import DiffusionMethod


def assert_close(actual, desired, rtol=2e-5, atol=2e-5, err_msg=""):
  """float32 against the references' float32."""
  np.testing.assert_allclose(actual, desired, rtol=rtol, atol=atol, err_msg=err_msg)


@pytest.fixture(scope="module")
def ref():
  return {k: (jnp.asarray(v) if v.dtype.kind == "f" else v)
          for k, v in np.load(os.path.join(FIXTURES, "diffusion_parity", "flow.npz")).items()}


@pytest.mark.parametrize("path", flow.PATHS)
def test_path_matches_sit_plan(ref, path):
  """alpha, sigma, their derivatives, x_t, the target u_t and compute_drift of ICPlan /
  GVPCPlan, at SiT's t = 1 - t."""
  t = 1.0 - ref["t"]
  c = flow.coefficients(path, t[:, None, None, None])
  for name in ("alpha", "sigma"):
    assert_close(c._asdict()[name], ref[f"sit_{path}_{name}"])
    assert_close(-c._asdict()["d_" + name], ref[f"sit_{path}_d_{name}"])
  x, eps = ref["x1"], ref["x0"]
  x_t = flow.interpolate(path, x, eps, t)
  assert_close(x_t, ref[f"sit_{path}_xt"])
  assert_close(-flow.training_target(path, "velocity", x, eps, t),
                             ref[f"sit_{path}_ut"])
  f, g2 = flow.sde_coefficients(path, t[:, None, None, None])
  assert_close(f * x_t, ref[f"sit_{path}_minus_drift"])
  assert_close(g2 / 2, ref[f"sit_{path}_diffusion"], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("path", flow.PATHS)
def test_conversions_and_ode_drift_match_sit(ref, path):
  """get_score_from_velocity, get_noise_from_velocity, get_velocity_from_score, and the
  probability-flow drift of noise / score / velocity models (`Transport.get_drift`)."""
  t, x_t, out = 1.0 - ref["t"], ref[f"sit_{path}_xt"], ref["model_out"]
  assert_close(flow.score_from("velocity", path, -out, x_t, t),
                             ref[f"sit_{path}_score_from_velocity"], rtol=1e-4, atol=1e-4)
  assert_close(flow.noise_from("velocity", path, -out, x_t, t),
                             ref[f"sit_{path}_noise_from_velocity"], rtol=1e-4, atol=1e-4)
  assert_close(-flow.velocity_from("score", path, out, x_t, t),
                             ref[f"sit_{path}_velocity_from_score"], rtol=1e-4, atol=1e-4)
  for prediction in flow.PREDICTIONS:
    ours = -flow.velocity_from(prediction, path, -out if prediction == "velocity" else out,
                               x_t, t)
    assert_close(ours, ref[f"sit_{path}_{prediction}_ode_drift"], rtol=1e-4,
                               atol=1e-4, err_msg=prediction)


@pytest.mark.parametrize("path", flow.PATHS)
def test_losses_match_sit_training_losses(ref, path):
  """`Transport.training_losses` (mean over pixels) for every prediction x loss weight."""
  t, x, eps, out = 1.0 - ref["t"], ref["x1"], ref["x0"], ref["model_out"]
  for prediction in flow.PREDICTIONS:
    for weighting in flow.LOSS_WEIGHTS:
      output = -out if prediction == "velocity" else out
      loss = flow.loss(path, prediction, output, x, eps, t, weighting).mean(axis=(1, 2, 3))
      assert_close(loss, ref[f"sit_{path}_{prediction}_{weighting}_loss"],
                                 rtol=1e-4, err_msg=f"{prediction} {weighting}")


def test_paths_match_torchcfm(ref):
  """torchcfm's ConditionalFlowMatcher (rectified flow), TargetConditionalFlowMatcher
  (Lipman et al.'s OT path, sigma_min = 0.1) and VariancePreservingConditionalFlowMatcher
  (GVP): sample_xt and compute_conditional_flow."""
  t, x, x0, eps = 1.0 - ref["t"], ref["x1"], ref["x0"], ref["eps"]
  for name, path, noise, sigma_min in (("cfm", "linear", x0, 0.0),
                                       ("lipman", "linear", eps, 0.1),
                                       ("vp", "gvp", x0, 0.0)):
    assert_close(flow.interpolate(path, x, noise, t, sigma_min),
                               ref[f"cfm_{name}_xt"], err_msg=name)
    assert_close(
        -flow.training_target(path, "velocity", x, noise, t, sigma_min),
        ref[f"cfm_{name}_ut"], err_msg=name)


def test_straight_paths_of_one_point_are_exact_in_one_euler_step():
  """For data concentrated at y the ideal velocity of the linear path is (x_t - y) / t, so
  x_t moves on a straight line and one Euler step from t = 1 lands on y (Liu et al. §2.2);
  the conversions agree with it: E[x | x_t] = y, E[eps | x_t] = (x_t - y) / t."""
  y = jnp.asarray([[0.5, -1.0, 2.0]])
  noise = jax.random.normal(jax.random.PRNGKey(0), (4, 3))
  velocity = lambda x, t_B: (x - y) / t_B[:, None]
  assert_close(flow.euler_sample(velocity, noise, 1), jnp.tile(y, (4, 1)),
                             atol=1e-6)
  assert_close(flow.euler_sample(velocity, noise, 7), jnp.tile(y, (4, 1)),
                             atol=1e-5)
  t = jnp.full((4,), 0.3)
  x_t = flow.interpolate("linear", y, noise, t)
  v = velocity(x_t, t)
  assert_close(flow.data_from("velocity", "linear", v, x_t, t),
                             jnp.tile(y, (4, 1)), atol=1e-5)
  assert_close(flow.noise_from("velocity", "linear", v, x_t, t), noise,
                             atol=1e-5)
  assert flow.time_interval("linear", "velocity") == (0.0, 1.0)
  assert flow.time_interval("gvp", "score") == (1e-3, 1.0 - 1e-3)


class _FakeRun:
  """The `ModeContext` of a trained flow whose params are the Gaussian data's std."""

  def __init__(self, tmp_path):
    self.tmp_path = tmp_path

  def restore(self):
    return types.SimpleNamespace(ema_params=jnp.float32(0.3), params=None), 7

  def jit(self, fn):
    return jax.jit(fn)

  def write_arrays(self, name, arrays):
    path = str(self.tmp_path / f"{name}.npz")
    np.savez(path, **arrays)
    return path

  def write_image_grid(self, name, images, ncols):
    return str(self.tmp_path / f"{name}.png")

  def write_json(self, name, content):
    return str(self.tmp_path / f"{name}.json")


def gaussian_velocity(s):
  """The exact velocity of the linear path for data ~ N(0, s^2): x_t ~ N(0, var_t) with
  var_t = (1 - t)^2 s^2 + t^2, and x_t = x_1 sqrt(var_t) moves as d log sqrt(var_t)/dt x_t;
  its ODE maps noise z at t = 1 to s z at t = 0."""
  def velocity(x, t_B):
    t = t_B.reshape((-1,) + (1,) * (x.ndim - 1))
    return (t - (1 - t) * s ** 2) / ((1 - t) ** 2 * s ** 2 + t ** 2) * x
  return velocity


def test_reflow_writes_ode_endpoints_that_training_reads_as_couplings(tmp_path):
  """--mode=reflow's pairs are (z, ODE(z)): with 8 Euler steps on the Gaussian flow each
  step multiplies x by 1 + dt (t - (1 - t) s^2) / var_t, so ODE(z) is z times their product.
  The split 'pairs' of data.pairs reads them back as couplings: each batch row's image is
  its own noise's endpoint, shuffled; pairs of another shape than the dataset's fail."""
  cfg = ml_collections.ConfigDict(dict(num_pairs=12, batch_size=6, seed=3, solver="euler",
                                       steps=8, rtol=0.0, atol=0.0))
  result = reflow.run_reflow_mode(_FakeRun(tmp_path), cfg, velocity_of=gaussian_velocity,
                                  image_shape=(28, 28, 1), use_ema=True)
  pairs = np.load(result["pairs"])
  assert pairs["noise"].shape == (12, 28, 28, 1) and result["step"] == 7
  t = np.linspace(1.0, 0.0, 9)[:-1]
  factor = np.prod(1 - 1 / 8 * (t - (1 - t) * 0.09) / ((1 - t) ** 2 * 0.09 + t ** 2))
  np.testing.assert_allclose(pairs["image"], factor * pairs["noise"], rtol=1e-5, atol=1e-6)
  assert abs(factor - 0.3) < 0.1   # near the exact flow's s (8 coarse steps)
  assert np.abs(pairs["noise"][:6] - pairs["noise"][6:]).min() > 0   # a new draw per batch

  data_cfg = ml_collections.ConfigDict(dict(dataset="mnist_5k", pairs=str(tmp_path)))
  batches = iter(data.make_loader(data_cfg, split="pairs", global_batch_size=5, seed=0))
  seen = np.concatenate([next(batches)["noise"] for _ in range(2)])
  batch = next(batches)
  np.testing.assert_allclose(batch["image"], factor * batch["noise"], rtol=1e-5, atol=1e-6)
  assert {tuple(r.ravel()) for r in seen} <= {tuple(r.ravel()) for r in pairs["noise"]}
  assert not np.array_equal(seen[:5], pairs["noise"][:5])   # shuffled
  data_cfg.dataset = "cifar10"
  with pytest.raises(DatasetUnavailableError, match="has \\(32, 32, 3\\)"):
    data.make_loader(data_cfg, split="pairs", global_batch_size=5, seed=0)
  with pytest.raises(ConfigError, match="multiple"):
    reflow.validate(ml_collections.ConfigDict({**cfg.to_dict(), "num_pairs": 13}))


def test_rk45_takes_scipys_steps():
  """rk45.sample takes the steps of scipy's solve_ivp(method='RK45') (the rectified-flow
  code's sampler) on the Gaussian flow: the same evaluations count, the same result to
  float32 precision, and the closed form s z to the tolerance; so does sampler 'rk45'."""
  velocity = gaussian_velocity(0.3)
  z = jax.random.normal(jax.random.PRNGKey(0), (6, 2, 2, 1))
  x, nfe = jax.jit(lambda z: rk45.sample(velocity, z))(z)
  shape = z.shape
  ref = integrate.solve_ivp(
      lambda s, y: -np.asarray(velocity(jnp.asarray(y.reshape(shape), jnp.float32),
                                        jnp.full((6,), 1 - s, jnp.float32))).ravel(),
      (0.0, 1.0), np.asarray(z, np.float64).ravel(), rtol=1e-5, atol=1e-5, method="RK45")
  assert int(nfe) == ref.nfev
  np.testing.assert_allclose(np.asarray(x).ravel(), ref.y[:, -1], atol=1e-6)
  np.testing.assert_allclose(x, 0.3 * z, atol=2e-5)
  # sample.sampler='rk45' of a velocity model on the linear process: from its prior draw
  # at t = 1 to t = 0 (samplers.sample draws x_1 from the first split of its key).
  x0_eps = lambda x, t_B: core.x0_and_eps("velocity", velocity(x, t_B), x, core.coefficients(
      "linear", t_B[:, None, None, None]))
  rng = jax.random.key(4)
  sampled = samplers.sample(x0_eps, "linear", rng, z.shape, sampler="rk45", steps=0,
                            prediction="velocity")
  prior = core.prior_sample("linear", jax.random.split(rng)[0], z.shape, 1.0)
  np.testing.assert_allclose(sampled, 0.3 * prior, atol=1e-3)   # RK45 at 1e-5: global error


def test_rectified_flow_and_sit_experiments():
  """experiments/liu2023_rectified_flow/cifar10.py: the released 1-rectified flow (RK45
  sampling) and its reflow variant (trains on the first flow's pairs from its params, one
  Euler step); experiments/ma2024_sit/mnist.py: SiT's 2 x 3 x 2 grid, every run distinct."""
  first, second = rf_cifar10.get_config(), rf_cifar10.get_config("reflow")
  assert (first.diffusion.process, first.diffusion.prediction, first.sample.sampler) == (
      "linear", "velocity", "rk45")
  assert (first.train.batch_size, first.train.lr, first.train.ema_decay) == (128, 2e-4,
                                                                              0.999999)
  assert first.data.train_split == "train" and second.data.train_split == "pairs"
  assert second.data.pairs == f"{second.init_from}/reflow" == "runs/rf_cifar10/reflow"
  assert (second.sample.sampler, second.sample.steps) == ("euler", 1)
  reflow.validate(first.reflow)
  sweep = sit_mnist.get_sweep()
  assert len({tuple(sorted(o.items())) for o in sweep}) == len(sweep) == 12
  sde = sit_mnist.get_config().sample   # SiT's SDE for the euler_maruyama runs
  assert (sde.sde_diffusion, sde.sde_last_step) == ("sigma", 0.04)
  assert {o["diffusion.prediction"] for o in sweep} == {"velocity", "score", "eps"}


class _TinyFlowNet(nn.Module):
  """A per-pixel affine map of x_t and t: the cheapest network DiffusionMethod can train."""

  @nn.compact
  def __call__(self, x, t_B, labels=None, augment_labels=None, *, train=False):
    del labels, augment_labels, train
    w = self.param("w", nn.initializers.constant(0.5), (2,))
    return w[0] * x + w[1] * t_B[:, None, None, None] / 999.0


def test_reflowed_training_regresses_on_each_images_own_noise():
  """With data.train_split='pairs' the train step's x_t and target use the batch's "noise"
  (the image's coupling), not a fresh draw: its loss is the flow loss at that noise; the
  trained flow offers --mode=reflow."""
  config = load_config("ddpm", "flow,smoke", **{"data.train_split": "pairs"})
  method = DiffusionMethod.from_config(config, DataSpec.for_images((8, 8, 1)))
  method = dataclasses.replace(method, model=_TinyFlowNet())
  assert method.couplings and "reflow" in method.modes()
  state = method.init(jax.random.key(0), None)
  gen = np.random.default_rng(0)
  batch = {"image": gen.uniform(-1, 1, (4, 8, 8, 1)).astype(np.float32),
           "label": np.zeros((4,), np.int32),
           "noise": gen.standard_normal((4, 8, 8, 1)).astype(np.float32)}
  rng = jax.random.key(1)
  _, metrics = jax.jit(method.train_step)(state, batch, rng)
  t_B, _ = method._draw_t_and_noise(jax.random.split(rng)[0], (4, 8, 8, 1))
  x_t = flow.interpolate("linear", batch["image"], batch["noise"], t_B)
  target = flow.training_target("linear", "velocity", batch["image"], batch["noise"], t_B)
  expected = jnp.mean((0.5 * x_t + 0.5 * t_B[:, None, None, None] - target) ** 2)
  np.testing.assert_allclose(metrics["loss"], expected, rtol=1e-5)


@pytest.mark.parametrize("path", flow.PATHS)
def test_method_trains_sits_losses(ref, path):
  """DiffusionMethod's objective on SiT's interpolants is `Transport.training_losses`
  (no weighting) for velocity, score (||sigma s + eps||^2) and noise ('eps') models."""
  t, x, eps, out = 1.0 - ref["t"], ref["x1"], ref["x0"], ref["model_out"]
  for prediction, theirs in (("velocity", "velocity"), ("score", "score"), ("eps", "noise")):
    config = load_config("ddpm", "smoke", **{"diffusion.process": path,
                                             "diffusion.prediction": prediction,
                                             "sample.sampler": "heun"})
    method = DiffusionMethod.from_config(config, DataSpec.for_images((2, 2, 3)))
    output = -out if prediction == "velocity" else out
    loss = method._loss(lambda x_t, t_B, output=output: output, x, t, eps)
    assert_close(loss, ref[f"sit_{path}_{theirs}_none_loss"].mean(), rtol=1e-4,
                 err_msg=prediction)
