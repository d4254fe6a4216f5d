"""DCGAN end to end through the functions `launch.py` calls: train, checkpoint, resume (both
optimizers), sample (samples + interpolation grids), eval, summary; 1 vs 8 devices with
BatchNorm. A critic without BatchNorm and a spectrally normalized D resume exactly in
test_rpgan_e2e.py; WGAN-GP's step is pinned in tests/methods/test_gan.py.

The smoke runs share compiled code through the persistent compilation cache.
"""
import json
import os

import chex
import jax
import numpy as np
import pytest
from PIL import Image
from smoke import load_config, run_on_fake_devices

import gen_jax
from gen_jax.engine import checkpoint as ckpt_lib
from gen_jax.engine import modes, train
from gen_jax.engine.experiment import build_experiment
from gen_jax.engine.outputs import read_metrics, to_uint8
from gen_jax.methods.gan import D, G


def _series(workdir, key):
  return {r["step"]: r[key] for r in read_metrics(workdir) if key in r}


@pytest.fixture(scope="module")
def runs(tmp_path_factory, data_dir):
  """Run A: 4 steps, then rerun to 6 (resume). Run B: 6 steps uninterrupted."""
  root = tmp_path_factory.mktemp("gan_runs")
  a, b = str(root / "a"), str(root / "b")
  train.train_and_evaluate(load_config("dcgan", **{"data.data_dir": data_dir}), a)
  after_first = sorted(os.listdir(os.path.join(a, "checkpoints")))
  six = {"data.data_dir": data_dir, "train.num_steps": 6}
  train.train_and_evaluate(load_config("dcgan", **six), a)
  train.train_and_evaluate(load_config("dcgan", **six), b)
  return {"a": a, "b": b, "after_first": after_first}


def test_first_run_writes_checkpoints_metrics_and_both_grids(runs):
  assert [c for c in runs["after_first"] if c.isdigit()] == ["2", "4"]
  rows = read_metrics(runs["a"])
  train_keys = {k for r in rows for k in r if k.startswith("train/")}
  assert {"train/loss", "train/d_loss", "train/g_loss", "train/d_real", "train/d_fake",
          "train/d_grad_norm", "train/g_grad_norm"} <= train_keys
  assert "train/gp" not in train_keys                        # non_saturating: no penalty
  assert any("eval/ema/g_loss" in r and "eval/raw/d_loss" in r and r["step"] == 4 for r in rows)
  for name in ("samples", "interpolation"):
    grid = np.asarray(Image.open(os.path.join(runs["a"], "samples", f"step_4_{name}.png")))
    assert grid.shape == (2 + 2 * 30, 2 + 2 * 30) and grid.std() > 0   # 2x2 gray 28x28 tiles
  assert json.load(open(os.path.join(runs["a"], "config.json")))["method"] == "gan"


def test_resumed_run_equals_uninterrupted_run(runs):
  # Steps 1-4 were logged once, 5-6 after resuming at step 4. D's loss at step 5 needs D's
  # params + Adam state; G's needs G's params, Adam state and BatchNorm averages (via D).
  assert [r["step"] for r in read_metrics(runs["a"]) if "train/loss" in r] == [1, 2, 3, 4, 5, 6]
  for key in ("train/d_loss", "train/g_loss", "train/d_fake"):
    resumed, straight = _series(runs["a"], key), _series(runs["b"], key)
    np.testing.assert_allclose([resumed[5], resumed[6]], [straight[5], straight[6]], rtol=1e-6,
                               err_msg=key)
    assert [resumed[s] for s in range(1, 5)] == [straight[s] for s in range(1, 5)]   # determinism


def test_resumed_checkpoint_equals_uninterrupted_checkpoint(runs, data_dir):
  # Every leaf of the final state — both optimizers' Adam moments and counts, BN
  # statistics, EMA — is the same whether the run was interrupted or not.
  exp = build_experiment(load_config("dcgan", **{"data.data_dir": data_dir}))
  states = []
  for run in ("a", "b"):
    ckpt = ckpt_lib.Checkpointer(ckpt_lib.checkpoint_dir(runs[run]), read_only=True)
    states.append(ckpt.restore(6, exp.abstract_state, exp.state_sharding))
    ckpt.close()
  chex.assert_trees_all_close(states[0], states[1], rtol=1e-6, atol=1e-8)
  assert int(states[0].step) == 6
  for net in (G, D):   # not trivially equal: both Adam states hold moments moved off zero
    moments = [x for x in jax.tree.leaves(states[0].opt_state[net]) if np.ndim(x) > 0]
    assert len(moments) > 2 and any(np.abs(np.asarray(x)).max() > 0 for x in moments)


