"""Sample quality of an image generator, measured with a classifier trained by this engine.

  FID, KID (mean, std over subsets), precision/recall     (gen_jax/evaluate/sample_quality.py)
  classifier confidence, class coverage and entropy       (gen_jax/evaluate/classifier_scores.py)

on the penultimate features of the classifier in `eval.classifier_workdir` (trained by
`python launch.py --config=configs/classifier.py`), comparing `eval.num_samples` generated
images with the whole `eval.reference_split` of the generator's dataset. Metric names carry
the weights, the extractor, the sample count and the reference split, so numbers from
different settings are never compared by accident:

  eval/ema/fid_mnist5kclf_1k_test      (EMA weights; classifier trained on mnist_5k; 1,000
                                        samples; against the test split)

Samples are generated `eval.sample_batch_size` at a time by one compiled sample function
(each batch with its own `fold_in` key, output replicated over the mesh), and only their
features stay on the host, so memory is bounded by one batch. The reference features of a
split are computed once per classifier checkpoint and cached next to its checkpoints,
in `<classifier_workdir>/reference_stats/<dataset>_<split>_step<N>.npz`.
"""
from __future__ import annotations

import dataclasses
import json
import math
import re
from typing import Any, Callable

import jax
import ml_collections
import numpy as np
from absl import logging
from etils import epath

from gen_jax import data
from gen_jax.engine import checkpoint as ckpt_lib
from gen_jax.engine import sharding
from gen_jax.engine.experiment import Experiment, build_experiment
from gen_jax.engine.outputs import is_main_process
from gen_jax.engine.samples import make_sample_fn
from gen_jax.evaluate import sample_quality
from gen_jax.evaluate.classifier_scores import class_scores

KID_SUBSET_SIZE = 1000      # Bińkowski et al. 2018, App. D (clipped to the smaller set)
PR_NEIGHBOURS = 3           # Kynkäänniemi et al. 2019, §2


@dataclasses.dataclass(frozen=True)
class FeatureExtractor:
  """A restored classifier: `apply(images) -> (logits [B, K], features [B, D])`, on device."""
  name: str                   # e.g. 'mnist5kclf' (the dataset it was trained on + 'clf')
  workdir: epath.Path
  step: int
  image_shape: tuple[int, int, int]
  apply: Callable[[jax.Array], tuple[jax.Array, jax.Array]]
  exp: Experiment


def extractor_name(dataset: str) -> str:
  """'mnist_5k' -> 'mnist5kclf', 'mnist' -> 'mnistclf'."""
  return re.sub(r"[^a-z0-9]", "", dataset.lower()) + "clf"


def count_tag(n: int) -> str:
  """1000 -> '1k', 2000 -> '2k', 500 -> '500', 1500 -> '1500'."""
  return f"{n // 1000}k" if n >= 1000 and n % 1000 == 0 else str(n)


def load_classifier(workdir: str | epath.Path) -> FeatureExtractor:
  """Restores the newest classifier checkpoint of `workdir` (EMA weights) onto the mesh.

  The classifier's Experiment is built from the config.json its training run wrote into
  `workdir` (the config of configs/classifier.py it was trained with, overrides included).

  Raises:
    FileNotFoundError: no trained classifier there; the message says what to run.
  """
  workdir = epath.Path(workdir)
  ckpt = ckpt_lib.Checkpointer(ckpt_lib.checkpoint_dir(workdir), read_only=True)
  step = ckpt.latest_step()
  if step is None or not (workdir / "config.json").exists():
    ckpt.close()
    raise FileNotFoundError(
        f"No trained classifier in {workdir} (eval.classifier_workdir): the sample-quality "
        "metrics use its features. Train it first (a few minutes on a CPU):\n"
        f"  python launch.py --config=configs/classifier.py --workdir={workdir}\n"
        "or turn the metrics off with --config.eval.sample_metrics=False.")
  config = ml_collections.ConfigDict(json.loads((workdir / "config.json").read_text()))
  if config.method != "classifier":
    raise ValueError(f"{workdir} holds a {config.method!r} run, not a classifier "
                     "(configs/classifier.py).")
  exp = build_experiment(config)
  state = ckpt.restore(step, exp.abstract_state, exp.state_sharding)
  ckpt.close()
  params = state.ema_params
  apply = jax.jit(lambda images: exp.method.apply(params, images), out_shardings=exp.replicated)
  logging.info("Feature extractor: classifier %s step %d", workdir, step)
  return FeatureExtractor(name=extractor_name(config.data.dataset), workdir=workdir, step=step,
                          image_shape=tuple(exp.spec.image_shape), apply=apply, exp=exp)


