"""Optimizer from config: Adam/AdamW/Adagrad, or Muon for hidden matrices with Adam for the
rest; linear warmup, constant, cosine, linear or cooldown decay, clipping."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import ml_collections
import optax

from gen_jax.core.muon import scale_by_muon

OPTIMIZERS = ("adam", "adamw", "adagrad", "muon")
# What each parameter is to Muon's optimizer (`param_roles`): a hidden matrix (Muon), the
# token embedding, the output head, or anything else (vectors, scalars: Adam).
PARAM_ROLES = ("hidden", "embedding", "head", "other")
ParamRoles = Callable[[Any], Any]   # params -> the same tree of PARAM_ROLES names


def learning_rate_schedule(cfg: ml_collections.ConfigDict,
                           updates_per_step: int = 1) -> optax.Schedule:
  """Linear warmup from 0 to `lr` over `warmup_steps`, then `lr_decay`.

  `lr_decay='constant'` keeps `lr` (Ho et al. 2020); `'cooldown'` keeps it until the last
  `cooldown_steps` of `num_steps`, then decays linearly to `lr * min_lr_ratio` at num_steps
  (the trapezoid of Hägele et al. 2024 that modded-nanogpt uses); `'cosine'` decays to
  `lr * min_lr_ratio` at `decay_steps` (default, 0: `num_steps`) and stays there (as in
  GPT training; nanoGPT's `lr_decay_iters`); `'linear'` decays linearly to the same value
  (with min_lr_ratio 0: Gulrajani et al.'s ResNet WGAN-GP, lr * (1 - step / ITERS)). A
  fixed `decay_steps` keeps the schedule of a run the same when it is extended by raising
  `num_steps`.

  Args:
    cfg: the `train` config group.
    updates_per_step: optimizer updates per train step (a GAN's critic takes n_critic);
      the schedule is stretched by it, so that it follows the train steps the config counts.
  """
  k = updates_per_step
  warmup_steps = cfg.warmup_steps * k
  warmup = optax.linear_schedule(0.0, cfg.lr, max(warmup_steps, 1))
  if cfg.lr_decay == "constant":
    after = optax.constant_schedule(cfg.lr)
  elif cfg.lr_decay == "cosine":
    after = optax.cosine_decay_schedule(
        cfg.lr, max((cfg.decay_steps or cfg.num_steps) * k - warmup_steps, 1),
        alpha=cfg.min_lr_ratio)
  elif cfg.lr_decay == "cooldown":
    constant_steps = max(cfg.num_steps * k - cfg.cooldown_steps * k - warmup_steps, 0)
    after = optax.join_schedules(
        [optax.constant_schedule(cfg.lr),
         optax.linear_schedule(cfg.lr, cfg.lr * cfg.min_lr_ratio, max(cfg.cooldown_steps * k, 1))],
        [constant_steps])
  elif cfg.lr_decay == "linear":
    after = optax.linear_schedule(
        cfg.lr, cfg.lr * cfg.min_lr_ratio,
        max((cfg.decay_steps or cfg.num_steps) * k - warmup_steps, 1))
  else:
    raise ValueError(f"train.lr_decay={cfg.lr_decay!r}; expected 'constant', 'cosine', "
                     "'linear' or 'cooldown'.")
  if warmup_steps <= 0:
    return after
  return optax.join_schedules([warmup, after], [warmup_steps])


def _matrices_only(params):
  """Weight-decay mask: decay kernels/embeddings (ndim >= 2), not biases or norms."""
  return jax.tree.map(lambda p: p.ndim >= 2, params)


def matrices_are_hidden(params) -> Any:
  """The default `param_roles`: every 2-D leaf is a hidden matrix, the rest 'other'."""
  return jax.tree.map(lambda p: "hidden" if p.ndim == 2 else "other", params)


def muon_momentum_schedule(cfg: ml_collections.ConfigDict) -> optax.Schedule:
  """Muon's momentum: from muon_momentum_start to muon_momentum, linearly over the first
  muon_momentum_warmup updates (modded-nanogpt: 0.85 -> 0.95 over 300), then constant."""
  if cfg.muon_momentum_warmup <= 0:
    return optax.constant_schedule(cfg.muon_momentum)
  return optax.linear_schedule(cfg.muon_momentum_start, cfg.muon_momentum,
                               cfg.muon_momentum_warmup)


def muon_with_adam(cfg: ml_collections.ConfigDict, schedule: optax.Schedule,
                   param_roles: ParamRoles = matrices_are_hidden,
                   b2_schedule: optax.Schedule | None = None) -> optax.GradientTransformation:
  """Muon for the hidden matrices, Adam for the embedding, the head and the rest, as
  modded-nanogpt's `train_gpt2.py` splits them (four optimizers on one schedule).

  The Muon part's learning rate is `schedule` (peak `lr`); each Adam part follows the same
  schedule scaled to its own peak: adam_lr_embedding, adam_lr_head, adam_lr_other (b1, b2,
  eps shared). `weight_decay` > 0 decays the hidden matrices (decoupled), and only them.
  """
  def scaled(peak: float) -> optax.Schedule:
    return lambda step: schedule(step) * (peak / cfg.lr)

  def adam(peak: float) -> optax.GradientTransformation:
    return optax.adam(scaled(peak), b1=cfg.b1, b2=cfg.b2, eps=cfg.eps)

  hidden = [scale_by_muon(muon_momentum_schedule(cfg), nesterov=True, ns_steps=cfg.muon_ns_steps)]
  if cfg.weight_decay > 0:
    hidden.append(optax.add_decayed_weights(cfg.weight_decay))
  hidden.append(optax.scale_by_learning_rate(schedule))
  return optax.multi_transform(
      {"hidden": optax.chain(*hidden), "embedding": adam(cfg.adam_lr_embedding),
       "head": adam(cfg.adam_lr_head), "other": adam(cfg.adam_lr_other)},
      param_roles)


def make_optimizer(cfg: ml_collections.ConfigDict,
                   schedule: optax.Schedule | None = None,
                   param_roles: ParamRoles = matrices_are_hidden,
                   b2_schedule: optax.Schedule | None = None) -> optax.GradientTransformation:
  """Builds the optax chain described by the `train` config group.

  Fields used: optimizer, lr, lr_decay, warmup_steps, num_steps, min_lr_ratio, b1, b2, eps,
  weight_decay, grad_clip (global norm; 0 disables). `optimizer`:
    'adam'     Adam (b1, b2, eps); weight_decay unused.
    'adamw'    AdamW, weight_decay decoupled, on matrices only.
    'adagrad'  Adagrad (eps), as Kingma & Welling 2014 §5 train their VAEs; weight_decay
               is an L2 penalty added to the gradient (their N(0, I) prior on the weights).
    'muon'     Muon (gen_jax/core/muon.py) for hidden matrices at `lr`, Adam at
               adam_lr_embedding / adam_lr_head / adam_lr_other for the rest
               (`muon_with_adam`; muon_momentum, muon_momentum_start, muon_momentum_warmup,
               muon_ns_steps).

  Args:
    cfg: the `train` config group.
    schedule: a learning-rate schedule that replaces `learning_rate_schedule(cfg)` (then
      lr_decay, warmup_steps, num_steps and min_lr_ratio are unused).
    param_roles: for 'muon', params -> a tree of PARAM_ROLES names (default: 2-D leaves are
      hidden, the rest other); a model knows which leaves are its embedding and head.
    b2_schedule: Adam's beta2 as a function of the update count, replacing `b2` ('adam'
      only; R3GAN's release schedules it).
  """
  if schedule is None:
    schedule = learning_rate_schedule(cfg)
  if cfg.optimizer == "adam" and b2_schedule is not None:
    opt = optax.inject_hyperparams(optax.adam)(learning_rate=schedule, b1=cfg.b1,
                                               b2=b2_schedule, eps=cfg.eps)
  elif cfg.optimizer == "adam":
    opt = optax.adam(schedule, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps)
  elif cfg.optimizer == "adamw":
    opt = optax.adamw(schedule, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps,
                      weight_decay=cfg.weight_decay, mask=_matrices_only)
  elif cfg.optimizer == "muon":
    opt = muon_with_adam(cfg, schedule, param_roles)
  elif cfg.optimizer == "adagrad":
    opt = optax.adagrad(schedule, eps=cfg.eps)
    if cfg.weight_decay > 0:
      opt = optax.chain(optax.add_decayed_weights(cfg.weight_decay), opt)
  else:
    raise ValueError(f"train.optimizer={cfg.optimizer!r}; expected one of {OPTIMIZERS}.")
  if cfg.grad_clip > 0:
    return optax.chain(optax.clip_by_global_norm(cfg.grad_clip), opt)
  return opt
