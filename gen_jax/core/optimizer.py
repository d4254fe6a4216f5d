"""Optimizer from config: Adam/AdamW/Adagrad, linear warmup, constant, cosine or linear
decay, clipping."""
from __future__ import annotations

import jax
import ml_collections
import optax

OPTIMIZERS = ("adam", "adamw", "adagrad")


def learning_rate_schedule(cfg: ml_collections.ConfigDict,
                           updates_per_step: int = 1) -> optax.Schedule:
  """Linear warmup from 0 to `lr` over `warmup_steps`, then `lr_decay`.

  `lr_decay='constant'` keeps `lr` (Ho et al. 2020); `'cosine'` decays to
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
  elif cfg.lr_decay == "linear":
    after = optax.linear_schedule(
        cfg.lr, cfg.lr * cfg.min_lr_ratio,
        max((cfg.decay_steps or cfg.num_steps) * k - warmup_steps, 1))
  else:
    raise ValueError(f"train.lr_decay={cfg.lr_decay!r}; expected 'constant', 'cosine' or "
                     "'linear'.")
  if warmup_steps <= 0:
    return after
  return optax.join_schedules([warmup, after], [warmup_steps])


def _matrices_only(params):
  """Weight-decay mask: decay kernels/embeddings (ndim >= 2), not biases or norms."""
  return jax.tree.map(lambda p: p.ndim >= 2, params)


def make_optimizer(cfg: ml_collections.ConfigDict, schedule: optax.Schedule | None = None,
                   b2_schedule: optax.Schedule | None = None) -> optax.GradientTransformation:
  """Builds the optax chain described by the `train` config group.

  Fields used: optimizer, lr, lr_decay, warmup_steps, num_steps, min_lr_ratio, b1, b2, eps,
  weight_decay, grad_clip (global norm; 0 disables). `optimizer`:
    'adam'     Adam (b1, b2, eps); weight_decay unused.
    'adamw'    AdamW, weight_decay decoupled, on matrices only.
    'adagrad'  Adagrad (eps), as Kingma & Welling 2014 §5 train their VAEs; weight_decay
               is an L2 penalty added to the gradient (their N(0, I) prior on the weights).

  Args:
    cfg: the `train` config group.
    schedule: a learning-rate schedule that replaces `learning_rate_schedule(cfg)` (then
      lr_decay, warmup_steps, num_steps and min_lr_ratio are unused).
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
  elif cfg.optimizer == "adagrad":
    opt = optax.adagrad(schedule, eps=cfg.eps)
    if cfg.weight_decay > 0:
      opt = optax.chain(optax.add_decayed_weights(cfg.weight_decay), opt)
  else:
    raise ValueError(f"train.optimizer={cfg.optimizer!r}; expected one of {OPTIMIZERS}.")
  if cfg.grad_clip > 0:
    return optax.chain(optax.clip_by_global_norm(cfg.grad_clip), opt)
  return opt
