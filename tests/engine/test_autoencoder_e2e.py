"""The KL autoencoder end to end through the functions `launch.py` calls: train (with its
eval and sample grids), then `gen_jax.load_run(...).encode / .decode`."""
import os

import numpy as np
import pytest
from smoke import load_config

import gen_jax
from gen_jax.engine import train
from gen_jax.engine.outputs import read_metrics
from gen_jax.engine.trained_run import SamplingRequestError


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, data_dir):
  workdir = str(tmp_path_factory.mktemp("autoencoder_run"))
  train.train_and_evaluate(load_config("autoencoder", "smoke", **{"data.data_dir": data_dir}),
                           workdir)
  return workdir


def test_training_writes_metrics_and_both_grids(run_dir):
  assert sorted(os.listdir(os.path.join(run_dir, "samples"))) == [
      "step_4_reconstructions.png", "step_4_samples.png"]
  rows = read_metrics(run_dir)
  kl_weight = load_config("autoencoder", "smoke").autoencoder.kl_weight
  for r in (r for r in rows if "train/loss" in r):
    np.testing.assert_allclose(r["train/loss"], r["train/recon"] + kl_weight * r["train/kl"],
                               rtol=1e-5)
  evals = [r for r in rows if "eval/ema/psnr" in r]
  assert evals and evals[0]["step"] == 4
  assert {"eval/raw/psnr", "eval/ema/kl", "eval/ema/latent_std"} <= set(evals[0])


def test_load_run_encodes_and_decodes(run_dir):
  run = gen_jax.load_run(run_dir)
  images = np.random.default_rng(0).integers(0, 256, (3, 28, 28, 1), dtype=np.uint8)
  mean, logvar = run.encode(images)
  assert mean.shape == logvar.shape == (3, 14, 14, 2) and mean.dtype == np.float32
  mean_f, _ = run.encode(images.astype(np.float32) / 127.5 - 1.0)   # uint8 is read as x/127.5 - 1
  np.testing.assert_allclose(mean, mean_f, atol=1e-6)
  decoded = run.decode(mean)
  assert decoded.shape == (3, 28, 28, 1)
  # The EMA and raw weights differ after 4 steps, and so do their encodings.
  assert not np.allclose(run.encode(images, use_ema=False)[0], mean)
  with pytest.raises(SamplingRequestError, match=r"encode\(\) takes images \[N, 28, 28, 1\]"):
    run.encode(np.zeros((2, 32, 32, 1), np.float32))
  with pytest.raises(SamplingRequestError, match=r"decode\(\) takes latents \[N, 14, 14, 2\]"):
    run.decode(np.zeros((2, 7, 7, 4), np.float32))


def test_diffusers_vae_weights_need_an_autoencoder_run():
  from gen_jax.core.errors import ConfigError
  from gen_jax.engine.experiment import build_experiment
  with pytest.raises(ConfigError, match=r"init_from=diffusers_vae:x holds diffusers "
                                        r"AutoencoderKL .* it needs method='autoencoder'"):
    build_experiment(load_config("vae", **{"init_from": "diffusers_vae:x"}))
