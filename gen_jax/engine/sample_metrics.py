"""Sample quality of an image generator, on one of two feature extractors
(`eval.feature_extractor`):

'classifier' (default): a classifier trained by this engine, in `eval.classifier_workdir`
(`python launch.py --config=configs/classifier.py`), for digits:
  FID, KID (mean, std over subsets), precision/recall     (gen_jax/evaluate/sample_quality.py)
  classifier confidence, class coverage and entropy       (gen_jax/evaluate/classifier_scores.py)
  label agreement, for a class-conditional sampler (one whose `method.sample_labels` gives
  the classes it draws): the fraction classified as their class (classifier_scores.py)

'inception': the FID Inception-v3 with pytorch-fid's weights file (`eval.inception_weights`,
gen_jax/evaluate/inception.py), the metrics that papers report:
  FID, KID, Inception score (mean, std over 10 splits)    (gen_jax/evaluate/inception_metrics.py)

`eval.num_samples` generated images are compared with the whole `eval.reference_split` of the
generator's dataset (or, for Inception FID, with the `mu`/`sigma` of
`eval.inception_reference_stats`). Metric names carry the weights, the extractor, the sample
count and the reference, so numbers from different settings are never compared by accident:

  eval/ema/fid_mnist5kclf_1k_test      (EMA weights; classifier trained on mnist_5k; 1,000
                                        samples; against the test split)
  eval/ema/fid_inception_50k_train     (EMA weights; FID Inception; 50,000 samples; against
                                        the train split); eval/ema/is_inception_50k

Samples are generated `eval.sample_batch_size` at a time by one compiled sample function
(each batch with its own `fold_in` key, output replicated over the mesh), and only their
features stay on the host, so memory is bounded by one batch. The reference features of a
split are computed once per classifier checkpoint and cached next to its checkpoints,
in `<classifier_workdir>/reference_stats/<dataset>_<split>_step<N>.npz`; the Inception
ones once per weights file, in
`<eval.inception_cache_dir>/reference_stats/<dataset>_<split>_<sha256[:16]>.npz`.
"""
from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable

import jax
import ml_collections
import numpy as np
from absl import logging
from etils import epath

from gen_jax import data
from gen_jax.engine import checkpoint as ckpt_lib
from gen_jax.engine import sharding
from gen_jax.engine import workdir as workdir_lib
from gen_jax.engine.experiment import Experiment, build_experiment
from gen_jax.engine.outputs import is_main_process
from gen_jax.engine.preemption import Interrupted, StopRequest
from gen_jax.engine.sample_dump import BatchCache
from gen_jax.engine.samples import make_sample_fn
from gen_jax.evaluate import inception, inception_metrics, sample_quality
from gen_jax.evaluate.classifier_scores import class_scores, label_agreement
from gen_jax.methods.base import image_shape_of

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

  @property
  def identity(self) -> str:
    """Which weights: the classifier run and its checkpoint step."""
    return f"{self.workdir}@{self.step}"


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
  config = workdir_lib.load_saved_config(workdir) if step is not None else None
  if step is None or config is None:
    ckpt.close()
    raise FileNotFoundError(
        f"No trained classifier in {workdir} (eval.classifier_workdir): the sample-quality "
        "metrics use its features. Train it first (a few minutes on a CPU):\n"
        f"  python launch.py --config=configs/classifier.py --workdir={workdir}\n"
        "or turn the metrics off with --config.eval.sample_metrics=False.")
  exp = build_experiment(config)
  if not exp.method.can_classify:
    raise ValueError(f"{workdir} holds a {config.method!r} run, not a classifier "
                     "(configs/classifier.py).")
  state = ckpt.restore(step, exp.abstract_state, exp.state_sharding)
  ckpt.close()
  params = state.ema_params
  apply = jax.jit(lambda images: exp.method.classify(params, images),
                  out_shardings=exp.replicated)
  logging.info("Feature extractor: classifier %s step %d", workdir, step)
  return FeatureExtractor(name=extractor_name(config.data.dataset), workdir=workdir, step=step,
                          image_shape=image_shape_of(exp.spec), apply=apply, exp=exp)


def _reference_batch_size(num_images: int, num_devices: int, largest: int = 500) -> int:
  """The largest batch <= `largest` that divides the split and the device count (so no
  image is dropped); `largest` rounded to the devices if none does."""
  for b in range(min(largest, num_images), 0, -1):
    if num_images % b == 0 and b % num_devices == 0:
      return b
  return max(num_devices, largest - largest % num_devices)


