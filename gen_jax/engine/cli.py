"""What `launch.py` does besides parsing its flags: read a trained run's config, run a mode,
run or emit a sweep, write a report, start several processes, and report user errors.

Every error meant for the user (`gen_jax.core.errors.UserError`: a bad config, a missing
dataset or checkpoint, a workdir of another run, ...) ends the command as one line,
`launch.py: <message>`, with exit code 1 and no traceback (`user_errors`).

The sweep-runner and multi-host flags are defined here, next to the code that reads them;
the run's own flags (--config, --workdir, --mode, ...) in launch.py.
"""
from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator

import jax
import ml_collections
from absl import flags
from ml_collections import config_flags

from gen_jax.core.errors import UserError
from gen_jax.engine import disk_errors, method_modes, modes, report, sweep, train
from gen_jax.engine import workdir as workdir_lib

SWEEP_PARALLEL = flags.DEFINE_integer(
    "sweep_parallel", 1, "Sweep runs at a time on this machine, each its own process with "
    "one GPU (CUDA_VISIBLE_DEVICES) or an equal share of the CPU cores.")
DRY_RUN = flags.DEFINE_bool("dry_run", False, "With --sweep: print one launch.py command "
                            "per run instead of running them.")
SWEEP_EMIT = flags.DEFINE_enum("sweep_emit", None, ["slurm"], "With --sweep: write a job "
                               "script instead of running: slurm = <workdir>/sweep.sbatch, "
                               "a job array with one task per run.")
SLURM_PARTITION = flags.DEFINE_string("slurm_partition", "", "SLURM partition (--sweep_emit).")
SLURM_TIME = flags.DEFINE_string("slurm_time", "24:00:00", "SLURM time limit per run.")
SLURM_CPUS = flags.DEFINE_integer("slurm_cpus", 8, "SLURM CPUs per run.")
SLURM_GPUS = flags.DEFINE_integer("slurm_gpus", 1, "SLURM GPUs per run (0: none).")
SLURM_MEM = flags.DEFINE_string("slurm_mem", "", "SLURM memory per run, e.g. 64G ('': default).")
SLURM_SETUP = flags.DEFINE_string("slurm_setup", "", "Shell line run before each task, e.g. "
                                  "'source .venv/bin/activate'.")
SLURM_MAX_PARALLEL = flags.DEFINE_integer("slurm_max_parallel", 0, "Array tasks running at "
                                          "once (0: no limit).")
DISTRIBUTED = flags.DEFINE_bool(
    "distributed", None, "Call jax.distributed.initialize() (multi-host). Default: when a "
    "process flag below is set or the environment names a cluster (JAX_COORDINATOR_ADDRESS, "
    "SLURM with several tasks, a TPU pod, Open MPI).")
COORDINATOR = flags.DEFINE_string(
    "coordinator_address", None, "host:port of process 0, for jax.distributed "
    "(default: $JAX_COORDINATOR_ADDRESS or the cluster's).")
NUM_PROCESSES = flags.DEFINE_integer(
    "num_processes", None, "Number of processes (default: $JAX_NUM_PROCESSES or the cluster's).")
PROCESS_ID = flags.DEFINE_integer(
    "process_id", None, "This process's index in [0, num_processes) (default: $JAX_PROCESS_ID "
    "or the cluster's).")
HEARTBEAT_TIMEOUT = flags.DEFINE_integer(
    "heartbeat_timeout", 100, "Seconds without a heartbeat after which jax.distributed "
    "declares a process lost; the others then stop (naming it) instead of waiting in a "
    "collective. Lower it for faster failure on a reliable network.")
INIT_TIMEOUT = flags.DEFINE_integer(
    "distributed_init_timeout", 300, "Seconds jax.distributed waits for all processes to "
    "connect at start.")

# Flags of the sweep itself; the sweep's runs get every other flag of the command.
SWEEP_FLAGS = ("config", "workdir", "sweep", "sweep_parallel", "dry_run", "sweep_emit",
               "slurm_partition", "slurm_time", "slurm_cpus", "slurm_gpus", "slurm_mem",
               "slurm_setup", "slurm_max_parallel")
