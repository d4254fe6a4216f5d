"""A workdir is one run: the config it trains, the history of the configs each start used,
and its status.

`claim(config, workdir, start_step)` runs before anything is compiled. A rerun in a
workdir that holds a checkpoint compares its config with the saved `config.json`:

  * fields that may change on resume (`RESUMABLE`: how long to train, how often to log,
    evaluate, sample and checkpoint, the eval and sample settings, and how the same
    computation is laid out on the hardware: mesh, micro-batches, remat, data location)
    go through, each change logged;
  * any other difference (model, data, method, optimizer, seed, batch size, ...) raises
    `ConfigMismatchError` with one `field: saved -> new` line per field, unless the caller
    accepts the changes (`launch.py --accept_config_changes`), which records them.

`config.json` always holds the config of the newest start; every start also keeps its own
copy, `config_history/step_<N>.json` (N: the step it started from), and accepted changes
are appended to `config_history/changes.jsonl`.

Modes that read a trained run (`--mode=sample`, `--mode=eval`) use the saved config; only
the fields in `READ_MODE_FIELDS` may be overridden there (`reading_config`).

`run_status.json` says what the run is doing: running (with its pid and host), done, or
failed (with the error), the last step and the wall time over all starts; `--mode=report`
and sweeps read it.

A run has one writer: training, sample dumps and evaluation hold the workdir's lease
(gen_jax/engine/lease.py).
"""
from __future__ import annotations

import datetime
import errno
import fnmatch
import json
import os
import socket
import time
from typing import Any

import ml_collections
from absl import logging
from etils import epath

from gen_jax.configs import migration
from gen_jax.core.errors import UserError
from gen_jax.engine import disk_errors, lease
from gen_jax.engine.outputs import is_main_process

CONFIG, HISTORY, STATUS = migration.CONFIG_FILE, "config_history", "run_status.json"


class DamagedConfigError(UserError, ValueError):
  """A run's `config.json` cannot be read as a config (cut short, edited, another file)."""


def load_saved_config(workdir: str | epath.Path) -> ml_collections.ConfigDict | None:
  """The config a run in `workdir` was (last) started with, migrated to today's fields, or
  None: the one loader of saved configs (gen_jax/configs/migration.py), used by every
  engine module.

  Raises:
    DamagedConfigError: config.json is not a gen_jax config; the message says where a copy
      is (config_history/).
    ConfigVersionError: config.json was written by a newer gen_jax.
  """
  try:
    return migration.load_saved_config(workdir)
  except migration.ConfigVersionError:   # a newer gen_jax's run, not a damaged file
    raise
  except (ValueError, TypeError, AttributeError) as e:   # JSONDecodeError, UnicodeDecodeError
    history = epath.Path(workdir) / HISTORY
    copies = sorted(history.glob("step_*.json"), key=lambda p: os.path.getmtime(p)) if (
        history.is_dir()) else []
    where = (f"copy the newest saved copy ({copies[-1]}) over it" if copies
             else "restore it from a copy of the run")
    raise DamagedConfigError(f"{epath.Path(workdir) / CONFIG} cannot be read as a gen_jax "
                             f"config ({type(e).__name__}: {e}): {where}.") from None

# Hardware layout of the same computation; may change whenever a run restarts.
LAYOUT = ("mesh.*", "data.data_dir", "data.manual_dir", "data.num_workers",
          "train.steps_per_call", "train.grad_accum_steps", "model.remat", "compilation_cache")
# What a resumed training run may change (fnmatch patterns of dotted field names).
RESUMABLE = LAYOUT + ("train.num_steps", "train.log_every", "train.checkpoint_every",
                      "train.max_checkpoints", "train.sample_every",
                      "train.async_checkpointing", "eval.*", "sample.*", "data.eval_split",
                      "export.*", "inpaint.*", "reflow.*", "latents.*")
# What `--mode=sample` / `eval` / `export` / `inpaint` / `reflow` / `latents` may override in
# a run's saved config.
READ_MODE_FIELDS = LAYOUT + ("eval.*", "sample.*", "data.eval_split", "export.*", "inpaint.*",
                             "reflow.*", "latents.*")


