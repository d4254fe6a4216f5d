"""The config a run was trained with, read back from its workdir.

  python launch.py --workdir=runs/ddpm --mode=sample     # launch.py passes this file itself:
  python launch.py --config=configs/saved_run.py:runs/ddpm --mode=sample

`get_config(workdir)` returns `<workdir>/config.json` as a ConfigDict, so `--config.x=y`
overrides apply to it as to any config file (launch.py allows only sample/eval fields
there in the modes that read a trained run).
"""
from __future__ import annotations

import json
import os

import ml_collections


def get_config(workdir: str | None = None) -> ml_collections.ConfigDict:
  if not workdir:
    raise ValueError("configs/saved_run.py needs the run's workdir: "
                     "--config=configs/saved_run.py:<workdir>.")
  path = os.path.join(workdir, "config.json")
  if not os.path.isfile(path):
    raise FileNotFoundError(f"{path} does not exist: {workdir} holds no trained run.")
  with open(path) as f:
    return ml_collections.ConfigDict(json.load(f))
