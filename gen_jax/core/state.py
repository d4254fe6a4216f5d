"""The train state every method returns, and the one update rule they all share.

`TrainState` is a pytree: the engine shards it, donates it to the jitted step and
checkpoints it whole. It holds no random key — randomness is derived inside the
step from `(base_rng, step)` — and no optimizer object (the optax transformation
is static code held by the method).

An update is `optimizer_step` (gradients -> new params and optimizer state) and then
`finish_step` (step + 1, EMA); `apply_gradients` is the two for a single optimizer, and a
method with several (a GAN's two players) calls `optimizer_step` once per player update.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import chex
import flax.struct
import jax
import jax.numpy as jnp
import optax

PyTree = Any


class TrainState(flax.struct.PyTreeNode):
  """Everything that changes during training.

  Attributes:
    step: int32 scalar, number of completed updates.
    params: the trained parameters (float32).
    ema_params: exponential moving average of `params`, used by default for
      sampling and evaluation (metric names say `ema`).
    opt_state: optax state. A method with several optimizers (a GAN) keeps a dict.
    model_state: non-trained model variables, e.g. BatchNorm `batch_stats`
      (empty dict when the model has none).
  """

  step: jax.Array
  params: PyTree
  ema_params: PyTree
  opt_state: PyTree
  model_state: PyTree = flax.struct.field(default_factory=dict)

  @classmethod
  def create(cls, params: PyTree,
             tx: optax.GradientTransformation | Mapping[str, optax.GradientTransformation],
             model_state: PyTree | None = None) -> TrainState:
    """Step 0, `ema_params = params` and a fresh optimizer state.

    Args:
      params: the initial parameters.
      tx: one transformation for all of `params`, or one per top-level entry of `params`
        (a GAN: {"generator": tx_g, "discriminator": tx_d}); then `opt_state` is the dict
        {name: tx[name].init(params[name])}.
      model_state: non-trained variables (default: none).
    """
    if isinstance(tx, Mapping):
      if set(tx) != set(params):
        raise ValueError(f"One optimizer per top-level entry of params: got optimizers for "
                         f"{sorted(tx)} and params {sorted(params)}.")
      opt_state = {name: t.init(params[name]) for name, t in tx.items()}
    else:
      opt_state = tx.init(params)
    return cls(
        step=jnp.zeros((), jnp.int32),
        params=params,
        ema_params=params,
        opt_state=opt_state,
        model_state={} if model_state is None else model_state,
    )


def ema_update(ema: PyTree, new: PyTree, decay: float | jax.Array) -> PyTree:
  """ema <- decay * ema + (1 - decay) * new (Polyak averaging, as in Ho et al. 2020 App. B)."""
  chex.assert_trees_all_equal_shapes(ema, new)
  return jax.tree.map(lambda e, p: decay * e + (1.0 - decay) * p, ema, new)


def ema_decay_at(step: jax.Array, decay: float, warmup: bool) -> jax.Array:
  """The EMA decay used at `step`; with warmup, min(decay, (1 + step) / (10 + step)).

  Warmup (as TF's ExponentialMovingAverage with `num_updates`) keeps early EMA weights
  from being dominated by the random initialization, so short runs sample sensibly.
  """
  if not warmup:
    return jnp.asarray(decay, jnp.float32)
  step = step.astype(jnp.float32)
  return jnp.minimum(decay, (1.0 + step) / (10.0 + step))


def optimizer_step(tx: optax.GradientTransformation, params: PyTree, opt_state: PyTree,
                   grads: PyTree) -> tuple[PyTree, PyTree, dict[str, jax.Array]]:
  """One optimizer update of `params` (the whole tree, or one player's part of it).

  Returns:
    (new params, new opt_state, {"grad_norm", "update_norm"}: global L2 norms).
  """
  # Trace-time checks (free at run time): one gradient per parameter, same shape and dtype.
  chex.assert_trees_all_equal_shapes_and_dtypes(grads, params)
  updates, opt_state = tx.update(grads, opt_state, params)
  params = optax.apply_updates(params, updates)
  return params, opt_state, {"grad_norm": optax.tree.norm(grads),
                             "update_norm": optax.tree.norm(updates)}


def finish_step(state: TrainState, ema_decay: float, ema_warmup: bool = False,
                **replace: Any) -> TrainState:
  """`state` with the fields in `replace` (the new `params`, ...), `step + 1`, and
  `ema_params` moved toward the new params with the decay of the step just taken."""
  new = state.replace(step=state.step + 1, **replace)
  if ema_decay == 0.0:   # no EMA: skip the arithmetic
    return new.replace(ema_params=new.params)
  return new.replace(ema_params=ema_update(state.ema_params, new.params,
                                           ema_decay_at(state.step, ema_decay, ema_warmup)))


def apply_gradients(state: TrainState, grads: PyTree, tx: optax.GradientTransformation,
                    ema_decay: float, ema_warmup: bool = False,
                    **replace: Any) -> tuple[TrainState, dict[str, jax.Array]]:
  """One optimizer step plus EMA; returns the new state and cheap health metrics.

  Args:
    state: current state.
    grads: gradients with the structure of `state.params`.
    tx: the optax transformation that produced `state.opt_state`.
    ema_decay: EMA decay in [0, 1); 0 makes `ema_params` track `params`.
    ema_warmup: use `ema_decay_at` warmup of the decay.
    **replace: other state fields to replace (e.g. `model_state=`).

  Returns:
    (new_state, metrics) with `grad_norm`, `update_norm` and `param_norm` (global L2).
  """
  params, opt_state, norms = optimizer_step(tx, state.params, state.opt_state, grads)
  new_state = finish_step(state, ema_decay, ema_warmup, params=params, opt_state=opt_state,
                          **replace)
  return new_state, {**norms, "param_norm": optax.tree.norm(params)}


def accumulated_value_and_grad(loss_fn: Callable[[PyTree, PyTree, jax.Array], Any],
                               params: PyTree, batch: PyTree, rng: jax.Array | None,
                               num_microbatches: int, has_aux: bool = False):
  """`jax.value_and_grad(loss_fn, has_aux)(params, batch, rng)`, averaged over M micro-batches.

  Gradient accumulation: `batch` (a pytree of arrays whose leading axis is the example
  axis) is cut into M = `num_microbatches` equal micro-batches; their losses, gradients
  and aux outputs are summed in a `lax.scan` and divided by M. For a loss that is a mean
  over examples this equals `value_and_grad` on the whole batch (up to float rounding)
  while holding the activations of one micro-batch at a time. Randomness that must not
  depend on M (diffusion's t and noise, a VAE's eps) is best drawn per example before the
  call and passed in `batch`.

  Micro-batch m takes rows m, m + M, m + 2M, ... so that, with the batch sharded over
  devices, every device keeps working on its own rows; it gets the key `fold_in(rng, m)`.
  With M = 1 this is exactly `value_and_grad` with `rng` itself.

  Args:
    loss_fn: (params, microbatch, key) -> loss, or (loss, aux) with `has_aux`.
    params: differentiated argument (float32; the running sums keep its dtype, so
      bfloat16 compute still accumulates float32 gradients).
    batch: pytree of [B, ...] arrays; M must divide B.
    rng: key, folded with the micro-batch index; None for a loss that takes no key.
    num_microbatches: M >= 1.
    has_aux: `loss_fn` also returns aux, a pytree of floating arrays (metrics, BatchNorm
      running averages) that is averaged over micro-batches like the loss.

  Returns:
    (loss, grads), or ((loss, aux), grads) with `has_aux` -- as `jax.value_and_grad`.
  """
  grad_fn = jax.value_and_grad(loss_fn, has_aux=has_aux)
  if num_microbatches == 1:
    return grad_fn(params, batch, rng)
  M = num_microbatches

  def split(x):
    if x.shape[0] % M:
      raise ValueError(f"batch of {x.shape[0]} is not divisible into {M} micro-batches.")
    return x.reshape(x.shape[0] // M, M, *x.shape[1:]).swapaxes(0, 1)

  microbatches = jax.tree.map(split, batch)

  def micro_step(m, microbatch):
    return grad_fn(params, microbatch, None if rng is None else jax.random.fold_in(rng, m))

  def accumulate(total, inputs):
    return jax.tree.map(jnp.add, total, micro_step(*inputs)), None

  shapes = jax.eval_shape(micro_step, 0, jax.tree.map(lambda x: x[0], microbatches))
  zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)
  total, _ = jax.lax.scan(accumulate, zeros, (jnp.arange(M), microbatches))
  return jax.tree.map(lambda x: x / M, total)


def count_params(params: PyTree) -> int:
  """Total number of scalars in a pytree of arrays or ShapeDtypeStructs."""
  return sum(int(x.size) for x in jax.tree.leaves(params))
