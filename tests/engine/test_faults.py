"""Faults that pods, clusters and disks cause, each created here, each ending in a correct
continuation or one clear error, with nothing lost (docs/robustness.md):

  * a damaged newest checkpoint (a truncated file): moved aside, the run continues from the
    one before and ends bitwise equal to an uninterrupted run;
  * damage the manifest sees and orbax would not (a flipped byte), and no readable
    checkpoint at all: one error listing each, nothing moved;
  * a checkpoint of another model size (--accept_config_changes, init_from): the leaf, both
    shapes, the run and the config field;
  * a disk that fills up or turns read-only during a save (sync and async): the run stops
    naming ENOSPC / EACCES and the path; the earlier checkpoints resume bitwise;
  * an unwritable workdir at start, a truncated dataset shard: one clear error each;
  * the launcher turns these into one `launch.py: ...` line;
  * two trainers started together on one workdir: one trains, the other is refused naming
    it; a SIGKILLed sweep driver takes its runs along, and its rerun completes each once.

Tests run as root here, where chmod does not stop writes: the unwritable disk is then a
stub that makes Python's open() and os.mkdir() raise the OS error for paths below it
(TensorStore's own C++ writes are not stubbed; the Python-side writes of every save are
enough to fail it). As another user, `read_only_dir` uses chmod for real.

One VAE smoke run of 4 steps (checkpoints 2 and 4) and one of 6 steps uninterrupted are
shared by the module; each test works on a copy.
"""
import builtins
import errno
import json
import os
import shutil
import subprocess
import sys
import time

import chex
import pytest
from smoke import REPO_ROOT, load_config

from gen_jax import data
from gen_jax.core.errors import UserError
from gen_jax.data.errors import DamagedDatasetError
from gen_jax.engine import checkpoint as ckpt_lib
from gen_jax.engine import checkpoint_checks, train
from gen_jax.engine import lease as lease_lib
from gen_jax.engine.disk_errors import OutputWriteError
from gen_jax.engine.experiment import build_experiment
from gen_jax.engine.outputs import read_metrics
from gen_jax.engine.workdir import read_status

QUIET = {"train.sample_every": 0, "eval.every": 0}   # checkpoints and losses only


def vae_config(data_dir, **overrides):
  return load_config("vae", **{"data.data_dir": data_dir, **QUIET, **overrides})


@pytest.fixture(scope="module")
def runs(tmp_path_factory, data_dir):
  """`four`: 4 steps (checkpoints 2 and 4). `six`: 6 steps uninterrupted."""
  root = tmp_path_factory.mktemp("fault_runs")
  four, six = str(root / "four"), str(root / "six")
  train.train_and_evaluate(vae_config(data_dir), four)
  train.train_and_evaluate(vae_config(data_dir, **{"train.num_steps": 6}), six)
  return {"four": four, "six": six}


def copy_run(runs, tmp_path, name="run"):
  target = str(tmp_path / name)
  shutil.copytree(runs["four"], target)
  return target


def restore(workdir, step, data_dir):
  exp = build_experiment(vae_config(data_dir))
  ckpt = ckpt_lib.Checkpointer(ckpt_lib.checkpoint_dir(workdir), read_only=True)
  state = ckpt.restore(step, exp.abstract_state, exp.state_sharding)
  ckpt.close()
  return state


def assert_same_state(workdir, reference, step, data_dir):
  """Every leaf of the two runs' states at `step` is bitwise equal."""
  chex.assert_trees_all_equal(restore(workdir, step, data_dir),
                              restore(reference, step, data_dir))


def assert_each_step_once(workdir, last):
  steps = [r["step"] for r in read_metrics(workdir) if "train/loss" in r]
  assert steps == list(range(1, last + 1))


def largest_file(directory):
  files = [os.path.join(root, f) for root, _, names in os.walk(directory) for f in names]
  return max(files, key=os.path.getsize)


def steps_in(workdir, folder="checkpoints"):
  """Steps of the finished checkpoints in `folder` (not orbax's unfinished `<step>.orbax-*`)."""
  return sorted(int(n) for n in os.listdir(os.path.join(workdir, folder)) if n.isdigit())