def _reference_batch_size(num_images: int, num_devices: int, largest: int = 500) -> int:
  """The largest batch <= `largest` that divides the split and the device count (so no
  image is dropped); `largest` rounded to the devices if none does."""
  for b in range(min(largest, num_images), 0, -1):
    if num_images % b == 0 and b % num_devices == 0:
      return b
  return max(num_devices, largest - largest % num_devices)


def reference_statistics(extractor: FeatureExtractor, data_config: ml_collections.ConfigDict,
                         split: str) -> dict[str, np.ndarray]:
  """Features (and their mean and covariance) of every image of a dataset split, cached.

  The cache is keyed by the classifier checkpoint step, the dataset and the split:
  `<classifier workdir>/reference_stats/<dataset>_<split>_step<N>.npz`; a second call reads it.

  Returns:
    {'features': [N, D], 'mu': [D], 'sigma': [D, D], 'logits': [N, K], 'labels': [N]}.
  """
  safe_split = re.sub(r"[^A-Za-z0-9_.-]", "_", split)
  path = (extractor.workdir / "reference_stats"
          / f"{data_config.dataset}_{safe_split}_step{extractor.step}.npz")
  if path.exists():
    with path.open("rb") as f:
      return dict(np.load(f))
  num_images = data.num_examples(data_config, split)
  batch_size = _reference_batch_size(num_images, extractor.exp.mesh.size)
  loader = data.make_loader(data_config, split=split, global_batch_size=batch_size, seed=0,
                            shuffle=False, num_epochs=1)
  replicate = jax.jit(lambda x: x, out_shardings=extractor.exp.replicated)
  logits, features, labels = [], [], []
  for local in loader:
    batch = sharding.global_batch(local, extractor.exp.batch_sharding)
    logits_B, features_B = jax.device_get(extractor.apply(batch["image"]))
    logits.append(logits_B), features.append(features_B)
    labels.append(jax.device_get(replicate(batch["label"])))
  features_NxD = np.concatenate(features)
  mu, sigma = sample_quality.feature_statistics(features_NxD)
  stats = {"features": features_NxD, "mu": mu, "sigma": sigma,
           "logits": np.concatenate(logits), "labels": np.concatenate(labels)}
  logging.info("Reference features of %s[%s]: %d images -> %s", data_config.dataset, split,
               len(features_NxD), path)
  if is_main_process():
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("wb") as f:
      np.savez(f, **stats)
    tmp.rename(path)   # complete files only: a killed run leaves no half-written cache
  return stats


def compare_features(ref: dict[str, np.ndarray], logits_NxK: np.ndarray,
                     features_NxD: np.ndarray, *, kid_subsets: int = 100,
                     coverage_min_share: float = 0.05, seed: int = 0) -> dict[str, float]:
  """The metrics of a sample set (its classifier logits and features) against `ref`.

  Returns unprefixed names: fid, kid, kid_std, precision, recall, clf_confidence,
  class_coverage, class_entropy.
  """
  mu, sigma = sample_quality.feature_statistics(features_NxD)
  kid, kid_std = sample_quality.kernel_inception_distance(
      ref["features"], features_NxD, num_subsets=kid_subsets, subset_size=KID_SUBSET_SIZE,
      rng=seed)
  precision, recall = sample_quality.precision_recall(ref["features"], features_NxD,
                                                      k=PR_NEIGHBOURS)
  return {"fid": sample_quality.frechet_distance(mu, sigma, ref["mu"], ref["sigma"]),
          "kid": kid, "kid_std": kid_std, "precision": precision, "recall": recall,
          **class_scores(logits_NxK, coverage_min_share)}