def _embed_split(apply: Callable, exp: Experiment, data_config: ml_collections.ConfigDict,
                 split: str) -> dict[str, np.ndarray]:
  """`apply(images) -> (logits, features)` over every image of a split, in order.

  Returns:
    {'logits': [N, K], 'features': [N, D], 'labels': [N]} on the host.
  """
  num_images = data.num_examples(data_config, split)
  batch_size = _reference_batch_size(num_images, exp.mesh.size)
  loader = data.make_loader(data_config, split=split, global_batch_size=batch_size, seed=0,
                            shuffle=False, num_epochs=1)
  replicate = jax.jit(lambda x: x, out_shardings=exp.replicated)
  logits, features, labels = [], [], []
  for local in loader:
    batch = sharding.global_batch(local, exp.batch_sharding)
    logits_B, features_B = jax.device_get(apply(batch["image"]))
    logits.append(logits_B)
    features.append(features_B)
    labels.append(jax.device_get(replicate(batch["label"])))
  return {"logits": np.concatenate(logits), "features": np.concatenate(features),
          "labels": np.concatenate(labels)}


def _save_npz_atomic(path: epath.Path, stats: dict[str, np.ndarray]) -> None:
  """Complete files only: a killed run leaves no half-written cache."""
  if is_main_process():
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("wb") as f:
      # numpy's stub reads the ** arrays as its allow_pickle keyword.
      np.savez(f, **stats)  # pyright: ignore[reportArgumentType]
    tmp.rename(path)


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
  stats = _embed_split(extractor.apply, extractor.exp, data_config, split)
  stats["mu"], stats["sigma"] = sample_quality.feature_statistics(stats["features"])
  logging.info("Reference features of %s[%s]: %d images -> %s", data_config.dataset, split,
               len(stats["features"]), path)
  _save_npz_atomic(path, stats)
  return stats


# ------------------------------------------------------------------ FID Inception


@dataclasses.dataclass(frozen=True)
class InceptionExtractor:
  """The FID Inception network with the weights file's variables, on device:
  `apply(images in [-1, 1]) -> (logits [B, 1008], pool features [B, 2048])`."""
  sha256: str
  apply: Callable[[jax.Array], tuple[jax.Array, jax.Array]]

  @property
  def identity(self) -> str:
    """Which weights: the file's sha256."""
    return self.sha256


def load_inception(eval_cfg: ml_collections.ConfigDict, exp: Experiment) -> InceptionExtractor:
  """Reads `eval.inception_weights` (checked against `eval.inception_sha256`, converted and
  cached in `eval.inception_cache_dir`) and compiles nothing yet.

  Raises:
    inception_weights.InceptionWeightsMissing: no file; the message says where to get it.
  """
  variables, sha = inception.load_variables(
      eval_cfg.inception_weights, eval_cfg.inception_sha256, eval_cfg.inception_cache_dir,
      field="eval.inception_weights")
  pool_and_logits = inception.make_apply(variables, precision=eval_cfg.inception_precision,
                                         chunk=eval_cfg.inception_batch_size,
                                         out_sharding=exp.replicated)
  logging.info("Feature extractor: FID Inception %s (sha256 %s)", eval_cfg.inception_weights,
               sha[:16])

  def apply(images):
    pool, logits = pool_and_logits(images)
    return logits, pool

  return InceptionExtractor(sha256=sha, apply=apply)


