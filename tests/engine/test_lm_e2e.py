"""GPT and LSTM language models end to end through the functions `launch.py` calls: train
on a prepared text dataset, checkpoint, resume, evaluate (loss, perplexity, bits/char),
sample text; the launcher's `--mode=sample` prints a continuation of a prompt."""
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
from smoke import REPO_ROOT, load_config, run_on_fake_devices, train_losses

import gen_jax
from gen_jax import data
from gen_jax.engine import modes, train
from gen_jax.engine.outputs import read_metrics


def lm_config(text_data_dir, name="gpt", arg="smoke", **overrides):
  # A fixed cosine horizon, so a 4-step run extended to 6 has the 6-step run's schedule.
  return load_config(name, arg, **{"data.data_dir": text_data_dir, "train.decay_steps": 6,
                                   **overrides})


@pytest.fixture(scope="module")
def runs(tmp_path_factory, text_data_dir):
  """Run A: 4 steps, then rerun to 6 (resume). Run B: 6 steps uninterrupted."""
  root = tmp_path_factory.mktemp("gpt_runs")
  a, b = str(root / "a"), str(root / "b")
  train.train_and_evaluate(lm_config(text_data_dir), a)
  after_first = sorted(os.listdir(os.path.join(a, "checkpoints")))
  train.train_and_evaluate(lm_config(text_data_dir, **{"train.num_steps": 6}), a)
  train.train_and_evaluate(lm_config(text_data_dir, **{"train.num_steps": 6}), b)
  return {"a": a, "b": b, "after_first": after_first}


def test_first_run_checkpoints_evaluates_and_writes_text_samples(runs, text_data_dir):
  assert [c for c in runs["after_first"] if c.isdigit()] == ["2", "4"]
  evals = [r for r in read_metrics(runs["a"]) if "eval/raw/loss" in r]
  assert [r["step"] for r in evals] == [4, 6]
  for r in evals:   # no EMA in the LM configs: raw weights only, perplexity from the mean loss
    assert "eval/ema/loss" not in r
    assert r["eval/raw/perplexity"] == pytest.approx(math.exp(r["eval/raw/loss"]))
    assert r["eval/raw/bits_per_char"] == pytest.approx(r["eval/raw/loss"] / math.log(2))
  # Untrained on Python source (~90 characters): close to log(vocab) nats per character.
  vocab = data.text_tokenizer(lm_config(text_data_dir).data).vocab_size
  assert abs(evals[0]["eval/raw/loss"] - math.log(vocab)) < 0.5
  text = open(os.path.join(runs["a"], "samples", "step_4.txt")).read()
  samples = text.split("-" * 40 + "\n")[:-1]
  assert len(samples) == 2   # sample.num
  for s in samples:          # prompt "\n" + 24 new characters, then the separator's newline
    assert s.startswith("\n") and len(s) == 1 + 24 + 1


def test_train_rows_report_tokens_per_second(runs):
  rows = [r for r in read_metrics(runs["b"]) if "train/tokens_per_sec" in r]
  assert rows
  for r in rows:   # smoke: batch 8 windows of 16 tokens
    assert r["train/tokens_per_sec"] == pytest.approx(r["train/steps_per_sec"] * 8 * 16)


def test_resumed_run_equals_uninterrupted_run(runs):
  resumed, straight = train_losses(runs["a"]), train_losses(runs["b"])
  assert sorted(resumed) == sorted(straight) == [2, 4, 6]
  np.testing.assert_allclose([resumed[s] for s in (2, 4, 6)], [straight[s] for s in (2, 4, 6)],
                             rtol=1e-6)