SAVED_RUN_CONFIG = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "configs", "saved_run.py")
READ_MODES = ("sample", "eval", "export")   # and a method's own modes: they read a trained run


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
  """Ends the process with `launch.py: <message>` (exit code 1, no traceback) on a
  `UserError` or an OSError of a full or read-only disk; any other exception is a bug and
  keeps its traceback."""
  try:
    yield
  except UserError as e:
    sys.exit(f"launch.py: {e}")
  except OSError as e:   # a full or read-only disk wherever the run writes
    if (error := disk_errors.output_write_error(e, "the run's output")) is None:
      raise
    sys.exit(f"launch.py: {error}")


def default_workdir(config_arg: str) -> str:
  """configs/ddpm.py -> runs/ddpm; configs/ddpm.py:smoke -> runs/ddpm_smoke."""
  path, _, variant = config_arg.partition(":")
  name = os.path.splitext(os.path.basename(path))[0]
  if variant:
    name += "_" + "".join(c if c.isalnum() else "_" for c in variant)
  return os.path.join("runs", name)


# ------------------------------------------------------------------ flags and config


def _flag_value(argv: list[str], name: str) -> str | None:
  """The value of --name=value or --name value in argv (the last one), before parsing."""
  value = None
  for i, arg in enumerate(argv):
    if arg.startswith(f"--{name}="):
      value = arg.split("=", 1)[1]
    elif arg == f"--{name}" and i + 1 < len(argv):
      value = argv[i + 1]
  return value


def with_config_argument(argv: list[str]) -> list[str]:
  """`--config` may be left out when --workdir holds a trained run: its saved config.json
  is then the config (through configs/saved_run.py), overrides included."""
  if _flag_value(argv, "config") is not None:
    return argv
  workdir = _flag_value(argv, "workdir")
  if workdir and os.path.isfile(os.path.join(workdir, "config.json")):
    with user_errors():   # a damaged one: said here, before absl's flag parsing wraps it
      workdir_lib.load_saved_config(workdir)
    return [argv[0], f"--config={SAVED_RUN_CONFIG}:{workdir}", *argv[1:]]
  if _flag_value(argv, "mode") == "report":
    return argv
  sys.exit("launch.py: --config is required (e.g. --config=configs/ddpm.py), unless "
           "--workdir names a trained run (a folder with config.json).")


def parse_flags(argv: list[str]) -> list[str]:
  """absl flag parsing, with config typos turned into one readable line (no traceback)."""
  try:
    return flags.FLAGS(with_config_argument(argv))
  except (flags.Error, AttributeError, KeyError, TypeError, ValueError) as e:
    text = str(e).replace("\\n", "\n").replace("\\'", "")
    lines = [line.strip().strip("'") for line in text.splitlines() if line.strip()]
    message = lines[-1] if "Traceback" in text else " ".join(lines)
    sys.exit(f"launch.py: invalid --config override or variant: {message}\n"
             "Every field is listed, with a comment, in the config file you passed.")


def config_argument() -> str:
  """The --config argument as given, `path[:variant]`."""
  return config_flags.get_config_filename(flags.FLAGS["config"])


def from_saved_run() -> bool:
  """Whether --config was left out and the config is the workdir's saved one."""
  return config_argument().startswith(SAVED_RUN_CONFIG)


def check_config_file() -> None:
  """Ends the process with one line when the --config file does not exist."""
  config_file = config_argument().partition(":")[0]
  if not os.path.isfile(config_file):
    sys.exit(f"launch.py: --config file {config_file!r} does not exist (see configs/).")


# ------------------------------------------------------------------ modes


def run_mode(mode: str, config: ml_collections.ConfigDict, workdir: str, *,
             accept_config_changes: bool = False) -> str | None:
  """Runs `--mode=<mode>`; returns what to print (None for train, which logs as it goes).

  A mode that reads a trained run (sample, eval, export, a method's own mode) uses the
  config saved in `workdir`, with the command's overrides; `config` (from --config) is
  used whole only when it came from a config file and the run has none saved, and gives
  a method's mode the fields of its config group that the saved run lacks.

  Raises:
    UserError: what the user can fix (printed as one line by `user_errors`).
  """
  file_config = config
  if mode in READ_MODES or mode not in method_modes.ENGINE_MODES:
    config = workdir_lib.reading_config(
        workdir, config_flags.get_override_values(flags.FLAGS["config"]),
        None if from_saved_run() else file_config)
  if mode == "train":
    train.train_and_evaluate(config, workdir, accept_config_changes=accept_config_changes)
    return None
  if mode == "sample":
    return str(modes.sample(config, workdir))
  if mode == "eval":
    return "\n".join(f"{name}: {value:.6g}"
                     for name, value in modes.evaluate(config, workdir).items())
  if mode == "export":
    return str(modes.export(config, workdir))
  if mode == "compile":
    return modes.compile_report(config)
  if mode == "summary":
    return modes.summary(config)
  return method_modes.run_method_mode(config, workdir, mode, file_config)[1]


