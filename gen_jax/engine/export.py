"""`--mode=export`: a trained run's weights as a `safetensors` file other tools can read.

`<workdir>/export/step_<N>/` holds

  model.safetensors   the EMA parameters (`params/...`) and the non-trained model state
                      (`model_state/...`, e.g. a GAN generator's BatchNorm statistics),
                      one tensor per leaf, named by its path ('params/Dense_0/kernel');
                      the file's metadata holds the step and the method
  config.json         the config the run was trained with

safetensors stores raw tensors and a JSON header only (no pickled code), so loading an
export runs nothing but array reads. `gen_jax.load_run(<export dir>)` reads one back.

Another `export.format` (one of the run's `method.export_formats()`, e.g. a GPT's
'hf_gpt2') writes the files the method lays out (`method.export_foreign`, gen_jax/interop)
to `<workdir>/export/step_<N>_<format>/` (`export_foreign`).
"""
from __future__ import annotations

import json
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from etils import epath

from gen_jax.core.state import TrainState
from gen_jax.engine.experiment import Experiment
from gen_jax.engine.outputs import is_main_process
from gen_jax.interop.safetensors_file import safetensors_numpy

WEIGHTS, CONFIG = "model.safetensors", "config.json"


def flatten_tree(tree: Any, prefix: str) -> dict[str, np.ndarray]:
  """{'<prefix>/<path>': array} for every leaf, the path's keys joined by '/'."""
  flat = {}
  for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
    name = jax.tree_util.keystr(path, simple=True, separator="/")
    flat[f"{prefix}/{name}"] = np.asarray(jax.device_get(leaf))
  return flat


def unflatten_into(template: Any, flat: dict[str, np.ndarray], prefix: str) -> Any:
  """The arrays of `flat` placed into `template`'s structure (shapes checked)."""
  names = flatten_tree(jax.tree.map(lambda x: np.zeros((), np.int8), template), prefix)
  leaves = []
  for (name, _), shaped in zip(names.items(), jax.tree.leaves(template), strict=True):
    if name not in flat:
      raise ValueError(f"The export has no tensor {name!r}: it is not from this config.")
    if tuple(flat[name].shape) != tuple(shaped.shape):
      raise ValueError(f"{name}: the export holds shape {flat[name].shape}, the config "
                       f"makes {tuple(shaped.shape)}.")
    leaves.append(jnp.asarray(flat[name], shaped.dtype))
  return jax.tree.unflatten(jax.tree.structure(template), leaves)


def readable_by_all(path: epath.Path) -> None:
  """Mode 0644, like any file written to share: safetensors writes its file 0600."""
  os.chmod(path, 0o644)


def export_state(exp: Experiment, state: TrainState, step: int,
                 out_dir: str | epath.Path) -> epath.Path:
  """Writes the EMA params and model state of `state` and the config into `out_dir`."""
  st = safetensors_numpy()
  out_dir = epath.Path(out_dir)
  tensors = {**flatten_tree(state.ema_params, "params"),
             **flatten_tree(state.model_state, "model_state")}
  if is_main_process():
    out_dir.mkdir(parents=True, exist_ok=True)
    st.save_file(tensors, str(out_dir / WEIGHTS),
                 metadata={"step": str(step), "method": exp.config.method,
                           "format": "gen_jax export: EMA params and model state"})
    readable_by_all(out_dir / WEIGHTS)
    (out_dir / CONFIG).write_text(exp.config.to_json_best_effort(indent=2) + "\n")
  return out_dir / WEIGHTS


def export_foreign(exp: Experiment, state: TrainState, step: int, export_format: str,
                   out_dir: str | epath.Path) -> epath.Path:
  """Writes the EMA params of `state` in `export_format` (one of `method.export_formats()`)
  into `out_dir`: the files of `method.export_foreign` and the run's config. Returns the
  weights file's path."""
  st = safetensors_numpy()
  files = exp.method.export_foreign(export_format, jax.device_get(state.ema_params), step)
  out_dir = epath.Path(out_dir)
  if is_main_process():
    out_dir.mkdir(parents=True, exist_ok=True)
    st.save_file(files.tensors, str(out_dir / files.weights_file), metadata=files.metadata)
    readable_by_all(out_dir / files.weights_file)
    for name, content in files.json_files.items():
      (out_dir / name).write_text(json.dumps(content, indent=2) + "\n")
    (out_dir / files.config_file).write_text(exp.config.to_json_best_effort(indent=2) + "\n")
  return out_dir / files.weights_file


def is_export(path: str | epath.Path) -> bool:
  return (epath.Path(path) / WEIGHTS).exists()


def load_export(exp: Experiment, path: str | epath.Path) -> tuple[TrainState, int]:
  """A TrainState from an export of a run with `exp`'s config: params and EMA params are
  the exported EMA weights; the optimizer state is zeros (an export is for sampling,
  evaluation and fine-tuning with `init_from`, not for resuming)."""
  st = safetensors_numpy()
  path = epath.Path(path)
  flat = st.load_file(str(path / WEIGHTS))
  with open(path / WEIGHTS, "rb") as f:   # the safetensors header: its length, then JSON
    header = json.loads(f.read(int.from_bytes(f.read(8), "little")))
  step = int((header.get("__metadata__") or {}).get("step", 0))
  abstract = exp.abstract_state
  params = unflatten_into(abstract.params, flat, "params")
  state = TrainState(step=jnp.asarray(step, jnp.int32), params=params, ema_params=params,
                     opt_state=jax.tree.map(lambda x: jnp.zeros(x.shape, x.dtype),
                                            abstract.opt_state),
                     model_state=unflatten_into(abstract.model_state, flat, "model_state"))
  return jax.device_put(state, exp.state_sharding), step
