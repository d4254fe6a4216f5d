"""Sweeps: many runs of one config file, each with its own overrides and its own workdir.

A config file may define, next to `get_config(arg)`, a `get_sweep(arg)` returning a list of
override sets ({dotted field: value}); `configs/common.py` has `product` and `zipped` to
build them. Each run is named after its overrides (`run_name`: `lr=0.001,target=v`) and
trains in `<sweep workdir>/<run name>`, so a rerun of the sweep finds its runs again:

  python launch.py --config=F --sweep                      # here, one run at a time
  python launch.py --config=F --sweep --sweep_parallel=2   # two processes at a time
  python launch.py --config=F --sweep --dry_run            # one launch.py command per run
  python launch.py --config=F --sweep --sweep_emit=slurm   # a SLURM job-array script

Here, finished runs are skipped, unfinished ones resume, and a failed run does not stop
the others (its log is `<run>/launch.log`, its error in `<run>/run_status.json` and in
`<sweep workdir>/sweep_summary.json`; a damaged `run_status.json` marks its run failed). A
run whose workdir lease a live process holds (a run of an earlier, killed sweep driver, or
the same command on another host) is reported as 'running elsewhere' and not started again.
The runs die with the driver: on Linux each child asks the kernel for SIGTERM when its
parent dies (`PR_SET_PDEATHSIG`), which training turns into a checkpoint and a clean exit.
On a cluster, the scheduler runs the same commands.

Every value is checked before any run starts: no control characters (a newline would break
the one-command-per-line output, a NUL byte cannot be passed to a process). A name longer
than `MAX_NAME_BYTES` is shortened to its first characters plus a hash of the whole name
(stable across reruns); the run's config.json keeps every override in full.
"""
from __future__ import annotations

import ctypes
import dataclasses
import hashlib
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
import unicodedata
from collections.abc import Sequence
from typing import Any

from etils import epath

from gen_jax.engine import config_files
from gen_jax.engine import lease as lease_lib
from gen_jax.engine import workdir as workdir_lib

Overrides = dict[str, Any]
MAX_NAME_BYTES = 120    # a directory name may have 255 bytes; leave room for suffixes
_FIELD = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")


@dataclasses.dataclass(frozen=True)
class Run:
  name: str
  workdir: str
  overrides: Overrides


def load_sweep(config_arg: str) -> list[Overrides]:
  """The override sets of `get_sweep(arg)` in the config file of `config_arg` ('path[:arg]').

  Raises:
    ValueError: the file has no `get_sweep`, or it returns no override set.
  """
  path, _, arg = config_arg.partition(":")
  module = config_files.load_module(path)
  get_sweep = getattr(module, "get_sweep", None)
  if get_sweep is None:
    raise ValueError(f"{path} defines no get_sweep(arg): a sweep is a function next to "
                     "get_config that returns a list of override dicts (see configs/common.py "
                     "product/zipped).")
  sweep = list(get_sweep(arg or None))
  if not sweep:
    raise ValueError(f"{path}: get_sweep returned no override set.")
  return [dict(o) for o in sweep]


def format_value(value: Any) -> str:
  """A value as `--config.x=<value>` takes it."""
  if isinstance(value, (list, tuple)):
    return "(" + ",".join(format_value(v) for v in value) + ("," if len(value) == 1 else "") + ")"
  if isinstance(value, float):
    return repr(value)
  return str(value)


def _name_value(value: Any) -> str:
  if isinstance(value, float):
    return format(value, "g")
  if isinstance(value, (list, tuple)):
    return "-".join(_name_value(v) for v in value)
  return str(value)


def run_name(overrides: Overrides, all_fields: Sequence[str] = ()) -> str:
  """'lr=0.001,target=v' from {'train.lr': 1e-3, 'diffusion.target': 'v'}.

  A field is named by its last component unless another field of the sweep (`all_fields`)
  ends the same way, then by its full dotted name. Characters other than letters, digits
  and `._=,+-` become `_`, so the name is a safe directory name. An empty set is 'base'.
  A name longer than `MAX_NAME_BYTES` keeps its first characters and ends in `~` and 12
  hex digits of the sha256 of the whole name.
  """
  fields = list(all_fields or overrides)
  names = dict(zip(fields, workdir_lib.short_names(fields), strict=True))
  parts = [f"{names.get(field, field)}={_name_value(value)}" for field, value in overrides.items()]
  full = ",".join(parts)
  name = re.sub(r"[^A-Za-z0-9._=,+-]", "_", full) or "base"
  if len(name) > MAX_NAME_BYTES:
    digest = hashlib.sha256(full.encode("utf-8", "surrogatepass")).hexdigest()[:12]
    name = f"{name[:MAX_NAME_BYTES - 13]}~{digest}"
  return name