def run_report(workdir: str | None) -> None:
  """`--mode=report`: the table, curves and sample sheet of the runs in `workdir`."""
  if flags.FLAGS["config"].present and not workdir:
    workdir = default_workdir(config_argument())
  if not workdir:
    sys.exit("launch.py: --mode=report needs --workdir=<a run or a directory of runs>.")
  with user_errors():
    print(report.write_report(workdir))
  print(f"\nWrote {os.path.join(workdir, 'report.md')} and report.csv with the figures.")


def run_sweep(workdir: str | None, launcher: str) -> int:
  """`--sweep`: runs, prints or emits the config's sweep (gen_jax/engine/sweep.py); runs
  nothing in this process. Returns the exit code."""
  config_arg = config_argument()
  extra = [a for a in sys.argv[1:]
           if a.lstrip("-").split("=", 1)[0].removeprefix("no") not in SWEEP_FLAGS]
  slurm = dict(partition=SLURM_PARTITION.value, time_limit=SLURM_TIME.value,
               cpus_per_task=SLURM_CPUS.value, gpus_per_task=SLURM_GPUS.value,
               mem=SLURM_MEM.value, setup=SLURM_SETUP.value,
               max_parallel=SLURM_MAX_PARALLEL.value)
  try:
    return sweep.main(config_arg, workdir or default_workdir(config_arg), extra,
                      parallel=SWEEP_PARALLEL.value, dry_run=DRY_RUN.value,
                      emit=SWEEP_EMIT.value or "", slurm=slurm,
                      launcher=os.path.relpath(launcher))
  except ValueError as e:   # a bad sweep definition (sweep.py raises ValueError)
    sys.exit(f"launch.py: {e}")


# ------------------------------------------------------------------ several processes


def in_cluster() -> bool:
  """Whether the environment names a cluster of several processes."""
  env = os.environ
  return ("JAX_COORDINATOR_ADDRESS" in env or int(env.get("SLURM_NTASKS", "1")) > 1
          or "TPU_WORKER_HOSTNAMES" in env or "MEGASCALE_COORDINATOR_ADDRESS" in env
          or int(env.get("OMPI_COMM_WORLD_SIZE", "1")) > 1)


def initialize_distributed() -> None:
  """jax.distributed.initialize() when several processes run; every process calls it.

  Explicit flags win over the JAX_* environment variables; what neither gives, JAX
  detects (TPU pod metadata, SLURM, Open MPI).
  """
  env = os.environ
  coordinator = COORDINATOR.value or env.get("JAX_COORDINATOR_ADDRESS")
  num_processes = NUM_PROCESSES.value or (int(env["JAX_NUM_PROCESSES"])
                                          if "JAX_NUM_PROCESSES" in env else None)
  process_id = PROCESS_ID.value if PROCESS_ID.value is not None else (
      int(env["JAX_PROCESS_ID"]) if "JAX_PROCESS_ID" in env else None)
  explicit = any(v is not None for v in (COORDINATOR.value, NUM_PROCESSES.value,
                                          PROCESS_ID.value))
  if DISTRIBUTED.value is False or not (DISTRIBUTED.value or explicit or in_cluster()):
    return
  if explicit and None in (coordinator, num_processes, process_id):
    sys.exit("launch.py: --coordinator_address, --num_processes and --process_id go together "
             f"(got {coordinator!r}, {num_processes!r}, {process_id!r}).")
  # A process that dies is noticed by its missing heartbeats: every other process then
  # aborts with "tasks are unhealthy (stopped sending heartbeats): <ids>" (or, when process
  # 0, the coordinator, died: "Failed to send RPC to coordination service") instead of
  # hanging in a collective. Rerunning all processes resumes (docs/robustness.md).
  jax.distributed.initialize(coordinator_address=coordinator, num_processes=num_processes,
                             process_id=process_id,
                             initialization_timeout=INIT_TIMEOUT.value,
                             heartbeat_timeout_seconds=HEARTBEAT_TIMEOUT.value)
