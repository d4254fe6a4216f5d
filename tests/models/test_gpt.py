"""GPT and LSTM language models and the autoregressive method: parameter counts against
GPT-2 and nanoGPT, causality, KV-cache decoding against full recomputation, the loss,
perplexity and the sampling filters."""
import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from smoke import load_config

from gen_jax.data import CharTokenizer, DataSpec
from gen_jax.methods import autoregressive as ar
from gen_jax.models.gpt import GPT
from gen_jax.models.lstm import LSTMLM

V = 11


def _count(model, T=8):
  shapes = jax.eval_shape(model.init, jax.random.key(0), jax.ShapeDtypeStruct((1, T), jnp.int32))
  params = shapes["params"]
  return sum(x.size for x in jax.tree.leaves(params)), params["wpe"]["embedding"].size


def test_gpt2_small_has_124_439_808_parameters():
  total, wpe = _count(GPT(vocab_size=50257, block_size=1024, n_layer=12, n_head=12, n_embd=768,
                          use_bias=True))
  assert total == 124_439_808            # HF gpt2
  assert total - wpe == 123_653_376      # without position embeddings


@pytest.mark.parametrize("variant, total, non_embedding", [
    ("baby", 804_096, 795_904),                     # nanoGPT's CPU config, V=65
    ("shakespeare_char", 10_745_088, 10_646_784),   # nanoGPT prints "10.65M"
])
def test_config_parameter_counts_match_nanogpt(variant, total, non_embedding):
  config = load_config("gpt", variant)
  model = ar.build_model(config, vocab_size=65)
  n, wpe = _count(model, T=config.data.seq_len)
  assert (n, n - wpe) == (total, non_embedding)


@pytest.fixture(scope="module")
def gpt():
  """A tiny GPT with params scaled up so its greedy continuations are not constant."""
  model = GPT(vocab_size=V, block_size=16, n_layer=2, n_head=2, n_embd=16, use_bias=True)
  params = model.init(jax.random.key(1), jnp.zeros((1, 16), jnp.int32))["params"]
  return model, jax.tree.map(lambda p: 8.0 * p, params)


@pytest.fixture(scope="module")
def lstm():
  model = LSTMLM(vocab_size=V, n_layer=2, n_embd=8, hidden_size=16)
  params = model.init(jax.random.key(1), jnp.zeros((1, 8), jnp.int32))["params"]
  return model, jax.tree.map(lambda p: 3.0 * p, params)


def test_gpt_is_causal_gradient_of_logits_wrt_later_inputs_is_exactly_zero(gpt):
  """x_s = wte[token_s] + wpe[s], so d logits_t / d wpe[s] is the gradient w.r.t. the input
  embedding at s: exactly zero for every s > t, non-zero for s <= t."""
  model, params = gpt
  T = 12
  tokens = jax.random.randint(jax.random.key(2), (1, T), 0, V)
  probe = jax.random.normal(jax.random.key(3), (V,))

  def logits_per_position(wpe):
    p = {**params, "wpe": {"embedding": wpe}}
    return model.apply({"params": p}, tokens)[0] @ probe    # [T]

  jac = jax.jacrev(logits_per_position)(params["wpe"]["embedding"])   # [T, block_size, D]
  per_pair = np.abs(np.asarray(jac[:, :T])).sum(-1)                  # [t, s]
  future = np.triu(np.ones((T, T), bool), k=1)
  assert np.all(per_pair[future] == 0.0)
  assert np.all(per_pair[~future] > 0.0)


@pytest.mark.parametrize("which", ["gpt", "lstm"])
def test_changing_a_token_changes_only_later_logits(which, gpt, lstm):
  model, params = {"gpt": gpt, "lstm": lstm}[which]
  tokens = jax.random.randint(jax.random.key(4), (1, 10), 0, V)
  changed = tokens.at[0, 6].set((tokens[0, 6] + 1) % V)
  a = model.apply({"params": params}, tokens)[0]
  b = model.apply({"params": params}, changed)[0]
  assert np.array_equal(a[:6], b[:6])
  assert not np.allclose(a[6:], b[6:])


