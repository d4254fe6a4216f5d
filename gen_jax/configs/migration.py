"""Saved configs of older gen_jax versions, brought to today's fields.

A run's `config.json` holds the config it was trained with, and carries its `version`
(`CONFIG_VERSION` when it was written; a file without one is version 1, written before
configs had versions). Everything that reads a saved config goes through
`load_saved_config`, which calls `migrate`: afterwards every field today's code reads is
there, with the value that reproduces what the run did (a field that did not exist yet
meant the old behaviour), renamed fields are under their new names, and `version` is
today's. The code then reads `config.x` directly everywhere.

A change that renames or removes a field, or adds one whose absence meant something other
than its default, raises `common.CONFIG_VERSION` and appends one step to `_STEPS`. A field
added with a default that reproduces what runs did before it existed (e.g.
`diffusion.process='ddpm'`) needs no new version: `migrate` gives every saved config, of
any version, the fields of today's family config it lacks (`_add_absent_fields`).
"""
from __future__ import annotations

import copy
import json
from collections.abc import Callable
from typing import Any

import ml_collections
from etils import epath  # workdirs may be cloud paths (gs://...)

from gen_jax.configs import autoencoder, classifier, common, dcgan, ddpm, dit, gpt, lstm, vae
from gen_jax.core.errors import UserError

CONFIG_VERSION = common.CONFIG_VERSION
CONFIG_FILE = "config.json"

# config.method (and for 'autoregressive', model.arch; for 'diffusion', a DiT's
# model.architecture) -> today's config file of the family.
_FAMILY_CONFIGS = {"diffusion": ddpm, "gan": dcgan, "vae": vae, "classifier": classifier,
                   "autoregressive": gpt, "autoencoder": autoencoder}
_ARCH_CONFIGS = {"gpt": gpt, "lstm": lstm}
_DIFFUSION_NETWORK_CONFIGS = {"dit": dit}   # other architectures: configs/ddpm.py

# What a version-1 config meant by leaving a field out, where that differs from today's
# default: the fallbacks of the code that read these fields before configs had versions
# (for every other field, the fallback was today's default, which fills it). A field applies
# to the families whose config has it.
_ABSENT_IN_VERSION_1 = {
    "train.steps_per_call": 1,          # one update per compiled call
    "train.sample_every": 0,            # no periodic samples
    "eval.sample_metrics": False,       # no sample-quality metrics
    "eval.sample_batch_size": 250,      # the batch of --mode=sample's dumps
    "eval.bpd_num_images": 0,           # diffusion: no bits/dim evaluation
    "sample.batch_norm": "running",     # GAN: samples used G's running BatchNorm averages
    "model.gelu": "tanh",               # GPT: GPT-2's tanh approximation of the GELU
}


class ConfigVersionError(UserError, ValueError):
  """A saved config written by a newer gen_jax than this one."""


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
  out = {}
  for key, value in tree.items():
    if isinstance(value, dict):
      out.update(_flatten(value, f"{prefix}{key}."))
    else:
      out[f"{prefix}{key}"] = value
  return out


def _has(tree: dict[str, Any], field: str) -> bool:
  *groups, name = field.split(".")
  node: Any = tree
  for group in groups:
    node = node.get(group)
    if not isinstance(node, dict):
      return False
  return name in node


def _set(tree: dict[str, Any], field: str, value: Any) -> None:
  *groups, name = field.split(".")
  for group in groups:
    tree = tree.setdefault(group, {})
  tree[name] = value


def _family_defaults(saved: dict[str, Any]) -> dict[str, Any]:
  """Today's default config (as JSON data) of the family of the saved config `saved`.

  Raises:
    ValueError: `saved` names no known family (`method`).
  """
  method = saved.get("method")
  if method not in _FAMILY_CONFIGS:
    raise ValueError(f"A saved config with method={method!r} is not a gen_jax run config "
                     f"(expected one of {sorted(_FAMILY_CONFIGS)}).")
  module = _FAMILY_CONFIGS[method]
  if method == "autoregressive":
    module = _ARCH_CONFIGS.get(saved.get("model", {}).get("arch"), gpt)
  if method == "diffusion":
    module = _DIFFUSION_NETWORK_CONFIGS.get(saved.get("model", {}).get("architecture"), ddpm)
  return json.loads(module.get_config().to_json_best_effort())