def test_sample_mode_writes_samples_and_interpolation_grids(runs, data_dir):
  path = modes.sample(load_config("dcgan", **{"data.data_dir": data_dir}), runs["b"])
  folder = os.path.dirname(path)
  # One grid per entry of the dict `sample` returns (jax orders dict keys: the returned
  # path is the first name alphabetically).
  names = ("sample_step_6_ema_seed0_interpolation.png", "sample_step_6_ema_seed0_samples.png")
  assert os.path.basename(path) in names
  for name in names:
    assert np.asarray(Image.open(os.path.join(folder, name))).std() > 0


def test_eval_mode_reports_ema_and_raw(runs, data_dir):
  metrics = modes.evaluate(load_config("dcgan", **{"data.data_dir": data_dir}), runs["b"])
  saved = json.load(open(os.path.join(runs["b"], "eval", "step_6.json")))
  assert saved["eval/ema/d_loss"] == pytest.approx(metrics["eval/ema/d_loss"])
  assert {k.split("/")[1] for k in metrics} == {"ema", "raw"}
  assert 0 < saved["eval/raw/d_loss"] < 10


def test_export_holds_the_ema_weights_and_batchnorm_statistics(runs, data_dir):
  from safetensors import safe_open
  path = modes.export(load_config("dcgan", **{"data.data_dir": data_dir}), runs["b"])
  with safe_open(str(path), "numpy") as f:
    names = set(f.keys())
    assert f.metadata()["step"] == "6" and f.metadata()["method"] == "gan"
  assert any(n.startswith("params/generator/") for n in names)
  assert any(n.startswith("model_state/generator/") and n.endswith("/mean") for n in names)
  exported = gen_jax.load_run(path.parent)
  trained = gen_jax.load_run(runs["b"])
  assert exported.step == trained.step == 6
  chex.assert_trees_all_equal(exported.params, trained.ema_params)
  # Sampling (EMA generator) gives the same images, with the exported running BatchNorm
  # statistics (sample.batch_norm='running') and with batch statistics (the default).
  for mode in ("running", "batch"):
    a, b = exported.sample(4, seed=0, batch_norm=mode), trained.sample(4, seed=0, batch_norm=mode)
    np.testing.assert_array_equal(a, b)
  running, batch = trained.sample(4, seed=0, batch_norm="running"), trained.sample(4, seed=0)
  assert not np.array_equal(running, batch)
  # `draw` returns the method's Samples, of which `sample` is the images as uint8.
  drawn = trained.draw(4, seed=0)
  np.testing.assert_array_equal(to_uint8(drawn.images), batch)
  assert drawn.labels is None and drawn.grids["interpolation"].shape == (4, 28, 28, 1)


def test_summary_counts_both_networks(data_dir):
  text = modes.summary(load_config("dcgan", **{"data.data_dir": data_dir}))
  # smoke: ngf = ndf = 4, Z = 8, 5x5 kernels on 28x28x1.
  g = 8 * 7 * 7 * 8 + 2 * 8 + 25 * 8 * 4 + 2 * 4 + 25 * 4 * 1 + 1
  d = 25 * 1 * 4 + 4 + 25 * 4 * 8 + 2 * 8 + 7 * 7 * 8 + 1
  assert text.splitlines()[-1] == f"params: {g + d}"
  assert "generator/project/kernel" in text and "discriminator/logit/kernel" in text


EIGHT_DEVICES = """
# batch 8 on 8 devices: one image per device, so BatchNorm must use global statistics.
train.train_and_evaluate(load_config("dcgan", **{{"data.data_dir": {data_dir!r},
                                                "train.num_steps": 4}}), {workdir!r})
rows = [r for r in read_metrics({workdir!r}) if "train/loss" in r]
print("RESULT" + json.dumps(rows))
"""


def test_eight_devices_match_one_device_with_batchnorm(runs, data_dir, tmp_path):
  result = run_on_fake_devices(EIGHT_DEVICES.format(data_dir=data_dir,
                                                    workdir=str(tmp_path / "run8")))
  eight = {r["step"]: r for r in result}
  for key in ("train/d_loss", "train/g_loss", "train/d_real", "train/d_fake"):
    one = _series(runs["b"], key)
    np.testing.assert_allclose([eight[s][key] for s in range(1, 5)], [one[s] for s in range(1, 5)],
                               rtol=1e-5, atol=1e-6, err_msg=key)
