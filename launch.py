"""gen_jax launcher: train (and resume), sample, evaluate, summarize, sweep and report.

  python launch.py --config=configs/ddpm.py [--workdir=runs/ddpm] [--mode=train]
  python launch.py --workdir=runs/ddpm --mode=sample --config.sample.steps=50
  python launch.py --workdir=runs/ddpm --mode=inpaint --config.inpaint.mask=left
  python launch.py --config=configs/ddpm.py:smoke --config.train.num_steps=10
  python launch.py --config=experiments/ho2020_ddpm/targets_mnist.py --sweep [--dry_run]
  python launch.py --workdir=runs/targets_mnist --mode=report

Rerunning the same command with the same workdir resumes from its newest checkpoint; a
workdir is one run, so a rerun with another model, data or optimizer config stops with
the difference (gen_jax/engine/workdir.py). Modes that read a trained run (sample, eval,
export, inpaint) use the config saved in its workdir; `--config` is optional there.
Deliberately thin: flags, optional multi-host init, version/device log, then gen_jax.

Several processes (README "Scaling out"): every process runs the same command. On a TPU
pod slice, under SLURM (srun) or Open MPI, jax.distributed finds its peers by itself;
elsewhere name them:

  python launch.py --config=... --coordinator_address=host0:1234 --num_processes=2 --process_id=0
  python launch.py --config=... --coordinator_address=host0:1234 --num_processes=2 --process_id=1
"""
from __future__ import annotations

import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Config file, e.g. configs/ddpm.py or configs/ddpm.py:smoke.",
    lock_config=True)
_WORKDIR = flags.DEFINE_string(
    "workdir", None, "Run directory (checkpoints, metrics, samples). "
    "Default: runs/<config name>[_<variant>].")
_MODE = flags.DEFINE_enum("mode", "train",
                          ["train", "sample", "eval", "export", "summary", "compile",
                           "report", "inpaint"],
                          "What to do. compile: lower and compile the train step for the "
                          "configured mesh and print its memory use and FLOPs, without data. "
                          "report: a table, learning curves and samples of the runs in "
                          "--workdir (report.md). export: the EMA weights as safetensors "
                          "with the config, in <workdir>/export/step_<N>/. inpaint: repair "
                          "masked eval images with a trained DDPM (config.inpaint), grids and "
                          "PSNR/SSIM in <workdir>/inpaint/.")
_ACCEPT_CHANGES = flags.DEFINE_bool(
    "accept_config_changes", False, "Continue the run in --workdir although the config "
    "differs from the one it was trained with in more than the resumable fields; the "
    "changes are recorded in <workdir>/config_history/changes.jsonl.")
_SWEEP = flags.DEFINE_bool(
    "sweep", False, "Run the config file's get_sweep(arg): one run per override set, in "
    "<workdir>/<run name>; finished runs are skipped, unfinished ones resume.")
_SWEEP_PARALLEL = flags.DEFINE_integer(
    "sweep_parallel", 1, "Sweep runs at a time on this machine, each its own process with "
    "one GPU (CUDA_VISIBLE_DEVICES) or an equal share of the CPU cores.")
_DRY_RUN = flags.DEFINE_bool("dry_run", False, "With --sweep: print one launch.py command "
                             "per run instead of running them.")
_SWEEP_EMIT = flags.DEFINE_enum("sweep_emit", None, ["slurm"], "With --sweep: write a job "
                                "script instead of running: slurm = <workdir>/sweep.sbatch, "
                                "a job array with one task per run.")
_SLURM_PARTITION = flags.DEFINE_string("slurm_partition", "", "SLURM partition (--sweep_emit).")
_SLURM_TIME = flags.DEFINE_string("slurm_time", "24:00:00", "SLURM time limit per run.")
_SLURM_CPUS = flags.DEFINE_integer("slurm_cpus", 8, "SLURM CPUs per run.")
_SLURM_GPUS = flags.DEFINE_integer("slurm_gpus", 1, "SLURM GPUs per run (0: none).")
_SLURM_MEM = flags.DEFINE_string("slurm_mem", "", "SLURM memory per run, e.g. 64G ('': default).")
_SLURM_SETUP = flags.DEFINE_string("slurm_setup", "", "Shell line run before each task, e.g. "
                                   "'source .venv/bin/activate'.")
_SLURM_MAX_PARALLEL = flags.DEFINE_integer("slurm_max_parallel", 0, "Array tasks running at "
                                           "once (0: no limit).")
_DISTRIBUTED = flags.DEFINE_bool(
    "distributed", None, "Call jax.distributed.initialize() (multi-host). Default: when a "
    "process flag below is set or the environment names a cluster (JAX_COORDINATOR_ADDRESS, "
    "SLURM with several tasks, a TPU pod, Open MPI).")