def inception_reference(extractor: InceptionExtractor, exp: Experiment) -> dict[str, np.ndarray]:
  """The reference of the Inception metrics: `mu`/`sigma` from `eval.inception_reference_stats`
  when set (then no features: no KID), else the pool features of every image of
  `eval.reference_split`, with `mu`, `sigma` and the split's own Inception score `is_mean`,
  `is_std`, cached per dataset, split and weights digest."""
  cfg = exp.config.eval
  if cfg.inception_reference_stats:
    mu, sigma = inception_metrics.load_reference_stats(cfg.inception_reference_stats)
    return {"mu": mu, "sigma": sigma}
  split = re.sub(r"[^A-Za-z0-9_.-]", "_", cfg.reference_split)
  path = (epath.Path(cfg.inception_cache_dir).expanduser() / "reference_stats"
          / f"{data.sample_reference(exp.config.data).dataset}_{split}_{extractor.sha256[:16]}.npz")
  if path.exists():
    with path.open("rb") as f:
      return dict(np.load(f))
  embedded = _embed_split(extractor.apply, exp, data.sample_reference(exp.config.data),
                          cfg.reference_split)
  features = embedded["features"].astype(np.float32)
  mu, sigma = sample_quality.feature_statistics(features)
  is_mean, is_std = inception_metrics.inception_score(embedded["logits"], cfg.is_splits)
  stats = {"features": features, "mu": mu, "sigma": sigma, "is_mean": np.float64(is_mean),
           "is_std": np.float64(is_std)}
  logging.info("Inception reference of %s[%s]: %d images, IS %.3f -> %s",
               exp.config.data.dataset, cfg.reference_split, len(features), is_mean, path)
  _save_npz_atomic(path, stats)
  return stats