def _greedy_by_recompute(model, params, prompt, num_new, context_limit=None):
  """Reference: re-run the model on the whole context for every new token, following
  `generate`'s rule for the context once it would exceed the model's block size."""
  L = context_limit
  seq = list(prompt)
  context = seq if L is None else seq[-(L - 1):]
  budget = num_new if L is None else min(num_new, L - len(context))
  out = []
  while len(out) < num_new:
    for _ in range(budget):
      logits = model.apply({"params": params}, jnp.asarray([context], jnp.int32))[0, -1]
      token = int(jnp.argmax(logits))
      context, out = context + [token], out + [token]
    context = (list(prompt) + out)[-(L // 2):] if L else context
    budget = min(L - L // 2, num_new - len(out)) if L else 0
  return list(prompt) + out[:num_new]


@pytest.mark.parametrize("which, num_new", [("gpt", 30), ("lstm", 12)])
def test_kv_cache_greedy_decoding_equals_full_recompute(which, num_new, gpt, lstm):
  """30 new tokens outgrow the GPT's 16 positions: the first 13 come from one cache, the
  rest from re-prefilled chunks of the last 8 tokens."""
  model, params = {"gpt": gpt, "lstm": lstm}[which]
  prompt = [1, 5, 2]
  got = ar.generate(model, params, jnp.asarray(prompt), jax.random.key(0), 2, num_new,
                    temperature=0.0)
  want = _greedy_by_recompute(model, params, prompt, num_new,
                              getattr(model, "block_size", None))
  assert got.shape == (2, len(prompt) + num_new)
  assert got[0].tolist() == want and got[1].tolist() == want
  assert len(set(want[3:])) > 2     # a non-trivial continuation


def test_sampling_is_deterministic_given_the_key_and_respects_top_k(gpt):
  model, params = gpt
  sample = lambda key, k: ar.generate(model, params, jnp.asarray([3]), key, 8, 10,
                                      temperature=1.0, top_k=k)
  a, b = sample(jax.random.key(7), 0), sample(jax.random.key(7), 0)
  assert np.array_equal(a, b)
  assert not np.array_equal(a, sample(jax.random.key(8), 0))
  top1 = sample(jax.random.key(9), 1)   # top-1 sampling is greedy decoding
  greedy = ar.generate(model, params, jnp.asarray([3]), jax.random.key(0), 8, 10, temperature=0.0)
  assert np.array_equal(top1, greedy)


def test_filter_logits_top_k_and_nucleus():
  logits = jnp.log(jnp.asarray([[0.1, 0.4, 0.2, 0.3]]))
  kept = lambda **kw: np.isfinite(np.asarray(ar.filter_logits(logits, **kw)))[0].tolist()
  assert kept(top_k=2) == [False, True, False, True]
  # Nucleus 0.5: 0.4 alone is < 0.5, so 0.3 joins; 0.7 >= 0.5, so nothing else.
  assert kept(top_p=0.5) == [False, True, False, True]
  assert kept(top_p=0.75) == [False, True, True, True]
  assert kept(top_p=0.3) == [False, True, False, False]   # the top token always stays
  assert kept() == [True] * 4


def test_next_token_loss_is_the_mean_negative_log_likelihood():
  logits = jax.random.normal(jax.random.key(0), (2, 5, V))
  targets = jax.random.randint(jax.random.key(1), (2, 5), 0, V)
  log_p = np.asarray(jax.nn.log_softmax(logits))
  want = -np.mean(np.take_along_axis(log_p, np.asarray(targets)[..., None], -1))
  assert float(ar.next_token_loss(logits, targets)) == pytest.approx(want, rel=1e-6)


def _method(seq_len=None, **overrides):
  config = load_config("gpt", "smoke", **overrides)
  if seq_len is not None:   # data.seq_len is model.block_size unless the two are decoupled
    config.data = ml_collections.ConfigDict({**config.data.to_dict(), "seq_len": seq_len})
  tokenizer = CharTokenizer("abcdefgh\n")
  return ar.AutoregressiveMethod.from_config(config, DataSpec.for_text(tokenizer, 16))


def test_eval_summary_perplexity_is_exp_of_the_mean_loss_and_bits_per_char():
  out = _method().summarize_eval({"raw/loss": 1.25, "ema/loss": 2.0})
  assert out["raw/perplexity"] == pytest.approx(math.exp(1.25))
  assert out["raw/bits_per_char"] == pytest.approx(1.25 / math.log(2))
  assert out["ema/perplexity"] == pytest.approx(math.exp(2.0))


def test_method_config_errors_are_clear():
  with pytest.raises(ValueError, match="seq_len=32 exceeds model.block_size=16"):
    _method(seq_len=32)
  with pytest.raises(ValueError, match="sample.prompt is empty"):
    _method(**{"sample.prompt": ""})
  with pytest.raises(ValueError, match="top_p"):
    _method(**{"sample.top_p": 0.0})
  with pytest.raises(ValueError, match="not in the vocabulary|outside the vocabulary|not in"):
    _method(**{"sample.prompt": "XYZ"})
  assert _method(**{"sample.top_k": 500}).top_k == 0    # covers the vocabulary: off
  assert _method(**{"sample.top_k": 5}).top_k == 5


def test_gradient_accumulation_equals_the_full_batch_gradient(gpt):
  from gen_jax.core.state import accumulated_value_and_grad
  model, params = gpt
  tokens = jax.random.randint(jax.random.key(5), (8, 13), 0, V)
  loss_fn = lambda p, t, key: ar.next_token_loss(model.apply({"params": p}, t[:, :-1]), t[:, 1:])
  full = jax.value_and_grad(loss_fn)(params, tokens, jax.random.key(0))
  accumulated = accumulated_value_and_grad(loss_fn, params, tokens, jax.random.key(0), 4)
  np.testing.assert_allclose(accumulated[0], full[0], rtol=1e-5)
  for a, b in zip(jax.tree.leaves(accumulated[1]), jax.tree.leaves(full[1]), strict=True):
    # float32 sums in another order (the 8x-scaled params amplify rounding)
    np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-3 * float(np.abs(b).max()))
  with pytest.raises(ValueError, match="grad_accum_steps=3 must be >= 1 and divide"):
    _method(**{"train.grad_accum_steps": 3})


def test_ids_tokenizer_reads_prompts_as_ids():
  from gen_jax.data import IdsTokenizer
  tok = IdsTokenizer(50257)
  assert tok.encode("464, 3290 50256").tolist() == [464, 3290, 50256]
  assert tok.decode([464, 3290]) == "464 3290"
  with pytest.raises(ValueError, match="reads prompts as token ids"):
    tok.encode("ROMEO:")
  with pytest.raises(ValueError, match=r"ids must be in \[0, 50257\)"):
    tok.encode("50257")


@pytest.mark.parametrize("which", ["gpt", "lstm"])
def test_dropout_acts_in_training_only(which):
  kw = dict(vocab_size=V, n_layer=2, n_embd=16)
  model = (GPT(block_size=16, n_head=2, dropout=0.5, **kw) if which == "gpt"
           else LSTMLM(hidden_size=16, dropout=0.5, **kw))
  plain = model.clone(dropout=0.0)
  tokens = jax.random.randint(jax.random.key(6), (2, 10), 0, V)
  params = model.init(jax.random.key(0), tokens)
  train = lambda key: model.apply(params, tokens, train=True, rngs={"dropout": key})
  assert np.array_equal(model.apply(params, tokens), plain.apply(params, tokens))
  assert not np.allclose(train(jax.random.key(1)), train(jax.random.key(2)))
  assert np.array_equal(train(jax.random.key(1)), train(jax.random.key(1)))
