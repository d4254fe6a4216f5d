"""Orbax checkpoints of the train state and the grain data-iterator state.

Resume precedence (`restore_or_init`; docs/design.md says the same):

  1. a checkpoint in `workdir/checkpoints`  -> full state + data iterator (a rerun resumes)
  2. `config.resume_from` (another run's workdir or checkpoints dir) -> full state + data
  3. `config.init_from`   (another run's workdir or checkpoints dir, or a foreign file
     '<format>:<path>' the method reads, e.g. 'hf_gpt2:<path>', gen_jax/interop) -> params only
     (EMA params start equal to them; optimizer and step start fresh: fine-tuning)
  4. scratch

Saves are asynchronous and atomic (orbax writes to a temporary directory and renames
it when complete), so a crash or kill mid-save leaves the previous checkpoints usable.

What can go wrong, and what happens then (docs/robustness.md):

  * Damage after the save (a failing disk, an interrupted copy). Once a save has
    finished, the size and CRC32 of each of its files go into `<step>/MANIFEST`; a
    restore checks them first. A checkpoint that fails the check, or that orbax cannot
    read, is moved aside to `<workdir>/checkpoints_damaged/<step>` (never deleted) with a
    warning, and the run continues from the newest readable one (`DamagedCheckpointError`
    when there is none; nothing is moved then).
  * A checkpoint that does not fit the config (another model size, another run's
    checkpoint): `CheckpointMismatchError` names the leaf, both shapes, the run and the
    config field that most likely changed.
  * A save that cannot be written (disk full, no permission): `CheckpointWriteError`
    names the errno and the path, and the run stops; an asynchronous save's error is
    raised at the next save or at the end, whichever comes first.

Different hardware. The state restores onto whatever shardings it is given (orbax reads
each device's slice), so a checkpoint written on 8 devices continues on 4 or 1. Every
process saves its data-iterator position (`data/process_<p>-of-<P>.json`); gen_jax's
loaders make that position the same on every process (the number of global batches
read), so a run restarted with a different number of processes reads any of them.
"""
from __future__ import annotations

import contextlib
import dataclasses
import errno
import json
import os
from collections.abc import Iterator
from typing import Any

import grain
import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp
from absl import logging
from etils import epath
from jax.experimental import multihost_utils

from gen_jax.core.errors import UserError
from gen_jax.core.state import TrainState
from gen_jax.engine.checkpoint_checks import (  # the run-facing errors are part of this API
  WRITE_ERRNOS,
  CheckpointMismatchError,
  CheckpointWriteError,
  DamagedCheckpointError,
  check_fits,
  check_manifest,
  ensure_writable,
  finished_steps,
  write_errno,
  write_manifest,
)
from gen_jax.engine.experiment import Experiment
from gen_jax.engine.outputs import is_main_process
from gen_jax.interop import init_from_format

STATE, DATA = "state", "data"
DAMAGED_DIR = "checkpoints_damaged"      # next to checkpoints/: damaged ones, moved aside


class NoCheckpointError(UserError, FileNotFoundError):
  """A mode that reads a trained run finds no checkpoint (or none of the asked step)."""


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


# grain's handler implements orbax's CheckpointHandler protocol without subclassing orbax's
# class, which orbax's annotations ask for (the `pyright: ignore`s below).
@ocp.args.register_with_handler(DataIteratorHandler, for_save=True)  # pyright: ignore[reportArgumentType]
@dataclasses.dataclass
class DataIteratorSave(ocp.args.CheckpointArgs):
  item: Any


@ocp.args.register_with_handler(DataIteratorHandler, for_restore=True)  # pyright: ignore[reportArgumentType]
@dataclasses.dataclass
class DataIteratorRestore(ocp.args.CheckpointArgs):
  item: Any


# ------------------------------------------------------------------ the manager