class SampleQualityEvaluator:
  """Loads the classifier and the reference statistics once; `__call__(state)` samples
  `num_samples` images from `state` and returns the named metrics.

  Construct it before training (it fails fast when the classifier is missing) and call it
  as often as needed: the sample function compiles once.
  """

  def __init__(self, exp: Experiment, num_samples: int | None = None):
    cfg = exp.config.eval
    self.exp = exp
    self.num_samples = int(num_samples or cfg.num_samples)
    self.batch_size = min(int(cfg.sample_batch_size), self.num_samples)
    if self.num_samples < 2 or self.batch_size < 1:
      raise ValueError(f"eval.num_samples={self.num_samples} must be >= 2 and "
                       f"eval.sample_batch_size={cfg.sample_batch_size} >= 1.")
    self.extractor = load_classifier(cfg.classifier_workdir)
    shape = tuple(exp.spec.image_shape)
    if shape != self.extractor.image_shape:
      raise ValueError(f"The classifier in {cfg.classifier_workdir} takes images of shape "
                       f"{self.extractor.image_shape}, the generator makes {shape}: train a "
                       "classifier on this dataset (configs/classifier.py:dataset=...).")
    self.split = cfg.reference_split
    self.reference = reference_statistics(self.extractor, exp.config.data, self.split)
    self.sample_fn = make_sample_fn(exp, self.batch_size)
    weights = "ema" if exp.config.sample.use_ema else "raw"
    self.tag = f"{self.extractor.name}_{count_tag(self.num_samples)}_{self.split}"
    self.prefix = f"eval/{weights}/"

  def features_of_samples(self, state, rng: jax.Array) -> tuple[np.ndarray, np.ndarray]:
    """(logits [N, K], features [N, D]) of `num_samples` samples, batch i from fold_in(rng, i)."""
    logits, features = [], []
    num_batches = math.ceil(self.num_samples / self.batch_size)
    for i in range(num_batches):
      logging.info("Sample metrics: sampling batch %d/%d (%d images each)", i + 1, num_batches,
                   self.batch_size)
      images = self.sample_fn(state, jax.random.fold_in(rng, i))
      if isinstance(images, dict):
        images = images["samples"]
      logits_B, features_B = jax.device_get(self.extractor.apply(images))
      keep = min(self.batch_size, self.num_samples - i * self.batch_size)
      logits.append(logits_B[:keep]), features.append(features_B[:keep])
    return np.concatenate(logits), np.concatenate(features)

  def __call__(self, state) -> dict[str, float]:
    cfg = self.exp.config.eval
    rng = jax.random.fold_in(self.exp.base_rng, 0x5A3E)   # fixed: comparable across steps
    logits, features = self.features_of_samples(state, rng)
    metrics = compare_features(self.reference, logits, features,
                               kid_subsets=cfg.get("kid_subsets", 100),
                               coverage_min_share=cfg.get("coverage_min_share", 0.05),
                               seed=self.exp.config.seed)
    out = {f"{self.prefix}{name}_{self.tag}": value for name, value in metrics.items()}
    # The classifier on the real reference images, for scale: its accuracy and confidence.
    ref = self.reference
    ref_tag = f"{self.extractor.name}_{self.split}"
    out[f"eval/ref/clf_accuracy_{ref_tag}"] = float(
        np.mean(np.argmax(ref["logits"], axis=1) == ref["labels"]))
    out[f"eval/ref/clf_confidence_{ref_tag}"] = class_scores(ref["logits"])["clf_confidence"]
    return out
