"""Config files as code: `load_config('configs/ddpm.py:smoke', {'train.lr': 1e-3})` from
Python, as `launch.py --config=... --config.train.lr=...` does from the shell."""
from __future__ import annotations

import importlib.util
import os
import types
from typing import Any

import ml_collections

# The folders of config files. They live inside the package (gen_jax/configs,
# gen_jax/experiments), so an install adds no top-level `configs` or `experiments` package;
# `configs/` and `experiments/` at the repository root are links to them.
CONFIG_PACKAGES = ("configs", "experiments")
PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))   # gen_jax/


def resolve_path(path: str) -> str:
  """`path` itself when it is a file; else, for 'configs/...' or 'experiments/...', that
  file inside the gen_jax package (so `load_config('configs/ddpm.py')` works outside a
  checkout of the repository too, from an installed wheel).

  Raises:
    FileNotFoundError: neither exists.
  """
  if os.path.isfile(path):
    return path
  package, _, rest = os.path.normpath(path).partition(os.sep)
  if package in CONFIG_PACKAGES and rest:
    if os.path.isfile(candidate := os.path.join(PACKAGE_ROOT, package, rest)):
      return candidate
  raise FileNotFoundError(f"Config file {path!r} does not exist (see configs/ and "
                          "experiments/ in the repository or the installed package).")


def load_module(path: str) -> types.ModuleType:
  """Imports a config file by its path (`resolve_path`); it may import `gen_jax.configs.common`."""
  path = resolve_path(path)
  name = "_gen_jax_config_" + os.path.splitext(os.path.basename(path))[0]
  spec = importlib.util.spec_from_file_location(name, path)
  if spec is None or spec.loader is None:   # not a .py file
    raise ImportError(f"{path} cannot be imported as a Python module.")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def load_config(config_arg: str, overrides: dict[str, Any] | None = None,
                lock: bool = True) -> ml_collections.ConfigDict:
  """`get_config(arg)` of the file in `config_arg` ('path[:arg]'), with `overrides`
  ({dotted field: value}) applied; locked, so a misspelled field fails."""
  path, _, arg = config_arg.partition(":")
  config = load_module(path).get_config(arg or None)
  if lock:
    config.lock()
  config.update_from_flattened_dict(dict(overrides or {}))
  return config
