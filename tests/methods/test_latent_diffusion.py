"""Latent diffusion end to end on a tiny AutoencoderKL (configs/autoencoder.py:smoke after one
update): its --mode=latents writes what the encoder gives (and a resumed extraction ends with
the same files as an uninterrupted one), the scaling factor is 1 / std of z, and
configs/ddpm.py:latents,smoke trains on the latents and samples images of the source shape,
decoded through the recorded decoder."""
import json
import os

import jax
import ml_collections
import numpy as np
import pytest
from PIL import Image
from smoke import load_config

import gen_jax
from gen_jax import data
from gen_jax.core.errors import ConfigError
from gen_jax.data import latents as latents_data
from gen_jax.engine import method_modes, modes, train
from gen_jax.engine import workdir as workdir_lib
from gen_jax.methods import build_method
from gen_jax.methods.autoencoder import AutoencoderMethod
from gen_jax.methods.latents import LatentImages, load_decoder, model_fields
from gen_jax.methods.latents_mode import Moments, extract_latents, host_encoder
from gen_jax.models.autoencoder_kl import AutoencoderKL

SHARD = 200        # the mnist_5k test split's 500 digits: shards of 200, 200, 100
LATENT = (14, 14, 2)
PROVENANCE = {}    # the run and step the mode recorded (read by `folder`)


@pytest.fixture(scope="module")
def ae_run(tmp_path_factory, data_dir):
  """configs/autoencoder.py:smoke (f = 2, c = 2: 28x28x1 -> 14x14x2) after one update."""
  workdir = str(tmp_path_factory.mktemp("ae") / "run")
  train.train_and_evaluate(load_config("autoencoder", "smoke", **{
      "data.data_dir": data_dir, "train.num_steps": 1, "train.checkpoint_every": 1,
      "train.sample_every": 0, "eval.every": 0}), workdir)
  return workdir


@pytest.fixture(scope="module")
def autoencoder(ae_run):
  run = gen_jax.load_run(ae_run)
  method = run.experiment().method
  assert isinstance(method, AutoencoderMethod)
  params = run.ema_params
  return method.model, params, host_encoder(method.encode, params)


def extract(autoencoder, data_dir, folder, **kwargs):
  model, params, encode = autoencoder
  data_config = ml_collections.ConfigDict({"dataset": "mnist_5k", "data_dir": data_dir,
                                           "manual_dir": ""})
  return extract_latents(encode, data_config, folder, splits=("test",), shard_size=SHARD,
                         batch_size=100, scaling_factor=0.0, latent_shape=LATENT,
                         decoder_fields=model_fields(model), decoder_params=params,
                         provenance=PROVENANCE, **kwargs)


@pytest.fixture(scope="module")
def folder(tmp_path_factory, ae_run):
  """The latents of the mnist_5k test split, written by the autoencoder run's --mode=latents."""
  path = str(tmp_path_factory.mktemp("latents") / "mnist_5k")
  config = workdir_lib.load_saved_config(ae_run)
  config.latents.update({"splits": ("test",), "shard_size": SHARD, "output_dir": path})
  result, report = method_modes.run_method_mode(config, ae_run, "latents")
  assert result["complete"] and result["splits"] == {"test": 500}
  assert f"--config.data.latents_dir={path}" in report
  PROVENANCE.update(json.load(open(os.path.join(path, "extraction.json")))["autoencoder"])
  return path


def files(path):
  return {name: open(os.path.join(path, name), "rb").read() for name in sorted(os.listdir(path))}


def test_shards_hold_what_the_encoder_gave(folder, autoencoder, data_dir):
  info = latents_data.open_latents(folder)
  assert info.latent_shape == LATENT and info.image_shape == (28, 28, 1)
  assert [count for _, count in info.splits["test"]["shards"]] == [200, 200, 100]
  images = latents_data.SplitImages(
      ml_collections.ConfigDict({"dataset": "mnist_5k", "data_dir": data_dir}), "test")
  x, labels = images.read(0, 500)
  mean, std, stored_labels = latents_data.LatentStore(info, "test").read(np.arange(500))
  want_mean, want_std = autoencoder[2](x)
  np.testing.assert_allclose(mean, want_mean, atol=1e-5)
  np.testing.assert_allclose(std, want_std, rtol=1e-5)
  np.testing.assert_array_equal(stored_labels, labels)
  # The LDM scale: 1 / std of z ~ q(z|x) over every element of the split.
  moments = Moments()
  moments.add(mean, std)
  z_std = np.sqrt(np.mean(mean.astype(np.float64)**2 + std.astype(np.float64)**2)
                  - np.mean(mean.astype(np.float64))**2)
  assert info.scaling_factor == pytest.approx(1.0 / z_std, rel=1e-6)


def test_resumed_extraction_equals_an_uninterrupted_one(folder, autoencoder, data_dir,
                                                        tmp_path):
  path = str(tmp_path / "resumed")
  stopped = extract(autoencoder, data_dir, path, max_new_shards=1)
  assert not stopped["complete"]
  assert not os.path.exists(os.path.join(path, latents_data.METADATA))   # unfinished
  # A kill during the next shard's write leaves its temporary file behind.
  partial = os.path.join(path, latents_data.shard_name("test", 1, 3))
  with open(partial + ".tmp", "wb") as f:
    f.write(b"half a shard")
  assert extract(autoencoder, data_dir, path)["complete"]
  resumed = {k: v for k, v in files(path).items() if not k.endswith(".tmp")}
  assert resumed == files(folder)
  # Shards of other settings (here their size) never mix into this folder.
  model, params, encode = autoencoder
  with pytest.raises(ConfigError, match="other settings"):
    extract_latents(encode, ml_collections.ConfigDict({"dataset": "mnist_5k",
                                                       "data_dir": data_dir}),
                    path, splits=("test",), shard_size=100, batch_size=100, scaling_factor=0.0,
                    latent_shape=LATENT, decoder_fields=model_fields(model),
                    decoder_params=params, provenance=PROVENANCE)


