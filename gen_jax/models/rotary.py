"""Rotary position embeddings (RoPE; Su et al. 2021, "RoFormer", §3.4).

RoPE encodes a token's position p by rotating pairs of query/key features by angles
p * theta_i, theta_i = base^(-2i/K) for i = 0 .. K/2 - 1 (their Eq. 15; base 10,000).
A rotation by p*theta applied to q and by s*theta to k leaves their dot product a function
of p - s alone (Eq. 16: R_p^T R_s = R_{s-p}), so attention scores see relative positions
only, and no position parameters are learned.

The pairs are (x_i, x_{i + K/2}), the two halves of the head dimension (GPT-NeoX's layout,
which modded-nanogpt's `apply_rotary_emb` uses) rather than RoFormer's adjacent
(x_{2i}, x_{2i+1}); the two layouts differ by a fixed permutation of the features, which the
learned projections absorb.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

DEFAULT_BASE = 10_000.0


def rotary_angles(positions_T: jax.Array, head_dim: int,
                  base: float = DEFAULT_BASE) -> jax.Array:
  """The rotation angles p * theta_i: float32 [T, head_dim // 2] (Su et al. 2021, Eq. 15).

  Raises:
    ValueError: head_dim is odd (the features are rotated in pairs).
  """
  if head_dim % 2:
    raise ValueError(f"rotary embeddings need an even head dimension, got {head_dim}.")
  inv_freq_K2 = base ** (-jnp.arange(0, head_dim, 2, dtype=jnp.float32) / head_dim)
  return positions_T.astype(jnp.float32)[:, None] * inv_freq_K2[None, :]


def apply_rotary(x_BxTxHxK: jax.Array, positions_T: jax.Array,
                 base: float = DEFAULT_BASE) -> jax.Array:
  """Rotates each head's feature pairs (x_i, x_{i+K/2}) by the angle of its position.

  y_i = x_i cos(p theta_i) - x_{i+K/2} sin(p theta_i),
  y_{i+K/2} = x_i sin(p theta_i) + x_{i+K/2} cos(p theta_i)   (Su et al. 2021, Eq. 34).
  Computed in float32, returned in x's dtype.

  Args:
    x_BxTxHxK: queries or keys.
    positions_T: the absolute position of each of the T tokens.
    base: theta's base.

  Returns:
    The rotated features, [B, T, H, K].
  """
  K = x_BxTxHxK.shape[-1]
  angles_1xTx1xK2 = rotary_angles(positions_T, K, base)[None, :, None, :]
  cos, sin = jnp.cos(angles_1xTx1xK2), jnp.sin(angles_1xTx1xK2)
  x = x_BxTxHxK.astype(jnp.float32)
  x1, x2 = x[..., :K // 2], x[..., K // 2:]
  y = jnp.concatenate([x1 * cos - x2 * sin, x1 * sin + x2 * cos], axis=-1)
  return y.astype(x_BxTxHxK.dtype)
