"""launch.py's user errors and the engine's generic family hooks: every user-facing error
class derives from `UserError`; a config error ends launch.py with ONE line
`launch.py: <message>`, exit code 1 and no traceback; a family's own mode and its foreign
weight formats are checked against what the run's method declares."""
import os
import subprocess
import sys

import pytest
from smoke import REPO_ROOT, load_config

from gen_jax import data
from gen_jax.core.errors import ConfigError, UserError
from gen_jax.engine import (
  checkpoint_checks,
  lease,
  method_modes,
  preemption,
  report,
  sample_dump,
  train,
)
from gen_jax.engine import workdir as workdir_lib
from gen_jax.engine.experiment import build_experiment
from gen_jax.evaluate import inception_weights
from gen_jax.methods.inpainting import InpaintConfigError


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
      (ConfigError, ValueError)]:
    assert issubclass(error, UserError) and issubclass(error, builtin), error


@pytest.mark.parametrize("overrides,message", [
    ({"train.batch_size": -4}, "train.batch_size=-4 must be positive."),
    ({"train.num_steps": 0}, "train.num_steps=0 must be positive."),
    ({"diffusion.target": "score"}, "diffusion.target='score'; expected one of"),
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
  """The engine asks the method: a DDPM offers inpaint, a VAE nothing; a GPT reads and
  writes 'hf_gpt2', an LSTM neither; the messages say who can."""
  ddpm = build_experiment(load_config("ddpm")).method
  assert list(ddpm.modes()) == ["inpaint"] and ddpm.modes()["inpaint"].config_group == "inpaint"
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
