"""Hugging Face GPT-2 files in and out: `init_from='hf_gpt2:<file>'` and
`--mode=export --config.export.format=hf_gpt2` (docs/interop.md).

A GPT-2 checkpoint is read from `safetensors` only (raw tensors and a JSON header: loading
one runs no code). A pickled checkpoint (`pytorch_model.bin`, `.pt`, `.pth`, `.ckpt`) is
refused, since unpickling can run arbitrary code; the error says how to convert it. The
name and shape mapping is gen_jax/models/gpt_hf.py; this module checks a file against the
config, naming the config field that differs. The autoregressive family offers it
(`AutoregressiveMethod.load_foreign_params` / `export_foreign`); the engine places the params
on the mesh and writes the export's files.
"""
from __future__ import annotations

import json
from typing import Any

import jax
import numpy as np
from absl import logging
from etils import epath

from gen_jax.interop import ForeignWeightsError, safetensors_file
from gen_jax.interop.safetensors_file import safetensors_numpy
from gen_jax.models import gpt_hf
from gen_jax.models.gpt import GPT, LN_EPSILON

PREFIX = "hf_gpt2:"       # init_from='hf_gpt2:/path/to/model.safetensors' (or its folder)
WEIGHTS, HF_CONFIG, GEN_JAX_CONFIG = "model.safetensors", "config.json", "gen_jax_config.json"
CONVERT_HINT = ("convert it once, where torch and transformers are installed: "
                "GPT2LMHeadModel.from_pretrained('<folder with the .bin and config.json>')"
                ".save_pretrained('<new folder>', safe_serialization=True), which writes "
                f"<new folder>/{WEIGHTS}; then pass init_from=hf_gpt2:<new folder>")


def weights_path(spec: str) -> epath.Path:
  """The safetensors file of `hf_gpt2:<file or folder>` (a folder: its model.safetensors;
  `safetensors_file.weights_path` says what is refused)."""
  return safetensors_file.weights_path(spec, prefix=PREFIX, weights=WEIGHTS,
                                       what="GPT-2 weights", convert_hint=CONVERT_HINT,
                                       label=f"init_from={spec}")


def read(spec: str) -> tuple[dict[str, Any], dict[str, Any] | None]:
  """(canonical GPT-2 tensors, the config.json beside the file or None) of `hf_gpt2:<path>`."""
  path = weights_path(spec)
  try:
    tensors = safetensors_numpy().load_file(str(path))
  except Exception as e:   # safetensors' own error type for a damaged or foreign file
    raise ForeignWeightsError(
        f"init_from={spec}: {path} is not a readable safetensors file: {e}") from e
  config_path = path.parent / HF_CONFIG
  hf_config = None
  if config_path.exists():
    try:
      hf_config = json.loads(config_path.read_text())
      if not isinstance(hf_config, dict):
        raise ValueError(f"a JSON {type(hf_config).__name__}, not an object")
    except (ValueError, UnicodeDecodeError) as e:
      raise ForeignWeightsError(
          f"init_from={spec}: {config_path} is not a Hugging Face config ({e}): restore it "
          "from the model's source, or remove it (the heads are then not checked).") from None
  try:
    return gpt_hf.canonical(tensors), hf_config
  except ValueError as e:   # an untied head
    raise ForeignWeightsError(f"init_from={spec}: {e}") from None


def check_fits(spec: str, found: gpt_hf.GPT2Shape, hf_config: dict | None, model: GPT,
               config: Any) -> None:
  """Raises ForeignWeightsError naming each config field whose value the file contradicts.

  The shapes give the depth, width, vocabulary and context; the heads, the LayerNorm
  epsilon and the GELU come from the config.json beside the file when there is one (a
  different GELU only warns: nanoGPT, for one, fine-tunes GPT-2 with the exact GELU).
  """
  vocab_field = ("data.vocab_size" if config.data.tokenizer == "ids"
                 else f"data.tokenizer={config.data.tokenizer!r} (the data's vocabulary)")
  wanted = [("model.n_layer", model.n_layer, found.n_layer),
            ("model.n_embd", model.n_embd, found.n_embd),
            ("model.block_size", model.block_size, found.n_positions),
            (vocab_field, model.vocab_size, found.vocab_size)]
  if hf_config is not None:
    wanted += [("model.n_head", model.n_head, hf_config.get("n_head", model.n_head)),
               ("layer_norm_epsilon (gen_jax's GPT: 1e-5)", LN_EPSILON,
                hf_config.get("layer_norm_epsilon", LN_EPSILON))]
    gelu = gpt_hf.GELU_OF_HF.get(hf_config.get("activation_function", ""), "?")
    if gelu != model.gelu:
      logging.warning("init_from=%s was trained with activation_function=%r; model.gelu=%r.",
                      spec, hf_config.get("activation_function"), model.gelu)
  else:
    logging.warning("init_from=%s: no %s beside the file, so model.n_head=%d is not checked.",
                    spec, HF_CONFIG, model.n_head)
  differ = [f"{field}: the config has {mine}, the file {theirs}"
            for field, mine, theirs in wanted if mine != theirs]
  if differ:
    raise ForeignWeightsError(
        f"init_from={spec} does not fit the config: " + "; ".join(differ)
        + ". Set these fields to the file's values (e.g. --config.model.n_layer=...).")


