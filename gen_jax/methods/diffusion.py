"""Denoising diffusion probabilistic models: the training loss, the samplers, the method.

Ho, Jain, Abbeel 2020, "Denoising Diffusion Probabilistic Models" (arXiv:2006.11239): the
simplified objective L_simple (Eq. 14) and the ancestral sampler (Alg. 2).
Song, Meng, Ermon 2021 (arXiv:2010.02502): the DDIM sampler (Eq. 12, 16).
The forward process and schedules are in `gen_jax/methods/diffusion_process.py`; the
variational bound (bits/dim) in `gen_jax/methods/diffusion_likelihood.py`.

Timesteps are 0-based: index t in [0, T) is the paper's t+1.
"""
from __future__ import annotations

import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from gen_jax.core.optimizer import make_optimizer
from gen_jax.core.state import TrainState, accumulated_value_and_grad, apply_gradients
from gen_jax.methods import diffusion_likelihood
from gen_jax.methods.base import DatasetEvaluation, Method, grad_accum_steps, image_shape_of
from gen_jax.methods.diffusion_process import (TARGETS, Schedule, eps_from_x0, predict_x0_eps,
                                               q_posterior_mean_variance, q_sample,
                                               schedule_from_config, training_target)
from gen_jax.models.unet import UNet

DenoiseFn = Callable[[jax.Array, jax.Array], jax.Array]  # (x_t [B,H,W,C], t [B]) -> output


# ---------------------------------------------------------------------------------- loss


def sample_t_and_noise(sched: Schedule, rng: jax.Array,
                       shape_BxHxWxC: tuple[int, ...]) -> tuple[jax.Array, jax.Array]:
  """Per-example t ~ U{0, ..., T-1} [B] and eps ~ N(0, I) [B, H, W, C] (Ho et al., Alg. 1)."""
  t_rng, noise_rng = jax.random.split(rng)
  t_B = jax.random.randint(t_rng, (shape_BxHxWxC[0],), 0, sched.num_timesteps)
  return t_B, jax.random.normal(noise_rng, shape_BxHxWxC, jnp.float32)


def denoising_loss(sched: Schedule, denoise: DenoiseFn, x0: jax.Array, t_B: jax.Array,
                   noise: jax.Array, target: str = "eps") -> jax.Array:
  """The squared error of `l_simple` at given t and eps, averaged over examples and pixels,
  in float32 (a bfloat16 network's output is cast before the subtraction)."""
  output = denoise(q_sample(sched, x0, t_B, noise), t_B).astype(jnp.float32)
  return jnp.mean((training_target(sched, x0, noise, t_B, target) - output) ** 2)


def l_simple(sched: Schedule, denoise: DenoiseFn, x0: jax.Array, rng: jax.Array,
             target: str = "eps") -> jax.Array:
  """Ho et al. 2020, Eq. 14 (for target='eps'):

    L_simple = E_{t, x_0, eps} || eps - eps_theta(sqrt(abar_t) x_0 + sqrt(1-abar_t) eps, t) ||^2

  with t uniform over the T steps; the squared error is averaged over pixels.
  """
  t_B, noise = sample_t_and_noise(sched, rng, x0.shape)
  return denoising_loss(sched, denoise, x0, t_B, noise, target)


# ---------------------------------------------------------------------------- samplers


def _denoised(denoise: DenoiseFn, sched: Schedule, x, t, target: str, clip_x0: bool):
  """(t_B, x0_hat, eps_hat) at one reverse step; x0_hat clipped to [-1, 1] if asked,
  with eps_hat made consistent with the clipped x0_hat."""
  t_B = jnp.full((x.shape[0],), t)
  x0, eps = predict_x0_eps(sched, denoise(x, t_B).astype(jnp.float32), x, t_B, target)
  if clip_x0:
    x0 = jnp.clip(x0, -1.0, 1.0)
    eps = eps_from_x0(sched, x0, x, t_B)
  return t_B, x0, eps