def _add_absent_fields(saved: dict[str, Any],
                       absent_meant: dict[str, Any] | None = None) -> dict[str, Any]:
  """Adds each field of today's family config that `saved` lacks, with the value in
  `absent_meant` where leaving it out meant something else, else today's default."""
  absent_meant = absent_meant or {}
  for field, default in _flatten(_family_defaults(saved)).items():
    if not _has(saved, field):
      _set(saved, field, absent_meant.get(field, default))
  return saved


def _to_version_2(saved: dict[str, Any]) -> dict[str, Any]:
  """Version 1 -> 2: a GAN's class count moves to model.num_classes (where every conditional
  family keeps it), and every field a version-1 config may lack is added."""
  gan = saved.get("gan", {})
  if saved.get("method") == "gan" and "num_classes" in gan:
    _set(saved, "model.num_classes", gan.pop("num_classes"))
  return _add_absent_fields(saved, _ABSENT_IN_VERSION_1)


# Fields a GAN config gained in version 3, with the value that reproduces a run without them.
_GAN_FIELDS_OF_VERSION_3 = {
    "gan.d_spectral_norm": False,       # no spectral normalization in D
    "data.dequantize": "none",          # real images x / 127.5 - 1, no noise
    # RpGAN (Huang et al. 2024) and R3GAN's schedules: only read with gan.loss='rpgan' or
    # gan.arch='r3gan', or switched off (a constant beta2, train.ema_decay's EMA).
    "gan.gamma": 0.05,
    "gan.gamma_final_ratio": 1.0,
    "gan.ema_halflife_steps": 0.0,
    "gan.b2_final": 0.0,
    "gan.r3gan": {"widths": [768, 768, 768, 768], "blocks": [2, 2, 2, 2],
                  "cardinality": [96, 96, 96, 96], "expansion": 2},
}


def _to_version_3(saved: dict[str, Any]) -> dict[str, Any]:
  """Version 2 -> 3: a GAN config gains spectral normalization and the real images'
  dequantization, both off as before, and the RpGAN / R3GAN fields; the GPT's modern-block
  options (model.position, norm, qk_norm, ...), the Muon optimizer's fields (train.muon_*,
  adam_lr_*), train.cooldown_steps and mesh.model are added with today's defaults, which
  are what a version-2 run did (GPT-2's blocks, no tensor parallelism)."""
  if saved.get("method") == "gan":
    for field, value in _GAN_FIELDS_OF_VERSION_3.items():
      if not _has(saved, field):
        _set(saved, field, value)
  return _add_absent_fields(saved)


# _STEPS[v - 1] brings a config of version v to version v + 1.
_STEPS: tuple[Callable[[dict[str, Any]], dict[str, Any]], ...] = (_to_version_2, _to_version_3)
assert len(_STEPS) == CONFIG_VERSION - 1, "one migration step per version"


def migrate(saved: dict[str, Any], source: str = "The saved config") -> dict[str, Any]:
  """`saved` (a config.json's data, of any version) with today's fields; `saved` itself is
  left as it is.

  Args:
    saved: the saved config; without `version` it is version 1.
    source: what the config is, for error messages (e.g. the file's path).

  Returns:
    A new dict of version `CONFIG_VERSION`. `migrate(migrate(x)) == migrate(x)`.

  Raises:
    ConfigVersionError: `saved` is of a version newer than `CONFIG_VERSION`.
    ValueError: `saved` names no gen_jax family.
  """
  version = saved.get("version", 1)
  if not isinstance(version, int) or version < 1:
    raise ValueError(f"{source} has version={version!r}; expected an integer >= 1.")
  if version > CONFIG_VERSION:
    raise ConfigVersionError(
        f"{source} is of config version {version}, written by a newer gen_jax; this one reads "
        f"versions up to {CONFIG_VERSION}. Update gen_jax to use this run.")
  migrated = copy.deepcopy(saved)
  for step in _STEPS[version - 1:]:
    migrated = step(migrated)
  migrated = _add_absent_fields(migrated)
  migrated["version"] = CONFIG_VERSION
  return migrated


def load_saved_config(workdir: str | epath.PathLike) -> ml_collections.ConfigDict | None:
  """The config saved in `workdir` (its config.json; a run or an export folder), migrated to
  today's fields (`migrate`), or None when there is none. Every reader of a saved config
  loads it here.

  Raises:
    ConfigVersionError: the file is of a newer config version than this gen_jax reads.
  """
  path = epath.Path(workdir) / CONFIG_FILE
  if not path.exists():
    return None
  return ml_collections.ConfigDict(migrate(json.loads(path.read_text()), source=str(path)))