class Checkpointer:
  """A CheckpointManager over two items: `state` (TrainState) and `data` (grain iterator)."""

  def __init__(self, directory: str | epath.Path, *, max_to_keep: int = 3,
               async_save: bool = True, read_only: bool = False):
    # orbax needs absolute paths; `--workdir=runs/ddpm` is relative to where launch.py runs.
    self.directory = epath.Path(os.path.abspath(os.fspath(directory)))
    self.read_only = read_only
    if not read_only:
      ensure_writable(self.directory)
    self._manager = ocp.CheckpointManager(
        self.directory,
        item_names=(STATE, DATA),
        item_handlers={STATE: ocp.StandardCheckpointHandler(),  # pyright: ignore[reportArgumentType]
                       DATA: DataIteratorHandler()},   # grain's handler: see DataIteratorSave
        options=ocp.CheckpointManagerOptions(
            max_to_keep=max_to_keep, create=not read_only, read_only=read_only,
            enable_async_checkpointing=async_save,
            # The unfinished saves of a killed run: disk space a full disk needs back.
            cleanup_tmp_directories=not read_only),
    )
    self._async = async_save
    self._unrecorded: list[int] = []   # saves started whose MANIFEST is not written yet
    self._closed = False

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    return list(self._manager.all_steps())

  def save(self, step: int, state: Any, data_iterator: Any | None) -> None:
    """Starts saving `step`; raises `CheckpointWriteError` if this save or the previous
    (asynchronous) one could not be written."""
    self._record_finished()
    items: dict[str, ocp.args.CheckpointArgs] = {STATE: ocp.args.StandardSave(state)}
    if data_iterator is not None:
      items[DATA] = DataIteratorSave(data_iterator)
    with self._write_errors(step):
      self._manager.save(step, args=ocp.args.Composite(**items), force=True)
    self._unrecorded.append(step)
    if not self._async:
      self._record_finished()

  @contextlib.contextmanager
  def _write_errors(self, step: int) -> Iterator[None]:
    try:
      yield
    except CheckpointWriteError:
      raise
    except Exception as e:  # pylint: disable=broad-except  # orbax, TensorStore: many kinds
      if (code := write_errno(e)) is None:
        raise
      kept = finished_steps(self.directory)
      raise CheckpointWriteError(code, (
          f"Could not write the checkpoint of step {step} in {self.directory}: "
          f"{os.strerror(code)} ({errno.errorcode[code]}). The run stopped rather than "
          f"train on without saving; the checkpoints written before are kept (newest: "
          f"{f'step {kept[-1]}' if kept else 'none'}). {WRITE_ERRNOS[code].capitalize()}, "
          "then rerun the same command to resume.")) from e

  def _record_finished(self) -> None:
    """Waits for the save in flight, then writes the MANIFEST of each finished save."""
    steps, self._unrecorded = self._unrecorded, []
    if not steps:
      return
    with self._write_errors(steps[-1]):
      self._manager.wait_until_finished()
      for step in steps:
        step_dir = self.directory / str(step)
        if not step_dir.is_dir():   # orbax logs a failed finalization instead of raising
          raise CheckpointWriteError(errno.EIO, (
              f"The save of step {step} in {self.directory} did not complete (see the orbax "
              "error logged above); the run stopped rather than train on without saving. "
              "Rerun the same command to resume from the newest checkpoint."))
        if is_main_process():
          write_manifest(step_dir)

  def verify(self, step: int) -> str | None:
    """Why the checkpoint of `step` is damaged (None: its files are what the save wrote)."""
    return check_manifest(self.directory / str(step))

  def restore(self, step: int, abstract_state: Any, shardings: Any,
              data_iterator: Any | None = None, *, config: Any = None) -> Any:
    """Restores the state onto `shardings` (any mesh) and, if given, the iterator in place.

    Raises:
      CheckpointMismatchError: the checkpoint's tree or shapes differ from
        `abstract_state` (`config`, if given, lets the message name the field).
    """
    stored = self._manager.item_metadata(step)[STATE]
    check_fits(stored, abstract_state, self.directory, step, config)
    items: dict[str, ocp.args.CheckpointArgs] = {
        STATE: ocp.args.StandardRestore(with_shardings(abstract_state, shardings))}
    has_data = (self.directory / str(step) / DATA).exists()
    if data_iterator is not None and has_data:
      items[DATA] = DataIteratorRestore(data_iterator)
    return self._manager.restore(step, args=ocp.args.Composite(**items))[STATE]

  def move_aside(self, step: int, reason: str) -> epath.Path:
    """Moves a damaged checkpoint to `<workdir>/checkpoints_damaged/<step>` (kept, with a
    note saying why) so that the run continues without it."""
    aside = self.directory.parent / DAMAGED_DIR
    target, k = aside / str(step), 1
    while target.exists():
      target, k = aside / f"{step}.{k}", k + 1
    if is_main_process():
      aside.mkdir(parents=True, exist_ok=True)
      (self.directory / str(step)).rename(target)
      (target / "DAMAGED.txt").write_text(reason + "\n")
    if jax.process_count() > 1:
      multihost_utils.sync_global_devices(f"gen_jax_moved_aside_{step}")
    self._manager.reload()
    return target

  def wait(self) -> None:
    """Waits for the save in flight; raises `CheckpointWriteError` if it failed."""
    self._record_finished()

  def close(self, *, after_error: bool = False) -> None:
    """Finishes the save in flight and closes. After another error, a failure of that
    save is logged instead of raised (the first error is the one to see)."""
    if self._closed:
      return
    self._closed = True
    try:
      self._record_finished()
    except Exception as e:  # pylint: disable=broad-except
      if not after_error:
        raise
      logging.error("The last checkpoint save failed too: %s", e)
    finally:
      with contextlib.suppress(Exception):
        self._manager.close()