def _reverse_scan(step_fn, rng: jax.Array, shape: tuple[int, ...], timesteps: np.ndarray):
  """Runs x_T ~ N(0, I) through `step_fn(x, (t, t_prev, key))` for t = timesteps[-1] .. [0].

  One `lax.scan`, so the whole chain is one compiled loop. Both samplers draw their
  keys in the same way, so with the same key they consume the same noise.
  """
  init_rng, steps_rng = jax.random.split(rng)
  x_T = jax.random.normal(init_rng, shape, jnp.float32)
  t_desc = np.asarray(timesteps[::-1], np.int32)
  t_prev = np.append(t_desc[1:], -1).astype(np.int32)
  keys = jax.random.split(steps_rng, len(t_desc))
  x_0, _ = jax.lax.scan(lambda x, inp: (step_fn(x, inp), None), x_T, (t_desc, t_prev, keys))
  return x_0


def ddpm_sample(denoise: DenoiseFn, sched: Schedule, rng: jax.Array, shape: tuple[int, ...], *,
                target: str = "eps", variance: str = "beta", clip_x0: bool = True) -> jax.Array:
  """Ho et al. 2020, Alg. 2, all T steps:  x_{t-1} = mu_theta(x_t, t) + sigma_t z.

  mu_theta is the posterior mean (Eq. 7) at the predicted x_0; without clipping this
  equals Alg. 2's 1/sqrt(alpha_t) (x_t - beta_t / sqrt(1 - abar_t) eps_theta).
  `variance`: 'beta' (sigma_t^2 = beta_t) or 'beta_tilde' (sigma_t^2 = beta~_t, Eq. 7);
  the paper (§3.2) reports similar results for both. No noise is added at the last step.
  """
  if variance not in ("beta", "beta_tilde"):
    raise ValueError(f"sample.variance={variance!r}; expected 'beta' or 'beta_tilde'.")
  var_T = sched.betas if variance == "beta" else sched.posterior_variance

  def step(x, inp):
    t, _, key = inp
    t_B, x0, _ = _denoised(denoise, sched, x, t, target, clip_x0)
    mean, _ = q_posterior_mean_variance(sched, x0, x, t_B)
    z = jax.random.normal(key, x.shape, jnp.float32)
    return mean + jnp.where(t > 0, jnp.sqrt(var_T[t]), 0.0) * z

  return _reverse_scan(step, rng, shape, np.arange(sched.num_timesteps))


def ddim_timesteps(num_timesteps: int, num_steps: int) -> np.ndarray:
  """`num_steps` timesteps spread evenly over [0, T-1], ascending (always includes 0)."""
  if not 1 <= num_steps <= num_timesteps:
    raise ValueError(f"sample.steps={num_steps} must be in [1, T={num_timesteps}].")
  return np.unique(np.linspace(0, num_timesteps - 1, num_steps).round().astype(np.int32))


def ddim_sigma(sched: Schedule, t, t_prev, eta: float) -> jax.Array:
  """Song et al. 2021, Eq. 16:
  sigma = eta * sqrt((1 - abar_prev) / (1 - abar_t)) * sqrt(1 - abar_t / abar_prev).
  """
  abar_t = sched.alphas_cumprod[t]
  abar_prev = jnp.where(t_prev >= 0, sched.alphas_cumprod[jnp.maximum(t_prev, 0)], 1.0)
  return eta * jnp.sqrt((1.0 - abar_prev) / (1.0 - abar_t) * (1.0 - abar_t / abar_prev))


