"""Fields every family's config shares: variant parsing, run identity, data and mesh.

A family config starts from `base_config(...)` and adds its model, objective, train,
eval and sample groups.
"""
from __future__ import annotations

import ml_collections


def parse_variants(config_file: str, arg: str | None, known: tuple[str, ...]) -> dict[str, str | bool]:
  """'smoke,dataset=mnist' -> {'smoke': True, 'dataset': 'mnist'}; unknown names fail clearly."""
  variants = dict(part.split("=", 1) if "=" in part else (part, True)
                  for part in (arg or "").split(",") if part)
  unknown = set(variants) - set(known)
  if unknown:
    raise ValueError(f"{config_file}: unknown variant(s) {sorted(unknown)}; known: "
                     f"{', '.join(known)}.")
  return variants


def base_config(method: str, dataset: str) -> ml_collections.ConfigDict:
  """Run identity, data and mesh groups, with one comment per field."""
  config = ml_collections.ConfigDict()
  # Which family trains: a key of gen_jax.methods.METHODS.
  config.method = method
  config.seed = 0
  # Compute dtype of the networks ('float32' or 'bfloat16'); params stay float32.
  config.dtype = "float32"
  # Another run's workdir (or checkpoints dir) to continue from (full state) ...
  config.resume_from = ""
  # ... or to take only the params from (fine-tuning). See README "Resuming".
  config.init_from = ""

  config.data = ml_collections.ConfigDict()
  # gen_jax builders: mnist_5k (embedded, no download), mnist, cifar10; or any TFDS
  # dataset prepared in array_record form in data_dir.
  config.data.dataset = dataset
  # TFDS data dir ('' = TFDS default, ~/tensorflow_datasets).
  config.data.data_dir = ""
  # Folder with the raw files (e.g. train-images-idx3-ubyte.gz); when set nothing is downloaded.
  config.data.manual_dir = ""
  config.data.train_split = "train"
  config.data.eval_split = "test"
  # Random horizontal flips (Ho et al. use them on CIFAR-10; not for digits).
  config.data.random_flip = False
  # grain worker processes (0 = in the main process).
  config.data.num_workers = 0

  # Device mesh: batch over data x fsdp, params sharded over fsdp. -1 = all devices.
  config.mesh = ml_collections.ConfigDict()
  config.mesh.data = -1
  config.mesh.fsdp = 1
  return config
