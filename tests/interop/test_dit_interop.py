"""gen_jax's DiT against the authors' PyTorch DiT (facebookresearch/DiT models.py), through the
fixture tools/make_dit_fixture.py writes: their state dict of random weights, converted by
gen_jax/interop/dit.py, gives their output on the same inputs."""
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from smoke import FIXTURES

from gen_jax.interop import ForeignWeightsError
from gen_jax.interop.dit import dit_params_from_state_dict
from gen_jax.models.dit import DiT

PATH = os.path.join(FIXTURES, "dit", "parity.npz")


@pytest.fixture(scope="module")
def fixture():
  with np.load(PATH) as f:
    data = {k: f[k] for k in f.files}
  state_dict = {k.removeprefix("sd/"): v for k, v in data.items() if k.startswith("sd/")}
  return data, state_dict, json.loads(str(data["config"]))


def test_converted_authors_weights_give_the_authors_output(fixture):
  data, state_dict, config = fixture
  params = dit_params_from_state_dict(state_dict)
  model = DiT(**config)
  # The converted tree is exactly the one gen_jax's DiT builds (names and shapes).
  shapes = jax.eval_shape(model.init, jax.random.key(0), data["x"], data["t"], data["y"])
  assert jax.tree.map(np.shape, params) == jax.tree.map(np.shape, shapes["params"])
  out = model.apply({"params": params}, jnp.asarray(data["x"]), jnp.asarray(data["t"]),
                    jnp.asarray(data["y"]))
  assert np.abs(data["out"]).mean() > 0.1   # the fixture's weights are not the zero init
  np.testing.assert_allclose(np.asarray(out), data["out"], rtol=1e-5, atol=5e-5)


def test_conversion_rejects_foreign_tensors_and_positions(fixture):
  _, state_dict, _ = fixture
  with pytest.raises(ForeignWeightsError, match="unexpected tensor 'blocks.0.norm1.weight'"):
    dit_params_from_state_dict({**state_dict, "blocks.0.norm1.weight": np.ones(16)})
  with pytest.raises(ForeignWeightsError, match="pos_embed"):
    dit_params_from_state_dict({**state_dict, "pos_embed": state_dict["pos_embed"] + 1.0})
