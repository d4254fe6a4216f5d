"""Orbax checkpoints of the train state and the grain data-iterator state.

Resume precedence (the launcher and README say the same):

  1. a checkpoint in `workdir/checkpoints`  -> full state + data iterator (a rerun resumes)
  2. `config.resume_from` (another run's workdir or checkpoints dir) -> full state + data
  3. `config.init_from`   (another run's workdir or checkpoints dir) -> params only
     (EMA params start equal to them; optimizer and step start fresh: fine-tuning)
  4. scratch

Saves are asynchronous and atomic (orbax writes to a temporary directory and renames
it when complete), so a crash or kill mid-save leaves the previous checkpoints usable.
"""
from __future__ import annotations

import os
from typing import Any

import grain
import jax
import orbax.checkpoint as ocp
from etils import epath

STATE, DATA = "state", "data"


def checkpoint_dir(path: str | epath.Path) -> epath.Path:
  """Accepts a run's workdir or its `checkpoints/` directory."""
  path = epath.Path(path)
  return path / "checkpoints" if (path / "checkpoints").is_dir() else path


def _abstract_with_shardings(abstract_state: Any, shardings: Any) -> Any:
  return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                      abstract_state, shardings)


class Checkpointer:
  """A CheckpointManager over two items: `state` (TrainState) and `data` (grain iterator)."""

  def __init__(self, directory: str | epath.Path, *, max_to_keep: int = 3,
               async_save: bool = True, read_only: bool = False):
    # orbax needs absolute paths; `--workdir=runs/ddpm` is relative to where launch.py runs.
    self.directory = epath.Path(os.path.abspath(os.fspath(directory)))
    self._manager = ocp.CheckpointManager(
        self.directory,
        item_names=(STATE, DATA),
        item_handlers={STATE: ocp.StandardCheckpointHandler(),
                       DATA: grain.checkpoint.CheckpointHandler()},
        options=ocp.CheckpointManagerOptions(
            max_to_keep=max_to_keep, create=not read_only, read_only=read_only,
            enable_async_checkpointing=async_save),
    )

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    return list(self._manager.all_steps())

  def save(self, step: int, state: Any, data_iterator: Any | None) -> None:
    items = {STATE: ocp.args.StandardSave(state)}
    if data_iterator is not None:
      items[DATA] = grain.checkpoint.CheckpointSave(data_iterator)
    self._manager.save(step, args=ocp.args.Composite(**items), force=True)

  def restore(self, step: int, abstract_state: Any, shardings: Any,
              data_iterator: Any | None = None) -> Any:
    """Restores the state onto `shardings` (any mesh) and, if given, the iterator in place."""
    items = {STATE: ocp.args.StandardRestore(_abstract_with_shardings(abstract_state, shardings))}
    has_data = (self.directory / str(step) / DATA).exists()
    if data_iterator is not None and has_data:
      items[DATA] = grain.checkpoint.CheckpointRestore(data_iterator)
    return self._manager.restore(step, args=ocp.args.Composite(**items))[STATE]

  def wait(self) -> None:
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.close()


def restore_params(path: str | epath.Path, abstract_params: Any, shardings: Any,
                   step: int | None = None) -> tuple[Any, int]:
  """Restores only `params` from another run's checkpoint (for `init_from`)."""
  manager = ocp.CheckpointManager(
      os.path.abspath(os.fspath(checkpoint_dir(path))), item_names=(STATE,),
      item_handlers={STATE: ocp.PyTreeCheckpointHandler()},
      options=ocp.CheckpointManagerOptions(read_only=True, create=False))
  step = manager.latest_step() if step is None else step
  if step is None:
    raise FileNotFoundError(f"init_from={path}: no checkpoint found there.")
  target = {"params": _abstract_with_shardings(abstract_params, shardings)}
  restored = manager.restore(step, args=ocp.args.Composite(**{STATE: ocp.args.PyTreeRestore(
      item=target, restore_args=ocp.checkpoint_utils.construct_restore_args(target),
      partial_restore=True)}))
  manager.close()
  return restored[STATE]["params"], step
