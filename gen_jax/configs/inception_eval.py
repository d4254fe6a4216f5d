"""The eval fields of the paper-grade image metrics: FID, KID and Inception score on the FID
Inception-v3 (gen_jax/engine/sample_metrics.py, docs/evaluation.md).

An experiment whose config already has the sample-metric fields
(`common.add_sample_metrics`) calls `add_inception_metrics(config.eval, ...)` to switch
them to Inception features with the paper's protocol.
"""
from __future__ import annotations

import ml_collections

# pytorch-fid's file and its sha256 (gen_jax/evaluate/inception_weights.py; a test pins both).
WEIGHTS_FILE = "pt_inception-2015-12-05-6726825d.pth"
WEIGHTS_SHA256 = "6726825d0af5f729cebd5821db510b11b1cfad8faad88a03f1befd49fb9129b2"
CACHE_DIR = "~/.cache/gen_jax/inception"


def add_inception_metrics(eval_cfg: ml_collections.ConfigDict, *, num_samples: int = 50_000,
                          reference_split: str = "train", sample_batch_size: int = 500) -> None:
  """Inception FID/KID/IS in --mode=eval, with `num_samples` samples against
  `reference_split` (50,000 against CIFAR-10 train: Heusel et al. 2017, Ho et al. 2020)."""
  # --mode=eval computes the sample metrics (needs the weights file below).
  eval_cfg.sample_metrics = True
  # 'inception': the FID Inception-v3 (pytorch-fid's weights); 'classifier': runs/classifier.
  eval_cfg.feature_extractor = "inception"
  # Generated images per evaluation; in the metric names ('50k').
  eval_cfg.num_samples = num_samples
  # Images per compiled sampling call (bounds memory).
  eval_cfg.sample_batch_size = sample_batch_size
  # The real images (all of this split of data.dataset) the samples are compared with.
  eval_cfg.reference_split = reference_split
  add_inception_fields(eval_cfg)


def add_inception_fields(eval_cfg: ml_collections.ConfigDict) -> None:
  """The Inception network's fields of an eval group (used when eval.feature_extractor is
  'inception'), at their defaults."""
  # pytorch-fid's weights file (download: docs/evaluation.md); a missing file stops the eval.
  eval_cfg.inception_weights = f"{CACHE_DIR}/{WEIGHTS_FILE}"
  # Its sha256 ('' accepts any file, e.g. the random weights of tools/make_inception_fixture.py).
  eval_cfg.inception_sha256 = WEIGHTS_SHA256
  # Converted weights and reference features are cached here (by the weights' digest).
  eval_cfg.inception_cache_dir = CACHE_DIR
  # FID against this mu/sigma .npz (pytorch-fid --save-stats, TTUR) instead of the split; no KID.
  eval_cfg.inception_reference_stats = ""
  # Images per Inception pass (bounds the memory of its 299x299 activations).
  eval_cfg.inception_batch_size = 100
  # Convolution precision: 'highest' (float32, as pytorch-fid) or 'default' (TF32 on GPUs).
  eval_cfg.inception_precision = "highest"
  # Inception score: splits averaged (Salimans et al. 2016 and their code: 10).
  eval_cfg.is_splits = 10
