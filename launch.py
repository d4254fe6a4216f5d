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
export, and a family's own modes such as a DDPM's inpaint) use the config saved in its
workdir; `--config` is optional there. Deliberately thin: flags, optional multi-host init,
version/device log, then gen_jax (gen_jax/engine/cli.py). A user's error (a bad config, a
missing file) ends it with one line, `launch.py: <message>`, and exit code 1.

Several processes (README "Scaling out"): every process runs the same command. On a TPU
pod slice, under SLURM (srun) or Open MPI, jax.distributed finds its peers by itself;
elsewhere name them:

  python launch.py --config=... --coordinator_address=host0:1234 --num_processes=2 --process_id=0
  python launch.py --config=... --coordinator_address=host0:1234 --num_processes=2 --process_id=1
"""
from __future__ import annotations

import os
import sys

import flax
import jax
from absl import app, flags, logging
from ml_collections import config_flags

from gen_jax.engine import cli
from gen_jax.engine.cpu_flags import apply_cpu_xla_flags
from gen_jax.engine.outputs import quiet_library_logs

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Config file, e.g. configs/ddpm.py or configs/ddpm.py:smoke.",
    lock_config=True)
_WORKDIR = flags.DEFINE_string(
    "workdir", None, "Run directory (checkpoints, metrics, samples). "
    "Default: runs/<config name>[_<variant>].")
_MODE = flags.DEFINE_string(
    "mode", "train", "What to do: train, sample, eval, export, summary, compile, report, or a "
    "mode the run's method offers (a DDPM: inpaint). compile: lower and compile the train "
    "step for the configured mesh and print its memory use and FLOPs, without data. report: "
    "a table, learning curves and samples of the runs in --workdir (report.md). export: the "
    "EMA weights as safetensors with the config, in <workdir>/export/step_<N>/. inpaint: "
    "repair masked eval images (config.inpaint), grids and PSNR/SSIM in <workdir>/inpaint/.")
_ACCEPT_CHANGES = flags.DEFINE_bool(
    "accept_config_changes", False, "Continue the run in --workdir although the config "
    "differs from the one it was trained with in more than the resumable fields; the "
    "changes are recorded in <workdir>/config_history/changes.jsonl.")
_SWEEP = flags.DEFINE_bool(
    "sweep", False, "Run the config file's get_sweep(arg): one run per override set, in "
    "<workdir>/<run name>; finished runs are skipped, unfinished ones resume.")
_CPU_DEVICES = flags.DEFINE_integer(
    "cpu_devices", None, "Split the CPU into this many JAX devices (jax_num_cpu_devices): try "
    "a mesh, or --mode=compile a config for N accelerators, on one machine.")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  if _SWEEP.value:
    sys.exit(cli.run_sweep(_WORKDIR.value, launcher=os.path.abspath(__file__)))
  if _MODE.value == "report":
    cli.run_report(_WORKDIR.value)
    return
  apply_cpu_xla_flags()   # XLA:CPU options (Eigen convolutions); before JAX starts a backend
  if _CPU_DEVICES.value:
    jax.config.update("jax_num_cpu_devices", _CPU_DEVICES.value)
  cli.initialize_distributed()
  if jax.process_index() != 0:   # one log for the run: process 0's (warnings from all)
    logging.set_verbosity(logging.WARNING)
  quiet_library_logs()
  cli.check_config_file()
  config = _CONFIG.value
  workdir = _WORKDIR.value or cli.default_workdir(cli.config_argument())
  if config.get("compilation_cache"):   # compiled steps are reused across runs and modes
    jax.config.update("jax_compilation_cache_dir", os.path.expanduser(config.compilation_cache))
  logging.info("JAX %s, Flax %s; process %d/%d; devices: %s", jax.__version__, flax.__version__,
               jax.process_index(), jax.process_count(), jax.devices())
  with cli.user_errors():
    report = cli.run_mode(_MODE.value, config, workdir,
                          accept_config_changes=_ACCEPT_CHANGES.value)
  if report is not None and jax.process_index() == 0:   # every process computes it; one prints
    print(report)


if __name__ == "__main__":
  app.run(main, flags_parser=cli.parse_flags)
