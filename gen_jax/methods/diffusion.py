"""Denoising diffusion probabilistic models.

Ho, Jain, Abbeel 2020, "Denoising Diffusion Probabilistic Models" (arXiv:2006.11239):
forward process q(x_t|x_0) (Eq. 4), posterior q(x_{t-1}|x_t,x_0) (Eq. 6-7), the
simplified objective L_simple (Eq. 14) and the ancestral sampler (Alg. 2).
Nichol & Dhariwal 2021 (arXiv:2102.09672, Eq. 17): the cosine schedule.
Song, Meng, Ermon 2021 (arXiv:2010.02502): the DDIM sampler (Eq. 12, 16).
Salimans & Ho 2022 (arXiv:2202.00512, §4): the v-prediction target.

Timesteps are 0-based: index t in [0, T) is the paper's t+1.
"""
from __future__ import annotations

import dataclasses
from typing import Callable

import flax.struct
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from gen_jax.engine.optimizer import make_optimizer
from gen_jax.engine.state import TrainState, accumulated_value_and_grad, apply_gradients
from gen_jax.methods.base import grad_accum_steps, image_shape_of
from gen_jax.models.unet import UNet

TARGETS = ("eps", "x0", "v")
DenoiseFn = Callable[[jax.Array, jax.Array], jax.Array]  # (x_t [B,H,W,C], t [B]) -> output


# ----------------------------------------------------------------------------- schedules


def linear_betas(T: int, beta_start: float = 1e-4, beta_end: float = 0.02) -> np.ndarray:
  """Ho et al. 2020 §4: betas increase linearly from 1e-4 to 0.02 over T=1000."""
  return np.linspace(beta_start, beta_end, T, dtype=np.float64)


def cosine_alpha_bar(t_over_T: np.ndarray, s: float = 0.008) -> np.ndarray:
  """Nichol & Dhariwal 2021, Eq. 17: f(t) = cos^2(((t/T + s) / (1 + s)) * pi/2)."""
  return np.cos((t_over_T + s) / (1 + s) * np.pi / 2) ** 2


def cosine_betas(T: int, s: float = 0.008, max_beta: float = 0.999) -> np.ndarray:
  """Nichol & Dhariwal 2021, Eq. 17: beta_t = min(1 - abar_t / abar_{t-1}, 0.999)."""
  steps = np.arange(T + 1, dtype=np.float64) / T
  abar = cosine_alpha_bar(steps, s) / cosine_alpha_bar(np.zeros(()), s)
  return np.minimum(1.0 - abar[1:] / abar[:-1], max_beta)


class Schedule(flax.struct.PyTreeNode):
  """Per-timestep constants of the forward process and its posterior, shape [T] each."""

  betas: jax.Array
  alphas_cumprod: jax.Array        # abar_t = prod_{s<=t} (1 - beta_s)
  alphas_cumprod_prev: jax.Array   # abar_{t-1}, with abar_{-1} = 1
  posterior_variance: jax.Array    # beta~_t, Eq. 7
  posterior_mean_coef_x0: jax.Array  # Eq. 7: sqrt(abar_{t-1}) beta_t / (1 - abar_t)
  posterior_mean_coef_xt: jax.Array  # Eq. 7: sqrt(alpha_t) (1 - abar_{t-1}) / (1 - abar_t)

  @property
  def num_timesteps(self) -> int:
    return self.betas.shape[0]


def make_schedule(betas: np.ndarray) -> Schedule:
  """Derives every constant in float64 and stores float32 (as the original code does)."""
  betas = np.asarray(betas, np.float64)
  alphas = 1.0 - betas
  abar = np.cumprod(alphas)
  abar_prev = np.append(1.0, abar[:-1])
  f32 = lambda a: jnp.asarray(a, jnp.float32)
  return Schedule(
      betas=f32(betas),
      alphas_cumprod=f32(abar),
      alphas_cumprod_prev=f32(abar_prev),
      posterior_variance=f32(betas * (1.0 - abar_prev) / (1.0 - abar)),
      posterior_mean_coef_x0=f32(np.sqrt(abar_prev) * betas / (1.0 - abar)),
      posterior_mean_coef_xt=f32(np.sqrt(alphas) * (1.0 - abar_prev) / (1.0 - abar)),
  )


def schedule_from_config(cfg: ml_collections.ConfigDict) -> Schedule:
  if cfg.schedule == "linear":
    return make_schedule(linear_betas(cfg.num_timesteps, cfg.beta_start, cfg.beta_end))
  if cfg.schedule == "cosine":
    return make_schedule(cosine_betas(cfg.num_timesteps))
  raise ValueError(f"diffusion.schedule={cfg.schedule!r}; expected 'linear' or 'cosine'.")


def _at(values_T: jax.Array, t_B: jax.Array) -> jax.Array:
  """values[t] broadcastable against images [B, H, W, C]."""
  return values_T[t_B][:, None, None, None]


