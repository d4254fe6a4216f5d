"""GPT against Hugging Face's GPT-2 and nanoGPT's details: logits equal `transformers`' on a
committed tiny random GPT2LMHeadModel (tests/fixtures/gpt2_tiny, made by
tools/make_gpt2_fixture.py; no PyTorch here), the state dict round-trips exactly, pickles
and misfitting files are refused with the field to change, the GELU forms equal their
formulas, attention dropout acts in training only and keeps causality, and the
OpenWebText recipe has nanoGPT's parameter count. End to end: init_from a GPT-2 file,
train, export back to the same file; a resumed run takes its checkpoint, not the file."""
import json
import math
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file
from smoke import FIXTURES, load_config

from gen_jax.engine import modes, train
from gen_jax.engine.experiment import build_experiment
from gen_jax.interop import ForeignWeightsError, hf_gpt2
from gen_jax.methods import autoregressive as ar
from gen_jax.models import gpt_hf
from gen_jax.models.gpt import GPT, MLP, CausalSelfAttention

FIXTURE = os.path.join(FIXTURES, "gpt2_tiny")
# The fixture's GPT2Config (tools/make_gpt2_fixture.py).
SHAPE = dict(vocab_size=256, block_size=16, n_layer=2, n_head=3, n_embd=24)


@pytest.fixture(scope="module")
def fixture():
  return (load_file(os.path.join(FIXTURE, "model.safetensors")),
          load_file(os.path.join(FIXTURE, "logits.safetensors")))


def _ours(tensors, **model_kw):
  model = GPT(**SHAPE, **model_kw)
  params = gpt_hf.from_hf(gpt_hf.canonical(tensors), n_layer=model.n_layer,
                          padded_vocab_size=model.padded_vocab_size, use_bias=model.use_bias)
  return model, params


@pytest.mark.parametrize("gelu, hf_activation", [("tanh", "gelu_new"), ("exact", "gelu")])
def test_converted_gpt2_gives_transformers_logits(fixture, gelu, hf_activation):
  """float32 on both sides, |logits| <= 1.1: the two computations differ by rounding
  (~1e-7 relative per op); 1e-5 absolute is 10x below the 1.1e-4 that separates the two
  GELU forms, so the test also tells which GELU ran."""
  tensors, ref = fixture
  model, params = _ours(tensors, gelu=gelu)
  logits = np.asarray(jax.jit(model.apply)({"params": params}, jnp.asarray(ref["tokens"])))
  np.testing.assert_allclose(logits, ref[f"logits_{hf_activation}"], rtol=0, atol=1e-5)
  other = {"gelu_new": "gelu", "gelu": "gelu_new"}[hf_activation]
  assert np.abs(logits - ref[f"logits_{other}"]).max() > 5e-5


def test_state_dict_round_trips_exactly_padded_vocab_too(fixture):
  tensors, ref = fixture
  for multiple in (1, 100):   # 256 rows, or padded to 300 (the padding is dropped again)
    model, params = _ours(tensors, vocab_multiple=multiple)
    back = gpt_hf.to_hf(params, n_layer=model.n_layer, vocab_size=model.vocab_size)
    assert sorted(back) == sorted(tensors)
    for name, value in tensors.items():
      assert back[name].shape == value.shape and back[name].dtype == value.dtype, name
      assert np.array_equal(back[name], value), name
  model, params = _ours(tensors, vocab_multiple=3)   # 256 -> 258 rows, logits unchanged
  assert params["wte"]["embedding"].shape == (258, 24)
  logits = np.asarray(jax.jit(model.apply)({"params": params}, jnp.asarray(ref["tokens"])))
  np.testing.assert_allclose(logits, ref["logits_gelu_new"], rtol=0, atol=1e-5)


def test_gpt2model_names_buffers_and_tied_head_are_accepted(fixture):
  tensors, _ = fixture
  bare = {k.removeprefix("transformer."): v for k, v in tensors.items()}
  bare["h.0.attn.bias"] = np.tril(np.ones((1, 1, 16, 16), np.float32))   # a mask buffer
  bare["lm_head.weight"] = tensors["transformer.wte.weight"]
  assert sorted(gpt_hf.canonical(bare)) == sorted(tensors)
  bare["lm_head.weight"] = bare["lm_head.weight"] + 1.0
  with pytest.raises(ValueError, match="untied output layer"):
    gpt_hf.canonical(bare)


