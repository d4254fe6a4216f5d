"""LSTM language model (Hochreiter & Schmidhuber 1997), the recurrent baseline: a character
model as in Graves 2013 and char-rnn, with Zaremba et al. 2014's non-recurrent dropout.

tokens [B, T] -> embedding -> n_layer stacked LSTMs -> dense head -> logits [B, T, V].

The same interface as `gen_jax.models.gpt.GPT`: `__call__(tokens, train=)` for training
and `decode(tokens, cache)` / `init_cache(batch, length)` for generation, where the cache
is the recurrent state (h, c) of every layer. It has no context limit: `length` is ignored.

Mixed precision: the cells' and the head's matmuls run in `dtype`; parameters, the
recurrent state (c, h) and the returned logits are float32.
"""
from __future__ import annotations

from typing import Any

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp

# (c, h) per layer, each [n_layer, B, hidden]: what flax's LSTM cells carry.
LSTMCache = tuple[jax.Array, jax.Array]


class LSTMLM(nn.Module):
  """Attributes:
    vocab_size: number of token ids.
    n_layer: stacked LSTM layers.
    n_embd: embedding width (the input of the first LSTM).
    hidden_size: LSTM state width.
    dropout: dropout between layers and before the head (training only).
    dtype: compute dtype of the cells' and the head's matmuls (parameters stay float32).
  """
  vocab_size: int
  n_layer: int
  n_embd: int
  hidden_size: int
  dropout: float = 0.0
  dtype: Any = jnp.float32

  def setup(self):
    self.embed = nn.Embed(self.vocab_size, self.n_embd)
    self.layers = [nn.RNN(nn.OptimizedLSTMCell(self.hidden_size, dtype=self.dtype),
                          return_carry=True, name=f"lstm_{i}") for i in range(self.n_layer)]
    self.drop = nn.Dropout(self.dropout)
    self.head = nn.Dense(self.vocab_size, dtype=self.dtype, name="head")

  def _run(self, tokens_BxT, cache: LSTMCache, train: bool) -> tuple[jax.Array, LSTMCache]:
    chex.assert_rank(tokens_BxT, 2)
    chex.assert_shape(cache, ((self.n_layer, tokens_BxT.shape[0], self.hidden_size),) * 2)
    x = self.drop(self.embed(tokens_BxT), deterministic=not train)
    cs, hs = [], []
    for i, layer in enumerate(self.layers):
      carry, x = layer(x, initial_carry=(cache[0][i], cache[1][i]))
      x = self.drop(x, deterministic=not train)
      cs.append(carry[0])
      hs.append(carry[1])
    return self.head(x).astype(jnp.float32), (jnp.stack(cs), jnp.stack(hs))

  def __call__(self, tokens_BxT: jax.Array, *, train: bool = False) -> jax.Array:
    """Logits of every next token, from a zero initial state."""
    return self._run(tokens_BxT, self.init_cache(tokens_BxT.shape[0]), train)[0]

  def init_cache(self, batch_size: int, length: int | None = None) -> LSTMCache:
    zeros = jnp.zeros((self.n_layer, batch_size, self.hidden_size), jnp.float32)
    return (zeros, zeros)

  def decode(self, tokens_BxT: jax.Array, cache: LSTMCache) -> tuple[jax.Array, LSTMCache]:
    """Logits for `tokens` continuing from the recurrent state `cache`."""
    return self._run(tokens_BxT, cache, train=False)