class ConfigMismatchError(UserError, ValueError):
  """A config differs from the one a workdir was trained with in a field that defines the run."""


class WorkdirIsAFileError(UserError, NotADirectoryError):
  """`--workdir` names a file."""


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
  """{'train': {'lr': 1e-3}} -> {'train.lr': 1e-3}; a ConfigDict is read through its JSON."""
  if isinstance(tree, ml_collections.ConfigDict):
    tree = json.loads(tree.to_json_best_effort())
  out = {}
  for key, value in tree.items():
    name = f"{prefix}{key}"
    if isinstance(value, dict):
      out.update(flatten(value, name + "."))
    else:
      out[name] = value
  return out


def matches(field: str, patterns: tuple[str, ...]) -> bool:
  return any(fnmatch.fnmatchcase(field, p) for p in patterns)


def short_names(fields: list[str]) -> list[str]:
  """Each dotted field by its last component, or whole where that is ambiguous among
  `fields`: ['train.lr', 'diffusion.target'] -> ['lr', 'target']."""
  last = [f.rsplit(".", 1)[-1] for f in fields]
  return [short if last.count(short) == 1 else f for f, short in zip(fields, last, strict=True)]


def config_changes(saved: Any, new: Any) -> list[tuple[str, Any, Any]]:
  """(field, saved value, new value) for every field whose value differs, sorted by field.

  A field present in only one of them is reported with `None` on the other side
  (`missing` in `format_changes`).
  """
  a, b = flatten(saved), flatten(new)
  missing = object()
  out = []
  for field in sorted(set(a) | set(b)):
    old, cur = a.get(field, missing), b.get(field, missing)
    if old != cur:
      out.append((field, None if old is missing else old, None if cur is missing else cur))
  return out


def format_changes(changes: list[tuple[str, Any, Any]]) -> str:
  return "\n".join(f"  {field}: {json.dumps(old)} -> {json.dumps(new)}"
                   for field, old, new in changes)


def _write_history(workdir: epath.Path, config_json: str, start_step: int) -> epath.Path:
  history = workdir / HISTORY
  history.mkdir(parents=True, exist_ok=True)
  path, k = history / f"step_{start_step}.json", 1
  while path.exists() and path.read_text() != config_json:
    path, k = history / f"step_{start_step}.{k}.json", k + 1
  path.write_text(config_json)
  return path


def claim(config: ml_collections.ConfigDict, workdir: str | epath.Path, start_step: int | None,
          *, accept_changes: bool = False) -> None:
  """Checks `config` against the one saved in `workdir` and records this start.

  Args:
    config: the config about to train.
    workdir: the run directory.
    start_step: the step of the checkpoint the run will resume from (None: none exists,
      so nothing trained with the saved config is continued and any change goes through).
    accept_changes: let changes outside `RESUMABLE` through (they are recorded).

  Raises:
    ConfigMismatchError: `config` differs from the saved one in a field outside
      `RESUMABLE` and `accept_changes` is False. Nothing is written then.
  """
  workdir = epath.Path(workdir)
  saved = load_saved_config(workdir)
  if workdir.exists() and not workdir.is_dir():
    raise WorkdirIsAFileError(f"--workdir={workdir} is a file, not a directory: choose another "
                             "--workdir.")
  changes = config_changes(saved, config) if saved is not None else []
  # A field on one side only comes from another gen_jax version (a new option with its
  # default, or a removed one): it cannot have shaped the saved run, so it is logged only.
  versioned = [c for c in changes if c[1] is None or c[2] is None]
  identity = [c for c in changes if not matches(c[0], RESUMABLE) and c not in versioned]
  for field, old, new in versioned:
    logging.warning("Config field %s is %s in the saved config and %s now (another gen_jax "
                    "version?).", field, "missing" if old is None else json.dumps(old),
                    "missing" if new is None else json.dumps(new))
  if identity and start_step is not None and not accept_changes:
    raise ConfigMismatchError(
        f"{workdir} holds a run trained with another config (checkpoint at step {start_step}). "
        f"These fields differ (saved -> new):\n{format_changes(identity)}\n"
        f"Either train in a new directory (--workdir=...), or continue this run with the new "
        f"values and record the change (--accept_config_changes).")
  for field, old, new in (c for c in changes if c not in versioned):
    logging.info("Config change on resume: %s: %s -> %s", field, json.dumps(old), json.dumps(new))
  if (start_step is not None and config.train.lr_decay == "cosine"
      and not config.train.decay_steps
      and any(c[0] == "train.num_steps" for c in changes)):
    logging.warning("train.num_steps changed with a cosine schedule and no train.decay_steps: "
                    "the learning rate from here on follows the new length.")
  if not is_main_process():
    return
  workdir.mkdir(parents=True, exist_ok=True)
  config_json = config.to_json_best_effort(indent=2) + "\n"
  if saved is not None and not (workdir / HISTORY).exists():   # a run from before histories
    _write_history(workdir, (workdir / CONFIG).read_text(), 0)
  _write_history(workdir, config_json, start_step or 0)
  if identity and start_step is not None:
    record = {"step": start_step, "time": datetime.datetime.now().isoformat(timespec="seconds"),
              "changes": [{"field": f, "saved": o, "new": n} for f, o, n in identity]}
    with (workdir / HISTORY / "changes.jsonl").open("a") as f:
      f.write(json.dumps(record) + "\n")
    logging.warning("Accepted config changes at step %d (recorded in %s):\n%s", start_step,
                    workdir / HISTORY / "changes.jsonl", format_changes(identity))
  tmp = workdir / (CONFIG + ".tmp")
  tmp.write_text(config_json)
  tmp.replace(workdir / CONFIG)