def _control_character(text: str) -> str | None:
  """The first control character of `text` as 'U+000A', or None."""
  for char in text:
    if unicodedata.category(char) in ("Cc", "Cs"):
      return f"U+{ord(char):04X}"
  return None


def check_overrides(index: int, overrides: Overrides) -> None:
  """Refuses a field name that is not dotted identifiers, and any control character in a
  value (a newline would split a printed command in two, a NUL byte cannot be passed to a
  process).

  Raises:
    ValueError: naming the run (its position and overrides) and the field.
  """
  for field, value in overrides.items():
    where = f"Sweep run {index} ({overrides!r:.200})"
    if not isinstance(field, str) or not _FIELD.match(field):
      raise ValueError(f"{where}: the field name {field!r:.80} is not a dotted config field "
                       "(letters, digits, '_' and '.').")
    values = value if isinstance(value, (list, tuple)) else [value]
    for v in values:
      bad = _control_character(str(v))
      if bad:
        raise ValueError(f"{where}: the value of {field} holds the control character {bad} "
                         f"({v!r:.80}): a command line cannot carry it. Remove it from the "
                         "sweep.")


def expand(sweep: list[Overrides], sweep_workdir: str) -> list[Run]:
  """One Run per override set, named by `run_name`, in `<sweep_workdir>/<name>`.

  Raises:
    ValueError: two override sets get the same name (a repeated set), or a field or value
      that `check_overrides` refuses (before any run exists).
  """
  for index, overrides in enumerate(sweep):
    check_overrides(index, overrides)
  fields = list(dict.fromkeys(f for o in sweep for f in o))
  runs, seen = [], {}
  for overrides in sweep:
    name = run_name(overrides, fields)
    if name in seen:
      raise ValueError(f"Two runs of the sweep are both named {name!r} ({seen[name]} and "
                       f"{overrides}): every override set must differ.")
    seen[name] = overrides
    runs.append(Run(name=name, workdir=os.path.join(sweep_workdir, name), overrides=overrides))
  return runs


def command(run: Run, config_arg: str, extra_args: Sequence[str] = (),
            python: str = "python", launcher: str = "launch.py") -> list[str]:
  """The complete launch.py command of one run; `extra_args` (the sweep command's other
  flags) come first, so the run's own overrides win."""
  return [python, launcher, f"--config={config_arg}", f"--workdir={run.workdir}",
          *extra_args, *(f"--config.{k}={format_value(v)}" for k, v in run.overrides.items())]


def is_finished(run: Run, num_steps_override: int | None = None) -> bool:
  """A run is finished when its status says 'done' at (at least) its `train.num_steps`."""
  status = workdir_lib.read_status(run.workdir)
  config = workdir_lib.load_saved_config(run.workdir)
  if not status or status.get("status") != "done" or config is None:
    return False
  return status["step"] >= (num_steps_override or config.train.num_steps)


# ----------------------------------------------------------------------- local runner