_COORDINATOR = flags.DEFINE_string(
    "coordinator_address", None, "host:port of process 0, for jax.distributed "
    "(default: $JAX_COORDINATOR_ADDRESS or the cluster's).")
_NUM_PROCESSES = flags.DEFINE_integer(
    "num_processes", None, "Number of processes (default: $JAX_NUM_PROCESSES or the cluster's).")
_PROCESS_ID = flags.DEFINE_integer(
    "process_id", None, "This process's index in [0, num_processes) (default: $JAX_PROCESS_ID "
    "or the cluster's).")
_HEARTBEAT_TIMEOUT = flags.DEFINE_integer(
    "heartbeat_timeout", 100, "Seconds without a heartbeat after which jax.distributed "
    "declares a process lost; the others then stop (naming it) instead of waiting in a "
    "collective. Lower it for faster failure on a reliable network.")
_INIT_TIMEOUT = flags.DEFINE_integer(
    "distributed_init_timeout", 300, "Seconds jax.distributed waits for all processes to "
    "connect at start.")
_CPU_DEVICES = flags.DEFINE_integer(
    "cpu_devices", None, "Split the CPU into this many JAX devices (jax_num_cpu_devices): try "
    "a mesh, or --mode=compile a config for N accelerators, on one machine.")

HERE = os.path.dirname(os.path.abspath(__file__))
# Flags of the sweep itself; the sweep's runs get every other flag of the command.
SWEEP_FLAGS = ("config", "workdir", "sweep", "sweep_parallel", "dry_run", "sweep_emit",
               "slurm_partition", "slurm_time", "slurm_cpus", "slurm_gpus", "slurm_mem",
               "slurm_setup", "slurm_max_parallel")


def default_workdir(config_arg: str) -> str:
  """configs/ddpm.py -> runs/ddpm; configs/ddpm.py:smoke -> runs/ddpm_smoke."""
  path, _, variant = config_arg.partition(":")
  name = os.path.splitext(os.path.basename(path))[0]
  if variant:
    name += "_" + "".join(c if c.isalnum() else "_" for c in variant)
  return os.path.join("runs", name)


def _in_cluster() -> bool:
  env = os.environ
  return ("JAX_COORDINATOR_ADDRESS" in env or int(env.get("SLURM_NTASKS", "1")) > 1
          or "TPU_WORKER_HOSTNAMES" in env or "MEGASCALE_COORDINATOR_ADDRESS" in env
          or int(env.get("OMPI_COMM_WORLD_SIZE", "1")) > 1)