def reading_config(workdir: str | epath.Path, overrides: dict[str, Any],
                   given: ml_collections.ConfigDict | None = None) -> ml_collections.ConfigDict:
  """The config of a mode that reads a trained run: the saved one, with `overrides`.

  Args:
    workdir: the run directory.
    overrides: dotted field -> value, what the command line overrides; only fields in
      `READ_MODE_FIELDS` may be.
    given: the config from `--config`, if any; used as it is when the run has no saved
      config (a warning says so), otherwise only its `overrides` count.

  Raises:
    ConfigMismatchError: an override outside `READ_MODE_FIELDS`.
    FileNotFoundError: neither a saved config nor `given`.

  An override of a field that the saved config lacks (a sample or export field gen_jax
  gained after the run was trained) is added to it: `overrides` come from launch.py, which
  has checked their names against a whole config already.
  """
  not_allowed = sorted(k for k in overrides if not matches(k, READ_MODE_FIELDS))
  if not_allowed:
    raise ConfigMismatchError(
        f"This mode reads the run in {workdir} with the config it was trained with; only "
        "sample.*, eval.*, export.*, inpaint.*, reflow.*, data.eval_split and the hardware "
        f"layout (mesh.*, data dirs) may be overridden, not: {', '.join(not_allowed)}. To "
        "train with other "
        "values, use --mode=train with a new --workdir.")
  saved = load_saved_config(workdir)
  if saved is None:
    if given is None:
      raise FileNotFoundError(f"No {CONFIG} in {workdir}: pass --config=... (the config the "
                              "run was trained with).")
    logging.warning("No %s in %s: using --config as given.", CONFIG, workdir)
    return given
  if given is not None:
    differ = [c for c in config_changes(saved, given)
              if c[0] not in overrides and not matches(c[0], READ_MODE_FIELDS)]
    if differ:
      logging.warning("Using the config saved in %s; --config differs from it in %d field(s) "
                      "that this mode ignores, e.g.:\n%s", workdir, len(differ),
                      format_changes(differ[:5]))
  for field, value in overrides.items():   # fields newer than the run: added, not refused
    *groups, name = field.split(".")
    node = saved
    for group in groups:
      if group not in node:
        node[group] = ml_collections.ConfigDict()
      node = node[group]
    node[name] = value
  return saved


# ---------------------------------------------------------------------- run status


# run_status.json is padded with spaces to this size, so a later record can be written over
# it in place (no new block) when the disk is full: a failed run still says so.
STATUS_BYTES = 4096