def test_no_bias_model_takes_zero_biases_only(fixture):
  tensors, _ = fixture
  with pytest.raises(ValueError, match="use_bias=True"):
    _ours(tensors, use_bias=False)
  zeroed = {k: (np.zeros_like(v) if k.endswith(".bias") else v) for k, v in tensors.items()}
  model, params = _ours(zeroed, use_bias=False)
  assert "bias" not in params["ln_f"] and "bias" not in params["h_0"]["attn"]["c_attn"]
  back = gpt_hf.to_hf(params, n_layer=2, vocab_size=256)
  assert all(np.array_equal(back[k], v) for k, v in zeroed.items())


@pytest.mark.parametrize("name", ["pytorch_model.bin", "model.pt", "model.pth", "gpt2.ckpt"])
def test_pickled_checkpoints_are_refused_with_the_conversion(tmp_path, name):
  path = tmp_path / name
  path.write_bytes(b"\x80\x04not unpickled")
  with pytest.raises(ValueError) as e:
    hf_gpt2.read(f"hf_gpt2:{path}")
  message = str(e.value)
  assert "unpickling runs arbitrary code" in message
  assert "save_pretrained(" in message and "safe_serialization=True" in message


def test_a_folder_with_only_a_pickled_checkpoint_says_so_and_how_to_convert(tmp_path):
  (tmp_path / "pytorch_model.bin").write_bytes(b"\x80\x04not unpickled")
  (tmp_path / "config.json").write_text("{}")
  with pytest.raises(ForeignWeightsError) as e:
    hf_gpt2.read(f"hf_gpt2:{tmp_path}")
  message = str(e.value)
  assert message.startswith(f"init_from=hf_gpt2:{tmp_path}: the folder holds no "
                            "model.safetensors, only the pickled PyTorch checkpoint "
                            "pytorch_model.bin")
  assert "save_pretrained('<new folder>', safe_serialization=True)" in message
  assert "\n" not in message and "does not exist" not in message


def test_a_damaged_or_foreign_file_is_a_foreign_weights_error(tmp_path):
  local = tmp_path / "gpt2"
  shutil.copytree(FIXTURE, local)
  (local / "config.json").write_text('{"n_layer": ')
  with pytest.raises(ForeignWeightsError, match=r"config.json is not a Hugging Face config "
                     r"\(.*\): restore it"):
    hf_gpt2.read(f"hf_gpt2:{local}")


def test_a_tensor_of_another_inner_shape_is_named_before_compiling(fixture, tmp_path,
                                                                  text_data_dir):
  """Depth and width fit, the MLP does not (48 units, not 4 * 24): each tensor is checked
  against the model's abstract params, naming it and both shapes (not flax's
  ScopeParamShapeError at compile)."""
  tensors = dict(fixture[0])
  for i in range(2):
    h = f"transformer.h.{i}.mlp."
    tensors[h + "c_fc.weight"] = tensors[h + "c_fc.weight"][:, :48]
    tensors[h + "c_fc.bias"] = tensors[h + "c_fc.bias"][:48]
    tensors[h + "c_proj.weight"] = tensors[h + "c_proj.weight"][:48]
  (tmp_path / "narrow").mkdir()
  save_file(tensors, str(tmp_path / "narrow" / "model.safetensors"))
  shutil.copy(os.path.join(FIXTURE, "config.json"), tmp_path / "narrow")
  config = load_config("gpt", "smoke,tokenizer=byte", **{
      "data.data_dir": text_data_dir, "model.n_embd": 24, "model.n_head": 3,
      "model.gelu": "tanh", "model.use_bias": True})
  exp = build_experiment(config)
  with pytest.raises(ForeignWeightsError) as e:
    exp.method.load_foreign_params(f"hf_gpt2:{tmp_path / 'narrow'}",
                                   exp.abstract_state.params)
  message = str(e.value)
  assert "h_0/mlp/c_fc/kernel is (24, 48) in the file and (24, 96) in the model" in message
  assert "h_0/mlp/c_proj/kernel is (48, 24) in the file and (96, 24) in the model" in message
  assert message.count(" in the file and ") == 5 and "(and 1 more)" in message   # 6 tensors


