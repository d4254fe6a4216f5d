"""Orbax checkpoints of the train state and the grain data-iterator state.

Resume precedence (`restore_or_init`; docs/design.md says the same):

  1. a checkpoint in `workdir/checkpoints`  -> full state + data iterator (a rerun resumes)
  2. `config.resume_from` (another run's workdir or checkpoints dir) -> full state + data
  3. `config.init_from`   (another run's workdir or checkpoints dir) -> params only
     (EMA params start equal to them; optimizer and step start fresh: fine-tuning)
  4. scratch

Saves are asynchronous and atomic (orbax writes to a temporary directory and renames
it when complete), so a crash or kill mid-save leaves the previous checkpoints usable.

Different hardware. The state restores onto whatever shardings it is given (orbax reads
each device's slice), so a checkpoint written on 8 devices continues on 4 or 1. Every
process saves its data-iterator position (`data/process_<p>-of-<P>.json`); gen_jax's
loaders make that position the same on every process (the number of global batches
read), so a run restarted with a different number of processes reads any of them.
"""
from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

import grain
import jax
import orbax.checkpoint as ocp
from absl import logging
from etils import epath

from gen_jax.core.state import TrainState
from gen_jax.engine.experiment import Experiment

STATE, DATA = "state", "data"


def checkpoint_dir(path: str | epath.Path) -> epath.Path:
  """Accepts a run's workdir or its `checkpoints/` directory."""
  path = epath.Path(path)
  return path / "checkpoints" if (path / "checkpoints").is_dir() else path


def with_shardings(abstract_state: Any, shardings: Any) -> Any:
  """ShapeDtypeStructs that also say where each leaf lives (restore targets, AOT compiles)."""
  return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                      abstract_state, shardings)


class DataIteratorHandler(grain.checkpoint.CheckpointHandler):
  """grain's iterator handler, restoring also when the process count has changed.

  It falls back to process 0's saved position when this process has no file of its own,
  which is right for iterators whose state does not depend on the process (all of
  gen_jax's loaders: image and text).
  """

  def restore(self, directory: epath.Path, item: Any = None, args: Any = None) -> Any:
    mine = directory / f"process_{jax.process_index()}-of-{jax.process_count()}.json"
    if mine.exists():
      return super().restore(directory, item=item, args=args)
    saved = sorted(directory.glob("process_0-of-*.json"))
    if not saved:
      raise FileNotFoundError(f"no data-iterator state in {directory}.")
    item = item or args.item
    state = saved[0].read_text()
    item.set_state(json.loads(state) if isinstance(item, grain.DatasetIterator)
                   else state.encode())
    item.start_prefetch()
    return item


@ocp.args.register_with_handler(DataIteratorHandler, for_save=True)
@dataclasses.dataclass
class DataIteratorSave(ocp.args.CheckpointArgs):
  item: Any


@ocp.args.register_with_handler(DataIteratorHandler, for_restore=True)
@dataclasses.dataclass
class DataIteratorRestore(ocp.args.CheckpointArgs):
  item: Any


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
                       DATA: DataIteratorHandler()},
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
      items[DATA] = DataIteratorSave(data_iterator)
    self._manager.save(step, args=ocp.args.Composite(**items), force=True)

  def restore(self, step: int, abstract_state: Any, shardings: Any,
              data_iterator: Any | None = None) -> Any:
    """Restores the state onto `shardings` (any mesh) and, if given, the iterator in place."""
    items = {STATE: ocp.args.StandardRestore(with_shardings(abstract_state, shardings))}
    has_data = (self.directory / str(step) / DATA).exists()
    if data_iterator is not None and has_data:
      items[DATA] = DataIteratorRestore(data_iterator)
    return self._manager.restore(step, args=ocp.args.Composite(**items))[STATE]

  def wait(self) -> None:
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.close()


def latest_step(workdir: str | epath.Path) -> int | None:
  """The newest checkpoint step in `workdir/checkpoints` (None: none), creating nothing."""
  directory = epath.Path(workdir) / "checkpoints"
  if not directory.is_dir():
    return None
  # Finished saves are directories named by their step (orbax writes to a temporary name
  # and renames it when complete).
  steps = [int(p.name) for p in directory.iterdir() if p.name.isdigit() and p.is_dir()]
  return max(steps, default=None)


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
  target = {"params": with_shardings(abstract_params, shardings)}
  restored = manager.restore(step, args=ocp.args.Composite(**{STATE: ocp.args.PyTreeRestore(
      item=target, restore_args=ocp.checkpoint_utils.construct_restore_args(target),
      partial_restore=True)}))
  manager.close()
  return restored[STATE]["params"], step


def restore_or_init(exp: Experiment, ckpt: Checkpointer, data_iter: Any) -> TrainState:
  """The train state to start from, by the precedence in this module's docstring:
  workdir checkpoint > resume_from > init_from > scratch. Restores `data_iter` in place
  when a full state is restored."""
  cfg = exp.config
  if (step := ckpt.latest_step()) is not None:
    logging.info("Resuming from %s step %d", ckpt.directory, step)
    return ckpt.restore(step, exp.abstract_state, exp.state_sharding, data_iter)
  if cfg.resume_from:
    other = Checkpointer(checkpoint_dir(cfg.resume_from), read_only=True)
    if (step := other.latest_step()) is None:
      raise FileNotFoundError(f"resume_from={cfg.resume_from}: no checkpoint found there.")
    logging.info("Resuming full state from %s step %d", other.directory, step)
    state = other.restore(step, exp.abstract_state, exp.state_sharding, data_iter)
    other.close()
    return state
  state = exp.init_state()
  if cfg.init_from:
    params, step = restore_params(cfg.init_from, exp.abstract_state.params,
                                  exp.state_sharding.params)
    logging.info("Initialized params (and EMA) from %s step %d", cfg.init_from, step)
    state = state.replace(params=params, ema_params=params)
  return state
