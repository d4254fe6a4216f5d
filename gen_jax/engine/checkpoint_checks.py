"""Checks around checkpoints: what a finished save wrote (a MANIFEST of file sizes and
CRC32s, verified before a restore), write errors that must stop a run (disk full,
read-only), and whether a checkpoint fits the config's state (leaf, shapes, and the config
field that most likely changed). Used by `gen_jax/engine/checkpoint.py`.
"""
from __future__ import annotations

import errno
import json
import os
import re
import zlib
from typing import Any

import jax
from etils import epath

from gen_jax.core.errors import UserError
from gen_jax.engine import workdir as workdir_lib

MANIFEST = "MANIFEST"                    # inside each step directory, once its save has finished


class DamagedCheckpointError(UserError, RuntimeError):
  """No checkpoint of a run can be read; the message lists each with its step and why."""


class CheckpointMismatchError(UserError, ValueError):
  """A checkpoint does not fit the config's state: the message names the leaf, both
  shapes, the run and the config field that most likely changed."""


class WorkdirNotWritableError(UserError, PermissionError):
  """The run directory cannot be written (EACCES, EPERM, EROFS); the message says which."""


class CheckpointWriteError(UserError, OSError):
  """A checkpoint could not be written (`errno`: ENOSPC, EACCES, ...); the message names
  the path and what to do. The checkpoints written before stay usable."""

  def __init__(self, code: int, message: str):
    super().__init__(message)
    self.errno = code


# ------------------------------------------------------------------ write errors

# The errors of a storage that cannot take the checkpoint, and what to do about each.
WRITE_ERRNOS = {
    errno.ENOSPC: "free space on that disk (or lower train.max_checkpoints)",
    errno.EDQUOT: "free space within your quota (or lower train.max_checkpoints)",
    errno.EACCES: "make it writable for this user, or train in another --workdir",
    errno.EPERM: "make it writable for this user, or train in another --workdir",
    errno.EROFS: "remount it read-write, or train in another --workdir",
}
_STRERRORS = {os.strerror(code): code for code in WRITE_ERRNOS}


def write_errno(error: BaseException) -> int | None:
  """The errno of a storage error in `error` or its causes (None: not one of
  WRITE_ERRNOS). TensorStore reports them inside its ValueError's text."""
  cause: BaseException | None = error
  seen = 0
  while cause is not None and seen < 8:
    if isinstance(cause, OSError) and cause.errno in WRITE_ERRNOS:
      return cause.errno
    text = str(cause)
    if (m := re.search(r"os_error_code='?(\d+)", text)) and int(m.group(1)) in WRITE_ERRNOS:
      return int(m.group(1))
    for message, code in _STRERRORS.items():
      if message in text:
        return code
    cause, seen = cause.__cause__ or cause.__context__, seen + 1
  return None


def unwritable_workdir_error(error: OSError, workdir: str | epath.Path) -> OSError:
  """`error` (from creating or writing the run directory) as one clear line."""
  code = error.errno if error.errno in WRITE_ERRNOS else write_errno(error)
  if code in (errno.EACCES, errno.EPERM, errno.EROFS):
    denied = WorkdirNotWritableError(f"--workdir={workdir} is not writable ({os.strerror(code)}: "
                             f"{error.filename or workdir}): {WRITE_ERRNOS[code]}.")
    denied.errno = code
    return denied
  if code is not None:
    return CheckpointWriteError(code, f"--workdir={workdir}: {os.strerror(code)} "
                                f"({errno.errorcode[code]}) at {error.filename or workdir}: "
                                f"{WRITE_ERRNOS[code]}.")
  return error


def ensure_writable(directory: epath.Path) -> None:
  """Creates `directory` and writes a file there, so that an unwritable run directory
  stops the run before anything is compiled (with one clear line, not orbax's traceback)."""
  probe = directory / f".write_test.process_{jax.process_index()}"
  try:
    directory.mkdir(parents=True, exist_ok=True)
    probe.write_text("")
    probe.unlink()
  except OSError as e:
    raise unwritable_workdir_error(e, directory.parent) from None


# ------------------------------------------------------------------ file manifests


def _size_and_crc32(path: epath.Path) -> tuple[int, str]:
  size, crc = 0, 0
  with path.open("rb") as f:
    while chunk := f.read(1 << 24):
      size, crc = size + len(chunk), zlib.crc32(chunk, crc)
  return size, f"{crc:08x}"


def write_manifest(step_dir: epath.Path) -> None:
  """Records the size and CRC32 of every file of a finished save in `step_dir/MANIFEST`."""
  files = {}
  for root, _, names in step_dir.walk():
    for name in names:
      if name != MANIFEST:
        size, crc = _size_and_crc32(root / name)
        files[os.fspath((root / name).relative_to(step_dir))] = {"size": size, "crc32": crc}
  tmp = step_dir / (MANIFEST + ".tmp")
  tmp.write_text(json.dumps({"files": files}, indent=1, sort_keys=True) + "\n")
  tmp.replace(step_dir / MANIFEST)


def check_manifest(step_dir: epath.Path) -> str | None:
  """What differs from the files the finished save wrote (None: nothing, or no MANIFEST:
  a save finished after the last moment the run could record it)."""
  path = step_dir / MANIFEST
  if not path.exists():
    return None
  try:
    files = json.loads(path.read_text())["files"]
  except (ValueError, KeyError, TypeError) as e:
    return f"its {MANIFEST} cannot be read ({e})"
  for name, wrote in sorted(files.items()):
    if not (step_dir / name).is_file():
      return f"{name} is missing"
    size, crc = _size_and_crc32(step_dir / name)
    if size != wrote["size"]:
      return f"{name} has {size} bytes; the finished save wrote {wrote['size']}"
    if crc != wrote["crc32"]:
      return f"{name} has CRC32 {crc}; the finished save wrote {wrote['crc32']}"
  return None


