"""`migrate` brings a saved config of any older version to today's fields (no JAX compile).

A version-1 config is one written before configs carried a version: the legacy runs in
tests/fixtures/legacy_runs (written by gen_jax before versions existed) and hand-trimmed
ones that lack fields added over time.
"""
import copy
import json
import os

import pytest
from smoke import FIXTURES

from gen_jax.configs import (
  autoencoder,
  classifier,
  dcgan,
  ddpm,
  dit,
  gpt,
  lstm,
  migration,
  saved_run,
  vae,
)
from gen_jax.engine import workdir as workdir_lib

LEGACY = os.path.join(FIXTURES, "legacy_runs")
# Each legacy run and today's config file and variant it was trained with.
LEGACY_RUNS = {"ddpm": (ddpm, "smoke"), "ddpm_cond": (ddpm, "smoke,conditional"),
               "dcgan": (dcgan, "smoke"), "dcgan_cond": (dcgan, "smoke,conditional"),
               "vae": (vae, "smoke"), "classifier": (classifier, "smoke"),
               "gpt": (gpt, "smoke"), "lstm": (lstm, "smoke")}
FAMILIES = {"ddpm": ddpm, "dcgan": dcgan, "vae": vae, "classifier": classifier, "gpt": gpt,
            "lstm": lstm, "autoencoder": autoencoder}


def legacy_config(name: str) -> dict:
  with open(os.path.join(LEGACY, name, "config.json")) as f:
    return json.load(f)


def today(module, arg="smoke") -> dict:
  return json.loads(module.get_config(arg).to_json_best_effort())


def fields(tree: dict) -> set[str]:
  return set(workdir_lib.flatten(tree))


def drop(tree: dict, *names: str) -> dict:
  """`tree` without the dotted fields `names` (a version-1 config saved before they existed)."""
  tree = copy.deepcopy(tree)
  for name in names:
    *groups, leaf = name.split(".")
    node = tree
    for group in groups:
      node = node[group]
    del node[leaf]
  return tree


@pytest.mark.parametrize("name", sorted(LEGACY_RUNS))
def test_a_legacy_config_becomes_todays_config(name):
  saved = legacy_config(name)
  assert "version" not in saved   # written before configs had versions: version 1
  module, arg = LEGACY_RUNS[name]
  migrated = migration.migrate(saved)
  expected = today(module, arg)
  expected["data"]["data_dir"] = saved["data"]["data_dir"]   # where the text runs' data was
  assert migrated == expected
  assert migration.migrate(migrated) == migrated
  assert "version" not in saved   # the input is left as it was


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_a_version_1_config_gets_every_field_of_todays_config(family):
  current = today(FAMILIES[family])
  old = {k: v for k, v in current.items() if k in ("method", "seed", "train", "model")}
  old["train"] = {"lr": 0.5, "num_steps": 7, "batch_size": 8}   # a saved run's own values
  migrated = migration.migrate(old)
  assert fields(migrated) == fields(current)
  assert migrated["version"] == migration.CONFIG_VERSION
  assert (migrated["train"]["lr"], migrated["train"]["num_steps"]) == (0.5, 7)   # kept
  assert migration.migrate(migrated) == migrated


def test_fields_missing_from_version_1_mean_the_old_behaviour():
  gpt_run = migration.migrate(drop(today(gpt, None), "version", "model.gelu",
                                   "train.steps_per_call", "train.sample_every"))
  assert gpt_run["model"]["gelu"] == "tanh"          # before model.gelu: GPT-2's tanh GELU
  assert gpt_run["train"]["steps_per_call"] == 1     # one update per call
  assert gpt_run["train"]["sample_every"] == 0       # no periodic samples
  ddpm_run = migration.migrate(drop(today(ddpm, None), "version", "eval.bpd_num_images",
                                    "eval.sample_metrics", "eval.checkpoint_from", "inpaint"))
  assert ddpm_run["eval"]["bpd_num_images"] == 0 and ddpm_run["eval"]["sample_metrics"] is False
  assert ddpm_run["eval"]["checkpoint_from"] == ""
  assert ddpm_run["inpaint"] == today(ddpm, None)["inpaint"]   # today's defaults
  gan_run = migration.migrate(drop(today(dcgan, None), "version", "sample.batch_norm"))
  assert gan_run["sample"]["batch_norm"] == "running"   # the running averages, as then
  # A field the version-1 config has keeps its value, even where today's default differs.
  kept = migration.migrate(drop(today(gpt, None), "version"))
  assert kept["model"]["gelu"] == "exact"


