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


# Datasets the engine-trained feature extractor (configs/classifier.py) can embed.
CLASSIFIER_DATASETS = ("mnist_5k", "mnist")


def add_sample_metrics(eval_cfg: ml_collections.ConfigDict, dataset: str, num_samples: int,
                       sample_batch_size: int) -> None:
  """Sample-quality fields of an image generator's eval group (gen_jax/engine/sample_metrics.py).

  The metrics use the features of the classifier trained by
  `python launch.py --config=configs/classifier.py` (workdir runs/classifier).
  """
  # FID, KID, precision/recall, classifier confidence and class coverage in --mode=eval
  # (on by default for digits; other datasets need a classifier of their own).
  eval_cfg.sample_metrics = dataset in CLASSIFIER_DATASETS
  # ... and every this many training steps (0 = never; needs the classifier before training).
  eval_cfg.sample_metrics_every = 0
  # Generated images per evaluation; in the metric names ('1k').
  eval_cfg.num_samples = num_samples
  # Images per compiled sampling call (bounds memory).
  eval_cfg.sample_batch_size = sample_batch_size
  # Workdir of the classifier whose penultimate features are compared ('mnist5kclf' when
  # it was trained on mnist_5k). Its reference statistics are cached there.
  eval_cfg.classifier_workdir = "runs/classifier"
  # The real images (all of this split of data.dataset) the samples are compared with.
  eval_cfg.reference_split = "test"
  # KID: number of subset pairs averaged (Bińkowski et al. 2018 use 100 of 1,000 images).
  eval_cfg.kid_subsets = 100
  # Class coverage counts classes predicted for at least this share of the samples.
  eval_cfg.coverage_min_share = 0.05


def disable_sample_metrics_for_smoke(eval_cfg: ml_collections.ConfigDict) -> None:
  """Smoke runs have no classifier: the tests switch the metrics on with one of their own."""
  eval_cfg.sample_metrics = False
  eval_cfg.num_samples = 32
  eval_cfg.sample_batch_size = 16
  eval_cfg.kid_subsets = 10
