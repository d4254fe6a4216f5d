"""Sweeps: expansion, run names, commands, the local runner (skip, resume, failures) and
the SLURM script. The runner is exercised with a stand-in for launch.py (no JAX)."""
import json
import os
import re
import shlex
import subprocess
import sys
import textwrap
import time

import pytest
from smoke import REPO_ROOT

from gen_jax.configs import common
from gen_jax.engine import lease as lease_lib
from gen_jax.engine import sweep
from gen_jax.engine import workdir as workdir_lib

SWEEP_CONFIG = textwrap.dedent("""
    from gen_jax.configs import common

    def get_config(arg=None):
      raise AssertionError("the sweep runner never builds the config itself")

    def get_sweep(arg=None):
      return common.product({"diffusion.target": ["eps", "v"]},
                            [{"train.lr": 1e-3}, {"train.lr": 5e-4, "fail": arg == "fail"}])
""")

# Stands in for launch.py: records each call, fails when asked, else finishes the run.
FAKE_LAUNCH = textwrap.dedent("""
    import json, os, sys
    args = dict(a[2:].split("=", 1) for a in sys.argv[1:] if a.startswith("--") and "=" in a)
    workdir = args["workdir"]
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, "calls.txt"), "a") as f:
      f.write(" ".join(sys.argv[1:]) + "\\n")
    if args.get("config.fail") == "True":
      print("Traceback (most recent call last):\\nValueError: boom in " + workdir)
      sys.exit(1)
    steps = int(args.get("config.train.num_steps", 10))
    json.dump({"method": "diffusion", "train": {"num_steps": steps}},
              open(os.path.join(workdir, "config.json"), "w"))
    json.dump({"status": "done", "step": steps},
              open(os.path.join(workdir, "run_status.json"), "w"))
""")


def test_product_and_zipped():
  assert common.product({"a": [1, 2]}, {"b": [3, 4]}) == [
      {"a": 1, "b": 3}, {"a": 1, "b": 4}, {"a": 2, "b": 3}, {"a": 2, "b": 4}]
  assert common.product(common.zipped({"a": [1, 2], "b": [3, 4]}), {"c": [0]}) == [
      {"a": 1, "b": 3, "c": 0}, {"a": 2, "b": 4, "c": 0}]
  with pytest.raises(ValueError, match="as many values"):
    common.zipped({"a": [1, 2], "b": [3]})


def test_run_names_are_readable_stable_unique_and_safe(tmp_path):
  runs = sweep.expand(common.product({"train.lr": [1e-3, 5e-4]},
                                     {"diffusion.target": ["eps", "v"]}), str(tmp_path))
  assert [r.name for r in runs] == ["lr=0.001,target=eps", "lr=0.001,target=v",
                                    "lr=0.0005,target=eps", "lr=0.0005,target=v"]
  assert runs[1].workdir == str(tmp_path / "lr=0.001,target=v")
  # Ambiguous last components keep the full field; unsafe characters become '_'.
  assert sweep.run_name({"model.dropout": 0.1, "data.dropout": 0.0, "sample.prompt": "a b/c"}) == (
      "model.dropout=0.1,data.dropout=0,prompt=a_b_c")
  assert sweep.run_name({"model.ch_mult": (1, 2)}) == "ch_mult=1-2"
  assert sweep.run_name({}) == "base"
  with pytest.raises(ValueError, match="both named"):
    sweep.expand([{"train.lr": 1e-3}, {"train.lr": 0.001}], str(tmp_path))


def test_commands_pass_the_run_overrides_last():
  run = sweep.expand([{"train.lr": 1e-3, "model.ch_mult": (1, 2, 2), "diffusion.target": "v"}],
                     "runs/s")[0]
  cmd = sweep.command(run, "configs/ddpm.py:smoke", ["--config.train.lr=9.0", "--cpu_devices=2"])
  assert cmd == ["python", "launch.py", "--config=configs/ddpm.py:smoke",
                 "--workdir=runs/s/lr=0.001,ch_mult=1-2-2,target=v",
                 "--config.train.lr=9.0", "--cpu_devices=2",   # the sweep command's own flags
                 "--config.train.lr=0.001", "--config.model.ch_mult=(1,2,2)",
                 "--config.diffusion.target=v"]