def test_a_version_2_gan_config_gains_spectral_norm_and_dequantization_switched_off():
  current = today(dcgan, None)
  saved = {**drop(current, "gan.d_spectral_norm", "data.dequantize"), "version": 2}
  migrated = migration.migrate(saved)
  assert migrated == current
  assert (migrated["gan"]["d_spectral_norm"], migrated["data"]["dequantize"]) == (False, "none")
  assert migration.migrate(drop(today(vae, None), "version")) == today(vae, None)


def test_a_gans_class_count_moves_to_model_num_classes():
  saved = legacy_config("dcgan_cond")
  assert saved["gan"]["num_classes"] == 10 and "model" not in saved
  migrated = migration.migrate(saved)
  assert migrated["model"] == {"num_classes": 10} and "num_classes" not in migrated["gan"]
  assert migration.migrate(drop(legacy_config("dcgan"), "gan.num_classes"))["model"] == {
      "num_classes": 0}   # a GAN run from before class conditioning


def test_a_future_version_is_refused_with_one_clear_message(tmp_path):
  future = {**today(vae), "version": migration.CONFIG_VERSION + 1}
  newer = migration.CONFIG_VERSION + 1
  with pytest.raises(migration.ConfigVersionError, match=rf"version {newer}, written by a newer"):
    migration.migrate(future)
  (tmp_path / "config.json").write_text(json.dumps(future))
  with pytest.raises(migration.ConfigVersionError, match=str(tmp_path / "config.json")):
    workdir_lib.load_saved_config(tmp_path)
  with pytest.raises(ValueError, match="not a gen_jax run config"):
    migration.migrate({"train": {"num_steps": 3}})


def test_every_reader_of_a_saved_config_gets_it_migrated(tmp_path):
  (tmp_path / "config.json").write_text(json.dumps(legacy_config("dcgan_cond")))
  for config in (workdir_lib.load_saved_config(tmp_path), saved_run.get_config(str(tmp_path)),
                 workdir_lib.reading_config(tmp_path, {"sample.label": 3})):
    assert config.version == migration.CONFIG_VERSION and config.model.num_classes == 10
  assert workdir_lib.reading_config(tmp_path, {"sample.label": 3}).sample.label == 3
  assert workdir_lib.load_saved_config(tmp_path / "nothing") is None


def test_resuming_a_legacy_run_with_todays_config_finds_no_difference(tmp_path):
  (tmp_path / "config.json").write_text(json.dumps(legacy_config("dcgan_cond")))
  (tmp_path / "checkpoints" / "4").mkdir(parents=True)
  config = dcgan.get_config("smoke,conditional")
  assert workdir_lib.config_changes(workdir_lib.load_saved_config(tmp_path), config) == []
  workdir_lib.claim(config, tmp_path, start_step=4)   # no ConfigMismatchError
  # Today's class count differing from the saved run's is a real difference.
  config.model.num_classes = 5
  with pytest.raises(workdir_lib.ConfigMismatchError, match="model.num_classes: 10 -> 5"):
    workdir_lib.claim(config, tmp_path, start_step=4)


def test_a_version_2_config_saved_before_a_new_field_gets_its_default():
  # A GAN run saved at version 2 before the RpGAN fields existed: they take today's
  # defaults, which reproduce what the run did (loss and arch unchanged).
  current = today(dcgan)
  old = drop(current, "gan.gamma", "gan.gamma_final_ratio", "gan.ema_halflife_steps",
             "gan.b2_final", "gan.r3gan")
  old["version"] = 2
  assert migration.migrate(old) == current


def test_a_saved_dit_run_gains_no_unet_fields_and_resumes_without_a_difference(tmp_path):
  # A diffusion run's family defaults follow its network: a DiT's are configs/dit.py's, so
  # loading its config adds none of the U-Net's fields (model.ch, dropout, ...).
  config = dit.get_config("smoke")
  assert migration.migrate(today(dit)) == today(dit)
  (tmp_path / "config.json").write_text(config.to_json_best_effort())
  (tmp_path / "checkpoints" / "4").mkdir(parents=True)
  saved = workdir_lib.load_saved_config(tmp_path)
  assert "ch" not in saved.model and "dropout" not in saved.model
  assert workdir_lib.config_changes(saved, config) == []
  workdir_lib.claim(config, tmp_path, start_step=4)   # no ConfigMismatchError