def test_a_file_that_does_not_fit_names_the_config_fields(fixture):
  config = load_config("gpt", "smoke,tokenizer=byte", **{"model.n_embd": 24, "model.n_layer": 3,
                                                         "model.n_head": 4})
  tensors, hf_config = hf_gpt2.read(f"hf_gpt2:{FIXTURE}")
  model = ar.build_model(config, vocab_size=256)
  with pytest.raises(ValueError) as e:
    hf_gpt2.check_fits("hf_gpt2:x", gpt_hf.infer_shape(tensors), hf_config, model, config)
  message = str(e.value)
  assert "\n" not in message   # launch.py prints it as one line
  assert "model.n_layer: the config has 3, the file 2" in message
  assert "model.n_head: the config has 4, the file 3" in message
  assert not any(field in message for field in ("n_embd", "block_size", "vocab"))
  char_model = ar.build_model(config, vocab_size=65)   # a character vocabulary
  with pytest.raises(ValueError, match=r"data.tokenizer='byte' .*: the config has 65, the file"):
    hf_gpt2.check_fits("hf_gpt2:x", gpt_hf.infer_shape(tensors), hf_config, char_model, config)


def test_gelu_forms_equal_their_formulas_and_differ():
  """Hendrycks & Gimpel 2016: x Phi(x), and 0.5x(1 + tanh(sqrt(2/pi)(x + 0.044715x^3)))."""
  x = jax.random.normal(jax.random.key(0), (1, 3, 8)) * 2.0
  outs = {}
  for gelu in ("exact", "tanh"):
    mlp = MLP(gelu=gelu, dropout=0.0, use_bias=True, residual_std=0.02)
    params = mlp.init(jax.random.key(1), x, train=False)["params"]
    params = jax.tree.map(lambda w: 50.0 * w, params)   # std 1 weights: pre-activations O(1)
    outs[gelu] = np.asarray(mlp.apply({"params": params}, x, train=False), np.float64)
    fc, proj = params["c_fc"], params["c_proj"]
    h = np.asarray(x, np.float64) @ np.asarray(fc["kernel"]) + np.asarray(fc["bias"])
    if gelu == "exact":
      act = 0.5 * h * (1 + np.vectorize(math.erf)(h / math.sqrt(2)))
    else:
      act = 0.5 * h * (1 + np.tanh(math.sqrt(2 / math.pi) * (h + 0.044715 * h**3)))
    np.testing.assert_allclose(outs[gelu], act @ np.asarray(proj["kernel"])
                               + np.asarray(proj["bias"]), rtol=1e-5, atol=1e-5)
  assert np.abs(outs["exact"] - outs["tanh"]).max() > 1e-4


def test_attention_dropout_drops_causal_probabilities():
  """With v = identity rows, the output row t is the dropped probability row t: each entry
  is 0 or softmax(q k^T / sqrt(K))[t, s] / (1 - p), and 0 for every s > t."""
  T, K, p = 8, 8, 0.5
  q, k = jax.random.normal(jax.random.key(0), (2, 1, T, 1, K))
  v = jnp.eye(T)[None, :, None, :]                                        # [1, T, 1, K=T]
  attn = CausalSelfAttention(1, dropout=p, use_bias=True, residual_std=0.02)
  run = lambda seed: np.asarray(attn.apply({}, q, k, v, method="attention_with_dropout",
                                           rngs={"dropout": jax.random.key(seed)}))[0, :, 0]
  scores = np.asarray(q[0, :, 0] @ k[0, :, 0].T, np.float64) / math.sqrt(K)
  scores[np.triu(np.ones((T, T), bool), 1)] = -np.inf
  probs = np.exp(scores - scores.max(-1, keepdims=True))
  probs /= probs.sum(-1, keepdims=True)
  y = run(1)
  kept = y != 0
  np.testing.assert_allclose(y[kept], (probs / (1 - p))[kept], rtol=1e-5)
  assert not kept[np.triu(np.ones((T, T), bool), 1)].any()
  assert 0.3 < kept[np.tril(np.ones((T, T), bool))].mean() < 0.7   # ~half of 36 kept
  assert not np.array_equal(y, run(2))