def latest_step(workdir: str | epath.Path) -> int | None:
  """The newest checkpoint step in `workdir/checkpoints` (None: none), creating nothing."""
  return max(finished_steps(epath.Path(workdir) / "checkpoints"), default=None)


# ------------------------------------------------------------------ resume


def root_cause(error: BaseException) -> str:
  """The first line of the innermost cause (TensorStore's says which file and why)."""
  while error.__cause__ is not None:
    error = error.__cause__
  return (str(error).strip().splitlines() or [type(error).__name__])[0][:500]


def restore_newest_readable(exp: Experiment, ckpt: Checkpointer, data_iter: Any) -> TrainState:
  """The newest checkpoint of `ckpt` that passes its MANIFEST check and that orbax reads.

  Newer ones that do not are moved aside (`Checkpointer.move_aside`) with a warning,
  unless `ckpt` is read-only (another run's: they are only skipped).

  Raises:
    DamagedCheckpointError: none is readable (nothing is moved then).
    CheckpointMismatchError: the newest readable one does not fit the config.
  """
  damaged = []
  for step in sorted(ckpt.all_steps(), reverse=True):
    reason = ckpt.verify(step)
    if reason is None:
      try:
        state = ckpt.restore(step, exp.abstract_state, exp.state_sharding, data_iter,
                             config=exp.config)
      except CheckpointMismatchError:
        raise
      except Exception as e:  # pylint: disable=broad-except  # orbax/TensorStore/grain
        reason = f"it cannot be read: {root_cause(e)}"
    if reason is None:
      logging.info("Resuming from %s step %d", ckpt.directory, step)
      for bad, why in damaged:
        if ckpt.read_only:
          logging.warning("Skipped the damaged checkpoint of step %d in %s (%s).", bad,
                          ckpt.directory, why)
        else:
          aside = ckpt.move_aside(bad, why)
          logging.warning("The checkpoint of step %d in %s is damaged (%s): moved to %s; "
                          "continuing from step %d.", bad, ckpt.directory, why, aside, step)
      return state
    logging.warning("Checkpoint step %d in %s is damaged: %s", step, ckpt.directory, reason)
    damaged.append((step, reason))
  listed = "\n".join(f"  step {s} ({ckpt.directory / str(s)}): {why}" for s, why in damaged)
  raise DamagedCheckpointError(
      f"No checkpoint in {ckpt.directory} can be read:\n{listed}\nNothing was moved or "
      f"deleted. To start this run over, move them aside (e.g. to "
      f"{ckpt.directory.parent / DAMAGED_DIR}) and rerun; or restore them from a copy.")