def ddim_sample(denoise: DenoiseFn, sched: Schedule, rng: jax.Array, shape: tuple[int, ...], *,
                num_steps: int, eta: float = 0.0, target: str = "eps",
                clip_x0: bool = True) -> jax.Array:
  """Song et al. 2021, Eq. 12, over a subsequence of `num_steps` timesteps:

    x_prev = sqrt(abar_prev) x0_hat + sqrt(1 - abar_prev - sigma^2) eps_hat + sigma z

  eta=0 is deterministic DDIM; eta=1 over all T steps is the DDPM ancestral sampler
  with sigma^2 = beta~ (same key, same samples as `ddpm_sample(variance='beta_tilde')`).
  """
  def step(x, inp):
    t, t_prev, key = inp
    _, x0, eps = _denoised(denoise, sched, x, t, target, clip_x0)
    abar_prev = jnp.where(t_prev >= 0, sched.alphas_cumprod[jnp.maximum(t_prev, 0)], 1.0)
    sigma = ddim_sigma(sched, t, t_prev, eta)
    z = jax.random.normal(key, x.shape, jnp.float32)
    direction = jnp.sqrt(jnp.maximum(1.0 - abar_prev - sigma**2, 0.0)) * eps
    return jnp.sqrt(abar_prev) * x0 + direction + sigma * z

  return _reverse_scan(step, rng, shape, ddim_timesteps(sched.num_timesteps, num_steps))


# ------------------------------------------------------------------------------- method


