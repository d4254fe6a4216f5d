"""DDPM end to end through the functions `launch.py` calls: train, checkpoint, resume,
sample, eval, summary; determinism; clear errors on bad input. Training on 8 devices equals
1 device's in test_dcgan_e2e.py (BatchNorm's global statistics) and the diffusion step's
per-example noise does not depend on the mesh in test_fsdp.py (data=8 against data=2 x
fsdp=4); a global batch the mesh cannot split is one line from launch.py (test_cli.py).

The three smoke runs share compiled code through the persistent compilation cache.
"""
import json
import os
import stat
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image
from smoke import REPO_ROOT, load_config, train_losses

import gen_jax
from gen_jax import data
from gen_jax.engine import modes, outputs, train
from gen_jax.engine.outputs import read_metrics
from gen_jax.engine.trained_run import SamplingRequestError, UnknownSettingError


@pytest.fixture(scope="module")
def runs(tmp_path_factory, data_dir):
  """Run A: 4 steps, then rerun to 6 (resume). Run B: 6 steps uninterrupted."""
  root = tmp_path_factory.mktemp("runs")
  a, b = str(root / "a"), str(root / "b")
  train.train_and_evaluate(load_config("ddpm", **{"data.data_dir": data_dir}), a)
  after_first = {"ckpts": sorted(os.listdir(os.path.join(a, "checkpoints"))),
                 "losses": train_losses(a)}
  train.train_and_evaluate(load_config("ddpm", **{"data.data_dir": data_dir,
                                                  "train.num_steps": 6}), a)
  train.train_and_evaluate(load_config("ddpm", **{"data.data_dir": data_dir,
                                                  "train.num_steps": 6}), b)
  return {"a": a, "b": b, "after_first": after_first}


def test_first_run_writes_checkpoints_metrics_samples(runs):
  assert [c for c in runs["after_first"]["ckpts"] if c.isdigit()] == ["2", "4"]
  assert sorted(runs["after_first"]["losses"]) == [1, 2, 3, 4]
  rows = read_metrics(runs["a"])
  assert any("eval/ema/loss" in r and r["step"] == 4 for r in rows)
  for key in ("train/grad_norm", "train/param_norm", "train/update_norm"):
    assert all(np.isfinite(r[key]) for r in rows if key in r)
  grid = np.asarray(Image.open(os.path.join(runs["a"], "samples", "step_4.png")))
  assert grid.ndim == 2 and grid.std() > 0   # gray digits grid, not blank
  config = json.load(open(os.path.join(runs["a"], "config.json")))
  assert config["method"] == "diffusion"
  events = os.listdir(os.path.join(runs["a"], "tensorboard"))
  assert any(name.startswith("events.out.tfevents") for name in events)


def test_rerun_resumes_from_checkpoint(runs):
  losses = train_losses(runs["a"])
  # Steps 1-4 were logged once (no restart from zero), then 5-6 after resuming at step 4.
  assert sorted(losses) == [1, 2, 3, 4, 5, 6]
  steps = [r["step"] for r in read_metrics(runs["a"]) if "train/loss" in r]
  assert steps == [1, 2, 3, 4, 5, 6]
  assert "6" in os.listdir(os.path.join(runs["a"], "checkpoints"))


def test_resumed_run_equals_uninterrupted_run(runs):
  # Same params, optimizer state, data position and per-step keys after the restore.
  resumed, straight = train_losses(runs["a"]), train_losses(runs["b"])
  np.testing.assert_allclose([resumed[5], resumed[6]], [straight[5], straight[6]], rtol=1e-6)


def test_two_identical_runs_give_identical_losses(runs):
  first, second = train_losses(runs["a"]), train_losses(runs["b"])
  assert [first[s] for s in range(1, 5)] == [second[s] for s in range(1, 5)]


@pytest.mark.parametrize("sampler,steps", [("ddim", 5), ("ddpm", 0)])
def test_sample_mode_writes_grid_from_newest_checkpoint(runs, data_dir, sampler, steps):
  config = load_config("ddpm", **{"data.data_dir": data_dir, "sample.sampler": sampler,
                                  "sample.steps": steps})
  path = modes.sample(config, runs["b"])
  assert "step_6" in os.path.basename(path)
  assert np.asarray(Image.open(path)).std() > 0


def test_sample_mode_dumps_uint8_shards_for_external_tools(runs, data_dir):
  config = load_config("ddpm", **{"data.data_dir": data_dir, "sample.num": 6,
                                  "sample.format": "npz", "sample.batch_size": 2,
                                  "sample.shard_size": 4})
  folder = modes.sample(config, runs["b"])
  assert os.path.basename(folder) == "sample_step_6_ddim5_ema_seed0"
  with np.load(os.path.join(folder, "samples.npz")) as dump:
    images = dump["arr_0"]
  assert images.dtype == np.uint8 and images.shape == (6, 28, 28, 1) and images.std() > 0
  merged = os.path.getmtime(os.path.join(folder, "samples.npz"))
  assert modes.sample(config, runs["b"]) == folder     # complete: nothing is drawn again
  assert os.path.getmtime(os.path.join(folder, "samples.npz")) == merged


