"""The smoke configs the end-to-end tests run (importable from subprocess tests too)."""
import importlib.util
import os
import sys

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:   # configs import each other as the `configs` package
  sys.path.insert(0, REPO_ROOT)


def load_config(name: str, arg: str = "smoke", **overrides):
  """configs/<name>.py:get_config(arg) with dotted-key overrides, e.g. {'train.num_steps': 6}."""
  spec = importlib.util.spec_from_file_location(name, os.path.join(REPO_ROOT, "configs", f"{name}.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config(arg)
  for key, value in overrides.items():
    *parents, leaf = key.split(".")
    node = config
    for p in parents:
      node = node[p]
    node[leaf] = value
  return config


def train_losses(workdir) -> dict[int, float]:
  from gen_jax.engine.logging import read_metrics
  return {row["step"]: row["train/loss"] for row in read_metrics(workdir) if "train/loss" in row}
