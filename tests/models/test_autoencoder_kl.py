"""Stable Diffusion's VAE (gen_jax/models/autoencoder_kl.py) against diffusers' AutoencoderKL,
read through gen_jax/interop/diffusers_vae.py.

The fixture (tests/fixtures/autoencoder_kl_tiny, written by tools/make_autoencoder_fixture.py
with torch and diffusers) is a tiny random AutoencoderKL with SD's layout and its outputs.
"""
import json
import pathlib
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from gen_jax.interop import ForeignWeightsError, ForeignWeightsNotFoundError, diffusers_vae
from gen_jax.models.autoencoder_kl import SD_CONFIG, AutoencoderKL

FIXTURE = pathlib.Path(__file__).resolve().parent.parent / "fixtures" / "autoencoder_kl_tiny"
# What diffusers prints for AutoencoderKL(**SD's config) (tools/make_autoencoder_fixture.py,
# diffusers 0.42.1); also the 83.65M of stabilityai/sd-vae-ft-mse.
SD_PARAMETERS = 83_653_863


@pytest.fixture(scope="module")
def tiny():
  """(model, params, fixture outputs, jitted encode, jitted decode)."""
  model, params = diffusers_vae.load_autoencoder(str(FIXTURE))
  out = dict(np.load(FIXTURE / "outputs.npz"))
  encode = jax.jit(lambda p, x: model.apply({"params": p}, x, method=model.encode))
  decode = jax.jit(lambda p, z: model.apply({"params": p}, z, method=model.decode))
  return model, params, out, encode, decode


def test_encode_and_decode_match_diffusers(tiny):
  model, params, out, encode, decode = tiny
  assert (model.block_out_channels, model.layers_per_block, model.norm_num_groups) == ((8, 16),
                                                                                      1, 4)
  mean, logvar = encode(params, out["x"])
  np.testing.assert_allclose(mean, out["mean"], atol=2e-5, rtol=1e-4)
  np.testing.assert_allclose(logvar, out["logvar"], atol=2e-5, rtol=1e-4)
  np.testing.assert_allclose(decode(params, out["z"]), out["decoded"], atol=2e-5, rtol=1e-4)
  # The fixture is far from trivial: outputs vary, the posterior is not N(0, I).
  assert np.std(out["decoded"]) > 0.1 and np.std(out["mean"]) > 0.1


def _write(tmp_path, tensors, config=True):
  folder = tmp_path / "vae"
  folder.mkdir(exist_ok=True)
  save_file(tensors, str(folder / diffusers_vae.WEIGHTS))
  if config:
    shutil.copy(FIXTURE / "config.json", folder / "config.json")
  return str(folder)


def test_old_attention_names_and_1x1_conv_projections_load_the_same(tiny, tmp_path):
  # Pre-refactor diffusers files: query/key/value/proj_attn; converted ldm ones: [C, C, 1, 1].
  _, params, *_ = tiny
  new = {"to_q": "query", "to_k": "key", "to_v": "value", "to_out.0": "proj_attn"}
  renamed = {}
  for name, value in load_file(str(FIXTURE / diffusers_vae.WEIGHTS)).items():
    for now, old in new.items():
      if f"attentions.0.{now}." in name:
        name = name.replace(f".{now}.", f".{old}.")
        value = value[:, :, None, None] if value.ndim == 2 else value
    renamed[name] = value
  assert sum(".proj_attn.weight" in n for n in renamed) == 2
  _, loaded = diffusers_vae.load_autoencoder(_write(tmp_path, renamed))
  jax.tree.map(np.testing.assert_array_equal, loaded, jax.device_get(params))


def test_missing_extra_and_misshapen_tensors_are_named(tiny, tmp_path):
  tensors = load_file(str(FIXTURE / diffusers_vae.WEIGHTS))
  broken = {k: v for k, v in tensors.items() if k != "decoder.conv_in.bias"}
  broken["encoder.extra.weight"] = np.zeros((2,), np.float32)
  broken["quant_conv.weight"] = np.zeros((8, 4, 1, 1), np.float32)
  with pytest.raises(ForeignWeightsError) as e:
    diffusers_vae.load_autoencoder(_write(tmp_path, broken))
  message = str(e.value)
  assert "missing from the file: decoder/conv_in/bias" in message
  assert "not in the model: encoder/extra/scale" in message
  assert "quant_conv/kernel is (1, 1, 4, 8) in the file and (1, 1, 8, 8)" in message


def test_config_json_that_contradicts_the_model_is_named(tiny, tmp_path):
  model, *_ = tiny
  folder = pathlib.Path(_write(tmp_path, load_file(str(FIXTURE / diffusers_vae.WEIGHTS))))
  config = json.loads((folder / "config.json").read_text())
  config["norm_num_groups"] = 8   # invisible in the shapes
  (folder / "config.json").write_text(json.dumps(config))
  abstract = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 4, 4, 3))))
  with pytest.raises(ForeignWeightsError, match="model.norm_num_groups: the config has 4, the "
                                                "file 8"):
    diffusers_vae.load_params(f"diffusers_vae:{folder}", model, abstract["params"])


def test_pickles_and_missing_files_are_refused(tmp_path):
  (tmp_path / "diffusion_pytorch_model.bin").write_bytes(b"\x80")
  with pytest.raises(ForeignWeightsError, match="pickled.*safe_serialization=True"):
    diffusers_vae.load_autoencoder(str(tmp_path))
  with pytest.raises(ForeignWeightsNotFoundError):
    diffusers_vae.load_autoencoder(str(tmp_path / "nothing.safetensors"))


def test_stable_diffusion_config_parameter_count_and_f8_shapes():
  model = AutoencoderKL(**SD_CONFIG)
  assert model.downsampling_factor == 8
  x = jax.ShapeDtypeStruct((2, 64, 48, 3), jnp.float32)
  variables = jax.eval_shape(model.init, jax.random.key(0), x)
  assert sum(p.size for p in jax.tree.leaves(variables)) == SD_PARAMETERS
  mean, logvar = jax.eval_shape(lambda v, x: model.apply(v, x, method=model.encode),
                                variables, x)
  assert mean.shape == logvar.shape == (2, 8, 6, 4)
  decoded = jax.eval_shape(lambda v, z: model.apply(v, z, method=model.decode), variables, mean)
  assert decoded.shape == (2, 64, 48, 3) and decoded.dtype == jnp.float32


def test_logvar_is_clipped_as_diffusers(tiny):
  # The fixture's network (compiled once) with quant_conv's log-variance biases far out.
  _, params, out, encode, _ = tiny
  params = jax.tree.map(jnp.asarray, params)
  params["quant_conv"]["bias"] = jnp.array([0.0] * 4 + [1e4, 1e4, -1e4, -1e4])
  _, logvar = encode(params, out["x"])
  np.testing.assert_array_equal(logvar[..., :2], 20.0)
  np.testing.assert_array_equal(logvar[..., 2:], -30.0)


def test_export_is_the_inverse_of_reading(tiny):
  model, params, *_ = tiny
  tensors = load_file(str(FIXTURE / diffusers_vae.WEIGHTS))
  exported, metadata, config = diffusers_vae.export_files(jax.device_get(params), model, 16, 3)
  assert sorted(exported) == sorted(tensors) and metadata["format"] == "pt"
  for name, value in tensors.items():
    np.testing.assert_array_equal(exported[name], value, err_msg=name)
  theirs = json.loads((FIXTURE / "config.json").read_text())
  assert {k: theirs[k] for k in config if k != "sample_size"} == {
      k: v for k, v in config.items() if k != "sample_size"}