def restore_params(path: str | epath.Path, abstract_params: Any, shardings: Any,
                   step: int | None = None, *, config: Any = None) -> tuple[Any, int]:
  """Restores only `params` from another run's checkpoint (for `init_from`)."""
  directory = epath.Path(os.path.abspath(os.fspath(checkpoint_dir(path))))
  manager = ocp.CheckpointManager(
      directory, item_names=(STATE,), item_handlers={STATE: ocp.PyTreeCheckpointHandler()},
      options=ocp.CheckpointManagerOptions(read_only=True, create=False))
  step = manager.latest_step() if step is None else step
  if step is None:
    raise FileNotFoundError(f"init_from={path}: no checkpoint found there.")
  if (reason := check_manifest(directory / str(step))) is not None:
    raise DamagedCheckpointError(f"init_from={path}: the checkpoint at step {step} in "
                                 f"{directory} is damaged: {reason}.")
  target = {"params": with_shardings(abstract_params, shardings)}
  check_fits(manager.item_metadata(step)[STATE], target, directory, step, config,
             prefix="params/")
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
  if ckpt.all_steps():
    return restore_newest_readable(exp, ckpt, data_iter)
  if cfg.resume_from:
    other = Checkpointer(checkpoint_dir(cfg.resume_from), read_only=True)
    if not other.all_steps():
      raise FileNotFoundError(f"resume_from={cfg.resume_from}: no checkpoint found there.")
    state = restore_newest_readable(exp, other, data_iter)
    other.close()
    return state
  state = exp.init_state()
  if init_from_format(cfg.init_from):   # a foreign file the method reads (params only)
    params = jax.device_put(exp.method.load_foreign_params(cfg.init_from,
                                                           exp.abstract_state.params),
                            exp.state_sharding.params)
    logging.info("Initialized params (and EMA) from %s", cfg.init_from)
  elif cfg.init_from:
    params, step = restore_params(cfg.init_from, exp.abstract_state.params,
                                  exp.state_sharding.params, config=cfg)
    logging.info("Initialized params (and EMA) from %s step %d", cfg.init_from, step)
  else:
    return state
  # The EMA starts as a copy: the train step donates both, and one buffer twice fails.
  return state.replace(params=params, ema_params=jax.tree.map(jnp.copy, params))


def load_checkpoint(exp: Experiment, workdir: str | epath.Path,
                    step: int | None = None) -> tuple[TrainState, int]:
  """Restores the newest (step None or -1) or the given checkpoint of the run in `workdir`
  onto `exp`'s mesh, for the modes that read a trained run and `gen_jax.load_run`.

  Raises:
    NoCheckpointError: no checkpoint there, or none for `step` (a FileNotFoundError).
  """
  ckpt = Checkpointer(checkpoint_dir(workdir), read_only=True)
  try:
    available = ckpt.all_steps()
    if not available:
      raise NoCheckpointError(f"No checkpoint in {ckpt.directory}. Train first: "
                              f"python launch.py --config=... --workdir={workdir}")
    step = max(available) if step in (None, -1) else step
    if step not in available:
      raise NoCheckpointError(f"No checkpoint for step {step} in {ckpt.directory}; "
                              f"available: {sorted(available)} (set eval.step to one, or -1 "
                              "for the newest).")
    return ckpt.restore(step, exp.abstract_state, exp.state_sharding), step
  finally:
    ckpt.close()
