"""gen_jax launcher: train (and resume), sample, evaluate, or summarize a config.

  python launch.py --config=configs/ddpm.py [--workdir=runs/ddpm] [--mode=train]
  python launch.py --config=configs/ddpm.py --mode=sample --config.sample.sampler=ddim --config.sample.steps=50
  python launch.py --config=configs/ddpm.py:smoke --config.train.num_steps=10

Rerunning the same command with the same workdir resumes from its newest checkpoint.
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
_MODE = flags.DEFINE_enum("mode", "train", ["train", "sample", "eval", "summary", "compile"],
                          "What to do. compile: lower and compile the train step for the "
                          "configured mesh and print its memory use and FLOPs, without data.")
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
_CPU_DEVICES = flags.DEFINE_integer(
    "cpu_devices", None, "Split the CPU into this many JAX devices (jax_num_cpu_devices): try "
    "a mesh, or --mode=compile a config for N accelerators, on one machine.")
flags.mark_flag_as_required("config")


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
  jax.distributed.initialize(coordinator_address=coordinator, num_processes=num_processes,
                             process_id=process_id)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  import jax
  if _CPU_DEVICES.value:
    jax.config.update("jax_num_cpu_devices", _CPU_DEVICES.value)
  initialize_distributed()
  if jax.process_index() != 0:   # one log for the run: process 0's (warnings from all)
    logging.set_verbosity(logging.WARNING)
  import flax

  from gen_jax.engine import modes, train
  from gen_jax.engine.outputs import quiet_library_logs
  quiet_library_logs()
  config_arg = config_flags.get_config_filename(flags.FLAGS["config"])   # path[:variant]
  config_file = config_arg.partition(":")[0]
  if not os.path.isfile(config_file):
    sys.exit(f"launch.py: --config file {config_file!r} does not exist (see configs/).")
  config = _CONFIG.value
  workdir = _WORKDIR.value or default_workdir(config_arg)
  logging.info("JAX %s, Flax %s; process %d/%d; devices: %s", jax.__version__, flax.__version__,
               jax.process_index(), jax.process_count(), jax.devices())
  if _MODE.value == "train":
    train.train_and_evaluate(config, workdir)
    return
  if _MODE.value == "sample":
    report = str(modes.sample(config, workdir))
  elif _MODE.value == "eval":
    report = "\n".join(f"{name}: {value:.6g}"
                       for name, value in modes.evaluate(config, workdir).items())
  elif _MODE.value == "compile":
    report = modes.compile_report(config)
  else:
    report = modes.summary(config)
  if jax.process_index() == 0:   # every process computes it; one prints
    print(report)


def parse_flags(argv: list[str]) -> list[str]:
  """absl flag parsing, with config typos turned into one readable line (no traceback)."""
  try:
    return flags.FLAGS(argv)
  except (flags.Error, AttributeError, KeyError, TypeError, ValueError) as e:
    text = str(e).replace("\\n", "\n").replace("\\'", "")
    lines = [l.strip().strip("'") for l in text.splitlines() if l.strip()]
    message = lines[-1] if "Traceback" in text else " ".join(lines)
    sys.exit(f"launch.py: invalid --config override or variant: {message}\n"
             "Every field is listed, with a comment, in the config file you passed.")


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