def device_slots(parallel: int) -> list[dict[str, Any]]:
  """What each of `parallel` concurrent runs gets: one GPU each (CUDA_VISIBLE_DEVICES,
  round robin) when GPUs are visible, else an equal share of this process's CPU cores."""
  visible = os.environ.get("CUDA_VISIBLE_DEVICES")
  if visible is not None:
    gpus = [g for g in visible.split(",") if g.strip()]
  elif shutil.which("nvidia-smi"):
    out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True).stdout
    gpus = [str(i) for i, line in enumerate(out.splitlines()) if line.startswith("GPU")]
  else:
    gpus = []
  if gpus:
    return [{"env": {"CUDA_VISIBLE_DEVICES": gpus[i % len(gpus)]}} for i in range(parallel)]
  cores = sorted(os.sched_getaffinity(0))
  share = max(1, len(cores) // parallel)
  return [{"cpus": set(cores[(i * share) % len(cores):][:share] or cores)}
          for i in range(parallel)]


def _last_error_line(log: epath.Path) -> str:
  if not log.exists():
    return "(no log)"
  with open(log, errors="replace") as f:
    lines = [line for line in f.read().splitlines() if line.strip()]
  errors = [line for line in lines if re.match(r"^[A-Za-z_.]*(Error|Exception|Exit)\b", line)
            or line.startswith("launch.py:")]
  return (errors or lines or ["(no output)"])[-1].strip()


_PR_SET_PDEATHSIG = 1   # linux/prctl.h


def _die_with_parent(parent_pid: int):
  """A `preexec_fn` for Popen: the child gets SIGTERM when the sweep driver dies (also by
  SIGKILL), so no run goes on orphaned. Linux only; elsewhere it does nothing."""

  if not sys.platform.startswith("linux"):
    return None
  prctl = ctypes.CDLL(None, use_errno=True).prctl   # looked up here, not in the forked child

  def preexec() -> None:
    prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    if os.getppid() != parent_pid:   # the driver died before prctl took effect
      os.kill(os.getpid(), signal.SIGTERM)

  return preexec


def _record(run: Run, status: str, error: str | None = None, exit_code: int | None = None,
            seconds: float = 0.0) -> dict:
  return {"name": run.name, "workdir": run.workdir, "status": status, "exit_code": exit_code,
          "seconds": seconds, "error": error}


def _elsewhere(holder: dict) -> str:
  return (f"pid {holder.get('pid', '?')} on {holder.get('host', '?')} holds its workdir "
          f"since {holder.get('since', '?')}")


def run_locally(runs: list[Run], commands: list[list[str]], parallel: int = 1,
                num_steps_override: int | None = None, poll_seconds: float = 0.5) -> list[dict]:
  """Runs every unfinished run as its own process, `parallel` at a time.

  Each process's output goes to `<run workdir>/launch.log`. A run that exits with an error,
  or whose `run_status.json` is damaged, is recorded as failed (with its last error line)
  and the others go on. A run whose workdir a live process holds (`lease.live_holder`) is
  'running elsewhere' and not started. Each process dies with this one (`_die_with_parent`).

  Returns:
    One record per run: name, workdir, status ('skipped', 'done', 'failed' or 'running
    elsewhere'), exit code, seconds, error.
  """
  slots = device_slots(max(1, parallel))
  free = list(range(len(slots)))
  pending = list(zip(runs, commands, strict=True))
  active: dict[int, tuple[Run, subprocess.Popen, float, Any]] = {}
  results: dict[str, dict] = {}
  for run, _ in pending:
    try:
      if (holder := lease_lib.live_holder(run.workdir)) is not None:
        results[run.name] = _record(run, "running elsewhere", _elsewhere(holder))
      elif is_finished(run, num_steps_override):
        results[run.name] = _record(run, "skipped")
    except (ValueError, OSError) as e:   # a damaged run_status.json or config.json
      results[run.name] = _record(run, "failed", f"{type(e).__name__}: {e}")
    if run.name in results and results[run.name]["status"] != "skipped":
      print(f"[sweep] {results[run.name]['status']} {run.name}: {results[run.name]['error']}",
            flush=True)
  pending = [(r, c) for r, c in pending if r.name not in results]
  while pending or active:
    while pending and free:
      run, cmd = pending.pop(0)
      slot = free.pop(0)
      epath.Path(run.workdir).mkdir(parents=True, exist_ok=True)
      log = open(os.path.join(run.workdir, "launch.log"), "a")
      log.write(f"\n==== {time.strftime('%Y-%m-%d %H:%M:%S')}: {shlex.join(cmd)}\n")
      log.flush()
      env = {**os.environ, **slots[slot].get("env", {})}
      cpus = slots[slot].get("cpus")
      if cpus and shutil.which("taskset"):   # pin to its share of the cores
        cmd = ["taskset", "-c", ",".join(map(str, sorted(cpus))), *cmd]
      proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env,
                              preexec_fn=_die_with_parent(os.getpid()))
      print(f"[sweep] started {run.name} (pid {proc.pid})", flush=True)
      active[slot] = (run, proc, time.time(), log)
    time.sleep(poll_seconds)
    for slot, (run, proc, t0, log) in list(active.items()):
      code = proc.poll()
      if code is None:
        continue
      log.close()
      del active[slot]
      free.append(slot)
      record = _record(run, "done" if code == 0 else "failed", exit_code=code,
                       seconds=round(time.time() - t0, 1))
      if code != 0:
        holder = lease_lib.live_holder(run.workdir)
        if holder is not None:   # refused: another process started it first
          record.update(status="running elsewhere", error=_elsewhere(holder))
        else:
          record["error"] = _last_error_line(epath.Path(run.workdir) / "launch.log")
          try:
            status = workdir_lib.read_status(run.workdir) or {}
          except workdir_lib.DamagedStatusError:
            status = {}
          if status.get("status") != "failed":   # died before the loop could say so
            workdir_lib.RunStatus(run.workdir).write("failed", status.get("step", 0),
                                                     error=record["error"])
      print(f"[sweep] {record['status']} {run.name} ({record['seconds']}s)"
            + (f": {record['error']}" if record["error"] else ""), flush=True)
      results[run.name] = record
  return [results[r.name] for r in runs]


