"""launch.py's user errors and the engine's generic family hooks: every user-facing error
class derives from `UserError`; a config error ends launch.py with ONE line
`launch.py: <message>`, exit code 1 and no traceback; a family's own mode and its foreign
weight formats are checked against what the run's method declares."""
import errno
import os
import pickle
import subprocess
import sys

import pytest
from smoke import REPO_ROOT, load_config

from gen_jax import data
from gen_jax.configs import migration
from gen_jax.core.errors import ConfigError, UserError
from gen_jax.engine import (
  checkpoint,
  checkpoint_checks,
  cli,
  disk_errors,
  lease,
  method_modes,
  modes,
  preemption,
  report,
  sample_dump,
  train,
  trained_run,
)
from gen_jax.engine import workdir as workdir_lib
from gen_jax.engine.experiment import build_experiment
from gen_jax.evaluate import inception_weights, pickle_reader
from gen_jax.methods.diffusion.inpainting import InpaintConfigError


def test_user_facing_errors_share_one_base_and_keep_their_builtin_types():
  for error, builtin in [
      (workdir_lib.ConfigMismatchError, ValueError),
      (workdir_lib.WorkdirIsAFileError, NotADirectoryError),
      (checkpoint_checks.CheckpointMismatchError, ValueError),
      (checkpoint_checks.DamagedCheckpointError, RuntimeError),
      (checkpoint_checks.CheckpointWriteError, OSError),
      (checkpoint_checks.WorkdirNotWritableError, PermissionError),
      (data.DatasetUnavailableError, ValueError),
      (sample_dump.SampleDumpMismatchError, ValueError),
      (InpaintConfigError, ValueError),
      (preemption.Interrupted, RuntimeError),
      (report.NoRunsError, FileNotFoundError),
      (inception_weights.InceptionWeightsMissing, FileNotFoundError),
      (lease.WorkdirBusyError, RuntimeError),
      (workdir_lib.DamagedStatusError, ValueError),
      (train.NonFiniteLossError, FloatingPointError),
      (checkpoint.NoCheckpointError, FileNotFoundError),
      (workdir_lib.DamagedConfigError, ValueError),
      (disk_errors.OutputWriteError, OSError),
      (pickle_reader.TorchFileError, pickle.UnpicklingError),
      (pickle_reader.UnsafePickleError, pickle.UnpicklingError),
      (inception_weights.InceptionWeightsMismatch, ValueError),
      (trained_run.UnknownSettingError, TypeError),
      (trained_run.SamplingRequestError, ValueError),
      (migration.ConfigVersionError, ValueError),
      (ConfigError, ValueError)]:
    assert issubclass(error, UserError) and issubclass(error, builtin), error


@pytest.mark.parametrize("overrides,message", [
    ({"train.batch_size": -4}, "train.batch_size=-4 must be positive."),
    ({"train.num_steps": 0}, "train.num_steps=0 must be positive."),
    ({"diffusion.target": "score"}, "diffusion.target='score'; expected one of"),
    ({"sample.num": 0}, "sample.num=0 must be >= 1"),
    ({"sample.num": -1}, "sample.num=-1 must be >= 1"),
])
def test_build_experiment_raises_config_errors(overrides, message):
  """Checks of the engine and of a family's `from_config` alike: ConfigError, still a
  ValueError for callers that catch those."""
  with pytest.raises(ConfigError, match=message.replace("(", r"\(")) as e:
    build_experiment(load_config("ddpm", **overrides))
  assert isinstance(e.value, ValueError)


def _launch(*args: str) -> subprocess.CompletedProcess:
  return subprocess.run([sys.executable, os.path.join(REPO_ROOT, "launch.py"), *args],
                        capture_output=True, text=True, timeout=300, cwd=REPO_ROOT,
                        env={**os.environ, "JAX_PLATFORMS": "cpu"})


def _one_line_error(out: subprocess.CompletedProcess) -> str:
  """The `launch.py:` line of a run that must have stopped on a user error."""
  assert out.returncode == 1, out.stderr[-2000:]
  assert "Traceback" not in out.stderr, out.stderr[-2000:]
  lines = [line for line in out.stderr.splitlines() if line.startswith("launch.py:")]
  assert len(lines) == 1, out.stderr[-2000:]
  assert out.stderr.rstrip("\n").splitlines()[-1] == lines[0]   # the last thing printed
  return lines[0]


def test_launch_reports_config_errors_in_one_line(tmp_path):
  out = _launch("--config=configs/ddpm.py:smoke", "--config.train.batch_size=-4",
                "--mode=summary", f"--workdir={tmp_path / 'a'}")
  assert _one_line_error(out) == "launch.py: train.batch_size=-4 must be positive."
  # A batch the 2-device mesh cannot split: found by the mesh check, not by XLA.
  out = _launch("--config=configs/ddpm.py:smoke", "--config.train.batch_size=5",
                "--cpu_devices=2", "--mode=summary", f"--workdir={tmp_path / 'b'}")
  line = _one_line_error(out)
  assert line.startswith("launch.py: train.batch_size=5 is the global batch and must be "
                         "divisible by the number of batch shards (mesh data x fsdp = 2")


