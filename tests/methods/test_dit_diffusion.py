"""The DiT as the diffusion family's network (model.architecture='dit', configs/dit.py): it
trains and samples under the DDPM process with learned sigma, EDM and the linear (flow)
process, with labels dropped once (by the method), and bad configs fail before compiling.

Each process compiles one train step and one sampler on a one-block 8x8 DiT.
"""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gen_jax.configs import ddpm
from gen_jax.configs import dit as dit_config
from gen_jax.core.errors import ConfigError
from gen_jax.methods.diffusion import core
from gen_jax.methods.diffusion.method import DiffusionMethod
from gen_jax.models.dit import DiT

SHAPE = (8, 8, 1)
STEPS = 8


def _config(variant: str, **model):
  config = dit_config.get_config(variant)
  config.model.update(model)
  config.train.lr = 1e-2
  config.sample.num = 4
  return config


def _batch():
  images = jnp.tanh(jax.random.normal(jax.random.key(0), (8, *SHAPE)))
  return {"image": images, "label": jnp.arange(8) % 10}


@pytest.fixture(scope="module", params=["smoke", "edm,smoke", "flow,smoke"])
def trained(request):
  """The method of a configs/dit.py variant, trained STEPS steps on one batch with one key
  (so every step sees the same t and noise), and its losses."""
  method = DiffusionMethod.from_config(_config(request.param), SHAPE)
  state = method.init(jax.random.key(0), None)
  step = jax.jit(method.train_step)
  batch, losses = _batch(), []
  for _ in range(STEPS):
    state, metrics = step(state, batch, jax.random.key(1))
    losses.append(float(metrics["loss"]))
  return request.param, method, state, losses


def test_the_network_is_a_dit_that_drops_no_labels_itself(trained):
  variant, method, _, _ = trained
  model = method.model
  assert isinstance(model, DiT)
  assert model.has_null_class and not model.train_label_dropout   # the method drops them
  assert model.class_dropout_prob == method.p_uncond == 0.1
  # Learned sigma (out channels 2C) exactly where the DDPM process learns its variance.
  assert model.learn_sigma == (variant == "smoke") == (method.variance == "learned_range")


def test_training_lowers_the_loss_at_fixed_t_and_noise(trained):
  _, _, _, losses = trained
  assert all(math.isfinite(v) for v in losses)
  assert losses[-1] < 0.9 * losses[0], losses


def test_the_loss_is_the_processes_objective_on_the_dit_output(trained):
  variant, method, state, _ = trained
  if variant != "flow,smoke":
    pytest.skip("checked on the linear process (a closed form without preconditioning)")
  batch = _batch()
  x0, labels = batch["image"], batch["label"]
  t_B = jnp.linspace(0.1, 0.9, 8)
  noise = jax.random.normal(jax.random.key(2), x0.shape)
  loss = method._loss(method._network(state.params, False, labels=labels), x0, t_B, noise)
  # Rectified flow: x_t = (1 - t) x0 + t eps, velocity target eps - x0, the network's time
  # input the process's noise label.
  t = t_B[:, None, None, None]
  out = method.model.apply({"params": state.params}, (1 - t) * x0 + t * noise,
                           core.noise_labels("linear", t_B), labels)
  np.testing.assert_allclose(float(loss), float(jnp.mean((noise - x0 - out) ** 2)), rtol=1e-5)
  # Training mode changes nothing in the DiT (no dropout of labels or activations).
  train_out = method.model.apply({"params": state.params}, x0, t_B, labels, train=True,
                                 rngs={"dropout": jax.random.key(3)})
  np.testing.assert_array_equal(train_out, method.model.apply({"params": state.params}, x0,
                                                              t_B, labels))


def test_guided_samples_have_the_image_shape_and_depend_only_on_the_key(trained):
  _, method, state, _ = trained
  sample = jax.jit(lambda s, key: method.sample(s, key, 4).images)
  a, b = sample(state, jax.random.key(5)), sample(state, jax.random.key(5))
  assert a.shape == (4, *SHAPE) and np.all(np.isfinite(a))
  assert np.abs(a).max() <= 1.0
  np.testing.assert_array_equal(a, b)
  assert not np.array_equal(a, sample(state, jax.random.key(6)))


def test_the_default_config_has_its_pinned_parameter_count():
  method = DiffusionMethod.from_config(dit_config.get_config(), (28, 28, 1))
  params = jax.eval_shape(method.init, jax.random.key(0), None).params
  assert sum(math.prod(p.shape) for p in jax.tree.leaves(params)) == 1_277_472
  assert method.model.out_channels == 2 and method.model.grid_size == 7


def test_bad_dit_configs_fail_before_compiling():
  config = _config("smoke")
  config.diffusion.p_uncond = 0.0
  with pytest.raises(ConfigError, match="p_uncond"):
    DiffusionMethod.from_config(config, SHAPE)
  with pytest.raises(ConfigError, match="patch size is 3"):
    DiffusionMethod.from_config(_config("smoke", patch_size=3), SHAPE)
  with pytest.raises(ConfigError, match="num_heads"):
    DiffusionMethod.from_config(_config("smoke", num_heads=3), SHAPE)
  with pytest.raises(ConfigError, match="DiT-XXL/2"):
    DiffusionMethod.from_config(_config("smoke", dit_size="DiT-XXL/2"), SHAPE)
  config = ddpm.get_config("smoke")
  config.model.architecture = "dit"
  with pytest.raises(ConfigError, match="configs/dit.py"):
    DiffusionMethod.from_config(config, SHAPE)