def test_gpt_dropout_acts_in_training_only_and_stays_causal():
  model = GPT(vocab_size=11, block_size=16, n_layer=1, n_head=2, n_embd=16, dropout=0.3)
  tokens = jax.random.randint(jax.random.key(4), (2, 10), 0, 11)
  params = jax.jit(model.init)(jax.random.key(1), tokens)["params"]
  apply = jax.jit(model.apply, static_argnames="train")
  f = lambda toks, train, seed: np.asarray(apply(
      {"params": params}, toks, train=train, rngs={"dropout": jax.random.key(seed)}))
  assert not np.allclose(f(tokens, True, 0), f(tokens, True, 1))
  assert np.array_equal(f(tokens, True, 0), f(tokens, True, 0))
  no_dropout = GPT(vocab_size=11, block_size=16, n_layer=1, n_head=2, n_embd=16)
  evaluated = np.asarray(jax.jit(no_dropout.apply)({"params": params}, tokens))
  np.testing.assert_array_equal(f(tokens, False, 0), f(tokens, False, 1))
  np.testing.assert_allclose(f(tokens, False, 0), evaluated, rtol=1e-6, atol=1e-6)
  # Causal in training too: with the same dropout masks, a later token moves later logits only.
  changed = tokens.at[:, 6].set((tokens[:, 6] + 1) % 11)
  a, b = f(tokens, True, 3), f(changed, True, 3)
  assert np.array_equal(a[:, :6], b[:, :6]) and not np.allclose(a[:, 6:], b[:, 6:])


def test_openwebtext_recipe_has_nanogpts_parameter_count():
  config = load_config("../experiments/radford2019_gpt2/openwebtext", None)
  model = ar.build_model(config, vocab_size=config.data.vocab_size)
  params = jax.eval_shape(model.init, jax.random.key(0),
                          jax.ShapeDtypeStruct((1, 8), jnp.int32))["params"]
  total = sum(x.size for x in jax.tree.leaves(params))
  assert params["wte"]["embedding"].shape == (50304, 768)
  assert "bias" not in params["ln_f"] and model.gelu == "exact"
  assert total == 124_373_760
  assert total - params["wpe"]["embedding"].size == 123_587_328   # nanoGPT: "123.59M"


def test_init_from_gpt2_then_export_gives_the_file_back(tmp_path, text_data_dir):
  """lr 0: two updates leave the params as loaded, so the export must equal the fixture
  byte for byte in every tensor. Then the file is deleted and the run extended: it
  resumes from its checkpoint (which takes precedence over init_from) without reading it."""
  local = tmp_path / "gpt2"
  shutil.copytree(FIXTURE, local)
  overrides = {"data.data_dir": text_data_dir, "model.n_embd": 24, "model.n_head": 3,
               "model.gelu": "tanh", "model.use_bias": True, "train.lr": 0.0,
               "train.num_steps": 2, "train.sample_every": 0, "eval.every": 0,
               "init_from": f"hf_gpt2:{local}"}
  workdir = str(tmp_path / "run")
  train.train_and_evaluate(load_config("gpt", "smoke,tokenizer=byte", **overrides), workdir)
  config = load_config("gpt", "smoke,tokenizer=byte", **overrides, **{"export.format": "hf_gpt2"})
  path = modes.export(config, workdir)
  assert path.parent.name == "step_2_hf_gpt2"
  exported, original = load_file(str(path)), load_file(str(local / "model.safetensors"))
  assert sorted(exported) == sorted(original)
  assert all(np.array_equal(exported[k], original[k]) for k in original)
  hf_config = json.loads((path.parent / "config.json").read_text())
  assert {k: hf_config[k] for k in ("n_layer", "n_head", "n_embd", "n_positions", "vocab_size",
                                    "activation_function")} == {
      "n_layer": 2, "n_head": 3, "n_embd": 24, "n_positions": 16, "vocab_size": 256,
      "activation_function": "gelu_new"}
  shutil.rmtree(local)
  train.train_and_evaluate(load_config("gpt", "smoke,tokenizer=byte",
                                       **{**overrides, "train.num_steps": 4}), workdir)
  assert os.path.isdir(os.path.join(workdir, "checkpoints", "4"))
