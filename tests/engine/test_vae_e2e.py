"""VAE end to end through the functions `launch.py` calls: train, checkpoint, resume, sample
(prior samples, reconstructions, latent manifold), eval with the k-named IWAE metrics."""
import json
import os

import numpy as np
import pytest
from PIL import Image
from smoke import load_config, run_on_fake_devices, train_losses

from gen_jax.engine import modes, train
from gen_jax.engine.outputs import read_metrics


def vae_config(data_dir, arg="smoke", **overrides):
  return load_config("vae", arg, **{"data.data_dir": data_dir, **overrides})


@pytest.fixture(scope="module")
def runs(tmp_path_factory, data_dir):
  """Run A: 4 steps, then rerun to 6 (resume). Run B: 6 steps uninterrupted."""
  root = tmp_path_factory.mktemp("vae_runs")
  a, b = str(root / "a"), str(root / "b")
  train.train_and_evaluate(vae_config(data_dir), a)
  after_first = {"ckpts": sorted(os.listdir(os.path.join(a, "checkpoints"))),
                 "samples": sorted(os.listdir(os.path.join(a, "samples")))}
  train.train_and_evaluate(vae_config(data_dir, **{"train.num_steps": 6}), a)
  train.train_and_evaluate(vae_config(data_dir, **{"train.num_steps": 6}), b)
  return {"a": a, "b": b, "after_first": after_first}


def _grid(path):
  return np.asarray(Image.open(path))


def test_first_run_writes_checkpoints_metrics_and_three_grids(runs):
  assert [c for c in runs["after_first"]["ckpts"] if c.isdigit()] == ["2", "4"]
  assert runs["after_first"]["samples"] == ["step_4_manifold.png", "step_4_reconstructions.png",
                                            "step_4_samples.png"]
  rows = read_metrics(runs["a"])
  train_rows = [r for r in rows if "train/loss" in r]
  for r in train_rows:   # loss = -ELBO = KL - E log p(x|z), in nats per image
    np.testing.assert_allclose(r["train/loss"], r["train/kl"] - r["train/recon"], rtol=1e-5)
  evals = [r for r in rows if "eval/ema/nll_iwae_k20" in r]
  assert evals and evals[0]["step"] == 4


def test_resumed_run_equals_uninterrupted_run(runs):
  resumed, straight = train_losses(runs["a"]), train_losses(runs["b"])
  assert sorted(resumed) == [1, 2, 3, 4, 5, 6]
  np.testing.assert_allclose([resumed[s] for s in (5, 6)], [straight[s] for s in (5, 6)],
                             rtol=1e-6)
  assert [resumed[s] for s in range(1, 5)] == [straight[s] for s in range(1, 5)]


def test_sample_mode_writes_samples_and_reconstructions(runs, data_dir):
  path = modes.sample(vae_config(data_dir), runs["b"])
  folder = os.path.dirname(path)
  stem = "sample_step_6_ema_seed0"   # one file per named grid (JAX orders dict outputs by name)
  samples, recon, manifold = (_grid(os.path.join(folder, f"{stem}_{name}.png"))
                              for name in ("samples", "reconstructions", "manifold"))
  # sample.num = 4 tiles of 28x28 on a 2x2 grid with 2-pixel padding.
  assert samples.shape == (62, 62) and samples.std() > 0
  # Reconstructions: 4 tiles of input | reconstruction, 28 x 56 each.
  assert recon.shape == (2 * 30 + 2, 2 * 58 + 2)
  tile_input = recon[2:30, 2:30]
  assert set(np.unique(tile_input)) <= {0, 255}         # the binarized test digit
  assert len(np.unique(recon[2:30, 30:58])) > 2          # Bernoulli means, not binary
  # Manifold (2-D latent, smoke manifold_size 4): 4 x 4 tiles.
  assert manifold.shape == (4 * 30 + 2, 4 * 30 + 2)


def test_eval_mode_writes_json_with_k_named_metrics(runs, data_dir):
  metrics = modes.evaluate(vae_config(data_dir), runs["b"])
  saved = json.load(open(os.path.join(runs["b"], "eval", "step_6.json")))
  assert saved["step"] == 6
  for weights in ("ema", "raw"):
    for name in ("elbo", "recon", "kl", "elbo_k20", "nll_iwae_k20"):
      key = f"eval/{weights}/{name}"
      assert saved[key] == pytest.approx(metrics[key])
  # -L_k <= -(mean log w) over the same k samples (Jensen); both near 784 * log 2 untrained.
  assert saved["eval/ema/nll_iwae_k20"] <= -saved["eval/ema/elbo_k20"] + 1e-3
  assert 100 < saved["eval/raw/nll_iwae_k20"] < 800


def test_continuous_conv_variant_trains_and_reports_psnr_ssim(data_dir, tmp_path):
  workdir = str(tmp_path / "conv")
  config = vae_config(data_dir, "smoke,continuous,conv", **{"train.num_steps": 2,
                                                            "eval.every": 2,
                                                            "train.sample_every": 2})
  train.train_and_evaluate(config, workdir)
  rows = [r for r in read_metrics(workdir) if "eval/ema/recon_psnr" in r]
  assert rows and np.isfinite(rows[0]["eval/ema/recon_psnr"])
  assert -1 <= rows[0]["eval/raw/recon_ssim"] <= 1
  recon = _grid(os.path.join(workdir, "samples", "step_2_reconstructions.png"))
  assert len(np.unique(recon[2:30, 2:30])) > 2         # a continuous (grey-level) input digit


def test_launcher_summary_counts_the_smoke_network(data_dir):
  text = modes.summary(vae_config(data_dir))
  # smoke: 784-32-32-(2, 2) encoder, 2-32-32-784 decoder
  dense = lambda i, o: i * o + o
  expected = (dense(784, 32) + dense(32, 32) + 2 * dense(32, 2)
              + dense(2, 32) + dense(32, 32) + dense(32, 784))
  assert text.splitlines()[-1] == f"params: {expected}"


EIGHT_DEVICES = """
overrides = {{"data.data_dir": {data_dir!r}, "sample.num": 8}}
train.train_and_evaluate(load_config("vae", "smoke", **overrides), {workdir!r})
evals = [r for r in read_metrics({workdir!r}) if "eval/ema/nll_iwae_k20" in r]
print("RESULT" + json.dumps({{"losses": train_losses({workdir!r}), "eval": evals[0]}}))
"""


def test_eight_devices_match_one_device(runs, data_dir, tmp_path):
  # Batch sharded over 8 fake CPU devices: same losses and the same k-sample eval as on one
  # (the noise is drawn for the global batch, so it does not depend on the sharding).
  workdir = str(tmp_path / "run8")
  result = run_on_fake_devices(EIGHT_DEVICES.format(data_dir=data_dir,
                                                    workdir=workdir))
  eight = {int(k): v for k, v in result["losses"].items()}
  one = train_losses(runs["b"])
  np.testing.assert_allclose([eight[s] for s in range(1, 5)], [one[s] for s in range(1, 5)],
                             rtol=1e-5)
  one_eval = [r for r in read_metrics(runs["b"]) if "eval/ema/nll_iwae_k20" in r][0]
  for key in ("eval/ema/nll_iwae_k20", "eval/raw/elbo"):
    np.testing.assert_allclose(result["eval"][key], one_eval[key], rtol=1e-5)
  samples = os.listdir(os.path.join(workdir, "samples"))
  assert "step_4_reconstructions.png" in samples
