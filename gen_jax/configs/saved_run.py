"""The config a run was trained with, read back from its workdir.

  python launch.py --workdir=runs/ddpm --mode=sample     # launch.py passes this file itself:
  python launch.py --config=configs/saved_run.py:runs/ddpm --mode=sample

`get_config(workdir)` returns `<workdir>/config.json` as a ConfigDict, so `--config.x=y`
overrides apply to it as to any config file (launch.py allows only sample/eval fields
there in the modes that read a trained run). Sample, export, eval and (for a diffusion run)
inpaint fields that gen_jax gained after the run was saved get today's defaults, so they can
be overridden on older runs too.
"""
from __future__ import annotations

import inspect
import json
import os
from typing import Any

import ml_collections

from gen_jax.configs import common, ddpm, inception_eval


def with_read_mode_defaults(saved: dict[str, Any]) -> dict[str, Any]:
  """`saved` with the sample (for a family that samples), export, Inception-metric eval and
  (for a diffusion run) inpaint fields it lacks set to today's defaults (the feature
  extractor stays the classifier); fields it has are kept."""
  defaults = {"export": common.base_config(saved["method"], "")["export"].to_dict()}
  if "sample" in saved:
    defaults["sample"] = {name: p.default
                          for name, p in inspect.signature(common.sample_group).parameters.items()
                          if p.default is not inspect.Parameter.empty}
  if saved["method"] == "diffusion":   # --mode=inpaint's group
    defaults["inpaint"] = ddpm.inpaint_group().to_dict()
  if "sample_metrics" in saved.get("eval", {}):   # the Inception fields, classifier kept
    inception = ml_collections.ConfigDict()
    inception_eval.add_inception_metrics(inception)
    defaults["eval"] = {**inception.to_dict(), "feature_extractor": "classifier"}
  for group, fields in defaults.items():
    saved.setdefault(group, {})
    for name, value in fields.items():
      saved[group].setdefault(name, value)
  return saved


def get_config(workdir: str | None = None) -> ml_collections.ConfigDict:
  if not workdir:
    raise ValueError("configs/saved_run.py needs the run's workdir: "
                     "--config=configs/saved_run.py:<workdir>.")
  path = os.path.join(workdir, "config.json")
  if not os.path.isfile(path):
    raise FileNotFoundError(f"{path} does not exist: {workdir} holds no trained run.")
  with open(path) as f:
    return ml_collections.ConfigDict(with_read_mode_defaults(json.load(f)))