def compare_inception(ref: dict[str, np.ndarray], logits_NxK: np.ndarray,
                      features_NxD: np.ndarray, *, kid_subsets: int = 100, is_splits: int = 10,
                      seed: int = 0) -> dict[str, float]:
  """FID (and KID when `ref` has features) against `ref`; the Inception score of the samples.

  Returns unprefixed names: fid, [kid, kid_std,] is, is_std.
  """
  mu, sigma = sample_quality.feature_statistics(features_NxD)
  out = {"fid": sample_quality.frechet_distance(mu, sigma, ref["mu"], ref["sigma"])}
  if "features" in ref:
    out["kid"], out["kid_std"] = sample_quality.kernel_inception_distance(
        ref["features"], features_NxD, num_subsets=kid_subsets, subset_size=KID_SUBSET_SIZE,
        rng=seed)
  out["is"], out["is_std"] = inception_metrics.inception_score(logits_NxK, is_splits)
  return out


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
  """Loads the feature extractor and the reference statistics once; `__call__(state)` samples
  `num_samples` images from `state` and returns the named metrics.

  Construct it before training or sampling (it fails fast when the classifier or the
  Inception weights are missing) and call it as often as needed: the sample function
  compiles once.
  """

  def __init__(self, exp: Experiment, num_samples: int | None = None):
    cfg = exp.config.eval
    self.exp = exp
    self.num_samples = int(num_samples or cfg.num_samples)
    self.batch_size = min(int(cfg.sample_batch_size), self.num_samples)
    if self.num_samples < 2 or self.batch_size < 1:
      raise ValueError(f"eval.num_samples={self.num_samples} must be >= 2 and "
                       f"eval.sample_batch_size={cfg.sample_batch_size} >= 1.")
    self.kind = cfg.feature_extractor
    self.split = cfg.reference_split
    if self.kind == "inception":
      is_splits = cfg.is_splits
      if self.num_samples < is_splits:
        raise ValueError(f"eval.num_samples={self.num_samples} < eval.is_splits={is_splits}.")
      self.extractor = load_inception(cfg, exp)    # a missing file stops here, before sampling
      self.reference = inception_reference(self.extractor, exp)
      reference = (self.split if not cfg.inception_reference_stats else re.sub(
          r"[^A-Za-z0-9]", "", epath.Path(cfg.inception_reference_stats).stem))
      self.tag = f"inception_{count_tag(self.num_samples)}_{reference}"
    elif self.kind == "classifier":
      self.extractor = load_classifier(cfg.classifier_workdir)
      shape = exp.spec.sample_shape   # a latents run's decoded images
      if shape != self.extractor.image_shape:
        raise ValueError(f"The classifier in {cfg.classifier_workdir} takes images of shape "
                         f"{self.extractor.image_shape}, the generator makes {shape}: train a "
                         "classifier on this dataset (configs/classifier.py:dataset=...).")
      self.reference = reference_statistics(self.extractor, data.sample_reference(exp.config.data),
                                            self.split)
      self.tag = f"{self.extractor.name}_{count_tag(self.num_samples)}_{self.split}"
    else:
      raise ValueError(f"eval.feature_extractor={self.kind!r}; expected 'classifier' or "
                       "'inception'.")
    self.sample_fn = make_sample_fn(exp, self.batch_size)
    weights = "ema" if exp.config.sample.use_ema else "raw"
    self.prefix = f"eval/{weights}/"

  def features_of_samples(self, state, rng: jax.Array, cache: BatchCache | None = None,
                          stop: StopRequest | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(logits [N, K], features [N, D]) of `num_samples` samples, batch i from fold_in(rng, i).

    With `cache`, finished batches are read from it and new ones written to it; `stop`
    (SIGTERM/SIGINT) ends the loop between batches with `Interrupted`, the work kept.
    """
    logits, features = [], []
    num_batches = math.ceil(self.num_samples / self.batch_size)
    for i in range(num_batches):
      done = cache.get(i) if cache is not None else None
      if done is None:
        if stop is not None and stop.requested:
          raise Interrupted(f"Evaluation stopped on request after {i} of {num_batches} sample "
                            f"batches, kept in {cache.folder if cache else 'memory (lost)'}; "
                            "rerun the same command to continue.")
        logging.info("Sample metrics: sampling batch %d/%d (%d images each)", i + 1,
                     num_batches, self.batch_size)
        images = self.sample_fn(state, jax.random.fold_in(rng, i)).images
        logits_B, features_B = jax.device_get(self.extractor.apply(images))
        keep = min(self.batch_size, self.num_samples - i * self.batch_size)
        done = {"logits": logits_B[:keep], "features": features_B[:keep]}
        if cache is not None:
          cache.put(i, **done)
      logits.append(done["logits"])
      features.append(done["features"])
    return np.concatenate(logits), np.concatenate(features)

  def sample_labels(self) -> np.ndarray | None:
    """The classes the `num_samples` samples are drawn for (`method.sample_labels` of each
    batch, in the order of `features_of_samples`), or None for an unconditional sampler."""
    per_batch = self.exp.method.sample_labels(self.batch_size)
    if per_batch is None:
      return None
    num_batches = math.ceil(self.num_samples / self.batch_size)
    return np.concatenate([np.asarray(per_batch)] * num_batches)[:self.num_samples]

  def cache_key(self, step: int) -> dict[str, object]:
    """What the sample batches of an evaluation of checkpoint `step` depend on."""
    return {"step": step, "tag": self.prefix + self.tag, "batch_size": self.batch_size,
            "sampler": self.exp.method.sample_tag, "seed": self.exp.config.seed,
            "extractor": self.extractor.identity}

  def __call__(self, state, cache: BatchCache | None = None,
               stop: StopRequest | None = None) -> dict[str, float]:
    cfg = self.exp.config.eval
    rng = jax.random.fold_in(self.exp.base_rng, 0x5A3E)   # fixed: comparable across steps
    logits, features = self.features_of_samples(state, rng, cache, stop)
    if self.kind == "inception":
      return self._inception_metrics(logits, features)
    metrics = compare_features(self.reference, logits, features,
                               kid_subsets=cfg.kid_subsets,
                               coverage_min_share=cfg.coverage_min_share,
                               seed=self.exp.config.seed)
    if (labels := self.sample_labels()) is not None:
      metrics["label_agreement"] = label_agreement(logits, labels)
    out = {f"{self.prefix}{name}_{self.tag}": value for name, value in metrics.items()}
    # The classifier on the real reference images, for scale: its accuracy and confidence.
    ref = self.reference
    assert isinstance(self.extractor, FeatureExtractor)   # kind 'classifier'
    ref_tag = f"{self.extractor.name}_{self.split}"
    out[f"eval/ref/clf_accuracy_{ref_tag}"] = float(
        np.mean(np.argmax(ref["logits"], axis=1) == ref["labels"]))
    out[f"eval/ref/clf_confidence_{ref_tag}"] = class_scores(ref["logits"])["clf_confidence"]
    return out

  def _inception_metrics(self, logits: np.ndarray, features: np.ndarray) -> dict[str, float]:
    cfg = self.exp.config.eval
    metrics = compare_inception(self.reference, logits, features,
                                kid_subsets=cfg.kid_subsets,
                                is_splits=cfg.is_splits, seed=self.exp.config.seed)
    count = count_tag(self.num_samples)
    out = {}
    for name, value in metrics.items():   # IS has no reference: is_inception_50k
      tag = f"inception_{count}" if name.startswith("is") else self.tag
      out[f"{self.prefix}{name}_{tag}"] = value
    if "is_mean" in self.reference:       # the real images' own score, for scale
      out[f"eval/ref/is_inception_{self.split}"] = float(self.reference["is_mean"])
    return out