def test_a_mode_the_method_does_not_offer_is_one_line(tmp_path):
  out = _launch("--config=configs/vae.py:smoke", "--mode=inpaint", f"--workdir={tmp_path}")
  line = _one_line_error(out)
  assert line.startswith("launch.py: --mode=inpaint: not one of launch.py's modes")
  assert "config.method='vae'" in line and "(its own modes: none)" in line


def test_family_modes_and_foreign_formats_are_declared_by_the_method(tmp_path, text_data_dir):
  """The engine asks the method: every diffusion process offers inpaint (a flow reflow
  too), a VAE nothing; a GPT reads and writes 'hf_gpt2', an LSTM neither; the messages say
  who can."""
  ddpm = build_experiment(load_config("ddpm")).method
  assert list(ddpm.modes()) == ["inpaint"] and ddpm.modes()["inpaint"].config_group == "inpaint"
  flow = build_experiment(load_config("ddpm", "flow,smoke")).method
  assert list(flow.modes()) == ["inpaint", "reflow"]
  assert build_experiment(load_config("vae")).method.modes() == {}
  with pytest.raises(ConfigError, match="its own modes: none"):
    method_modes.run_method_mode(load_config("vae"), str(tmp_path), "inpaint")
  text = {"data.data_dir": text_data_dir}
  gpt = build_experiment(load_config("gpt", "smoke,tokenizer=byte", **text)).method
  assert gpt.init_from_formats() == ("hf_gpt2",) and gpt.export_formats() == ("hf_gpt2",)
  with pytest.raises(ConfigError, match=r"init_from=hf_gpt2:x holds GPT-2 weights; it needs "
                                        r"method='autoregressive' with model.arch='gpt'"):
    build_experiment(load_config("lstm", **text, **{"init_from": "hf_gpt2:x"}))
  with pytest.raises(ConfigError, match=r"export.format='hf_gpt2': 'gen_jax' \(any run\) or "
                                        r"'hf_gpt2' \(method='autoregressive'"):
    build_experiment(load_config("ddpm", **{"export.format": "hf_gpt2"}))
  with pytest.raises(ConfigError, match="export.format='onnx'"):
    build_experiment(load_config("ddpm", **{"export.format": "onnx"}))


# ---------------------------------------------------------- reading a run, full disks


def test_reading_a_run_that_cannot_be_read_is_one_user_error(tmp_path, data_dir):
  """A damaged config.json is named (with the copy to restore) before absl's flag parsing
  can wrap it; a run without a checkpoint is a UserError."""
  run = tmp_path / "run"
  (run / "config_history").mkdir(parents=True)
  (run / "config_history" / "step_0.json").write_text("{}")
  (run / "config.json").write_text('{"method": "diff')
  with pytest.raises(SystemExit) as exit_:
    cli.with_config_argument(["launch.py", f"--workdir={run}", "--mode=sample"])
  assert str(exit_.value.code).startswith(
      f"launch.py: {run}/config.json cannot be read as a gen_jax config (JSONDecodeError: ")
  assert str(exit_.value.code).endswith(
      f"copy the newest saved copy ({run}/config_history/step_0.json) over it.")
  with pytest.raises(workdir_lib.DamagedConfigError):
    workdir_lib.load_saved_config(run)
  config = load_config("ddpm", **{"data.data_dir": data_dir})
  with pytest.raises(checkpoint.NoCheckpointError, match=f"No checkpoint in {tmp_path}") as e:
    modes.sample(config, str(tmp_path / "untrained"))
  assert isinstance(e.value, UserError) and isinstance(e.value, FileNotFoundError)


def test_a_full_or_read_only_disk_anywhere_is_one_line():
  """The launcher's last net: an OSError of a full disk that no module turned into a
  UserError still ends in one line naming the path and what to do."""
  with pytest.raises(SystemExit) as exit_:
    with cli.user_errors():
      raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "/runs/x/export/model.json")
  assert exit_.value.code == (
      "launch.py: Could not write the run's output (/runs/x/export/model.json): No space "
      "left on device (ENOSPC). Free space on that disk, then rerun the same command; what "
      "was finished before is kept.")
  with pytest.raises(FileNotFoundError):   # any other OSError is a bug: its traceback stays
    with cli.user_errors():
      raise FileNotFoundError(errno.ENOENT, "No such file", "/x")


def test_a_prompt_character_the_corpus_lacks_is_named(tmp_path):
  """A char vocabulary is the corpus's characters: with no newline in the text, the default
  prompt ('\\n') cannot be encoded, and the error says so in sample.prompt's name."""
  (tmp_path / "corpus.txt").write_text("abc def " * 200)   # no newline
  config = load_config("gpt", "smoke", **{"data.dataset": "text_files",
                                         "data.text_path": str(tmp_path / "corpus.txt"),
                                         "data.tokenizer": "char",
                                         "data.data_dir": str(tmp_path / "tfds")})
  with pytest.raises(ConfigError, match=r"sample.prompt='\\n': 1 character\(s\) '\\n' .* not "
                     r"in this char vocabulary .* Set --config.sample.prompt to text made of"):
    build_experiment(config)