def load_params(spec: str, model: GPT, config: Any, abstract_params: Any) -> Any:
  """`model`'s params from a Hugging Face GPT-2 safetensors file (`init_from=spec`), checked
  against the config: host arrays with the structure and dtypes of `abstract_params`.

  Raises:
    ForeignWeightsError (a ValueError): the file is pickled, unreadable, not a GPT-2, or
      does not fit (a config field, or any tensor's shape).
    ForeignWeightsNotFoundError (a FileNotFoundError): no file there.
  """
  tensors, hf_config = read(spec)
  try:
    shape = gpt_hf.infer_shape(tensors)
  except ValueError as e:   # not a GPT-2 state dict
    raise ForeignWeightsError(f"init_from={spec}: {e}") from None
  check_fits(spec, shape, hf_config, model, config)
  try:
    params = gpt_hf.from_hf(tensors, n_layer=model.n_layer,
                            padded_vocab_size=model.padded_vocab_size, use_bias=model.use_bias)
  except KeyError as e:   # a tensor the model needs is missing
    raise ForeignWeightsError(f"init_from={spec}: {e.args[0]}") from None
  except ValueError as e:
    raise ForeignWeightsError(f"init_from={spec}: {e} (model.use_bias)") from None
  if jax.tree.structure(params) != jax.tree.structure(abstract_params):
    raise ForeignWeightsError(
        f"init_from={spec}: the converted tree {jax.tree.structure(params)} is not the "
        f"model's {jax.tree.structure(abstract_params)}.")
  check_shapes(spec, params, abstract_params)
  return jax.tree.map(lambda p, a: np.asarray(p, a.dtype), params, abstract_params)


def check_shapes(spec: str, params: Any, abstract_params: Any) -> None:
  """Every converted tensor's shape against the model's, before anything is compiled
  (the depth and width checks of `check_fits` do not see an inner shape, e.g. an MLP
  width other than 4 * n_embd).

  Raises:
    ForeignWeightsError: naming each tensor (up to 5) and both shapes.
  """
  wrong = [f"{jax.tree_util.keystr(path, simple=True, separator='/')} is "
           f"{tuple(np.shape(p))} in the file and {tuple(a.shape)} in the model"
           for (path, p), a in zip(jax.tree_util.tree_flatten_with_path(params)[0],
                                   jax.tree.leaves(abstract_params), strict=True)
           if tuple(np.shape(p)) != tuple(a.shape)]
  if wrong:
    raise ForeignWeightsError(
        f"init_from={spec} does not fit the model: {'; '.join(wrong[:5])}"
        f"{f' (and {len(wrong) - 5} more)' if len(wrong) > 5 else ''}. Use a config whose "
        "model makes these shapes, or a file of this model's.")


def export_files(params: Any, model: GPT, step: int) -> tuple[dict[str, np.ndarray],
                                                              dict[str, str], dict[str, Any]]:
  """The files of a folder `GPT2LMHeadModel.from_pretrained` loads, for `params` (host
  arrays) of checkpoint `step`: (the tensors of `WEIGHTS`, its metadata, Hugging Face's
  config.json). The run's own config goes beside them as `GEN_JAX_CONFIG`."""
  tensors = gpt_hf.to_hf(params, n_layer=model.n_layer, vocab_size=model.vocab_size)
  shape = gpt_hf.infer_shape(tensors)
  hf_config = gpt_hf.hf_config(shape, n_head=model.n_head, gelu=model.gelu,
                               dropout=model.dropout, layer_norm_epsilon=LN_EPSILON)
  # transformers reads a safetensors file only with metadata format 'pt'.
  metadata = {"format": "pt", "step": str(step),
              "exported_by": "gen_jax --mode=export (hf_gpt2)"}
  return tensors, metadata, hf_config