def test_eval_mode_writes_json(runs, data_dir):
  metrics = modes.evaluate(load_config("ddpm", **{"data.data_dir": data_dir}), runs["b"])
  saved = json.load(open(os.path.join(runs["b"], "eval", "step_6.json")))
  assert saved["step"] == 6 and saved["eval/ema/loss"] == pytest.approx(metrics["eval/ema/loss"])
  assert 0 < saved["eval/raw/loss"] < 10


def test_python_api_samples_and_evaluates_as_the_modes_do(runs, data_dir):
  run = gen_jax.load_run(runs["b"])
  assert run.step == 6 and run.config.method == "diffusion"
  images = run.sample(4, seed=0)                      # the run's sampler: DDIM, 5 steps
  assert images.dtype == np.uint8 and images.shape == (4, 28, 28, 1)
  np.testing.assert_array_equal(images, run.sample(4, seed=0))
  assert (run.sample(4, seed=1) != images).any()
  # The same images as --mode=sample's grid with the same seed.
  path = modes.sample(load_config("ddpm", **{"data.data_dir": data_dir}), runs["b"])
  np.testing.assert_array_equal(outputs.image_grid(images / 127.5 - 1.0)[..., 0],
                                np.asarray(Image.open(path)))
  metrics = run.evaluate()
  saved = modes.evaluate(load_config("ddpm", **{"data.data_dir": data_dir}), runs["b"])
  assert metrics["eval/ema/loss"] == pytest.approx(saved["eval/ema/loss"], rel=1e-6)


def test_python_api_refuses_what_it_cannot_do_before_compiling(runs, tmp_path):
  """A typo'd sampler setting, a sample count below 1 and a text prompt to an image model
  are refused, naming what is allowed, before anything is compiled."""
  run = gen_jax.load_run(runs["b"])
  for call in (lambda: run.sample(2, stpes=2), lambda: run.draw(2, stpes=2)):
    with pytest.raises(UnknownSettingError, match=r"Unknown sample setting\(s\): stpes\. "
                       r"The keyword arguments are the fields of config.sample: .*steps"):
      call()
  with pytest.raises(UnknownSettingError, match=r"Unknown eval setting\(s\): num_batchs"):
    run.evaluate(num_batchs=1)
  for num in (0, -1):
    with pytest.raises(SamplingRequestError, match=r"num=.*must be an int >= 1"):
      run.sample(num)
  with pytest.raises(SamplingRequestError, match=r"generate\(\) continues a text prompt; "
                     r"this 'diffusion' run draws image samples: use sample\(num\)"):
    run.generate("ROMEO:")
  assert not run._sample_fns   # nothing was compiled
  # An export is for sharing: readable by all, like any file the user writes.
  path = modes.export(run.config, runs["b"])
  assert stat.S_IMODE(os.stat(path).st_mode) == 0o644


def test_launcher_samples_a_run_from_its_workdir_alone(runs):
  # No --config: the run's saved config; overrides of sample fields only.
  out = subprocess.run([sys.executable, "launch.py", f"--workdir={runs['b']}", "--mode=sample",
                        "--config.sample.seed=3"], cwd=REPO_ROOT, capture_output=True,
                       text=True, timeout=600)
  assert out.returncode == 0, out.stderr[-2000:]
  assert out.stdout.strip().endswith("sample_step_6_ddim5_ema_seed3.png")
  refused = subprocess.run([sys.executable, "launch.py", f"--workdir={runs['b']}",
                            "--mode=sample", "--config.train.lr=1.0"], cwd=REPO_ROOT,
                           capture_output=True, text=True, timeout=600)
  assert refused.returncode != 0 and "not: train.lr" in refused.stderr


def test_summary_counts_params_without_allocating(data_dir):
  text = modes.summary(load_config("ddpm", **{"data.data_dir": data_dir}))
  last = text.splitlines()[-1]
  assert last.startswith("params: ")
  total = sum(int(line.split()[-1].replace(",", "")) for line in text.splitlines()[:-1])
  assert int(last.split()[1]) == total > 0


def test_compile_mode_reports_memory_and_flops_without_data(runs, tmp_path):
  # No data_dir with a prepared dataset: --mode=compile reads no data.
  config = load_config("ddpm", **{"data.data_dir": str(tmp_path)})
  lines = modes.compile_report(config).splitlines()
  report = dict(line.strip().split(": ", 1) for line in lines if ": " in line)
  params = int(report["params"].split(";")[0].replace(",", ""))
  # float32 params, EMA params, Adam's two moments (+ 3 int32 step counters): 4 copies.
  value, unit = report["train state (params, EMA, optimizer)"].split()
  state = float(value) * {"KiB": 2**10, "MiB": 2**20, "GiB": 2**30}[unit]
  assert state == pytest.approx(4 * 4 * params + 3 * 4, rel=0.01)
  peak = int(lines[-1].split(": ")[1])
  assert lines[-1].startswith("peak bytes per device: ") and peak > 4 * 4 * params
  flops = float(report["FLOPs per update"].split()[0])
  assert flops > 6 * params * config.train.batch_size   # convs reuse weights: far more