def test_eval_mode_writes_json_and_full_split_loss(runs, text_data_dir):
  # num_batches=0: every window of the validation split once, in order.
  config = lm_config(text_data_dir, **{"eval.num_batches": 0})
  metrics = modes.evaluate(config, runs["b"])
  saved = json.load(open(os.path.join(runs["b"], "eval", "step_6.json")))
  assert saved["step"] == 6
  assert saved["eval/raw/loss"] == pytest.approx(metrics["eval/raw/loss"])
  assert saved["eval/raw/perplexity"] == pytest.approx(math.exp(saved["eval/raw/loss"]))


def test_sample_mode_continues_the_prompt(runs, text_data_dir):
  config = lm_config(text_data_dir, **{"sample.prompt": "def ", "sample.temperature": 0.0})
  path = modes.sample(config, runs["b"])
  assert os.path.basename(path) == "sample_step_6_greedy_ema_seed0.txt"
  samples = open(path).read().split("-" * 40 + "\n")[:-1]
  assert len(samples) == 2 and samples[0] == samples[1]   # greedy: identical
  assert samples[0].startswith("def ") and len(samples[0]) == 4 + 24 + 1


def test_python_api_generates_from_a_prompt(runs):
  run = gen_jax.load_run(runs["b"])
  text = run.generate("def ", max_new_tokens=24, temperature=0.0)
  assert isinstance(text, str) and text.startswith("def ") and len(text) == 4 + 24
  assert run.generate("def ", max_new_tokens=24, num=2, temperature=0.0) == [text, text]
  sampled = run.sample(3, seed=0)   # the run's own prompt ("\n") and length
  assert len(sampled) == 3 and all(s.startswith("\n") and len(s) == 1 + 24 for s in sampled)


def test_lstm_trains_resumes_and_samples(text_data_dir, tmp_path):
  workdir = str(tmp_path / "lstm")
  train.train_and_evaluate(lm_config(text_data_dir, "lstm"), workdir)
  train.train_and_evaluate(lm_config(text_data_dir, "lstm", **{"train.num_steps": 6}), workdir)
  assert sorted(train_losses(workdir)) == [2, 4, 6]
  assert os.path.exists(os.path.join(workdir, "samples", "step_6.txt"))
  evals = [r for r in read_metrics(workdir) if "eval/raw/loss" in r]
  assert [r["step"] for r in evals] == [4, 6]
  assert all(np.isfinite(r["eval/raw/loss"]) for r in evals)


EIGHT_DEVICES = """
overrides = {{"data.data_dir": {data_dir!r}, "train.num_steps": 6}}
train.train_and_evaluate(load_config("gpt", "smoke", **overrides), {workdir!r})
print("RESULT" + json.dumps(train_losses({workdir!r})))
"""


def test_eight_devices_match_one_device(runs, text_data_dir, tmp_path):
  workdir = str(tmp_path / "run8")
  result = run_on_fake_devices(EIGHT_DEVICES.format(data_dir=text_data_dir,
                                                    workdir=workdir))
  eight = {int(k): v for k, v in result.items()}
  one = train_losses(runs["b"])
  np.testing.assert_allclose([eight[s] for s in (2, 4, 6)], [one[s] for s in (2, 4, 6)],
                             rtol=1e-5)


def test_launcher_sample_mode_prints_the_continuation(runs, text_data_dir):
  cmd = [sys.executable, os.path.join(REPO_ROOT, "launch.py"),
         f"--config={os.path.join(REPO_ROOT, 'configs', 'gpt.py')}:smoke",
         f"--workdir={runs['b']}", "--mode=sample", f"--config.data.data_dir={text_data_dir}",
         "--config.sample.prompt=class ", "--config.sample.seed=3"]
  env = {**os.environ, "JAX_PLATFORMS": "cpu"}
  out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
  assert out.returncode == 0, out.stderr[-3000:]
  printed = out.stdout.split("-" * 40 + "\n")
  assert printed[0].startswith("class ") and len(printed[0]) == 6 + 24 + 1
  path = os.path.join(runs["b"], "samples", "sample_step_6_t0.8_ema_seed3.txt")
  assert out.stdout.startswith(open(path).read())   # then the path of the file