def test_dry_run_prints_one_command_per_run_and_slurm_runs_exactly_those(tmp_path, capsys):
  config_file = tmp_path / "sweep_config.py"
  config_file.write_text(SWEEP_CONFIG)
  sweep_dir = str(tmp_path / "runs")
  assert sweep.main(str(config_file), sweep_dir, ["--config.train.num_steps=5"], dry_run=True) == 0
  commands = capsys.readouterr().out.strip().splitlines()
  assert len(commands) == 4 and all(c.startswith("python launch.py --config=") for c in commands)
  assert f" --workdir={sweep_dir}/target=v,lr=0.001 " in commands[2]

  sweep.main(str(config_file), sweep_dir, ["--config.train.num_steps=5"], emit="slurm",
             slurm={"partition": "gpu", "time_limit": "2:00:00", "gpus_per_task": 1,
                    "cpus_per_task": 12, "mem": "64G", "setup": "source .venv/bin/activate"})
  script = (tmp_path / "runs" / "sweep.sbatch").read_text()
  for line in ("#SBATCH --array=0-3", "#SBATCH --partition=gpu", "#SBATCH --time=2:00:00",
               "#SBATCH --gpus-per-task=1", "#SBATCH --cpus-per-task=12", "#SBATCH --mem=64G",
               "source .venv/bin/activate", 'eval "${COMMANDS[$SLURM_ARRAY_TASK_ID]}"'):
    assert line in script, line
  array = script.split("COMMANDS=(\n")[1].split("\n)")[0].splitlines()
  assert [shlex.split(line.strip())[0] for line in array] == commands


def test_local_sweep_skips_finished_runs_resumes_others_and_survives_a_failure(tmp_path):
  config_file = tmp_path / "sweep_config.py"
  config_file.write_text(SWEEP_CONFIG)
  launcher = tmp_path / "fake_launch.py"
  launcher.write_text(FAKE_LAUNCH)
  sweep_dir = tmp_path / "runs"
  runs = sweep.expand(sweep.load_sweep(f"{config_file}:fail"), str(sweep_dir))
  commands = [sweep.command(r, f"{config_file}:fail", python=sys.executable,
                            launcher=str(launcher)) for r in runs]
  # One run was finished before, one stopped half way (its status says so).
  finished, unfinished = runs[0], runs[2]
  for run, status in ((finished, {"status": "done", "step": 10}),
                      (unfinished, {"status": "stopped", "step": 4})):
    (sweep_dir / run.name).mkdir(parents=True)
    (sweep_dir / run.name / "config.json").write_text(
        json.dumps({"method": "diffusion", "train": {"num_steps": 10}}))
    (sweep_dir / run.name / "run_status.json").write_text(json.dumps(status))

  records = sweep.run_locally(runs, commands, parallel=2, poll_seconds=0.05)
  by_name = {r["name"]: r for r in records}
  assert [r["name"] for r in records] == [r.name for r in runs]
  assert by_name[finished.name]["status"] == "skipped"
  assert not (sweep_dir / finished.name / "calls.txt").exists()
  assert by_name[unfinished.name]["status"] == "done"
  failed = [r for r in records if r["status"] == "failed"]
  assert len(failed) == 2 and all("ValueError: boom" in r["error"] for r in failed)
  for r in failed:   # the error is kept in the run's own directory too
    assert "ValueError: boom" in (sweep_dir / r["name"] / "launch.log").read_text()
    assert workdir_lib.read_status(sweep_dir / r["name"])["status"] == "failed"
  summary = sweep.write_summary(str(sweep_dir), records)
  assert "failed" in summary and json.loads((sweep_dir / "sweep_summary.json").read_text())

  # Rerun: now every run that succeeded is skipped; the failed ones run again.
  again = {r["name"]: r["status"] for r in sweep.run_locally(runs, commands, poll_seconds=0.05)}
  assert again[unfinished.name] == "skipped" and list(again.values()).count("failed") == 2
  # A longer run (a raised train.num_steps) is not finished any more.
  assert not sweep.is_finished(finished, num_steps_override=20)


# ------------------------------------------------------------------ hostile values


@pytest.mark.parametrize("value, char", [("a\nb", "U+000A"), ("a\x00b", "U+0000"),
                                         ("tab\there", "U+0009"), ("\x1b[31mred", "U+001B")])
def test_control_characters_are_refused_before_any_run_naming_run_and_field(tmp_path, value,
                                                                           char):
  sweep_set = [{"train.lr": 1e-3}, {"train.lr": 2e-3, "sample.prompt": value}]
  with pytest.raises(ValueError, match=f"Sweep run 1 .*sample.prompt.*{re.escape(char)}"):
    sweep.expand(sweep_set, str(tmp_path))
  assert not list(tmp_path.iterdir())


