"""A workdir is one run: the config guard, the config history, the saved config that
sample/eval read, its one writer (the lease) and its metrics rows. No training here: the
guard needs only a checkpoint directory's name."""
import builtins
import errno
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time

import ml_collections
import pytest
from smoke import REPO_ROOT

from gen_jax.configs import saved_run
from gen_jax.engine import lease as lease_lib
from gen_jax.engine import outputs, train
from gen_jax.engine import workdir as workdir_lib
from gen_jax.engine.disk_errors import OutputWriteError


def make_config(**overrides) -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict({
      "method": "vae", "seed": 0,
      "model": {"latent_dim": 2, "hidden": (32, 32)},
      "train": {"lr": 1e-3, "batch_size": 16, "num_steps": 8, "log_every": 1,
                "lr_decay": "constant"},
      "eval": {"every": 4, "batch_size": 16},
      "sample": {"num": 4},
      "mesh": {"data": -1, "fsdp": 1},
      "data": {"dataset": "mnist_5k", "data_dir": ""},
  })
  config.update_from_flattened_dict(overrides)
  return config


def fake_checkpoint(workdir, step):
  (workdir / "checkpoints" / str(step)).mkdir(parents=True)
  (workdir / "checkpoints" / f"{step + 1}.orbax-checkpoint-tmp-123").mkdir()   # unfinished


def test_fresh_start_writes_config_and_history(tmp_path):
  workdir_lib.claim(make_config(), tmp_path, None)
  saved = json.loads((tmp_path / "config.json").read_text())
  assert saved["train"]["lr"] == 1e-3
  assert json.loads((tmp_path / "config_history" / "step_0.json").read_text()) == saved


def test_resumable_changes_go_through_and_each_start_is_kept(tmp_path):
  workdir_lib.claim(make_config(), tmp_path, None)
  fake_checkpoint(tmp_path, 8)
  from gen_jax.engine import checkpoint
  assert checkpoint.latest_step(tmp_path) == 8     # the unfinished save does not count
  longer = make_config(**{"train.num_steps": 16, "eval.every": 8, "sample.num": 8,
                          "mesh.data": 2, "data.data_dir": "/elsewhere"})
  workdir_lib.claim(longer, tmp_path, 8)
  assert json.loads((tmp_path / "config.json").read_text())["train"]["num_steps"] == 16
  history = sorted(p.name for p in (tmp_path / "config_history").iterdir())
  assert history == ["step_0.json", "step_8.json"]
  assert json.loads((tmp_path / "config_history" / "step_0.json").read_text())["train"][
      "num_steps"] == 8


def test_a_model_change_stops_before_compiling_with_the_diff(tmp_path, monkeypatch):
  workdir_lib.claim(make_config(), tmp_path, None)
  fake_checkpoint(tmp_path, 8)
  before = (tmp_path / "config.json").read_text()

  def must_not_run(*args, **kwargs):
    raise AssertionError("built or compiled despite the config mismatch")

  monkeypatch.setattr(train, "build_experiment", must_not_run)
  monkeypatch.setattr(train, "compile_train_step", must_not_run)
  changed = make_config(**{"model.latent_dim": 8, "train.lr": 0.01, "train.num_steps": 16})
  with pytest.raises(workdir_lib.ConfigMismatchError) as err:
    train.train_and_evaluate(changed, str(tmp_path))
  message = str(err.value)
  assert "model.latent_dim: 2 -> 8" in message and "train.lr: 0.001 -> 0.01" in message
  assert "train.num_steps" not in message                     # resumable: not listed
  assert "--workdir" in message and "--accept_config_changes" in message
  assert (tmp_path / "config.json").read_text() == before     # nothing written
  assert sorted(p.name for p in (tmp_path / "config_history").iterdir()) == ["step_0.json"]


def test_fields_of_another_gen_jax_version_do_not_stop_a_resume(tmp_path):
  workdir_lib.claim(make_config(), tmp_path, None)
  fake_checkpoint(tmp_path, 8)
  newer = make_config()
  newer.model.new_option = "default"   # a field this run's gen_jax did not have
  workdir_lib.claim(newer, tmp_path, 8)
  assert json.loads((tmp_path / "config.json").read_text())["model"]["new_option"] == "default"


def test_accepted_changes_are_recorded(tmp_path):
  workdir_lib.claim(make_config(), tmp_path, None)
  fake_checkpoint(tmp_path, 8)
  workdir_lib.claim(make_config(**{"train.lr": 0.01}), tmp_path, 8, accept_changes=True)
  record = json.loads((tmp_path / "config_history" / "changes.jsonl").read_text())
  assert record["step"] == 8
  assert record["changes"] == [{"field": "train.lr", "saved": 0.001, "new": 0.01}]
  assert json.loads((tmp_path / "config.json").read_text())["train"]["lr"] == 0.01