class RunStatus:
  """`run_status.json`: status ('running', 'done', 'failed'), step, wall time over all starts,
  pid and host of the running process, and the error of a failed run.

  Each record replaces the file whole (a temporary file, then a rename). When that cannot
  be written (a full disk), the record is written over the old file in place: the file is
  padded to `STATUS_BYTES`, so this needs no new block, and an error too long for it is
  shortened. A "failed" record that cannot be written at all is logged, never raised: the
  run's own error is what the user must see.
  """

  def __init__(self, workdir: str | epath.Path):
    self.path = epath.Path(workdir) / STATUS
    try:
      previous = read_status(workdir) or {}
    except DamagedStatusError as e:
      logging.warning("%s The wall time of earlier starts is lost.", e)
      previous = {}
    self._wall_before = float(previous.get("wall_seconds", 0.0))
    self._t0 = time.time()

  def write(self, status: str, step: int, error: str | None = None) -> None:
    """Records `status` at `step` (with `error` for a failed run); process 0 only.

    Raises:
      OutputWriteError: the disk is full or read-only and the record fits nowhere (never
        for status "failed").
    """
    if not is_main_process():
      return
    record = {"status": status, "step": int(step),
              "wall_seconds": round(self._wall_before + time.time() - self._t0, 1),
              "pid": os.getpid(), "host": socket.gethostname(),
              "updated": datetime.datetime.now().isoformat(timespec="seconds")}
    if error:
      record["error"] = error
    tmp = self.path.with_name(STATUS + ".tmp")
    try:
      tmp.write_text(_padded(record, STATUS_BYTES))
      tmp.replace(self.path)
      return
    except OSError as e:
      first = e
    try:
      self._write_in_place(record)
    except OSError as e:
      if status == "failed":
        logging.error("Could not record the failed status in %s (%s; then %s).", self.path,
                      first, e)
        return
      raise disk_errors.output_write_error(first, "the run's status") or first from e
    logging.warning("Wrote %s in place (%s).", self.path, first)

  def _write_in_place(self, record: dict) -> None:
    """Writes `record` over the existing file without growing it (its error shortened to
    fit)."""
    size = os.path.getsize(self.path)
    error = record.get("error", "")

    def fits(text: str) -> bool:
      return len(_padded({**record, "error": text}, 0).encode()) <= size

    if error and not fits(error):   # the longest start that fits (JSON escapes vary in size)
      lo, hi = 0, len(error)
      while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if fits(error[:mid] + "...") else (lo, mid - 1)
      record = {**record, "error": error[:lo] + "..."}
    data = _padded(record, 0).encode()
    if len(data) > size:
      raise OSError(errno.ENOSPC, "the status record does not fit the old file", str(self.path))
    with open(self.path, "r+b") as f:
      f.write(data + b" " * (size - len(data)))
      f.flush()


def _padded(record: dict, size: int) -> str:
  """`record` as indented JSON ending in a newline, padded with spaces (JSON whitespace)
  before it to at least `size` bytes."""
  text = json.dumps(record, indent=2)
  return text + " " * max(size - len(text.encode()) - 1, 0) + "\n"


class DamagedStatusError(UserError, ValueError):
  """`run_status.json` is not a status record (cut short, edited, or another file)."""


def read_status(workdir: str | epath.Path) -> dict | None:
  """The run's status record; a 'running' run whose process is gone on this host reads as
  'stopped' (killed or preempted without a final write).

  Raises:
    DamagedStatusError: the file is not a JSON object with a status and a step.
  """
  path = epath.Path(workdir) / STATUS
  if not path.exists():
    return None
  try:
    record = json.loads(path.read_text())
    if not isinstance(record, dict) or not isinstance(record.get("status"), str):
      raise ValueError("no status field")
    int(record.get("step", 0))
  except (ValueError, TypeError, UnicodeDecodeError) as e:
    raise DamagedStatusError(f"{path} is damaged ({e}); delete it, and the next start of "
                             "the run writes a new one.") from None
  if record.get("status") == "running" and record.get("host") == socket.gethostname():
    if not lease.pid_alive(record.get("pid")):
      record["status"] = "stopped"
  return record