def test_decoder_round_trips(folder, autoencoder):
  model, params, _ = autoencoder
  decoder = load_decoder(latents_data.open_latents(folder))
  z = jax.random.normal(jax.random.key(1), (2, *LATENT))
  want = model.apply({"params": params}, z / decoder.scaling_factor,
                     method=AutoencoderKL.decode)
  np.testing.assert_allclose(decoder.decode(z), np.clip(want, -1, 1), atol=1e-6)


@pytest.fixture(scope="module")
def run(tmp_path_factory, folder, data_dir):
  workdir = str(tmp_path_factory.mktemp("ldm") / "run")
  config = load_config("ddpm", "latents,smoke", **{
      "data.latents_dir": folder, "data.data_dir": data_dir, "data.train_split": "test",
      "train.num_steps": 2, "train.checkpoint_every": 2, "train.sample_every": 0,
      "eval.every": 0})
  train.train_and_evaluate(config, workdir)
  return workdir, config


def test_ddpm_trains_on_latents_and_samples_decoded_images(run):
  workdir, config = run
  spec = data.describe(config.data)
  assert spec.image_shape == LATENT and spec.sample_shape == (28, 28, 1)
  assert isinstance(build_method(config, spec), LatentImages)
  saved = json.load(open(os.path.join(workdir, "config.json")))
  assert saved["data"]["dataset"] == "latents"
  num = config.sample.num
  images = gen_jax.load_run(workdir).sample(num, seed=0)
  assert images.shape == (num, 28, 28, 1) and images.dtype == np.uint8
  # --mode=sample: a grid of decoded digits (28x28 cells), the same compiled sampler.
  grid = np.asarray(Image.open(modes.sample(config, workdir)))
  cols = int(np.ceil(np.sqrt(num)))
  assert grid.shape[1] == cols * (28 + 2) + 2 and grid.std() > 0   # image_grid's 2px padding


@pytest.mark.parametrize("family", ["ddpm", "dit"])
def test_latents_variants_sample_images_of_the_source_shape(folder, family):
  # Shapes only (jax.eval_shape): the network sees latents, its samples are decoded digits.
  config = load_config(family, "latents,smoke", **{"data.latents_dir": folder})
  spec = data.describe(config.data)
  method = build_method(config, spec)
  assert isinstance(method, LatentImages)
  state = jax.eval_shape(method.init, jax.random.key(0), spec.example_batch())
  assert jax.tree.leaves(state.params)   # the family's own network, on LATENT inputs
  samples = jax.eval_shape(lambda s: method.sample(s, jax.random.key(0), 3), state)
  assert samples.images.shape == (3, 28, 28, 1)


def test_sd_vae_file_encodes_without_a_checkpoint(tmp_path, data_dir):
  # configs/autoencoder.py with init_from=diffusers_vae:<file> and no checkpoint in the
  # workdir: --mode=latents encodes with the file's weights and the fixed scaling factor
  # (tests/fixtures/autoencoder_kl_tiny: diffusers' AutoencoderKL, f = 2, c = 4, RGB).
  fixture = os.path.join(os.path.dirname(os.path.dirname(__file__)), "fixtures",
                         "autoencoder_kl_tiny")
  rng = np.random.default_rng(0)
  for split, count in (("train", 4), ("test", 2)):
    os.makedirs(tmp_path / "images" / split / "a")
    for i in range(count):
      Image.fromarray(rng.integers(0, 256, (16, 16, 3), np.uint8)).save(
          tmp_path / "images" / split / "a" / f"{i}.png")
  config = load_config("autoencoder", "smoke", **{
      "data.dataset": "image_folder", "data.image_folder": str(tmp_path / "images"),
      "data.image_size": 16, "data.channels": 3, "data.data_dir": data_dir,
      "model.block_out_channels": (8, 16), "model.latent_channels": 4,
      "init_from": f"diffusers_vae:{fixture}", "latents.scaling_factor": 0.18215,
      "latents.batch_size": 4, "latents.output_dir": str(tmp_path / "latents")})
  result, _ = method_modes.run_method_mode(config, str(tmp_path / "run"), "latents")
  assert result["complete"] and result["splits"] == {"train": 4, "test": 2}
  info = latents_data.open_latents(str(tmp_path / "latents"))
  assert info.scaling_factor == 0.18215 and info.latent_shape == (8, 8, 4)
  assert json.load(open(info.decoder_config))["provenance"] == {
      "init_from": f"diffusers_vae:{fixture}"}
  # The stored posteriors are the file's encoder's.
  method = build_method(config, data.describe(config.data))
  assert isinstance(method, AutoencoderMethod)
  abstract = jax.eval_shape(method.init, jax.random.key(0), None).params
  params = method.load_foreign_params(config.init_from, abstract)
  x, _ = latents_data.SplitImages(config.data, "test").read(0, 2)
  mean, std, _ = latents_data.LatentStore(info, "test").read(np.arange(2))
  want_mean, want_std = host_encoder(method.encode, params)(x)
  np.testing.assert_allclose(mean, want_mean, atol=1e-5)
  np.testing.assert_allclose(std, want_std, rtol=1e-5)