def test_unavailable_dataset_fails_with_clear_message(tmp_path):
  empty = tmp_path / "empty_raw"
  empty.mkdir()
  config = load_config("ddpm", **{"data.dataset": "mnist", "data.data_dir": str(tmp_path / "d"),
                                  "data.manual_dir": str(empty)})
  with pytest.raises(data.DatasetUnavailableError, match="manual_dir"):
    train.train_and_evaluate(config, str(tmp_path / "w"))
  config = load_config("ddpm", **{"data.dataset": "no_such_dataset",
                                  "data.data_dir": str(tmp_path / "d")})
  with pytest.raises(data.DatasetUnavailableError, match="no_such_dataset"):
    train.train_and_evaluate(config, str(tmp_path / "w"))


def _launch(*args):
  return subprocess.run([sys.executable, os.path.join(REPO_ROOT, "launch.py"), *args],
                        capture_output=True, text=True, timeout=300, cwd=REPO_ROOT,
                        env={**os.environ, "JAX_PLATFORMS": "cpu"})


def test_launcher_rejects_unknown_config_key():
  out = _launch("--config=configs/ddpm.py:smoke", "--config.train.lrr=1e-4", "--mode=summary")
  assert out.returncode != 0
  assert "lrr" in out.stderr and "Did you mean \"lr\"" in out.stderr


def test_launcher_summary_prints_param_count_last(data_dir):
  out = _launch("--config=configs/ddpm.py:smoke", f"--config.data.data_dir={data_dir}",
                "--mode=summary")
  assert out.returncode == 0, out.stderr[-2000:]
  assert out.stdout.strip().splitlines()[-1].startswith("params: ")


def test_nan_loss_stops_with_step_and_keeps_last_good_checkpoint(runs, data_dir, tmp_path):
  import shutil
  workdir = str(tmp_path / "copy_of_b")
  shutil.copytree(runs["b"], workdir)
  config = load_config("ddpm", **{"data.data_dir": data_dir, "train.num_steps": 8,
                                  "train.lr": float("nan")})
  with pytest.raises(train.NonFiniteLossError, match=r"at step 7.*last good checkpoint is step 6"):
    # A NaN learning rate on resume: a change of the run's identity, accepted explicitly.
    train.train_and_evaluate(config, workdir, accept_config_changes=True)
  saved_steps = sorted(int(c) for c in os.listdir(os.path.join(workdir, "checkpoints"))
                       if c.isdigit())
  assert saved_steps[-1] == 6
  path = modes.sample(load_config("ddpm", **{"data.data_dir": data_dir}), workdir)
  assert "step_6" in os.path.basename(path)   # the last good checkpoint still restores


def test_sigterm_saves_a_checkpoint_at_the_stop_step(data_dir, tmp_path):
  import signal
  import time
  workdir = str(tmp_path / "term")
  args = [sys.executable, os.path.join(REPO_ROOT, "launch.py"), "--config=configs/ddpm.py:smoke",
          f"--workdir={workdir}", f"--config.data.data_dir={data_dir}",
          "--config.train.num_steps=100000", "--config.train.checkpoint_every=100000",
          "--config.eval.every=0", "--config.train.sample_every=0"]
  env = {**os.environ, "JAX_PLATFORMS": "cpu",
         "JAX_COMPILATION_CACHE_DIR": os.environ.get("GEN_JAX_TEST_XLA_CACHE", ""),
         "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0"}
  proc = subprocess.Popen(args, cwd=REPO_ROOT, env=env, stderr=subprocess.PIPE, text=True)
  for line in proc.stderr:            # wait until training is under way
    if line.startswith("[") and "steps/s" in line:
      break
  time.sleep(1.0)
  proc.send_signal(signal.SIGTERM)
  rest = proc.communicate(timeout=120)[1]
  assert proc.returncode == 0, rest[-2000:]
  saved = [int(c) for c in os.listdir(os.path.join(workdir, "checkpoints")) if c.isdigit()]
  assert len(saved) == 1 and 0 < saved[0] < 100000
  steps = sorted(train_losses(workdir))
  assert steps[-1] == saved[0]        # every step up to the stop was logged and checked


def test_fused_steps_per_call_equal_single_steps(runs, data_dir, tmp_path):
  # Two updates inside one compiled lax.scan must be the same updates as two calls.
  workdir = str(tmp_path / "fused")
  train.train_and_evaluate(load_config("ddpm", **{"data.data_dir": data_dir, "train.num_steps": 6,
                                                  "train.steps_per_call": 2,
                                                  "train.log_every": 2}), workdir)
  fused, single = train_losses(workdir), train_losses(runs["b"])
  assert sorted(fused) == [2, 4, 6]
  for step in (2, 4, 6):   # each fused log row averages steps (step-1, step)
    np.testing.assert_allclose(fused[step], (single[step - 1] + single[step]) / 2, rtol=1e-5)
  with pytest.raises(ValueError, match="multiples of 2"):
    train.train_and_evaluate(load_config("ddpm", **{"data.data_dir": data_dir,
                                                    "train.steps_per_call": 2}), workdir + "_bad")
