"""The classifier feature extractor and `--mode=eval`'s sample-quality and bits/dim metrics,
end to end on smoke configs: a smoke classifier, a smoke DCGAN (with periodic sample metrics
during training) and a smoke DDPM, evaluated against the mnist_5k test split.
"""
import json
import os

import numpy as np
import pytest
from smoke import load_config

from gen_jax.engine import checkpoint as ckpt_lib
from gen_jax.engine import modes, sample_metrics, train
from gen_jax.engine.experiment import build_experiment
from gen_jax.engine.outputs import read_metrics

TAG = "mnist5kclf_32_test"          # smoke: 32 samples against the test split
SAMPLE_METRICS = ("fid", "kid", "kid_std", "precision", "recall", "clf_confidence",
                  "class_coverage", "class_entropy")


def _with_metrics(family, data_dir, clf, **overrides):
  return load_config(family, **{"data.data_dir": data_dir, "eval.sample_metrics": True,
                                "eval.classifier_workdir": clf, **overrides})


@pytest.fixture(scope="module")
def runs(tmp_path_factory, data_dir):
  """A smoke classifier (8 steps); a smoke DCGAN trained with sample metrics every 2 steps;
  an untrained smoke DDPM saved as a step-0 checkpoint (the metrics do not care whether
  it was trained, and compiling the U-Net's gradient would dominate this module's time)."""
  root = tmp_path_factory.mktemp("sample_metrics")
  clf, ddpm, dcgan = (str(root / name) for name in ("clf", "ddpm", "dcgan"))
  train.train_and_evaluate(load_config("classifier", **{"data.data_dir": data_dir}), clf)
  train.train_and_evaluate(
      _with_metrics("dcgan", data_dir, clf, **{"eval.sample_metrics_every": 2}), dcgan)
  cache = os.path.join(clf, "reference_stats", "mnist_5k_test_step8.npz")
  cache_mtime = os.stat(cache).st_mtime_ns     # written while the DCGAN trained
  ckpt = ckpt_lib.Checkpointer(os.path.join(ddpm, "checkpoints"), async_save=False)
  ckpt.save(0, build_experiment(load_config("ddpm", **{"data.data_dir": data_dir})).init_state(),
            None)
  ckpt.close()
  ddpm_metrics = modes.evaluate(
      _with_metrics("ddpm", data_dir, clf, **{"eval.bpd_num_images": 16}), ddpm)
  dcgan_metrics = modes.evaluate(_with_metrics("dcgan", data_dir, clf), dcgan)
  return {"clf": clf, "ddpm": ddpm, "dcgan": dcgan, "cache": cache, "cache_mtime": cache_mtime,
          "ddpm_metrics": ddpm_metrics, "dcgan_metrics": dcgan_metrics}


def test_classifier_smoke_trains_with_sane_metrics(runs, data_dir):
  rows = read_metrics(runs["clf"])
  train_rows = [r for r in rows if "train/loss" in r]
  assert [r["step"] for r in train_rows] == list(range(1, 9))
  assert all(np.isfinite(r["train/loss"]) and 0 <= r["train/accuracy"] <= 1 for r in train_rows)
  final = [r for r in rows if "eval/ema/accuracy" in r][-1]
  assert final["step"] == 8
  for w in ("ema", "raw"):   # 10 classes: an untrained net is near log(10) = 2.30 nats
    assert 0 <= final[f"eval/{w}/accuracy"] <= 1 and 0 < final[f"eval/{w}/loss"] < 5
  config = load_config("classifier", **{"data.data_dir": data_dir})
  exp = build_experiment(config)
  assert not exp.method.can_sample   # the interface says so; the engine asks nothing else
  with pytest.raises(NotImplementedError, match="cannot sample"):
    exp.method.sample(None, None, 4)
  with pytest.raises(ValueError, match="nothing to sample"):
    modes.sample(config, runs["clf"])


def _check_sample_metrics(saved, metrics):
  for name in SAMPLE_METRICS:
    key = f"eval/ema/{name}_{TAG}"
    assert key in saved and saved[key] == pytest.approx(metrics[key]), key
  assert saved[f"eval/ema/fid_{TAG}"] >= 0
  assert 0 <= saved[f"eval/ema/precision_{TAG}"] <= 1 and 0 <= saved[f"eval/ema/recall_{TAG}"] <= 1
  assert 0.1 <= saved[f"eval/ema/clf_confidence_{TAG}"] <= 1
  assert 0 <= saved[f"eval/ema/class_coverage_{TAG}"] <= 10
  assert 0 <= saved[f"eval/ema/class_entropy_{TAG}"] <= np.log(10) + 1e-6
  assert 0 <= saved["eval/ref/clf_accuracy_mnist5kclf_test"] <= 1