@pytest.fixture
def failing_writes(monkeypatch):
  """failing_writes(under, code, only=None): Python's open() for writing and os.mkdir()
  raise OSError(code) (PermissionError for EACCES) for paths below `under` (only those
  containing `only`, if given), as a full or read-only disk does."""
  real_open, real_mkdir = builtins.open, os.mkdir

  def install(under, code, only=None, overwrite=False):
    """`only`: a substring or a tuple of them. `overwrite`: a really full disk, on which
    writing over a file's existing bytes (mode 'r+') still works."""
    under = os.fspath(under)
    parts = (only,) if isinstance(only, str) else only

    def hit(path):
      path = os.fspath(path) if isinstance(path, (str, os.PathLike)) else ""
      return path.startswith(under) and (parts is None or any(p in path for p in parts))

    def fake_open(file, mode="r", *args, **kwargs):
      writes = any(c in mode for c in "wax") or ("+" in mode and not overwrite)
      if writes and hit(file):
        raise OSError(code, os.strerror(code), os.fspath(file))
      return real_open(file, mode, *args, **kwargs)

    def fake_mkdir(path, *args, **kwargs):
      if hit(path):
        raise OSError(code, os.strerror(code), os.fspath(path))
      return real_mkdir(path, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", fake_open)
    monkeypatch.setattr(os, "mkdir", fake_mkdir)

  return install


# ---------------------------------------------------------------- 1. damaged checkpoints


def test_damaged_newest_checkpoint_is_moved_aside_and_the_run_continues(runs, tmp_path,
                                                                        data_dir):
  workdir = copy_run(runs, tmp_path)
  manifest = json.load(open(os.path.join(workdir, "checkpoints", "4", checkpoint_checks.MANIFEST)))
  assert manifest["files"]   # written once the save had finished
  victim = largest_file(os.path.join(workdir, "checkpoints", "4", "state"))
  with open(victim, "r+b") as f:   # an interrupted copy: the file ends early
    f.truncate(os.path.getsize(victim) // 2)

  train.train_and_evaluate(vae_config(data_dir, **{"train.num_steps": 6}), workdir)

  assert steps_in(workdir, ckpt_lib.DAMAGED_DIR) == [4]
  note = open(os.path.join(workdir, ckpt_lib.DAMAGED_DIR, "4", "DAMAGED.txt")).read()
  assert os.path.relpath(victim, os.path.join(workdir, "checkpoints", "4")) in note
  assert "bytes" in note
  assert steps_in(workdir) == [2, 4, 6]   # 4 again, retrained from 2
  assert_same_state(workdir, runs["six"], 6, data_dir)
  assert_each_step_once(workdir, 6)
  assert read_status(workdir)["status"] == "done"


def test_no_readable_checkpoint_is_one_error_and_nothing_moves(runs, tmp_path, data_dir):
  workdir = copy_run(runs, tmp_path)
  flipped = largest_file(os.path.join(workdir, "checkpoints", "2", "state"))
  with open(flipped, "r+b") as f:   # bit rot: same size, so only the CRC32 sees it
    f.seek(100)
    byte = f.read(1)
    f.seek(100)
    f.write(bytes([byte[0] ^ 0xFF]))
  truncated = largest_file(os.path.join(workdir, "checkpoints", "4", "state"))
  os.truncate(truncated, 10)

  with pytest.raises(ckpt_lib.DamagedCheckpointError) as error:
    train.train_and_evaluate(vae_config(data_dir, **{"train.num_steps": 6}), workdir)
  message = str(error.value)
  assert "step 4" in message and "step 2" in message and "CRC32" in message
  assert "Nothing was moved" in message
  assert steps_in(workdir) == [2, 4]
  assert not os.path.exists(os.path.join(workdir, ckpt_lib.DAMAGED_DIR))


# ---------------------------------------------------------------- 2. shape mismatches


def test_checkpoint_of_another_latent_size_names_leaf_shapes_and_field(runs, tmp_path,
                                                                      data_dir):
  workdir = copy_run(runs, tmp_path)
  wider = vae_config(data_dir, **{"model.latent_dim": 3, "train.num_steps": 6})
  with pytest.raises(ckpt_lib.CheckpointMismatchError) as error:
    train.train_and_evaluate(wider, workdir, accept_config_changes=True)
  message = str(error.value)
  assert "step 4" in message and workdir in message
  # The decoder's first layer takes the latent: (L, 32); the heads output it: (32, L).
  assert "params/decoder/hidden_0/kernel is (2, 32) there and (3, 32) here" in message
  assert "Most likely model.latent_dim (2 -> 3)" in message
  assert steps_in(workdir) == [2, 4]   # a mismatch is not damage: nothing moved
  assert not os.path.exists(os.path.join(workdir, ckpt_lib.DAMAGED_DIR))

  # init_from another run: the same leaf, shapes and field, naming that run.
  config = vae_config(data_dir, **{"model.latent_dim": 3})
  config.init_from = runs["four"]
  with pytest.raises(ckpt_lib.CheckpointMismatchError,
                     match=r"(?s)in {}.*\(2, 32\) there and \(3, 32\) here.*model\.latent_dim"
                     .format(runs["four"])):
    train.train_and_evaluate(config, str(tmp_path / "fine_tune"))


def test_structure_change_names_the_missing_leaves_and_the_model_field(runs, tmp_path,
                                                                      data_dir):
  config = vae_config(data_dir, **{"model.hidden": (32, 32, 32)})
  config.init_from = runs["four"]
  with pytest.raises(ckpt_lib.CheckpointMismatchError,
                     match=r"leaves of this config are not in the checkpoint \(e\.g\. "
                           r"params/decoder/hidden_2/.*model\.hidden"):
    train.train_and_evaluate(config, str(tmp_path / "deeper"))


# ---------------------------------------------------------------- 3. disk full, read-only


def test_disk_full_during_a_save_stops_the_run_and_the_rerun_resumes_bitwise(
    runs, tmp_path, data_dir, failing_writes, monkeypatch):
  workdir = copy_run(runs, tmp_path)
  # The disk fills up during training: every write of a save in progress fails.
  failing_writes(os.path.join(workdir, "checkpoints"), errno.ENOSPC,
                 only=".orbax-checkpoint-tmp")
  with pytest.raises(ckpt_lib.CheckpointWriteError) as error:
    train.train_and_evaluate(vae_config(data_dir, **{"train.num_steps": 6}), workdir)
  assert error.value.errno == errno.ENOSPC
  message = str(error.value)
  assert "step 6" in message and "No space left on device (ENOSPC)" in message
  assert os.path.join(workdir, "checkpoints") in message and "newest: step 4" in message
  assert read_status(workdir)["status"] == "failed" and read_status(workdir)["step"] == 4
  assert steps_in(workdir) == [2, 4]

  monkeypatch.undo()   # space freed
  train.train_and_evaluate(vae_config(data_dir, **{"train.num_steps": 6}), workdir)
  assert_same_state(workdir, runs["six"], 6, data_dir)
  assert_each_step_once(workdir, 6)


def test_read_only_checkpoints_during_an_async_save_stop_the_run(runs, tmp_path, data_dir,
                                                                 failing_writes, monkeypatch):
  # The state's tree metadata is written by orbax's background thread after save() has
  # returned: the error surfaces at the next save (or at the end), and stops the run there.
  workdir = copy_run(runs, tmp_path)
  failing_writes(os.path.join(workdir, "checkpoints"), errno.EACCES, only="/_METADATA")
  with pytest.raises(ckpt_lib.CheckpointWriteError) as error:
    train.train_and_evaluate(vae_config(data_dir, **{"train.num_steps": 10,
                                                     "train.async_checkpointing": True}),
                             workdir)
  assert error.value.errno == errno.EACCES
  assert "Permission denied (EACCES)" in str(error.value)
  assert steps_in(workdir) == [2, 4]
  assert max(r["step"] for r in read_metrics(workdir)) <= 8   # at most one more interval
  assert read_status(workdir)["status"] == "failed" and read_status(workdir)["step"] == 4

  monkeypatch.undo()   # writable again; orbax's unfinished 6.orbax-checkpoint-tmp is in the way
  train.train_and_evaluate(vae_config(data_dir, **{"train.num_steps": 6,
                                                   "train.async_checkpointing": True}), workdir)
  assert_same_state(workdir, runs["six"], 6, data_dir)
  assert_each_step_once(workdir, 6)


def test_a_really_full_disk_during_training_ends_in_one_error_and_a_failed_status(
    runs, tmp_path, data_dir, failing_writes):
  """metrics.jsonl cannot grow and run_status.json cannot be replaced: the error names the
  metrics file and what to do, and the status, written over the old one in place, says
  failed with that error."""
  workdir = copy_run(runs, tmp_path)
  failing_writes(workdir, errno.ENOSPC, only=("metrics.jsonl", "run_status.json"),
                 overwrite=True)
  with pytest.raises(OutputWriteError) as error:
    train.train_and_evaluate(vae_config(data_dir, **{"train.num_steps": 6}), workdir)
  message = str(error.value)
  assert error.value.errno == errno.ENOSPC and isinstance(error.value, UserError)
  assert message.startswith(f"Could not write the run's metrics or samples "
                            f"({os.path.join(workdir, 'metrics.jsonl')}): No space left on "
                            "device (ENOSPC). Free space on that disk, then rerun")
  status = read_status(workdir)
  assert status is not None and status["status"] == "failed" and status["step"] == 4
  assert status["error"] == f"OutputWriteError: {message}"
  assert not os.path.exists(os.path.join(workdir, "run_status.json.tmp"))


def test_sample_mode_on_a_full_disk_is_one_line(runs, tmp_path, data_dir):
  """launch.py --mode=sample whose PNG cannot be written (stubbed ENOSPC in the process)."""
  workdir = copy_run(runs, tmp_path)
  stub = (
      "import builtins, errno, os, runpy, sys\n"
      "real_open = builtins.open\n"
      "def fake_open(file, mode='r', *args, **kwargs):\n"
      "  if isinstance(file, str) and '/samples/' in file and any(c in mode for c in 'wa+'):\n"
      "    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), file)\n"
      "  return real_open(file, mode, *args, **kwargs)\n"
      "builtins.open = fake_open\n"
      f"sys.argv = ['launch.py', '--workdir={workdir}', '--mode=sample',\n"
      f"            '--config.data.data_dir={data_dir}']\n"
      f"runpy.run_path({os.path.join(REPO_ROOT, 'launch.py')!r}, run_name='__main__')\n")
  out = subprocess.run([sys.executable, "-c", stub], capture_output=True, text=True,
                       timeout=300, cwd=REPO_ROOT, env={**os.environ, "JAX_PLATFORMS": "cpu"})
  assert out.returncode == 1 and "Traceback" not in out.stderr, out.stderr[-3000:]
  last = out.stderr.rstrip("\n").splitlines()[-1]
  assert last.startswith(f"launch.py: Could not write the samples ({workdir}/samples/"), last
  assert "No space left on device (ENOSPC). Free space on that disk, then rerun" in last


# ---------------------------------------------------------------- 6. unwritable workdir


def test_unwritable_workdir_at_start_is_one_permission_error(tmp_path, data_dir,
                                                            failing_writes):
  parent = tmp_path / "read_only"
  parent.mkdir()
  parent.chmod(0o555)
  probe = parent / "probe"
  try:
    probe.write_text("")   # root writes anyway: stub the OS error instead
    probe.unlink()
    failing_writes(parent, errno.EACCES)
  except PermissionError:
    pass
  workdir = parent / "run"
  with pytest.raises(PermissionError, match=r"--workdir=.*read_only/run is not writable "
                                            r"\(Permission denied: .*read_only/run"):
    train.train_and_evaluate(vae_config(data_dir), str(workdir))


# ---------------------------------------------------------------- 5. damaged data


def test_truncated_dataset_shard_names_the_file_and_the_rebuild(tmp_path, data_dir):
  copy = tmp_path / "tfds"
  shutil.copytree(os.path.join(data_dir, "mnist_5k"), copy / "mnist_5k")
  shard = next((copy / "mnist_5k").rglob("*train.array_record*"))
  os.truncate(shard, shard.stat().st_size // 2)
  with pytest.raises(DamagedDatasetError) as error:
    data.load_split("mnist_5k", "train", data_dir=str(copy))
  assert str(shard) in str(error.value)
  assert f"Delete {copy / 'mnist_5k'} and rerun" in str(error.value)
  shutil.rmtree(copy / "mnist_5k")   # what the message says to do
  assert len(data.load_split("mnist_5k", "train", data_dir=str(copy))) == 4500


# ---------------------------------------------------------------- launcher


def test_launcher_reports_an_unreadable_run_in_one_line(runs, tmp_path, data_dir):
  workdir = copy_run(runs, tmp_path)
  for step in (2, 4):
    os.truncate(largest_file(os.path.join(workdir, "checkpoints", str(step), "state")), 10)
  out = subprocess.run(
      [sys.executable, os.path.join(REPO_ROOT, "launch.py"), "--config=configs/vae.py:smoke",
       f"--workdir={workdir}", f"--config.data.data_dir={data_dir}",
       "--config.train.num_steps=6"],
      capture_output=True, text=True, timeout=300, cwd=REPO_ROOT,
      env={**os.environ, "JAX_PLATFORMS": "cpu"})
  assert out.returncode == 1
  assert "Traceback" not in out.stderr
  assert f"launch.py: No checkpoint in {workdir}/checkpoints can be read:" in out.stderr


# ------------------------------------------------------------ one writer, sweep drivers


SHORT = {"train.num_steps": 8, "train.checkpoint_every": 2, "train.max_checkpoints": 3,
         "train.log_every": 1, **QUIET}


def launch(args, data_dir, **popen):
  """launch.py with `args` and the short VAE run's overrides, sharing the tests' XLA cache."""
  overrides = [f"--config.{k}={v}" for k, v in {**SHORT, "data.data_dir": data_dir}.items()]
  env = {**os.environ, "JAX_PLATFORMS": "cpu",
         "JAX_COMPILATION_CACHE_DIR": os.environ.get("GEN_JAX_TEST_XLA_CACHE", ""),
         "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0"}
  return subprocess.Popen([sys.executable, os.path.join(REPO_ROOT, "launch.py"), *args,
                           *overrides], cwd=REPO_ROOT, env=env, text=True, **popen)


def test_two_trainers_started_together_leave_one_run_with_each_step_once(tmp_path, data_dir):
  """The second start is refused in one line naming the first; the first trains alone:
  every step's metrics once, max_checkpoints kept, 'done'."""
  workdir = str(tmp_path / "run")
  procs = [launch(["--config=configs/vae.py:smoke", f"--workdir={workdir}"], data_dir,
                  stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(2)]
  errors = [p.communicate(timeout=600)[1] for p in procs]
  codes = [p.returncode for p in procs]
  assert sorted(codes) == [0, 1], errors
  winner, loser = (0, 1) if codes[0] == 0 else (1, 0)
  last = [line for line in errors[loser].splitlines() if line.strip()][-1]
  assert f"is in use by pid {procs[winner].pid} on " in last and "training since" in last
  assert_each_step_once(workdir, 8)
  assert steps_in(workdir) == [4, 6, 8]
  assert read_status(workdir)["status"] == "done"


SWEEP_OF_TWO = """
from gen_jax.configs import vae

def get_config(arg=None):
  return vae.get_config("smoke")

def get_sweep(arg=None):
  return [{"seed": 0}, {"seed": 1}]
"""


def test_a_killed_sweep_driver_takes_its_run_along_and_a_rerun_completes_each_once(
    tmp_path, data_dir):
  """SIGKILL the driver while its first run trains or compiles: the run stops too (no
  orphan keeps writing); rerunning the sweep finishes both runs, every step's metrics once."""
  config_file = tmp_path / "two.py"
  config_file.write_text(SWEEP_OF_TWO)
  sweep_dir = tmp_path / "sweep"
  args = [f"--config={config_file}", "--sweep", f"--workdir={sweep_dir}"]
  driver = launch(args, data_dir, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
  started = driver.stdout.readline()
  assert started.startswith("[sweep] started seed=0 (pid "), started
  child = int(started.rsplit("pid ", 1)[1].rstrip(")\n"))
  deadline = time.time() + 300
  while time.time() < deadline and not os.path.exists(sweep_dir / "seed=0" / "run_status.json"):
    time.sleep(0.1)
  driver.kill()
  driver.wait()
  deadline = time.time() + 120
  while time.time() < deadline and lease_lib.pid_alive(child):
    time.sleep(0.2)
  assert not lease_lib.pid_alive(child), "the run outlived its sweep driver"

  rerun = launch(args, data_dir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
  out = rerun.communicate(timeout=600)[0]
  assert rerun.returncode == 0, out[-3000:]
  for name in ("seed=0", "seed=1"):
    assert_each_step_once(str(sweep_dir / name), 8)
    assert read_status(str(sweep_dir / name))["status"] == "done"
  summary = json.loads((sweep_dir / "sweep_summary.json").read_text())
  assert [r["status"] for r in summary] == ["done", "done"]
