"""gen_jax launcher: train (and resume), sample, evaluate, or summarize a config.

  python launch.py --config=configs/ddpm.py [--workdir=runs/ddpm] [--mode=train]
  python launch.py --config=configs/ddpm.py --mode=sample --config.sample.sampler=ddim --config.sample.steps=50
  python launch.py --config=configs/ddpm.py:smoke --config.train.num_steps=10

Rerunning the same command with the same workdir resumes from its newest checkpoint.
Deliberately thin: flags, optional multi-host init, version/device log, then gen_jax.
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
_MODE = flags.DEFINE_enum("mode", "train", ["train", "sample", "eval", "summary"], "What to do.")
_DISTRIBUTED = flags.DEFINE_bool(
    "distributed", None, "Call jax.distributed.initialize() (multi-host). Default: only when "
    "the environment names a cluster (JAX_COORDINATOR_ADDRESS, SLURM, TPU pod).")
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
          or "TPU_WORKER_HOSTNAMES" in env or "MEGASCALE_COORDINATOR_ADDRESS" in env)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  import jax
  if _DISTRIBUTED.value or (_DISTRIBUTED.value is None and _in_cluster()):
    jax.distributed.initialize()
  import flax

  from gen_jax.engine import inference, train
  from gen_jax.engine.logging import quiet_library_logs
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
  elif _MODE.value == "sample":
    print(inference.sample(config, workdir))
  elif _MODE.value == "eval":
    for name, value in inference.evaluate(config, workdir).items():
      print(f"{name}: {value:.6g}")
  else:
    print(inference.summary(config))


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
