"""The GPT's modern-block options (gen_jax/models/gpt.py): RoPE's relative-position property,
packed rows that never attend across documents (by gradient), the sliding window, KV-cache
decoding with every option on, and which parameters each option adds or removes."""
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from smoke import load_config

from gen_jax.data import CharTokenizer, DataSpec
from gen_jax.methods import autoregressive as ar
from gen_jax.models.gpt import GPT
from gen_jax.models.rotary import apply_rotary

V = 16   # >= the sequence lengths: rows of distinct tokens
MODERN: dict[str, Any] = dict(position="rope", norm="rmsnorm", embed_norm=True, qk_norm=True,
              mlp_activation="relu2", tie_head=False, logit_softcap=30.0, use_bias=False)


def _init(model, T=12, seed=1, scale=4.0):
  params = model.init(jax.random.key(seed), jnp.zeros((1, T), jnp.int32))["params"]
  return jax.tree.map(lambda p: scale * p, params)   # larger weights: logits that vary


def test_rope_scores_depend_only_on_the_relative_position():
  """<R_p q, R_s k> = <R_{p+d} q, R_{s+d} k> for every shift d (Su et al. 2021, Eq. 16), and
  differs for another relative position."""
  q, k = jax.random.normal(jax.random.key(0), (2, 1, 1, 1, 8))

  def score(p, s):
    rq = apply_rotary(q, jnp.array([p]))
    rk = apply_rotary(k, jnp.array([s]))
    return float(jnp.sum(rq * rk))

  base = score(7, 3)
  for shift in (1, 5, 100, 1000):
    np.testing.assert_allclose(score(7 + shift, 3 + shift), base, rtol=1e-4)
  assert abs(score(8, 3) - base) > 1e-3
  np.testing.assert_allclose(score(0, 0), float(jnp.sum(q * k)), rtol=1e-6)   # R_0 = I


def _input_jacobian(model, params, tokens, segment_ids=None):
  """|d (logits_t . probe) / d x_s| summed over features: [T, T]. The T tokens are distinct,
  so the gradient w.r.t. token s's embedding row is the gradient w.r.t. the input at s."""
  probe = jax.random.normal(jax.random.key(3), (V,))

  def logits_per_position(wte_VxD):
    p = {**params, "wte": {"embedding": wte_VxD}}
    return model.apply({"params": p}, tokens, segment_ids=segment_ids)[0] @ probe

  jac_TxVxD = jax.jit(jax.jacrev(logits_per_position))(params["wte"]["embedding"])
  return np.abs(np.asarray(jac_TxVxD[:, tokens[0]])).sum(-1)


def test_packed_documents_never_attend_to_each_other():
  """Three documents packed in one row: a token's logits have exactly zero gradient w.r.t. the
  inputs of every other document (and of later tokens), non-zero w.r.t. its own document's
  prefix."""
  model = GPT(vocab_size=V, block_size=12, n_layer=2, n_head=2, n_embd=16, **MODERN)
  params = _init(model)
  tokens = jax.random.permutation(jax.random.key(2), V)[None, :12]   # distinct
  segments = jnp.array([[0, 0, 0, 0, 1, 1, 1, 1, 1, 2, 2, 2]])
  jac = _input_jacobian(model, params, tokens, segments)
  seg = np.asarray(segments[0])
  allowed = (seg[:, None] == seg[None, :]) & np.tril(np.ones((12, 12), bool))
  assert np.all(jac[~allowed] == 0.0)
  assert np.all(jac[allowed] > 0.0)
  apply = jax.jit(model.apply, static_argnames="method")
  direct = apply({"params": params}, tokens, segment_ids=segments)
  # With RoPE, a document's logits in the packed row equal the document's own.
  alone = apply({"params": params}, tokens[:, 4:9])
  np.testing.assert_allclose(direct[:, 4:9], alone, atol=2e-4)


def test_sliding_window_attends_to_the_last_w_positions_only():
  """One layer, window 3: logits_t depend on inputs t-2, t-1, t and nothing else."""
  model = GPT(vocab_size=V, block_size=10, n_layer=1, n_head=2, n_embd=16,
              attention_window=3, **MODERN)
  params = _init(model, T=10)
  jac = _input_jacobian(model, params, jax.random.permutation(jax.random.key(4), V)[None, :10])
  t, s = np.indices((10, 10))
  allowed = (s <= t) & (t - s < 3)
  assert np.all(jac[~allowed] == 0.0) and np.all(jac[allowed] > 0.0)