def test_dry_run_prints_exactly_one_shell_quoted_command_per_line(tmp_path, capsys):
  """Quotes, spaces, `$`, `;`, non-ASCII and a 300-character value: each printed line is
  one command that a shell splits back into exactly the run's arguments."""
  values = ["it's a \"test\"; rm -rf / $HOME `x`", "ünïcødé ☃", "x" * 300, "a,b=c"]
  config_file = tmp_path / "sweep_config.py"
  config_file.write_text(textwrap.dedent(f"""
      def get_config(arg=None):
        raise AssertionError
      def get_sweep(arg=None):
        return [{{"sample.prompt": v}} for v in {values!r}]
  """))
  assert sweep.main(str(config_file), str(tmp_path / "runs"), [], dry_run=True) == 0
  lines = capsys.readouterr().out.splitlines()
  runs = sweep.expand(sweep.load_sweep(str(config_file)), str(tmp_path / "runs"))
  assert len(lines) == len(values) == len(runs)
  for line, run in zip(lines, runs, strict=True):
    assert shlex.split(line) == sweep.command(run, str(config_file))
  assert all(len(os.path.basename(r.workdir).encode()) <= sweep.MAX_NAME_BYTES for r in runs)


def test_long_run_names_are_shortened_with_a_stable_hash():
  long_a, long_b = {"sample.prompt": "x" * 300}, {"sample.prompt": "x" * 299 + "y"}
  a, b = sweep.run_name(long_a), sweep.run_name(long_b)
  assert len(a) == len(b) == sweep.MAX_NAME_BYTES and a != b
  assert a.startswith("prompt=xxx") and a == sweep.run_name(dict(long_a))   # stable
  assert sweep.run_name({"train.lr": 1e-3}) == "lr=0.001"                   # short: as before


def test_a_damaged_status_fails_that_run_by_name_and_the_others_go_on(tmp_path):
  config_file = tmp_path / "sweep_config.py"
  config_file.write_text(SWEEP_CONFIG)
  launcher = tmp_path / "fake_launch.py"
  launcher.write_text(FAKE_LAUNCH)
  runs = sweep.expand(sweep.load_sweep(str(config_file)), str(tmp_path / "runs"))
  commands = [sweep.command(r, str(config_file), python=sys.executable, launcher=str(launcher))
              for r in runs]
  damaged = runs[1]
  os.makedirs(damaged.workdir)
  with open(os.path.join(damaged.workdir, "run_status.json"), "w") as f:
    f.write("\x00garbage{")
  records = {r["name"]: r for r in sweep.run_locally(runs, commands, poll_seconds=0.05)}
  assert records[damaged.name]["status"] == "failed"
  assert "run_status.json is damaged" in records[damaged.name]["error"]
  assert not os.path.exists(os.path.join(damaged.workdir, "calls.txt"))   # not started
  assert [records[r.name]["status"] for r in runs if r is not damaged] == ["done"] * 3


def test_a_run_held_by_a_live_process_is_running_elsewhere_and_not_started(tmp_path):
  config_file = tmp_path / "sweep_config.py"
  config_file.write_text(SWEEP_CONFIG)
  launcher = tmp_path / "fake_launch.py"
  launcher.write_text(FAKE_LAUNCH)
  runs = sweep.expand(sweep.load_sweep(str(config_file)), str(tmp_path / "runs"))
  commands = [sweep.command(r, str(config_file), python=sys.executable, launcher=str(launcher))
              for r in runs]
  held = runs[0]
  holder = lease_lib.RunLease(held.workdir, "training").acquire()   # a live process: this one
  try:
    # As seen from another process: the record names a live pid (ours) and the lock is held.
    record = json.loads(open(os.path.join(held.workdir, lease_lib.LEASE)).read())
    record["pid"] = os.getppid()
    with open(os.path.join(held.workdir, lease_lib.LEASE), "w") as f:
      json.dump(record, f)
    records = {r["name"]: r for r in sweep.run_locally(runs, commands, poll_seconds=0.05)}
  finally:
    holder.release()
  assert records[held.name]["status"] == "running elsewhere"
  assert f"pid {os.getppid()}" in records[held.name]["error"]
  assert not os.path.exists(os.path.join(held.workdir, "calls.txt"))
  assert [records[r.name]["status"] for r in runs[1:]] == ["done"] * 3


def test_sweep_children_die_with_the_driver(tmp_path):
  """A SIGKILLed driver takes its runs with it (PR_SET_PDEATHSIG -> SIGTERM)."""
  if not sys.platform.startswith("linux"):
    pytest.skip("PR_SET_PDEATHSIG is Linux's")
  driver = textwrap.dedent(f"""
      import subprocess, sys, time
      sys.path.insert(0, {REPO_ROOT!r})
      from gen_jax.engine import sweep
      child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"],
                               preexec_fn=sweep._die_with_parent(__import__("os").getpid()))
      print(child.pid, flush=True)
      time.sleep(120)
  """)
  proc = subprocess.Popen([sys.executable, "-c", driver], stdout=subprocess.PIPE, text=True)
  child = int(proc.stdout.readline())
  proc.kill()
  proc.wait()
  deadline = time.time() + 20
  while time.time() < deadline and lease_lib.pid_alive(child):
    time.sleep(0.1)
  assert not lease_lib.pid_alive(child)
