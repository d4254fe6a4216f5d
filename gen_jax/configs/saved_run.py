"""The config a run was trained with, read back from its workdir.

  python launch.py --workdir=runs/ddpm --mode=sample     # launch.py passes this file itself:
  python launch.py --config=configs/saved_run.py:runs/ddpm --mode=sample

`get_config(workdir)` returns `<workdir>/config.json` as a ConfigDict, so `--config.x=y`
overrides apply to it as to any config file (launch.py allows only sample/eval fields
there in the modes that read a trained run). A config saved by an older gen_jax is brought
to today's fields first (gen_jax/configs/migration.py), so fields gained since the run was
saved can be overridden on older runs too.
"""
from __future__ import annotations

import ml_collections

from gen_jax.configs import migration


def get_config(workdir: str | None = None) -> ml_collections.ConfigDict:
  """The migrated config.json of the run in `workdir`.

  Raises:
    ValueError: no workdir given.
    FileNotFoundError: `workdir` holds no config.json.
  """
  if not workdir:
    raise ValueError("configs/saved_run.py needs the run's workdir: "
                     "--config=configs/saved_run.py:<workdir>.")
  config = migration.load_saved_config(workdir)
  if config is None:
    raise FileNotFoundError(f"{workdir}/{migration.CONFIG_FILE} does not exist: {workdir} "
                            "holds no trained run.")
  return config