def test_without_a_checkpoint_a_changed_config_starts_over(tmp_path):
  workdir_lib.claim(make_config(), tmp_path, None)
  workdir_lib.claim(make_config(**{"model.latent_dim": 8}), tmp_path, None)
  assert json.loads((tmp_path / "config.json").read_text())["model"]["latent_dim"] == 8
  assert len(list((tmp_path / "config_history").glob("step_0*.json"))) == 2


def test_a_workdir_that_is_a_file_gets_a_clear_error(tmp_path):
  path = tmp_path / "run"
  path.write_text("not a directory")
  with pytest.raises(NotADirectoryError, match="is a file"):
    workdir_lib.claim(make_config(), path, None)


def test_reading_modes_use_the_saved_config_with_sample_and_eval_overrides(tmp_path):
  workdir_lib.claim(make_config(**{"train.lr": 0.01}), tmp_path, None)
  given = make_config()   # e.g. the config file without the training run's overrides
  config = workdir_lib.reading_config(tmp_path, {"sample.num": 16, "eval.batch_size": 8}, given)
  assert config.train.lr == 0.01                               # the run's, not the file's
  assert config.sample.num == 16 and config.eval.batch_size == 8
  assert workdir_lib.reading_config(tmp_path, {}).train.lr == 0.01   # no --config at all
  with pytest.raises(workdir_lib.ConfigMismatchError, match="not: model.latent_dim, train.lr"):
    workdir_lib.reading_config(tmp_path, {"train.lr": 1.0, "model.latent_dim": 3})
  with pytest.raises(FileNotFoundError, match="pass --config"):
    workdir_lib.reading_config(tmp_path / "nothing", {})


def test_a_run_saved_before_a_sample_or_export_field_existed_takes_it(tmp_path):
  saved = json.loads(make_config().to_json())   # a config.json without sample.format or export
  (tmp_path / "config.json").write_text(json.dumps(saved))
  config = workdir_lib.reading_config(tmp_path, {"sample.format": "npz",
                                                 "export.format": "hf_gpt2"})
  assert config.sample.format == "npz" and config.export.format == "hf_gpt2"
  # launch.py --workdir alone reads it through configs/saved_run.py: today's defaults.
  filled = saved_run.get_config(str(tmp_path))
  assert filled.sample.format == "grid" and filled.export.format == "gen_jax"
  assert filled.sample.num == saved["sample"]["num"]
  saved["method"] = "diffusion"   # an image generator: it has the sample-metric fields
  saved["eval"].update(sample_metrics=False, num_samples=1000)
  (tmp_path / "config.json").write_text(json.dumps(saved))
  filled = saved_run.get_config(str(tmp_path))
  assert filled.eval.feature_extractor == "classifier" and filled.eval.num_samples == 1000
  assert not filled.eval.sample_metrics and filled.eval.is_splits == 10


def test_status_of_a_dead_process_reads_as_stopped(tmp_path):
  status = workdir_lib.RunStatus(tmp_path)
  status.write("running", 4)
  assert workdir_lib.read_status(tmp_path)["status"] == "running"    # this process is alive
  record = json.loads((tmp_path / "run_status.json").read_text())
  record["pid"] = 2**22 + 12345   # no such process
  (tmp_path / "run_status.json").write_text(json.dumps(record))
  assert workdir_lib.read_status(tmp_path)["status"] == "stopped"
  later = workdir_lib.RunStatus(tmp_path)   # wall time adds up over starts
  later.write("done", 8)
  assert workdir_lib.read_status(tmp_path)["wall_seconds"] >= record["wall_seconds"]


def full_disk(monkeypatch):
  """Python's open() can no longer create or grow a file; writing over a file's existing
  bytes (mode 'r+') still works, as on a really full disk."""
  real_open = builtins.open

  def fake_open(file, mode="r", *args, **kwargs):
    if any(c in mode for c in "wax"):
      raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), os.fspath(file))
    return real_open(file, mode, *args, **kwargs)

  monkeypatch.setattr(builtins, "open", fake_open)


