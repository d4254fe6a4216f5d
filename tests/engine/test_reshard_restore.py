"""Restore on different hardware: a checkpoint written by 8 devices with FSDP-sharded state
(mesh data=2, fsdp=4) continues on 4 devices and on 1 (replicated state), and training
goes on exactly as the uninterrupted 8-device run: same losses, so the same parameters,
optimizer state and data position."""
import os
import shutil

import numpy as np
import pytest
from smoke import train_losses
from test_multihost import finish, launch_args, run_single_process, single_process

STEPS = 6
CONFIG = "configs/gpt.py:smoke"


@pytest.fixture(scope="module")
def runs(tmp_path_factory, text_data_dir):
  root = tmp_path_factory.mktemp("reshard")
  overrides = {"data.data_dir": text_data_dir, "train.sample_every": 0, "eval.every": 0}
  written = str(root / "eight_devices")
  run_single_process(launch_args(CONFIG, written, {**overrides, "mesh.data": 2, "mesh.fsdp": 4},
                                 STEPS), devices=8)
  workdirs, procs = {}, []
  for devices in (4, 1):   # both at once
    # The 8-device run as it was at step 4: its newest checkpoint removed.
    workdirs[devices] = str(root / f"on_{devices}")
    shutil.copytree(written, workdirs[devices])
    shutil.rmtree(os.path.join(workdirs[devices], "checkpoints", str(STEPS)))
    procs.append(single_process(launch_args(CONFIG, workdirs[devices], overrides, STEPS),
                                devices=devices))
  logs = [err for _, err in finish(procs)]
  return written, {devices: (workdirs[devices], log)
                   for devices, log in zip((4, 1), logs, strict=True)}


@pytest.mark.parametrize("devices", [4, 1])
def test_eight_device_fsdp_checkpoint_continues_on_fewer_devices(runs, devices):
  written, resumed = runs
  workdir, log = resumed[devices]
  assert "Resuming from" in log and "step 4" in log
  reference, continued = train_losses(written), train_losses(workdir)
  assert sorted(continued) == sorted(reference) == [2, 4, 6]   # smoke: log every 2 steps
  np.testing.assert_allclose(continued[6], reference[6], rtol=1e-5)
