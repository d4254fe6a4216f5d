"""Optimizer from config: Adam/AdamW, linear warmup, constant or cosine decay, clipping."""
from __future__ import annotations

import jax
import ml_collections
import optax


def learning_rate_schedule(cfg: ml_collections.ConfigDict) -> optax.Schedule:
  """Linear warmup from 0 to `lr` over `warmup_steps`, then `lr_decay`.

  `lr_decay='constant'` keeps `lr` (Ho et al. 2020); `'cosine'` decays to
  `lr * min_lr_ratio` at `decay_steps` (default, 0: `num_steps`) and stays there (as in
  GPT training; nanoGPT's `lr_decay_iters`). A fixed `decay_steps` keeps the schedule of a
  run the same when it is extended by raising `num_steps`.
  """
  warmup = optax.linear_schedule(0.0, cfg.lr, max(cfg.warmup_steps, 1))
  if cfg.lr_decay == "constant":
    after = optax.constant_schedule(cfg.lr)
  elif cfg.lr_decay == "cosine":
    after = optax.cosine_decay_schedule(
        cfg.lr, max((cfg.get("decay_steps", 0) or cfg.num_steps) - cfg.warmup_steps, 1),
        alpha=cfg.min_lr_ratio)
  else:
    raise ValueError(f"train.lr_decay={cfg.lr_decay!r}; expected 'constant' or 'cosine'.")
  if cfg.warmup_steps <= 0:
    return after
  return optax.join_schedules([warmup, after], [cfg.warmup_steps])


def _matrices_only(params):
  """Weight-decay mask: decay kernels/embeddings (ndim >= 2), not biases or norms."""
  return jax.tree.map(lambda p: p.ndim >= 2, params)


def make_optimizer(cfg: ml_collections.ConfigDict) -> optax.GradientTransformation:
  """Builds the optax chain described by the `train` config group.

  Fields used: optimizer ('adam' | 'adamw'), lr, lr_decay, warmup_steps, num_steps,
  min_lr_ratio, b1, b2, eps, weight_decay, grad_clip (global norm; 0 disables).
  """
  schedule = learning_rate_schedule(cfg)
  if cfg.optimizer == "adam":
    opt = optax.adam(schedule, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps)
  elif cfg.optimizer == "adamw":
    opt = optax.adamw(schedule, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps,
                      weight_decay=cfg.weight_decay, mask=_matrices_only)
  else:
    raise ValueError(f"train.optimizer={cfg.optimizer!r}; expected 'adam' or 'adamw'.")
  if cfg.grad_clip > 0:
    return optax.chain(optax.clip_by_global_norm(cfg.grad_clip), opt)
  return opt