def finished_steps(directory: epath.Path) -> list[int]:
  """Steps of the finished saves in a checkpoints directory (orbax writes to a temporary
  name and renames it when complete)."""
  if not directory.is_dir():
    return []
  return sorted(int(p.name) for p in directory.iterdir() if p.name.isdigit() and p.is_dir())


# ------------------------------------------------------------------ does it fit the config?


def _leaves(tree: Any, prefix: str = "") -> dict[str, tuple[int, ...] | None]:
  """'params/decoder/out/kernel' -> shape, for a state or orbax's metadata of one."""
  flat = jax.tree_util.tree_flatten_with_path(tree)[0]
  out = {}
  for path, leaf in flat:
    leaf_name = jax.tree_util.keystr(path, simple=True, separator="/")
    if leaf_name.startswith(prefix):
      shape = getattr(leaf, "shape", None)
      out[leaf_name] = None if shape is None else tuple(shape)
  return out


def _first(names: list[str]) -> str:
  """The name to show of several: a `params/` leaf if there is one."""
  return sorted(names, key=lambda n: (not n.startswith("params/"), n))[0]


def check_fits(stored: Any, abstract_state: Any, directory: epath.Path, step: int,
               config: Any = None, prefix: str = "") -> None:
  """Raises CheckpointMismatchError if the checkpoint's leaves (orbax metadata `stored`)
  under `prefix` differ in names or shapes from `abstract_state`'s."""
  have, want = _leaves(stored, prefix), _leaves(abstract_state, prefix)
  shapes = [n for n in set(have) & set(want)
            if None not in (have[n], want[n]) and have[n] != want[n]]
  missing, extra = sorted(set(want) - set(have)), sorted(set(have) - set(want))
  if not (shapes or missing or extra):
    return
  run_dir = directory.parent if directory.name == "checkpoints" else directory
  changes = trained_config_changes(run_dir, step, config) if config is not None else None
  if shapes:
    leaf = _first(shapes)
    what = f"{leaf} is {have[leaf]} there and {want[leaf]} here"
    guess = likely_fields(have[leaf], want[leaf], changes, run_dir)
  else:
    parts = [f"{len(leaves)} leaves {side} (e.g. {_first(leaves)})"
             for leaves, side in ((missing, "of this config are not in the checkpoint"),
                                  (extra, "of the checkpoint are not in this config")) if leaves]
    what = " and ".join(parts)
    guess = likely_fields(None, None, changes, run_dir)
  raise CheckpointMismatchError(
      f"The checkpoint at step {step} in {directory} does not fit this config's model: "
      f"{what}. {guess} To continue that run, use the config it was trained with "
      f"({run_dir / workdir_lib.CONFIG}); to train this config, use a new --workdir.")


def trained_config_changes(run_dir: epath.Path, step: int,
                           config: Any) -> list[tuple[str, Any, Any]] | None:
  """The fields (outside the resumable ones) in which `config` differs from the config the
  checkpoint at `step` of `run_dir` was trained with; None when that is not known."""
  accepted = run_dir / workdir_lib.HISTORY / "changes.jsonl"
  if accepted.exists():   # this run accepted changes when it restarted at `step`
    lines = accepted.read_text().strip().splitlines()
    record = json.loads(lines[-1]) if lines else {}
    if record.get("step") == step:
      return [(c["field"], c["saved"], c["new"]) for c in record["changes"]]
  saved = workdir_lib.load_saved_config(run_dir)
  if saved is None:
    return None
  return [c for c in workdir_lib.config_changes(saved, config)
          if not workdir_lib.matches(c[0], workdir_lib.RESUMABLE)]


def likely_fields(stored: tuple[int, ...] | None, wanted: tuple[int, ...] | None,
                  changes: list[tuple[str, Any, Any]] | None, run_dir: epath.Path) -> str:
  """The best guess of the config field behind a mismatch, said as a guess."""
  if changes is None:
    return (f"{run_dir} has no {workdir_lib.CONFIG} to compare with; a model.* field (a "
            "width, depth or latent size) most likely differs.")
  dims = set()
  if stored is not None and wanted is not None and len(stored) == len(wanted):
    dims = {(a, b) for a, b in zip(stored, wanted, strict=True) if a != b}

  def pairs(old, new):   # integer value pairs of a field: 2 -> 3, or (32, 32) -> (32, 64)
    if isinstance(old, (list, tuple)) and isinstance(new, (list, tuple)) and len(old) == len(new):
      both = zip(old, new, strict=True)
    else:
      both = [(old, new)]
    return {(a, b) for a, b in both if type(a) is int and type(b) is int}

  show = lambda cs: ", ".join(f"{f} ({json.dumps(o)} -> {json.dumps(n)})" for f, o, n in cs)
  exact = [c for c in changes if dims & pairs(c[1], c[2])]
  model = [c for c in changes if c[0].startswith("model.")]
  if exact:
    return f"Most likely {show(exact)}: the dimension that changed."
  if model:
    return f"Likely one of the model fields that differ: {show(model)}."
  if changes:
    return f"No model field differs; these fields do: {show(changes)}."
  return (f"No config field differs from the one it was trained with ({run_dir}); the "
          "model code may have changed since (see the git log of gen_jax/models).")
