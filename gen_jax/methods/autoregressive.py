"""Autoregressive language modelling: next-token cross-entropy and cached generation.

Training maximizes log p(x) = sum_t log p(x_t | x_<t) (Radford et al. 2018, Eq. 1) on
windows of `seq_len + 1` tokens: inputs are tokens[:, :-1], targets tokens[:, 1:].
Evaluation reports the mean loss in nats per token, perplexity exp(loss), and bits per
character (char tokenizer) or per byte (byte tokenizer), loss / ln 2.

Generation (`generate`) prefills the prompt into the model's cache (GPT: keys and values;
LSTM: the recurrent state), then decodes one token per step inside a single `lax.scan`,
sampling with temperature, top-k and top-p (nucleus, Holtzman et al. 2020). A GPT has a
finite context (`block_size`); longer generations continue in chunks that re-prefill the
last block_size // 2 tokens into a fresh cache, so every token still sees at least that
much context (nanoGPT instead re-runs the last block_size tokens for every new token).
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from gen_jax.core.errors import ConfigError
from gen_jax.core.optimizer import make_optimizer, matrices_are_hidden
from gen_jax.core.state import TrainState, accumulated_value_and_grad, apply_gradients
from gen_jax.interop import hf_gpt2
from gen_jax.methods.base import ForeignExport, Method, Params, Samples, grad_accum_steps
from gen_jax.models import gpt
from gen_jax.models.gpt import GPT
from gen_jax.models.lstm import LSTMLM

ARCHS = ("gpt", "lstm")


def next_token_loss(logits_BxTxV: jax.Array, targets_BxT: jax.Array) -> jax.Array:
  """Mean cross-entropy -log p(x_t | x_<t) in nats per token, computed in float32."""
  return optax.softmax_cross_entropy_with_integer_labels(
      logits_BxTxV.astype(jnp.float32), targets_BxT).mean()


# ------------------------------------------------------------------------------ sampling


def filter_logits(logits_BxV: jax.Array, top_k: int = 0, top_p: float = 1.0) -> jax.Array:
  """Sets to -inf every logit outside the top-k tokens and outside the top-p nucleus.

  top_k = 0 and top_p = 1 keep everything. The nucleus is the smallest set of most
  likely tokens whose probabilities sum to >= top_p (Holtzman et al. 2020, Eq. 2); the
  most likely token is always kept.
  """
  if top_k:
    kth_largest = jax.lax.top_k(logits_BxV, top_k)[0][..., -1:]
    logits_BxV = jnp.where(logits_BxV >= kth_largest, logits_BxV, -jnp.inf)
  if top_p < 1.0:
    sorted_BxV = jnp.sort(logits_BxV, axis=-1)[..., ::-1]
    probs = jax.nn.softmax(sorted_BxV, axis=-1)
    mass_before = jnp.cumsum(probs, axis=-1) - probs
    kept = jnp.where(mass_before < top_p, sorted_BxV, jnp.inf)
    logits_BxV = jnp.where(logits_BxV >= kept.min(axis=-1, keepdims=True), logits_BxV, -jnp.inf)
  return logits_BxV


def sample_token(rng: jax.Array, logits_BxV: jax.Array, temperature: float = 1.0,
                 top_k: int = 0, top_p: float = 1.0) -> jax.Array:
  """One token id per row; temperature 0 is greedy (argmax)."""
  if temperature == 0.0:
    return jnp.argmax(logits_BxV, axis=-1).astype(jnp.int32)
  logits_BxV = filter_logits(logits_BxV.astype(jnp.float32) / temperature, top_k, top_p)
  return jax.random.categorical(rng, logits_BxV, axis=-1).astype(jnp.int32)


def _decode_chunk(model, params, context_BxC: jax.Array, rng: jax.Array, num_new: int,
                  sample_fn) -> jax.Array:
  """Prefills `context` into a fresh cache, then decodes `num_new` tokens in one scan."""
  B, C = context_BxC.shape
  variables = {"params": params}
  cache = model.apply(variables, B, C + num_new, method=model.init_cache)
  logits, cache = model.apply(variables, context_BxC, cache, method=model.decode)
  first_rng, rng = jax.random.split(rng)
  first_B = sample_fn(first_rng, logits[:, -1])

  def step(carry, step_rng):
    token_B, cache = carry
    logits, cache = model.apply(variables, token_B[:, None], cache, method=model.decode)
    return (sample_fn(step_rng, logits[:, 0]), cache), token_B

  (last_B, _), tokens_NxB = jax.lax.scan(step, (first_B, cache),
                                         jax.random.split(rng, num_new - 1))
  return jnp.concatenate([tokens_NxB.T, last_B[:, None]], axis=1)


def generate(model, params, prompt_P: jax.Array, rng: jax.Array, num: int,
             max_new_tokens: int, *, temperature: float = 1.0, top_k: int = 0,
             top_p: float = 1.0) -> jax.Array:
  """`num` continuations of `prompt`: int32 [num, P + max_new_tokens] (prompt included).

  With a context limit L (GPT's block_size): the first chunk sees the last L - 1 prompt
  tokens at most and fills the cache up to L; each later chunk re-prefills the last
  L // 2 tokens and decodes L - L // 2 more (see the module docstring).
  """
  if max_new_tokens < 1:
    raise ValueError(f"max_new_tokens={max_new_tokens} must be >= 1.")
  sample_fn = lambda r, logits: sample_token(r, logits, temperature, top_k, top_p)
  prompt_BxP = jnp.broadcast_to(jnp.asarray(prompt_P, jnp.int32), (num, len(prompt_P)))
  L = getattr(model, "block_size", None)
  context = prompt_BxP if L is None else prompt_BxP[:, -(L - 1):]
  first_new = max_new_tokens if L is None else min(max_new_tokens, L - context.shape[1])
  first_rng, rng = jax.random.split(rng)
  new = _decode_chunk(model, params, context, first_rng, first_new, sample_fn)
  remaining = max_new_tokens - first_new
  if remaining > 0 and L is not None:   # with no context limit, the first chunk is all
    keep = L // 2
    per_chunk = L - keep
    num_chunks = math.ceil(remaining / per_chunk)
    tail = jnp.concatenate([prompt_BxP, new], axis=1)[:, -keep:]

    def chunk(tail_BxW, chunk_rng):
      out = _decode_chunk(model, params, tail_BxW, chunk_rng, per_chunk, sample_fn)
      return jnp.concatenate([tail_BxW, out], axis=1)[:, -keep:], out

    _, outs = jax.lax.scan(chunk, tail, jax.random.split(rng, num_chunks))
    later = jnp.moveaxis(outs, 0, 1).reshape(num, num_chunks * per_chunk)[:, :remaining]
    new = jnp.concatenate([new, later], axis=1)
  return jnp.concatenate([prompt_BxP, new], axis=1)


# -------------------------------------------------------------------------------- method


def build_model(config: ml_collections.ConfigDict, vocab_size: int):
  m, dtype = config.model, jnp.dtype(config.dtype)
  if m.arch == "gpt":
    if config.data.seq_len > m.block_size:
      raise ValueError(f"data.seq_len={config.data.seq_len} exceeds model.block_size="
                       f"{m.block_size}: the GPT has no position embedding beyond it.")
    return GPT(vocab_size=vocab_size, block_size=m.block_size, n_layer=m.n_layer,
               n_head=m.n_head, n_embd=m.n_embd, dropout=m.dropout, use_bias=m.use_bias,
               gelu=m.gelu, vocab_multiple=m.vocab_multiple, remat=m.remat,
               dtype=dtype, position=m.position, rope_base=m.rope_base, norm=m.norm,
               embed_norm=m.embed_norm, qk_norm=m.qk_norm, mlp_activation=m.mlp_activation,
               tie_head=m.tie_head, zero_init_proj=m.zero_init_proj,
               logit_softcap=m.logit_softcap, attention_window=m.attention_window)
  if m.arch == "lstm":
    return LSTMLM(vocab_size=vocab_size, n_layer=m.n_layer, n_embd=m.n_embd,
                  hidden_size=m.hidden_size, dropout=m.dropout, dtype=dtype)
  raise ValueError(f"model.arch={m.arch!r}; expected one of {ARCHS}.")


UNITS = {"char": "char", "byte": "byte", "ids": "token", "bpe": "token"}   # bits counted per


@dataclasses.dataclass(frozen=True)
class AutoregressiveMethod(Method):
  """A language model trained by next-token prediction; samples are token ids."""

  model: Any
  tx: optax.GradientTransformation
  config: ml_collections.ConfigDict   # for the foreign-weight checks, which name its fields
  seq_len: int
  unit: str                     # what one token is: 'char', 'byte' or 'token' (bits per unit)
  prompt: tuple[int, ...]       # sample.prompt, tokenized
  top_k: int                    # sample.top_k; 0 (off) when it covers the vocabulary
  sample_cfg: ml_collections.ConfigDict
  ema_decay: float
  ema_warmup: bool
  grad_accum_steps: int         # micro-batches per update (one optimizer step per batch)

  @classmethod
  def from_config(cls, config: ml_collections.ConfigDict, spec) -> AutoregressiveMethod:
    s = config.sample
    if s.temperature < 0 or not 0 < s.top_p <= 1 or s.top_k < 0:
      raise ConfigError(f"sample.temperature={s.temperature} must be >= 0, sample.top_p="
                        f"{s.top_p} in (0, 1], sample.top_k={s.top_k} >= 0 (0 = off).")
    if not s.prompt:
      raise ConfigError("sample.prompt is empty; give at least one character, e.g. '\\n'.")
    try:
      prompt = tuple(int(t) for t in spec.tokenizer.encode(s.prompt))
    except ValueError as e:   # a character the dataset's text lacks (a char vocabulary)
      raise ConfigError(f"sample.prompt={s.prompt!r}: {e} Set --config.sample.prompt to "
                        "text made of the dataset's characters.") from None
    model = build_model(config, spec.vocab_size)
    roles = gpt.param_roles if isinstance(model, GPT) else matrices_are_hidden
    return cls(model=model, tx=make_optimizer(config.train, param_roles=roles),
               config=config, seq_len=config.data.seq_len, unit=UNITS[config.data.tokenizer],
               prompt=prompt,
               top_k=s.top_k if s.top_k < spec.vocab_size else 0,
               sample_cfg=s, ema_decay=config.train.ema_decay,
               ema_warmup=config.train.ema_warmup,
               grad_accum_steps=grad_accum_steps(config))

  def init(self, rng, batch) -> TrainState:
    tokens = jnp.zeros((1, self.seq_len), jnp.int32)
    return TrainState.create(self.model.init(rng, tokens)["params"], self.tx)

  def _loss(self, params, rows: dict[str, jax.Array], train: bool,
            dropout_rng=None) -> jax.Array:
    """Mean next-token loss of `rows`: tokens [B, T + 1] and, for packed rows (a GPT only),
    segment_ids [B, T + 1], so that attention stays within each document."""
    rngs = {"dropout": dropout_rng} if train else None
    tokens_BxT1 = rows["tokens"]
    kwargs = {}
    if "segment_ids" in rows:
      kwargs["segment_ids"] = rows["segment_ids"][:, :-1]
    logits = self.model.apply({"params": params}, tokens_BxT1[:, :-1], train=train, rngs=rngs,
                              **kwargs)
    return next_token_loss(logits, tokens_BxT1[:, 1:])

  def _rows(self, batch) -> dict[str, jax.Array]:
    """The batch's model inputs: tokens, and segment_ids when the loader packs documents
    and the model is a GPT (an LSTM reads packed rows as one stream, as it reads text)."""
    keys = ("tokens", "segment_ids") if isinstance(self.model, GPT) else ("tokens",)
    return {k: batch[k] for k in keys if k in batch}

  def train_step(self, state: TrainState, batch, rng):
    loss_fn = lambda params, rows, key: self._loss(params, rows, True, key)
    loss, grads = accumulated_value_and_grad(loss_fn, state.params, self._rows(batch), rng,
                                             self.grad_accum_steps)
    state, health = apply_gradients(state, grads, self.tx, self.ema_decay, self.ema_warmup)
    return state, {"loss": loss, **health}

  @property
  def _weights(self) -> tuple[str, ...]:
    # Without EMA (decay 0) the EMA weights are the raw weights: evaluate them once.
    return ("ema", "raw") if self.ema_decay > 0 else ("raw",)

  def eval_step(self, state: TrainState, batch, rng):
    """Mean next-token loss (nats) of each set of weights on one batch of windows."""
    params = {"ema": state.ema_params, "raw": state.params}
    rows = self._rows(batch)
    return {f"{w}/loss": self._loss(params[w], rows, False) for w in self._weights}

  def summarize_eval(self, metrics: dict[str, float]) -> dict[str, float]:
    """Adds perplexity = exp(mean loss) and bits per char/byte = mean loss / ln 2.

    Derived from the loss averaged over all eval batches (a mean of per-batch
    perplexities would overstate it, by Jensen's inequality).
    """
    out = dict(metrics)
    for name, loss in metrics.items():
      if name.endswith("/loss"):
        prefix = name[: -len("loss")]
        out[prefix + "perplexity"] = float(np.exp(loss))
        out[prefix + f"bits_per_{self.unit}"] = loss / math.log(2)
    return out

  @property
  def sample_tag(self) -> str:
    s = self.sample_cfg
    if s.temperature == 0:
      return "greedy"
    parts = [f"t{s.temperature:g}"] + ([f"topk{self.top_k}"] if self.top_k else []) + (
        [f"topp{s.top_p:g}"] if s.top_p < 1 else [])
    return "_".join(parts)

  def sample(self, state: TrainState, rng, num: int, use_ema: bool = True,
             batch=None, labels=None) -> Samples:   # unconditional: labels is always None
    """`num` continuations of `sample.prompt`: `Samples` of tokens, int32
    [num, len(prompt) + max_new_tokens]."""
    s = self.sample_cfg
    return Samples(tokens=generate(self.model, state.ema_params if use_ema else state.params,
                                   jnp.asarray(self.prompt, jnp.int32), rng, num,
                                   s.max_new_tokens, temperature=s.temperature, top_k=self.top_k,
                                   top_p=s.top_p))

  def tensor_parallel_dims(self, abstract_params: Params) -> dict[tuple[str, ...], int]:
    """A GPT's Megatron split (`gpt.tensor_parallel_dims`); an LSTM has none."""
    if isinstance(self.model, GPT):
      return gpt.tensor_parallel_dims(abstract_params)
    return super().tensor_parallel_dims(abstract_params)

  # ------------------------------------------------ foreign weights (gen_jax/interop)

  def init_from_formats(self) -> tuple[str, ...]:
    """A GPT of GPT-2's layout (no modern-block options) starts from Hugging Face GPT-2
    weights (`init_from='hf_gpt2:<path>'`)."""
    return ("hf_gpt2",) if isinstance(self.model, GPT) and self.model.is_gpt2_layout else ()

  def export_formats(self) -> tuple[str, ...]:
    """A GPT exports as Hugging Face GPT-2 (`export.format='hf_gpt2'`)."""
    return self.init_from_formats()

  def load_foreign_params(self, init_from: str, abstract_params: Params) -> Params:
    """The GPT's params from `init_from='hf_gpt2:<file or folder>'`
    (`gen_jax.interop.hf_gpt2.load_params`)."""
    if not self.init_from_formats():
      return super().load_foreign_params(init_from, abstract_params)
    return hf_gpt2.load_params(init_from, self.model, self.config, abstract_params)

  def export_foreign(self, export_format: str, params: Params, step: int) -> ForeignExport:
    """A folder `GPT2LMHeadModel.from_pretrained` loads (`gen_jax.interop.hf_gpt2`)."""
    if export_format not in self.export_formats():
      return super().export_foreign(export_format, params, step)
    tensors, metadata, hf_config = hf_gpt2.export_files(params, self.model, step)
    return ForeignExport(weights_file=hf_gpt2.WEIGHTS, tensors=tensors, metadata=metadata,
                         json_files={hf_gpt2.HF_CONFIG: hf_config},
                         config_file=hf_gpt2.GEN_JAX_CONFIG)