@pytest.mark.parametrize("options", [
    dict(MODERN, attention_window=5),
    dict(position="learned", norm="layernorm", qk_norm=True, logit_softcap=5.0),
], ids=["modern_window", "learned_qknorm_softcap"])
def test_cached_decoding_equals_the_full_forward_pass(options):
  """Prefill 5 tokens, then decode the other 7 one at a time: the same logits as one
  __call__ over all 12 (every option goes through the cache path)."""
  model = GPT(vocab_size=V, block_size=12, n_layer=2, n_head=2, n_embd=16, **options)
  params = _init(model, scale=2.0)
  tokens = jax.random.randint(jax.random.key(5), (2, 12), 0, V)

  @jax.jit
  def full_and_decoded(params):
    full = model.apply({"params": params}, tokens)
    cache = model.apply({"params": params}, 2, 12, method=model.init_cache)
    logits, cache = model.apply({"params": params}, tokens[:, :5], cache, method=model.decode)

    def step(cache, token_B):
      logits, cache = model.apply({"params": params}, token_B[:, None], cache,
                                  method=model.decode)
      return cache, logits[:, 0]

    _, later_TxBxV = jax.lax.scan(step, cache, tokens[:, 5:].T)
    return full, jnp.concatenate([logits, later_TxBxV.transpose(1, 0, 2)], axis=1)

  full, decoded = full_and_decoded(params)
  np.testing.assert_allclose(decoded, full, atol=1e-4, rtol=1e-4)
  assert float(jnp.abs(full).max()) > 0.1   # not a degenerate all-zero model
  if options.get("logit_softcap"):
    assert float(jnp.abs(full).max()) < options["logit_softcap"]


def test_options_add_and_remove_only_their_own_parameters():
  """GPT-2's tree is unchanged by default; rope drops wpe, an untied head adds lm_head
  [D, V], rmsnorm drops every LayerNorm's parameters; the rest add none."""
  def names(**kw):
    model = GPT(vocab_size=V, block_size=8, n_layer=1, n_head=2, n_embd=16, **kw)
    shapes = jax.eval_shape(model.init, jax.random.key(0), jax.ShapeDtypeStruct((1, 8), jnp.int32))
    return {jax.tree_util.keystr(p): x.shape
            for p, x in jax.tree_util.tree_flatten_with_path(shapes["params"])[0]}

  gpt2 = names()
  assert names(qk_norm=True, mlp_activation="relu2", zero_init_proj=True, embed_norm=True,
               logit_softcap=30.0, attention_window=4) == gpt2
  assert set(gpt2) - set(names(position="rope")) == {"['wpe']['embedding']"}
  assert set(names(tie_head=False)) - set(gpt2) == {"['lm_head']['kernel']"}
  assert names(tie_head=False)["['lm_head']['kernel']"] == (16, V)
  assert not any("ln_" in k for k in names(norm="rmsnorm"))


def test_the_method_reads_segment_ids_from_packed_batches():
  """`eval_step` on a batch with "segment_ids" (lmdata's packed loader) is the loss of the
  model under that mask: it differs from the loss of the same tokens as one sequence, and a
  row of one segment gives the unpacked loss."""
  config = load_config("gpt", "smoke", **{"model.position": "rope"})
  method = ar.AutoregressiveMethod.from_config(
      config, DataSpec.for_text(CharTokenizer("abcdefgh\n"), config.data.seq_len))
  state = method.init(jax.random.key(0), None)
  state = state.replace(params=jax.tree.map(lambda p: 4.0 * p, state.params))
  tokens = jax.random.randint(jax.random.key(1), (2, config.data.seq_len + 1), 0, 9)
  half = (config.data.seq_len + 1) // 2
  packed = jnp.broadcast_to(jnp.arange(config.data.seq_len + 1) >= half, tokens.shape)
  evaluate = jax.jit(method.eval_step)
  plain = float(evaluate(state, {"tokens": tokens}, None)["raw/loss"])
  one_segment = float(evaluate(state, {"tokens": tokens, "segment_ids": 0 * tokens},
                               None)["raw/loss"])
  two = float(evaluate(state, {"tokens": tokens, "segment_ids": packed.astype(jnp.int32)},
                       None)["raw/loss"])
  assert one_segment == pytest.approx(plain, rel=1e-6)
  assert abs(two - plain) > 1e-4