def initialize_distributed() -> None:
  """jax.distributed.initialize() when several processes run; every process calls it.

  Explicit flags win over the JAX_* environment variables; what neither gives, JAX
  detects (TPU pod metadata, SLURM, Open MPI).
  """
  import jax
  env = os.environ
  coordinator = _COORDINATOR.value or env.get("JAX_COORDINATOR_ADDRESS")
  num_processes = _NUM_PROCESSES.value or (int(env["JAX_NUM_PROCESSES"])
                                           if "JAX_NUM_PROCESSES" in env else None)
  process_id = _PROCESS_ID.value if _PROCESS_ID.value is not None else (
      int(env["JAX_PROCESS_ID"]) if "JAX_PROCESS_ID" in env else None)
  explicit = any(v is not None for v in (_COORDINATOR.value, _NUM_PROCESSES.value,
                                          _PROCESS_ID.value))
  if _DISTRIBUTED.value is False or not (_DISTRIBUTED.value or explicit or _in_cluster()):
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
                             initialization_timeout=_INIT_TIMEOUT.value,
                             heartbeat_timeout_seconds=_HEARTBEAT_TIMEOUT.value)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  if _SWEEP.value:
    run_sweep()
  if _MODE.value == "report":
    run_report()
    return
  from gen_jax.engine.cpu_flags import apply_cpu_xla_flags
  apply_cpu_xla_flags()   # XLA:CPU options (Eigen convolutions); before JAX starts a backend
  import jax
  if _CPU_DEVICES.value:
    jax.config.update("jax_num_cpu_devices", _CPU_DEVICES.value)
  initialize_distributed()
  if jax.process_index() != 0:   # one log for the run: process 0's (warnings from all)
    logging.set_verbosity(logging.WARNING)
  import flax

  from gen_jax import data
  from gen_jax.engine import checkpoint, inpaint, modes, sample_dump, train
  from gen_jax.engine.preemption import Interrupted
  from gen_jax.engine import workdir as workdir_lib
  from gen_jax.engine.outputs import quiet_library_logs
  quiet_library_logs()
  given = flags.FLAGS["config"].present and not _from_saved_run()
  config_arg = config_flags.get_config_filename(flags.FLAGS["config"])   # path[:variant]
  config_file = config_arg.partition(":")[0]
  if not os.path.isfile(config_file):
    sys.exit(f"launch.py: --config file {config_file!r} does not exist (see configs/).")
  config = _CONFIG.value
  workdir = _WORKDIR.value or default_workdir(config_arg)
  if config.get("compilation_cache"):   # compiled steps are reused across runs and modes
    jax.config.update("jax_compilation_cache_dir",
                      os.path.expanduser(config.compilation_cache))
  logging.info("JAX %s, Flax %s; process %d/%d; devices: %s", jax.__version__, flax.__version__,
               jax.process_index(), jax.process_count(), jax.devices())
  try:
    if _MODE.value in ("sample", "eval", "export", "inpaint"):   # a trained run: its saved config
      config = workdir_lib.reading_config(
          workdir, config_flags.get_override_values(flags.FLAGS["config"]),
          config if given else None)
    if _MODE.value == "inpaint" and "inpaint" in _CONFIG.value:   # fields newer than the run
      config.inpaint = {**_CONFIG.value.inpaint.to_dict(), **config.get("inpaint", {})}
    if _MODE.value == "train":
      train.train_and_evaluate(config, workdir, accept_config_changes=_ACCEPT_CHANGES.value)
      return
    if _MODE.value == "sample":
      report = str(modes.sample(config, workdir))
    elif _MODE.value == "eval":
      report = "\n".join(f"{name}: {value:.6g}"
                         for name, value in modes.evaluate(config, workdir).items())
    elif _MODE.value == "export":
      report = str(modes.export(config, workdir))
    elif _MODE.value == "inpaint":
      report = inpaint.format_report(inpaint.inpaint(config, workdir))
    elif _MODE.value == "compile":
      report = modes.compile_report(config)
    else:
      report = modes.summary(config)
  except (workdir_lib.ConfigMismatchError, NotADirectoryError, PermissionError,
          checkpoint.CheckpointMismatchError, checkpoint.DamagedCheckpointError,
          checkpoint.CheckpointWriteError, data.DatasetUnavailableError,
          sample_dump.SampleDumpMismatchError, inpaint.InpaintConfigError, Interrupted) as e:
    sys.exit(f"launch.py: {e}")
  if jax.process_index() == 0:   # every process computes it; one prints
    print(report)


def _from_saved_run() -> bool:
  return config_flags.get_config_filename(flags.FLAGS["config"]).startswith(
      os.path.join(HERE, "configs", "saved_run.py"))


def run_sweep() -> None:
  """`--sweep`: runs, prints or emits the config's sweep; runs nothing in this process."""
  from gen_jax.engine import sweep
  config_arg = config_flags.get_config_filename(flags.FLAGS["config"])
  extra = [a for a in sys.argv[1:]
           if a.lstrip("-").split("=", 1)[0].removeprefix("no") not in SWEEP_FLAGS]
  slurm = dict(partition=_SLURM_PARTITION.value, time_limit=_SLURM_TIME.value,
               cpus_per_task=_SLURM_CPUS.value, gpus_per_task=_SLURM_GPUS.value,
               mem=_SLURM_MEM.value, setup=_SLURM_SETUP.value,
               max_parallel=_SLURM_MAX_PARALLEL.value)
  try:
    code = sweep.main(config_arg, _WORKDIR.value or default_workdir(config_arg), extra,
                      parallel=_SWEEP_PARALLEL.value, dry_run=_DRY_RUN.value,
                      emit=_SWEEP_EMIT.value or "", slurm=slurm,
                      launcher=os.path.relpath(os.path.join(HERE, "launch.py")))
  except ValueError as e:
    sys.exit(f"launch.py: {e}")
  sys.exit(code)


def run_report() -> None:
  """`--mode=report`: the table, curves and sample sheet of the runs in --workdir."""
  from gen_jax.engine import report
  workdir = _WORKDIR.value or (default_workdir(config_flags.get_config_filename(
      flags.FLAGS["config"])) if flags.FLAGS["config"].present else None)
  if not workdir:
    sys.exit("launch.py: --mode=report needs --workdir=<a run or a directory of runs>.")
  try:
    print(report.write_report(workdir))
  except FileNotFoundError as e:
    sys.exit(f"launch.py: {e}")
  print(f"\nWrote {os.path.join(workdir, 'report.md')} and report.csv with the figures.")


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
    return [argv[0], f"--config={os.path.join(HERE, 'configs', 'saved_run.py')}:{workdir}",
            *argv[1:]]
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
    lines = [l.strip().strip("'") for l in text.splitlines() if l.strip()]
    message = lines[-1] if "Traceback" in text else " ".join(lines)
    sys.exit(f"launch.py: invalid --config override or variant: {message}\n"
             "Every field is listed, with a comment, in the config file you passed.")


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