def write_summary(sweep_workdir: str, records: list[dict]) -> str:
  """Writes `<sweep_workdir>/sweep_summary.json` and returns a printable table."""
  path = epath.Path(sweep_workdir)
  path.mkdir(parents=True, exist_ok=True)
  (path / "sweep_summary.json").write_text(json.dumps(records, indent=2) + "\n")
  width = max(len(r["name"]) for r in records)
  lines = [f"{'run':<{width}}  {'status':<17} {'seconds':>8}  error"]
  lines += [f"{r['name']:<{width}}  {r['status']:<17} {r['seconds']:>8}  {r['error'] or ''}"
            for r in records]
  return "\n".join(lines)


# ------------------------------------------------------------------------ SLURM


def slurm_script(commands: list[list[str]], sweep_workdir: str, *, job_name: str,
                 cwd: str, partition: str = "", time_limit: str = "24:00:00",
                 cpus_per_task: int = 8, gpus_per_task: int = 1, mem: str = "",
                 setup: str = "", max_parallel: int = 0) -> str:
  """A SLURM job-array script: array task i runs exactly `commands[i]`."""
  array = f"0-{len(commands) - 1}" + (f"%{max_parallel}" if max_parallel else "")
  header = [
      "#!/bin/bash",
      f"#SBATCH --job-name={job_name}",
      f"#SBATCH --array={array}",
      f"#SBATCH --output={os.path.abspath(sweep_workdir)}/slurm-%A_%a.out",
      f"#SBATCH --time={time_limit}",
      "#SBATCH --ntasks=1",
      f"#SBATCH --cpus-per-task={cpus_per_task}",
  ]
  if gpus_per_task:
    header.append(f"#SBATCH --gpus-per-task={gpus_per_task}")
  if partition:
    header.append(f"#SBATCH --partition={partition}")
  if mem:
    header.append(f"#SBATCH --mem={mem}")
  body = ["set -euo pipefail", f"cd {shlex.quote(cwd)}"] + ([setup] if setup else [])
  body += ["COMMANDS=("] + [f"  {shlex.quote(shlex.join(c))}" for c in commands] + [")"]
  body += ['echo "array task ${SLURM_ARRAY_TASK_ID}: ${COMMANDS[$SLURM_ARRAY_TASK_ID]}"',
           'eval "${COMMANDS[$SLURM_ARRAY_TASK_ID]}"']
  return "\n".join(header + [""] + body) + "\n"


def main(config_arg: str, sweep_workdir: str, extra_args: Sequence[str], *, parallel: int = 1,
         dry_run: bool = False, emit: str = "", slurm: dict | None = None,
         launcher: str = "launch.py") -> int:
  """`launch.py --sweep`: runs, prints (one shell-quoted command per line) or emits the
  sweep; returns the process exit code (1 when a run failed; a run 'running elsewhere' is
  not a failure).

  Raises:
    ValueError: a value `check_overrides` refuses, or a control character in the sweep's
      own flags or workdir, before any run starts.
  """
  runs = expand(load_sweep(config_arg), sweep_workdir)
  for run, cmd in zip(runs, (command(r, config_arg, extra_args, launcher=launcher)
                             for r in runs), strict=True):
    bad = next((a for a in cmd if _control_character(a)), None)
    if bad is not None:
      raise ValueError(f"Sweep run {run.name}: the argument {bad!r:.120} holds the control "
                       f"character {_control_character(bad)}; a command line cannot carry it.")
  if dry_run or emit:
    commands = [command(r, config_arg, extra_args, launcher=launcher) for r in runs]
    if emit == "slurm":
      path = epath.Path(sweep_workdir) / "sweep.sbatch"
      path.parent.mkdir(parents=True, exist_ok=True)
      path.write_text(slurm_script(commands, sweep_workdir,
                                   job_name=os.path.basename(sweep_workdir.rstrip("/")),
                                   cwd=os.getcwd(), **(slurm or {})))
      print(f"Wrote {path} ({len(runs)} array tasks): sbatch {path}")
    else:
      print("\n".join(shlex.join(c) for c in commands))
    return 0
  commands = [command(r, config_arg, extra_args, python=sys.executable, launcher=launcher)
              for r in runs]
  num_steps = next((int(a.split("=", 1)[1]) for a in reversed(extra_args)
                    if a.startswith("--config.train.num_steps=")), None)
  records = run_locally(runs, commands, parallel, num_steps_override=num_steps)
  print(write_summary(sweep_workdir, records))
  return int(any(r["status"] == "failed" for r in records))