def test_a_failed_status_is_written_in_place_on_a_full_disk(tmp_path, monkeypatch):
  status = workdir_lib.RunStatus(tmp_path)
  status.write("running", 4)
  full_disk(monkeypatch)
  status.write("failed", 4, error="OutputWriteError: Could not write ...")
  record = workdir_lib.read_status(tmp_path)
  assert record is not None and record["status"] == "failed" and record["step"] == 4
  assert record["error"] == "OutputWriteError: Could not write ..."
  # An error longer than the file's room is shortened, never lost whole.
  status.write("failed", 4, error="E" * 10_000)
  record = workdir_lib.read_status(tmp_path)
  assert record is not None and record["status"] == "failed"
  assert record["error"].startswith("EEEE")
  assert record["error"].endswith("...")
  status.write("failed", 4, error="\u00e9" * 5000)   # 6 bytes each in JSON (\\u00e9)
  record = workdir_lib.read_status(tmp_path)
  assert record is not None and record["error"].startswith("\u00e9\u00e9")
  assert os.path.getsize(tmp_path / workdir_lib.STATUS) == workdir_lib.STATUS_BYTES


def test_a_status_that_fits_nowhere_never_masks_a_failure(tmp_path, monkeypatch):
  """No status file yet and a full disk: 'failed' is only logged (the run's own error is
  raised by the caller); any other status is an OutputWriteError naming the file."""
  status = workdir_lib.RunStatus(tmp_path)
  full_disk(monkeypatch)
  status.write("failed", 0, error="the run's own error")
  with pytest.raises(OutputWriteError, match=r"Could not write the run's status \(.*"
                     r"run_status.json.tmp\): No space left on device \(ENOSPC\)"):
    status.write("running", 0)


# --------------------------------------------------------------------- one writer


HOLDER = """
import sys, time
sys.path.insert(0, {root!r})
from gen_jax.engine import lease
@lease.leased("training")
def hold(workdir):
  print("held", flush=True)
  time.sleep(120)
hold({workdir!r})
"""


def start_holder(workdir):
  """A process holding `workdir`'s lease (started, and holding, when this returns)."""
  proc = subprocess.Popen([sys.executable, "-c", HOLDER.format(root=REPO_ROOT,
                                                                workdir=str(workdir))],
                          stdout=subprocess.PIPE, text=True)
  assert proc.stdout.readline().strip() == "held"
  return proc


def test_a_second_writer_is_refused_in_one_line_and_sigterm_releases_the_lease(tmp_path):
  holder = start_holder(tmp_path)
  try:
    with pytest.raises(lease_lib.WorkdirBusyError) as info:
      lease_lib.RunLease(tmp_path, "training").acquire()
    message = str(info.value)
    assert "\n" not in message
    assert f"pid {holder.pid} on {socket.gethostname()}" in message
    assert "training since" in message and "another --workdir" in message
    assert lease_lib.live_holder(tmp_path)["pid"] == holder.pid
    # train_and_evaluate is refused before it writes anything.
    with pytest.raises(lease_lib.WorkdirBusyError):
      train.train_and_evaluate(make_config(), str(tmp_path))
    assert not (tmp_path / "config.json").exists()
    holder.terminate()
    assert holder.wait(timeout=30) == -signal.SIGTERM
    assert lease_lib.read_lease(tmp_path) is None
  finally:
    holder.kill()
    holder.wait()


def test_a_dead_holders_lease_is_taken_over_with_a_warning(tmp_path, caplog):
  holder = start_holder(tmp_path)
  holder.kill()   # SIGKILL: no chance to release
  holder.wait()
  assert lease_lib.read_lease(tmp_path)["pid"] == holder.pid
  assert lease_lib.live_holder(tmp_path) is None
  with caplog.at_level(logging.WARNING), lease_lib.RunLease(tmp_path, "evaluation"):
    assert lease_lib.read_lease(tmp_path)["pid"] == os.getpid()
  assert f"pid {holder.pid}" in caplog.text and "stale" in caplog.text
  assert lease_lib.read_lease(tmp_path) is None   # released


def test_an_unreadable_lease_file_is_replaced_with_a_warning(tmp_path, caplog):
  """A lease file that is not JSON (damaged) under a free OS lock: the new run replaces it."""
  (tmp_path / lease_lib.LEASE).write_text("{not json")
  assert lease_lib.read_lease(tmp_path) is None
  with caplog.at_level(logging.WARNING), lease_lib.RunLease(tmp_path, "training"):
    assert lease_lib.read_lease(tmp_path)["pid"] == os.getpid()
  assert "Replacing the unreadable lease file" in caplog.text
  assert not (tmp_path / lease_lib.LEASE).exists()   # released


def test_an_exception_releases_the_lease(tmp_path):
  @lease_lib.leased("evaluation")
  def fails(workdir):
    assert lease_lib.read_lease(workdir)["purpose"] == "evaluation"
    raise ValueError("boom")

  with pytest.raises(ValueError, match="boom"):
    fails(tmp_path)
  assert lease_lib.read_lease(tmp_path) is None
  lease_lib.RunLease(tmp_path, "training").acquire().release()   # free again