@dataclasses.dataclass(frozen=True)
class DiffusionMethod(Method):
  """DDPM training (L_simple) on a U-Net, with ancestral or DDIM sampling."""

  model: UNet
  schedule: Schedule
  tx: optax.GradientTransformation
  image_shape: tuple[int, int, int]
  target: str
  ema_decay: float
  ema_warmup: bool
  sample_cfg: ml_collections.ConfigDict
  eval_cfg: ml_collections.ConfigDict
  grad_accum_steps: int = 1     # micro-batches per update (one optimizer step per batch)

  @classmethod
  def from_config(cls, config: ml_collections.ConfigDict, spec) -> "DiffusionMethod":
    image_shape = image_shape_of(spec)
    cfg = config.diffusion
    if cfg.target not in TARGETS:
      raise ValueError(f"diffusion.target={cfg.target!r}; expected one of {TARGETS}.")
    _validate_sample_config(config.sample, cfg.num_timesteps)
    e = config.eval
    if e.get("bpd_num_images", 0) % e.get("bpd_batch_size", 1):
      raise ValueError(f"eval.bpd_num_images={e.bpd_num_images} must be a multiple of "
                       f"eval.bpd_batch_size={e.bpd_batch_size}.")
    m = config.model
    model = UNet(ch=m.ch, ch_mult=tuple(m.ch_mult), num_res_blocks=m.num_res_blocks,
                 attn_resolutions=tuple(m.attn_resolutions), dropout=m.dropout,
                 num_groups=m.num_groups, remat=m.get("remat", False),
                 dtype=jnp.dtype(config.dtype))
    return cls(model=model, schedule=schedule_from_config(cfg), tx=make_optimizer(config.train),
               image_shape=tuple(image_shape), target=cfg.target,
               ema_decay=config.train.ema_decay, ema_warmup=config.train.ema_warmup,
               sample_cfg=config.sample, eval_cfg=config.eval,
               grad_accum_steps=grad_accum_steps(config))

  def init(self, rng, batch) -> TrainState:
    x = jnp.zeros((1, *self.image_shape), jnp.float32)
    params = self.model.init(rng, x, jnp.zeros((1,), jnp.int32), train=False)["params"]
    return TrainState.create(params, self.tx)

  def _denoise_fn(self, params, train: bool, dropout_rng=None) -> DenoiseFn:
    rngs = {"dropout": dropout_rng} if train else None
    return lambda x, t: self.model.apply({"params": params}, x, t, train=train, rngs=rngs)

  def train_step(self, state: TrainState, batch, rng):
    """One update on L_simple (Eq. 14).

    t and eps are drawn for the whole batch before it is split into `grad_accum_steps`
    micro-batches, so without dropout the update does not depend on the split; dropout
    masks come from per-micro-batch keys.
    """
    loss_rng, dropout_rng = jax.random.split(rng)
    t_B, noise = sample_t_and_noise(self.schedule, loss_rng, batch["image"].shape)

    def loss_fn(params, rows, key):
      x0, t, eps = rows
      return denoising_loss(self.schedule, self._denoise_fn(params, True, key), x0, t, eps,
                            self.target)

    loss, grads = accumulated_value_and_grad(loss_fn, state.params, (batch["image"], t_B, noise),
                                             dropout_rng, self.grad_accum_steps)
    state, health = apply_gradients(state, grads, self.tx, self.ema_decay, self.ema_warmup)
    return state, {"loss": loss, **health}

  def eval_step(self, state: TrainState, batch, rng):
    """L_simple on held-out images with EMA and raw weights (same t and noise for both)."""
    return {f"{name}/loss": l_simple(self.schedule, self._denoise_fn(params, False),
                                     batch["image"], rng, self.target)
            for name, params in (("ema", state.ema_params), ("raw", state.params))}

  def dataset_evaluation(self) -> DatasetEvaluation | None:
    """Bits/dim of the first `eval.bpd_num_images` eval images (0: none) with the EMA
    weights: the variational bound (Ho et al. 2020, Eq. 5) of the model the DDPM sampler
    draws from (`sample.variance`, `clip_x0`); the terms are described in
    `gen_jax.methods.diffusion_likelihood.bits_per_dim`."""
    cfg = self.eval_cfg
    if not cfg.get("bpd_num_images", 0):
      return None
    batch_fn = lambda state, batch, rng: diffusion_likelihood.method_bits_per_dim(
        self, state.ema_params, batch["image"], rng, timestep_batch=cfg.bpd_timestep_batch)
    return DatasetEvaluation(name="bits/dim", num_examples=cfg.bpd_num_images,
                             batch_size=cfg.bpd_batch_size, batch_fn=batch_fn,
                             summarize=diffusion_likelihood.summarize_bits_per_dim)

  @property
  def sample_tag(self) -> str:
    cfg = self.sample_cfg
    return f"{cfg.sampler}{cfg.steps or self.schedule.num_timesteps}"

  def sample(self, state: TrainState, rng, num: int, use_ema: bool = True, batch=None) -> jax.Array:
    """`num` images with `config.sample`: sampler 'ddpm' (Alg. 2) or 'ddim' (Eq. 12)."""
    cfg, shape = self.sample_cfg, (num, *self.image_shape)
    denoise = self._denoise_fn(state.ema_params if use_ema else state.params, False)
    _validate_sample_config(cfg, self.schedule.num_timesteps)
    if cfg.sampler == "ddpm":
      x = ddpm_sample(denoise, self.schedule, rng, shape, target=self.target,
                      variance=cfg.variance, clip_x0=cfg.clip_x0)
    else:
      x = ddim_sample(denoise, self.schedule, rng, shape, target=self.target, eta=cfg.eta,
                      num_steps=cfg.steps or self.schedule.num_timesteps, clip_x0=cfg.clip_x0)
    return jnp.clip(x, -1.0, 1.0)


def _validate_sample_config(cfg: ml_collections.ConfigDict, T: int) -> None:
  """Clear errors for `config.sample` before anything is compiled."""
  if cfg.sampler not in ("ddpm", "ddim"):
    raise ValueError(f"sample.sampler={cfg.sampler!r}; expected 'ddpm' or 'ddim'.")
  if cfg.sampler == "ddpm" and cfg.steps not in (0, T):
    raise ValueError(f"sample.sampler='ddpm' runs all T={T} steps; for sample.steps={cfg.steps} "
                     "use --config.sample.sampler=ddim (with sample.eta=1 for a stochastic chain).")
  if cfg.sampler == "ddim" and not 0 <= cfg.steps <= T:
    raise ValueError(f"sample.steps={cfg.steps} must be in [1, T={T}] (0 means all T).")
  if cfg.variance not in ("beta", "beta_tilde"):
    raise ValueError(f"sample.variance={cfg.variance!r}; expected 'beta' or 'beta_tilde'.")