# ------------------------------------------------------------------ forward process & loss


def q_sample(sched: Schedule, x0: jax.Array, t_B: jax.Array, noise: jax.Array) -> jax.Array:
  """Ho et al. 2020, Eq. 4: x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps."""
  abar = _at(sched.alphas_cumprod, t_B)
  return jnp.sqrt(abar) * x0 + jnp.sqrt(1.0 - abar) * noise


def q_posterior_mean_variance(sched: Schedule, x0: jax.Array, xt: jax.Array, t_B: jax.Array):
  """Ho et al. 2020, Eq. 6-7: q(x_{t-1} | x_t, x_0) = N(mu~_t(x_t, x_0), beta~_t I)."""
  mean = _at(sched.posterior_mean_coef_x0, t_B) * x0 + _at(sched.posterior_mean_coef_xt, t_B) * xt
  return mean, _at(sched.posterior_variance, t_B)


def training_target(sched: Schedule, x0, noise, t_B, target: str) -> jax.Array:
  """What the network regresses: eps (Eq. 14), x0, or v = sqrt(abar) eps - sqrt(1-abar) x0."""
  if target == "eps":
    return noise
  if target == "x0":
    return x0
  abar = _at(sched.alphas_cumprod, t_B)
  return jnp.sqrt(abar) * noise - jnp.sqrt(1.0 - abar) * x0


def predict_x0_eps(sched: Schedule, output, xt, t_B, target: str) -> tuple[jax.Array, jax.Array]:
  """Converts the network output (for `target`) into (x0_hat, eps_hat) via Eq. 4."""
  abar = _at(sched.alphas_cumprod, t_B)
  sqrt_abar, sqrt_1m_abar = jnp.sqrt(abar), jnp.sqrt(1.0 - abar)
  if target == "eps":
    return (xt - sqrt_1m_abar * output) / sqrt_abar, output
  if target == "x0":
    return output, (xt - sqrt_abar * output) / sqrt_1m_abar
  return sqrt_abar * xt - sqrt_1m_abar * output, sqrt_1m_abar * xt + sqrt_abar * output


def eps_from_x0(sched: Schedule, x0, xt, t_B) -> jax.Array:
  abar = _at(sched.alphas_cumprod, t_B)
  return (xt - jnp.sqrt(abar) * x0) / jnp.sqrt(1.0 - abar)


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
class DiffusionMethod:
  """DDPM training (L_simple) on a U-Net, with ancestral or DDIM sampling."""

  model: UNet
  schedule: Schedule
  tx: optax.GradientTransformation
  image_shape: tuple[int, int, int]
  target: str
  ema_decay: float
  ema_warmup: bool
  sample_cfg: ml_collections.ConfigDict
  grad_accum_steps: int = 1     # micro-batches per update (one optimizer step per batch)

  @classmethod
  def from_config(cls, config: ml_collections.ConfigDict, spec) -> "DiffusionMethod":
    image_shape = image_shape_of(spec)
    cfg = config.diffusion
    if cfg.target not in TARGETS:
      raise ValueError(f"diffusion.target={cfg.target!r}; expected one of {TARGETS}.")
    _validate_sample_config(config.sample, cfg.num_timesteps)
    m = config.model
    model = UNet(ch=m.ch, ch_mult=tuple(m.ch_mult), num_res_blocks=m.num_res_blocks,
                 attn_resolutions=tuple(m.attn_resolutions), dropout=m.dropout,
                 num_groups=m.num_groups, remat=m.get("remat", False),
                 dtype=jnp.dtype(config.dtype))
    return cls(model=model, schedule=schedule_from_config(cfg), tx=make_optimizer(config.train),
               image_shape=tuple(image_shape), target=cfg.target,
               ema_decay=config.train.ema_decay, ema_warmup=config.train.ema_warmup,
               sample_cfg=config.sample, grad_accum_steps=grad_accum_steps(config))

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

  def bits_per_dim(self, state: TrainState, batch, rng, timestep_batch: int = 10):
    """The variational bound (Ho et al. 2020, Eq. 5) of `batch["image"]` in bits/dim with
    the EMA weights, for the model the DDPM sampler draws from (`sample.variance`,
    `clip_x0`); see `gen_jax.evaluate.diffusion_likelihood.bits_per_dim` for the terms."""
    from gen_jax.evaluate import diffusion_likelihood   # it imports this module
    return diffusion_likelihood.method_bits_per_dim(self, state.ema_params, batch["image"], rng,
                                                    timestep_batch=timestep_batch)

  @property
  def sample_tag(self) -> str:
    cfg = self.sample_cfg
    return f"{cfg.sampler}{cfg.steps or self.schedule.num_timesteps}"

  def sample(self, state: TrainState, rng, num: int, use_ema: bool = True) -> jax.Array:
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