def test_without_os_locks_the_heartbeat_decides(tmp_path, monkeypatch, caplog):
  """On a filesystem without flock (a cluster filesystem), another host's lease is live
  while its heartbeat is fresh and stale (taken over) once older than the timeout."""
  def no_flock(fd, op):
    raise OSError(errno.ENOLCK, "No locks available")

  monkeypatch.setattr(lease_lib.fcntl, "flock", no_flock)
  record = {"pid": 4242, "host": "node-17", "purpose": "training", "since": "2026-01-01T10:00:00",
            "heartbeat_unix": time.time() - 10}
  (tmp_path / lease_lib.LEASE).write_text(json.dumps(record))
  with pytest.raises(lease_lib.WorkdirBusyError, match="pid 4242 on node-17"):
    lease_lib.RunLease(tmp_path, "training").acquire()
  record["heartbeat_unix"] = time.time() - lease_lib.LEASE_TIMEOUT_SECONDS - 1
  (tmp_path / lease_lib.LEASE).write_text(json.dumps(record))
  with caplog.at_level(logging.WARNING):
    taken = lease_lib.RunLease(tmp_path, "training").acquire()
  assert "node-17" in caplog.text
  # While held (no OS lock), a second writer on this host is refused by the record.
  with pytest.raises(lease_lib.WorkdirBusyError, match=f"pid {os.getpid()}"):
    lease_lib.RunLease(tmp_path, "training").acquire()
  taken.release()
  assert lease_lib.read_lease(tmp_path) is None


def test_a_damaged_status_file_is_named_and_a_new_start_replaces_it(tmp_path):
  (tmp_path / workdir_lib.STATUS).write_text('{"status": "runn')
  with pytest.raises(workdir_lib.DamagedStatusError, match=str(tmp_path / workdir_lib.STATUS)):
    workdir_lib.read_status(tmp_path)
  workdir_lib.RunStatus(tmp_path).write("running", 0)
  assert workdir_lib.read_status(tmp_path)["status"] == "running"


# -------------------------------------------------------------------- metrics rows


def rows(steps):
  return "".join(json.dumps({"step": s, "train/loss": float(s)}) + "\n" for s in steps)


def test_a_resume_drops_only_the_rows_past_its_checkpoint_in_place(tmp_path):
  """Rows past the restored step (and a line cut short) go; the file is the same file
  (appended to and truncated, never replaced, so no other open handle loses rows)."""
  path = tmp_path / "metrics.jsonl"
  path.write_text(rows(range(1, 8)) + json.dumps({"step": 4, "eval/loss": 1.0}) + "\n"
                  + '{"step": 8, "tra')
  inode = os.stat(path).st_ino
  writer = outputs.MetricWriter(tmp_path, tensorboard=False, resume_step=4)
  writer.write(5, {"train/loss": 5.5})
  writer.close()
  assert os.stat(path).st_ino == inode
  assert [(r["step"], r.get("train/loss")) for r in outputs.read_metrics(tmp_path)] == [
      (1, 1.0), (2, 2.0), (3, 3.0), (4, 4.0), (4, None), (5, 5.5)]
  # A fresh start (nothing restored: step 0) keeps no training row of an earlier attempt,
  # and a writer without resume_step (evaluation) only appends.
  outputs.MetricWriter(tmp_path, tensorboard=False, resume_step=0).close()
  assert outputs.read_metrics(tmp_path) == []
  path.write_text(rows([1, 2]))
  outputs.MetricWriter(tmp_path, tensorboard=False).close()
  assert [r["step"] for r in outputs.read_metrics(tmp_path)] == [1, 2]


def test_a_drop_interrupted_by_a_crash_is_finished_by_the_next_writer(tmp_path, monkeypatch):
  path = tmp_path / "metrics.jsonl"
  path.write_text(rows(range(1, 7)))
  monkeypatch.setattr(outputs, "finish_drop", lambda p: (_ for _ in ()).throw(
      KeyboardInterrupt("killed after the journal was written")))
  with pytest.raises(KeyboardInterrupt):
    outputs.drop_rows_after(path, 3)
  monkeypatch.undo()
  assert (tmp_path / outputs.DROP_JOURNAL).exists()
  writer = outputs.MetricWriter(tmp_path, tensorboard=False, resume_step=3)
  writer.write(4, {"train/loss": 4.0})
  writer.close()
  assert [r["step"] for r in outputs.read_metrics(tmp_path)] == [1, 2, 3, 4]
  assert not (tmp_path / outputs.DROP_JOURNAL).exists()
