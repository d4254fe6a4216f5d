"""Spectral normalization of a layer's weight (Miyato, Kataoka, Koyama, Yoshida 2018, "Spectral
Normalization for Generative Adversarial Networks", arXiv:1802.05957).

Eq. 8: the layer computes with W_SN = W / sigma(W), sigma(W) the largest singular value of
W viewed as a matrix. sigma is estimated by power iteration (Appendix A, Algorithm 1), one
iteration per training forward pass, from the previous estimate u kept between updates:

    v <- u W / ||u W||,    u <- v W^T / ||v W^T||,    sigma = u W v^T,

with W [O, I] (O the output side) and u, v treated as constants: the gradient flows
through W in both W and sigma(W) (Eq. 12), not through the power iteration. This is the
authors' chainer code (pfnet-research/sngan_projection, source/functions/max_sv.py
`max_singular_value`, one iteration, eps 1e-12; the links sn_linear.py,
sn_convolution_2d.py, sn_embed_id.py keep u as a persistent [1, O] array).

Where u lives and when it moves. The u vectors are variables of the flax collection
`COLLECTION` ('spectral_norm'), apart from 'batch_stats': a caller applies the network
with `mutable=[COLLECTION]` in training and keeps what comes back (the GAN keeps them in
its train state, so checkpoints hold them and a resumed run continues the same
estimates). `update_stats=True` (training) stores the new u; False (evaluation) uses the
iterated u for sigma without storing it, as the authors' convolution does under
`chainer.config.train = False` (their linear and embedding links store u on every call,
in evaluation too; here no layer does outside training).

`wrap` puts a Dense, Conv or Embed layer under `SpectralNorm`, which hands the layer
W / sigma(W) in place of its weight: a kernel [..., C_in, C_out] as the matrix [C_out,
C_in prod(k)] (chainer's layout; u [1, C_out]), an embedding table [K, F] as it is (u [1,
K], as sn_embed_id.py). The layer's parameters keep their names and initial values (flax's
own `nn.SpectralNorm` differs here: at init it stores W / sigma(W) as the parameter, a
rescaled start for Adam; it also iterates with the table transposed for an embedding and
keeps sigma as state). u starts as N(0, I), as theirs, drawn from the 'params' key.
"""
from __future__ import annotations

import functools
from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

COLLECTION = "spectral_norm"
EPSILON = 1e-12      # max_sv.py `_l2normalize`: x / (||x|| + eps)


def _l2_normalize(x: jax.Array) -> jax.Array:
  return x / (jnp.sqrt(jnp.sum(x * x)) + EPSILON)


def power_iteration(W_OxI: jax.Array, u_1xO: jax.Array) -> tuple[jax.Array, jax.Array]:
  """One step of Miyato et al. 2018, Algorithm 1 on the matrix W [O, I].

  Args:
    W_OxI: the weight as a matrix (output side first).
    u_1xO: the previous estimate of the first left singular vector.

  Returns:
    (sigma, u): the estimate sigma = u W v^T of the largest singular value (differentiable
    in W; u and v are constants) and the new u [1, O].
  """
  W = W_OxI.astype(jnp.float32)
  v_1xI = jax.lax.stop_gradient(_l2_normalize(u_1xO @ W))
  u_1xO = jax.lax.stop_gradient(_l2_normalize(v_1xI @ W.T))
  return jnp.sum((u_1xO @ W) * v_1xI), u_1xO


class SpectralNorm(nn.Module):
  """`layer` computing with its weight ('kernel' or 'embedding') spectrally normalized.

  Attributes:
    layer: a Dense, Conv or Embed created (and named) in the enclosing compact module.
  """

  layer: nn.Module

  @nn.compact
  def __call__(self, *args, update_stats: bool) -> jax.Array:
    def normalized(variables):
      params = dict(variables["params"])
      name = "kernel" if "kernel" in params else "embedding"
      weight = params[name]
      # [..., C_in, C_out] -> [C_out, C_in prod(k)]; a table [K, F] is already [O, I].
      W_OxI = weight if name == "embedding" else weight.reshape(-1, weight.shape[-1]).T
      u = self.variable(COLLECTION, "u", lambda: jax.random.normal(
          self.make_rng("params"), (1, W_OxI.shape[0]), jnp.float32))
      if self.is_initializing():
        # flax writes what this returns at init back as the parameters: keep W as drawn.
        return variables
      sigma, u_new = power_iteration(W_OxI, u.value)
      if update_stats:
        u.value = u_new
      params[name] = (weight / sigma).astype(weight.dtype)
      return {**variables, "params": params}

    # The layer reads its parameters through `normalized`; they are never rewritten.
    return nn.map_variables(lambda layer, *a: layer(*a), "params", trans_in_fn=normalized,
                            init=self.is_initializing(), mutable=False)(self.layer, *args)


def wrap(layer: nn.Module, enabled: bool, train: bool) -> Callable[..., jax.Array]:
  """`layer` (a named Dense, Conv or Embed, created inside a compact module) itself, or
  under `SpectralNorm` (named `<layer name>_sn`) when `enabled`; u moves only when `train`.
  """
  if not enabled:
    return layer
  return functools.partial(SpectralNorm(layer, name=f"{layer.name}_sn"), update_stats=train)
