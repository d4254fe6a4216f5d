"""A workdir is one run: the config guard, the config history, and the saved config that
sample/eval read. No training here: the guard needs only a checkpoint directory's name."""
import json

import ml_collections
import pytest

from gen_jax.configs import saved_run
from gen_jax.engine import train
from gen_jax.engine import workdir as workdir_lib


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
