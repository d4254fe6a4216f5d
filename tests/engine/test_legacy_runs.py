"""Runs written by gen_jax before configs carried a version still work under today's code.

tests/fixtures/legacy_runs/<name>/ holds each run's config.json (version 1: no `version`,
a GAN's class count still under gan.num_classes), run_status.json and its newest
checkpoint (step 4) where this file uses it (ddpm, dcgan_cond, vae, gpt), trained by
`launch.py --config=configs/<family>.py:smoke` on mnist_5k or, for gpt (and lstm), on the
tiny_shakespeare text of conftest's `python_source_text()`. For each, copied to a
temporary workdir (its data_dir pointed at this session's prepared data):
`load_run(...).sample` and `--mode=eval` read the saved config through `migrate`, and
training with today's config file resumes from the checkpoint without a config-mismatch
error (one more compiled call; the conditional GAN only restores).
"""
import json
import os
import shutil

import numpy as np
import pytest
from smoke import FIXTURES, load_config, train_losses

import gen_jax
from gen_jax.configs import migration
from gen_jax.engine import modes, train
from gen_jax.engine import workdir as workdir_lib

LEGACY = os.path.join(FIXTURES, "legacy_runs")
# name: (config file, variant, its checkpoint's step, text data?)
# One run per family whose state differs in kind: the U-Net, the conditional GAN (whose class
# count moved to model.num_classes), the VAE and the GPT. The other fixtures keep only their
# config.json, which tests/configs/test_migration.py migrates.
RUNS = {"ddpm": ("ddpm", "smoke", 4, False),
        "dcgan_cond": ("dcgan", "smoke,conditional", 4, False),
        "vae": ("vae", "smoke", 4, False),
        "gpt": ("gpt", "smoke", 4, True)}


def legacy_workdir(name: str, tmp_path, data_dir: str) -> str:
  """A copy of the legacy run whose config.json (still version 1) reads `data_dir`."""
  workdir = str(tmp_path / name)
  shutil.copytree(os.path.join(LEGACY, name), workdir)
  path = os.path.join(workdir, "config.json")
  with open(path) as f:
    saved = json.load(f)
  assert "version" not in saved
  saved["data"]["data_dir"] = data_dir
  with open(path, "w") as f:
    json.dump(saved, f, indent=2)
  return workdir


@pytest.mark.parametrize("name", sorted(RUNS))
def test_a_legacy_run_samples_evaluates_and_resumes(name, tmp_path, request):
  family, variant, step, text = RUNS[name]
  data_dir = request.getfixturevalue("text_data_dir" if text else "data_dir")
  workdir = legacy_workdir(name, tmp_path, data_dir)

  # Sampling with the saved (migrated) config and the legacy checkpoint.
  run = gen_jax.load_run(workdir)
  assert (run.step, run.config.version) == (step, migration.CONFIG_VERSION)
  samples = run.sample(2, seed=1)
  if text:
    assert len(samples) == 2 and all(isinstance(s, str) and s for s in samples)
  else:
    assert samples.dtype == np.uint8 and samples.shape == (2, 28, 28, 1)
    assert len(np.unique(samples)) > 2   # drawn images, not a constant
  if name.endswith("_cond"):   # the class count survived the move to model.num_classes
    assert run.experiment().method.num_classes == 10

  # --mode=eval: the saved config through launch.py's reading path.
  metrics = modes.evaluate(workdir_lib.reading_config(workdir, {}), workdir)
  assert metrics and all(np.isfinite(v) for v in metrics.values()), metrics
  assert os.path.exists(os.path.join(workdir, "eval", f"step_{step}.json"))

  # Resume with today's config file: one more compiled call past the checkpoint (without
  # the periodic eval and sample, checked above; both fields may change on resume). A
  # conditional run differs from its family's unconditional one only in the class count, so
  # to keep the file's compiles to one train step per family it resumes to its own last step:
  # the config check and the restore of the legacy checkpoint, no update.
  config = load_config(family, variant, **{"data.data_dir": data_dir, "eval.every": 0,
                                           "train.sample_every": 0})
  K = 0 if name.endswith("_cond") else config.train.steps_per_call
  config.train.num_steps = step + K
  train.train_and_evaluate(config, workdir)   # no ConfigMismatchError
  with open(os.path.join(workdir, "config.json")) as f:
    assert json.load(f)["version"] == migration.CONFIG_VERSION
  assert workdir_lib.read_status(workdir)["status"] == "done"
  assert gen_jax.load_run(workdir).step == step + K
  if K:
    losses = train_losses(workdir)
    assert max(losses) == step + K and min(losses) > step, losses   # continued, not restarted
