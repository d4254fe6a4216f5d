"""A family's own `--mode=<name>` (`Method.modes`, e.g. a DDPM's `inpaint`): the engine's side.

  python launch.py --workdir=runs/ddpm --mode=inpaint --config.inpaint.mask=left

The run's method declares the modes it offers (gen_jax/methods/base.py: `MethodMode`) and
does the math; this module builds the experiment, checks that the method offers the mode,
and hands it a `RunContext`: the trained run's checkpoint, its eval images, calls compiled
for the mesh, and files under `<workdir>/<mode>/` (the `ModeContext` a method sees).
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import jax
import ml_collections
import numpy as np
from etils import epath
from PIL import Image

from gen_jax.core.errors import ConfigError
from gen_jax.engine import checkpoint as ckpt_lib
from gen_jax.engine.experiment import Experiment, build_experiment
from gen_jax.engine.modes import trained_workdir
from gen_jax.engine.outputs import image_grid, is_main_process, save_json
from gen_jax.engine.samples import fixed_sample_batch

# The modes launch.py runs itself; a method's `modes()` adds its own.
ENGINE_MODES = ("train", "sample", "eval", "export", "summary", "compile", "report")


def read_grayscale_image(path: str) -> np.ndarray:
  """The image file at `path` as uint8 [H, W] (converted to grayscale).

  Raises:
    OSError, ValueError: no such file, or not an image PIL reads.
  """
  with Image.open(path) as image:
    return np.asarray(image.convert("L"))


@dataclasses.dataclass(frozen=True)
class RunContext:
  """The `gen_jax.methods.base.ModeContext` of mode `mode` on the run in `workdir`."""
  exp: Experiment
  workdir: str
  mode: str

  @property
  def config(self) -> ml_collections.ConfigDict:
    return self.exp.config

  def restore(self) -> tuple[Any, int]:
    """The newest (or `eval.step`) checkpoint of the run (`eval.checkpoint_from` when set)."""
    return ckpt_lib.load_checkpoint(self.exp, trained_workdir(self.config, self.workdir),
                                    self.config.eval.step)

  def eval_images(self, num: int) -> dict[str, jax.Array]:
    return fixed_sample_batch(self.exp, num)

  def jit(self, fn: Callable) -> Callable:
    return jax.jit(fn, out_shardings=self.exp.replicated)

  def read_grayscale_image(self, path: str) -> np.ndarray:
    return read_grayscale_image(path)

  def _path(self, name: str, suffix: str) -> epath.Path:
    return epath.Path(self.workdir) / self.mode / f"{name}{suffix}"

  def write_image_grid(self, name: str, images: np.ndarray, ncols: int) -> str:
    path = self._path(name, ".png")
    if is_main_process():
      path.parent.mkdir(parents=True, exist_ok=True)
      grid = image_grid(images, ncols=ncols)
      Image.fromarray(grid[..., 0] if grid.shape[-1] == 1 else grid).save(path)
    return str(path)

  def write_json(self, name: str, content: Mapping[str, Any]) -> str:
    path = self._path(name, ".json")
    save_json(path, dict(content))
    return str(path)

  def write_arrays(self, name: str, arrays: Mapping[str, np.ndarray]) -> str:
    path = self._path(name, ".npz")
    if is_main_process():
      path.parent.mkdir(parents=True, exist_ok=True)
      with path.open("wb") as f:
        np.savez(f, **dict(arrays))  # pyright: ignore[reportArgumentType]
    return str(path)


def run_method_mode(config: ml_collections.ConfigDict, workdir: str, name: str,
                    file_config: ml_collections.ConfigDict | None = None
                    ) -> tuple[dict[str, Any], str]:
  """Runs the run's method's mode `name` on the trained run in `workdir`.

  Args:
    config: the run's config (its saved one, with the command's overrides).
    file_config: the config launch.py built from --config (a config file, or the saved
      run's through configs/saved_run.py, which fills today's defaults), if any: fields of
      the mode's config group that the saved run lacks (it predates them) take its values.

  Returns:
    (the mode's result, the lines to print).

  Raises:
    ConfigError: the run's method offers no mode `name`; or what the mode raises.
  """
  exp = build_experiment(config)
  offered = exp.method.modes()
  if name not in offered:
    listed = "; ".join(f"{m}: {mode.help}" for m, mode in offered.items()) or "none"
    raise ConfigError(f"--mode={name}: not one of launch.py's modes {ENGINE_MODES} nor one "
                      f"that the run's method (config.method={config.method!r}) offers "
                      f"(its own modes: {listed}).")
  mode = offered[name]
  group = mode.config_group
  if file_config is not None and group in file_config:   # fields newer than the run
    config[group] = {**file_config[group].to_dict(), **config.get(group, {})}
  result = mode.run(RunContext(exp, workdir, name), config[group])
  return result, mode.report(result)