def test_ddpm_eval_writes_sample_metrics_and_bits_per_dim(runs):
  saved = json.load(open(os.path.join(runs["ddpm"], "eval", "step_0.json")))
  _check_sample_metrics(saved, runs["ddpm_metrics"])
  terms = np.asarray(saved["eval/ema/bpd_terms"])
  assert terms.shape == (20,) and np.all(terms >= 0)     # smoke T = 20; KLs and -log p >= 0
  assert saved["eval/bpd_num_images"] == 16
  parts = (saved["eval/ema/bpd_prior"] + saved["eval/ema/bpd_decoder"]
           + saved["eval/ema/bpd_diffusion"])
  assert saved["eval/ema/bpd"] == pytest.approx(parts, rel=1e-5)
  assert saved["eval/ema/bpd_decoder"] == pytest.approx(terms[0], rel=1e-5)
  assert saved["eval/ema/bpd_diffusion"] == pytest.approx(terms[1:].sum(), rel=1e-5)
  assert 0 < saved["eval/ema/bpd"] < 20 and saved["eval/ema/bpd_stderr"] > 0


def test_sample_metrics_run_periodically_during_training(runs):
  steps = [r["step"] for r in read_metrics(runs["dcgan"]) if f"eval/ema/fid_{TAG}" in r]
  assert sorted(set(steps)) == [2, 4]   # (and step 4 again from --mode=eval)


def test_dcgan_eval_writes_sample_metrics(runs):
  saved = json.load(open(os.path.join(runs["dcgan"], "eval", "step_4.json")))
  _check_sample_metrics(saved, runs["dcgan_metrics"])
  assert "eval/ema/bpd" not in saved


def test_reference_statistics_are_computed_once_and_cached(runs, data_dir, monkeypatch):
  # Written once (while the DCGAN trained); the two evals afterwards did not rewrite it.
  assert os.stat(runs["cache"]).st_mtime_ns == runs["cache_mtime"]
  extractor = sample_metrics.load_classifier(runs["clf"])
  def no_reading(*args, **kwargs):
    raise AssertionError("the reference split was read again")
  monkeypatch.setattr(sample_metrics.data, "make_loader", no_reading)
  config = load_config("ddpm", **{"data.data_dir": data_dir})
  ref = sample_metrics.reference_statistics(extractor, config.data, "test")
  assert ref["features"].shape == (500, 16) and ref["labels"].shape == (500,)


def test_reference_split_against_itself_scores_perfectly(runs, data_dir):
  extractor = sample_metrics.load_classifier(runs["clf"])
  ref = sample_metrics.reference_statistics(
      extractor, load_config("ddpm", **{"data.data_dir": data_dir}).data, "test")
  m = sample_metrics.compare_features(ref, ref["logits"], ref["features"], kid_subsets=10)
  assert abs(m["fid"]) < 1e-6 * max(1.0, np.trace(ref["sigma"]))
  assert m["precision"] == 1.0 and m["recall"] == 1.0
  # Subsets of 500 of 500 are the whole set: the unbiased estimate is -2/m^2 sum_i k(x_i, x_i)
  # plus round-off, tiny against the kernel values (~1).
  assert abs(m["kid"]) < 1e-3


def test_missing_classifier_fails_with_the_command_to_run(runs, data_dir, tmp_path):
  config = _with_metrics("ddpm", data_dir, str(tmp_path / "no_classifier"))
  with pytest.raises(FileNotFoundError, match="python launch.py --config=configs/classifier.py"):
    modes.evaluate(config, runs["ddpm"])


def test_a_stopped_evaluation_keeps_its_finished_batches_and_the_rerun_draws_the_rest(
    runs, data_dir, tmp_path):
  import signal

  from gen_jax.engine.preemption import Interrupted, StopRequest
  from gen_jax.engine.sample_dump import BatchCache
  config = _with_metrics("dcgan", data_dir, runs["clf"], **{"eval.sample_batch_size": 8})
  exp = build_experiment(config)
  evaluator = sample_metrics.SampleQualityEvaluator(exp)      # 32 samples: 4 batches
  state, step = ckpt_lib.load_checkpoint(exp, runs["dcgan"], -1)
  draw, calls = evaluator.sample_fn, []

  def counted(state, rng, signal_at=None):
    calls.append(1)
    if len(calls) == signal_at:
      os.kill(os.getpid(), signal.SIGTERM)   # a preemption while batch 2 is sampled
    return draw(state, rng)

  cache = BatchCache(tmp_path / "batches", evaluator.cache_key(step))
  evaluator.sample_fn = lambda s, r: counted(s, r, signal_at=2)
  stop = StopRequest()
  with stop.installed(), pytest.raises(Interrupted, match="after 2 of 4"):
    evaluator(state, cache, stop)
  assert sorted(os.listdir(tmp_path / "batches")) == ["batch_00000.npz", "batch_00001.npz",
                                                     "key.json"]
  calls.clear()
  evaluator.sample_fn = counted
  resumed = evaluator(state, BatchCache(tmp_path / "batches", evaluator.cache_key(step)))
  assert len(calls) == 2                                      # batches 2 and 3 only
  assert resumed == evaluator(state)                          # as one uninterrupted pass
  # --mode=eval (in the fixture) removed its batches once the result was written.
  assert not os.path.exists(os.path.join(runs["dcgan"], "eval", "step_4_samples"))
