"""Multi-host training for real: 2 local processes x 2 CPU devices each, talking through
jax.distributed (gloo collectives), started with launch.py's process flags.

For the smoke DDPM and GPT: the 2 x 2 run's losses equal those of 1 process x 4 devices
(the loaders give every process its rows of the same global batch), and the checkpoint
the 2 processes wrote resumes in a single process (state and data position) exactly
where the single-process run would be.
"""
import os
import socket
import subprocess
import sys

import numpy as np
import pytest
from smoke import REPO_ROOT, train_losses

from gen_jax.engine.outputs import read_metrics

STEPS, MORE_STEPS = 4, 6


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def launch_args(config, workdir, overrides, num_steps):
  return [sys.executable, os.path.join(REPO_ROOT, "launch.py"), f"--config={config}",
          f"--workdir={workdir}", f"--config.train.num_steps={num_steps}",
          *[f"--config.{k}={v}" for k, v in overrides.items()]]


def environment():
  """CPU only, sharing the test session's XLA compilation cache."""
  env = {**os.environ, "JAX_PLATFORMS": "cpu"}
  env.pop("XLA_FLAGS", None)
  if cache := os.environ.get("GEN_JAX_TEST_XLA_CACHE"):
    env.update(JAX_COMPILATION_CACHE_DIR=cache, JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0")
  return env


def start(args) -> subprocess.Popen:
  return subprocess.Popen(args, env=environment(), cwd=REPO_ROOT, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)


def finish(procs) -> list[tuple[str, str]]:
  """Waits for the processes; (stdout, stderr) of each; fails on a non-zero exit."""
  outputs = []
  try:
    for p in procs:
      outputs.append(p.communicate(timeout=600))
  finally:
    for p in procs:
      p.kill()
  for p, (_, err) in zip(procs, outputs, strict=True):
    assert p.returncode == 0, err[-3000:]
  return outputs


def single_process(args, devices=4) -> subprocess.Popen:
  return start([*args, f"--cpu_devices={devices}"])


def run_single_process(args, devices=4) -> tuple[str, str]:
  return finish([single_process(args, devices)])[0]


def two_processes(args) -> list[subprocess.Popen]:
  """Process 0 and 1 of a 2-process run, 2 CPU devices each, on this machine."""
  address = f"localhost:{free_port()}"
  return [start([*args, "--cpu_devices=2", f"--coordinator_address={address}",
                 "--num_processes=2", f"--process_id={i}"]) for i in range(2)]


FAMILIES = {
    # (config, overrides). DDPM: a one-level U-Net (convs, GroupNorm, the mid-block
    # attention, the time embedding; half the compile time), no eval or sampling.
    "ddpm": ("configs/ddpm.py:smoke", {"model.ch_mult": "(1,)", "model.attn_resolutions": "()",
                                       "train.sample_every": 0, "eval.every": 0}),
    # GPT: also evaluates and samples at the last step of the two-process run.
    # A fixed cosine horizon, so that 4 steps extended to 6 follow the 6-step schedule.
    "gpt": ("configs/gpt.py:smoke", {"train.decay_steps": MORE_STEPS, "eval.every": STEPS}),
}


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def runs(request, tmp_path_factory, data_dir, text_data_dir):
  """Two processes train STEPS steps; one process (4 devices) trains MORE_STEPS steps; one
  process resumes the two-process run to MORE_STEPS."""
  config, overrides = FAMILIES[request.param]
  overrides = {**overrides, "data.data_dir": text_data_dir if request.param == "gpt" else data_dir}
  root = tmp_path_factory.mktemp(f"multihost_{request.param}")
  multi, single = str(root / "two_processes"), str(root / "one_process")
  # The single-process run goes alongside (compiles are mostly single-threaded).
  reference = single_process(launch_args(config, single, overrides, MORE_STEPS))
  logs = finish(two_processes(launch_args(config, multi, overrides, STEPS)))
  finish([reference])
  multi_losses = train_losses(multi)
  multi_eval = [r for r in read_metrics(multi) if any(k.startswith("eval/") for k in r)]
  resumed = run_single_process(launch_args(config, multi, overrides, MORE_STEPS))
  return dict(family=request.param, multi=multi, single=single, logs=logs,
              multi_losses=multi_losses, multi_eval=multi_eval, resumed=resumed)


def test_two_processes_train_like_one_process_with_as_many_devices(runs):
  single = train_losses(runs["single"])
  logged = list(range(1, STEPS + 1)) if runs["family"] == "ddpm" else [2, 4]  # log_every
  assert sorted(runs["multi_losses"]) == logged
  for step, loss in runs["multi_losses"].items():
    assert loss == pytest.approx(single[step], rel=1e-5), step


def test_two_processes_evaluate_and_sample_like_one_process(runs):
  if runs["family"] != "gpt":
    pytest.skip("only the GPT run evaluates and samples (compile time)")
  single_eval = {r["step"]: r for r in read_metrics(runs["single"])
                 if any(k.startswith("eval/") for k in r)}
  assert runs["multi_eval"], "the two-process run did not evaluate"
  assert os.path.exists(os.path.join(runs["multi"], "samples", f"step_{STEPS}.txt"))
  for row in runs["multi_eval"]:
    for k, v in row.items():
      if k.startswith("eval/"):
        assert v == pytest.approx(single_eval[row["step"]][k], rel=1e-5), k


def test_two_process_checkpoint_resumes_in_one_process(runs):
  assert "Resuming from" in runs["resumed"][1]
  resumed, single = train_losses(runs["multi"]), train_losses(runs["single"])
  later = [s for s in single if s > STEPS]
  assert later
  np.testing.assert_allclose([resumed[s] for s in later], [single[s] for s in later], rtol=1e-5)


def test_only_process_zero_logs_and_writes(runs):
  (_, err0), (_, err1) = runs["logs"]
  assert "Compiled train step" in err0 and "Compiled train step" not in err1
  ckpt = os.path.join(runs["multi"], "checkpoints", str(STEPS), "data")
  saved = sorted(f for f in os.listdir(ckpt) if f.startswith("process_"))
  assert saved == ["process_0-of-2.json", "process_1-of-2.json"]
  with open(os.path.join(ckpt, "process_0-of-2.json")) as f0, \
       open(os.path.join(ckpt, "process_1-of-2.json")) as f1:
    assert f0.read() == f1.read()   # the position in global batches: the same everywhere


def test_a_lost_process_stops_the_other_and_a_rerun_of_both_resumes(tmp_path, data_dir):
  """Process 1 is killed (SIGKILL) mid-training: process 0 must not hang in a collective
  but exit within about --heartbeat_timeout, naming the lost process; rerunning both then
  resumes from the newest checkpoint and finishes."""
  import re
  import time
  workdir = tmp_path / "lost"
  overrides = {"data.data_dir": data_dir, "train.sample_every": 0, "eval.every": 0,
               "train.checkpoint_every": 2, "train.log_every": 50}
  args = [*launch_args("configs/vae.py:smoke", workdir, overrides, 100_000),
          "--heartbeat_timeout=10"]
  address = f"localhost:{free_port()}"
  logs = [open(tmp_path / f"process_{i}.log", "w+") for i in range(2)]
  procs = [subprocess.Popen([*args, "--cpu_devices=2", f"--coordinator_address={address}",
                             "--num_processes=2", f"--process_id={i}"], env=environment(),
                            cwd=REPO_ROOT, stdout=logs[i], stderr=subprocess.STDOUT)
           for i in range(2)]   # logs to files: nobody reads a pipe while they train
  try:
    deadline = time.monotonic() + 300
    while not (workdir / "checkpoints" / "2").is_dir():   # training is under way
      assert time.monotonic() < deadline and procs[0].poll() is None, "did not start"
      time.sleep(0.5)
    procs[1].kill()
    killed = time.monotonic()
    procs[0].wait(timeout=120)
    waited = time.monotonic() - killed
  finally:
    for p in procs:
      p.kill()
  logs[0].seek(0)
  survivor = logs[0].read()
  assert procs[0].returncode != 0
  assert waited < 60, waited
  assert re.search(r"tasks are unhealthy \(stopped sending heartbeats\):\s*1\b", survivor)

  saved = max(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())
  resumed = finish(two_processes([*launch_args("configs/vae.py:smoke", workdir, overrides,
                                               saved + 2), "--heartbeat_timeout=10"]))
  assert f"Resuming from {workdir}/checkpoints step {saved}" in resumed[0][1]
  assert (workdir / "checkpoints" / str(saved + 2)).is_dir()
