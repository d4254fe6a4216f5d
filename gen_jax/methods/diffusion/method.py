"""Denoising diffusion probabilistic models: the training objectives and the method.

Ho, Jain, Abbeel 2020, "Denoising Diffusion Probabilistic Models" (arXiv:2006.11239): the
simplified objective L_simple (Eq. 14), the true bound L (Eq. 5) and Table 2's
parameterizations. Nichol & Dhariwal 2021 (arXiv:2102.09672): the hybrid objective
L_simple + lambda L_vlb (§3.1, Eq. 16) and the learned-range variance (Eq. 15).
Ho & Salimans 2022, "Classifier-Free Diffusion Guidance" (arXiv:2207.12598): with
`model.num_classes` = K > 0 the U-Net is class-conditional, training replaces each label
by the null class with probability `diffusion.p_uncond` (Alg. 1), and samples are drawn
with guidance weight `sample.guidance` (Alg. 2, `sampling.guided_denoise`) for
the labels `sample.label` names (`base.class_rows`). Bits/dim and inpainting use the
unconditional model eps(x, null).
The forward process and variances are in `gen_jax/methods/diffusion/process.py`, the
samplers in `gen_jax/methods/diffusion/sampling.py`, the bound (bits/dim) in
`gen_jax/methods/diffusion/likelihood.py`.

Timesteps are 0-based: index t in [0, T) is the paper's t+1.
"""
from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import ml_collections
import optax

from gen_jax.core.optimizer import make_optimizer
from gen_jax.core.state import TrainState, accumulated_value_and_grad, apply_gradients
from gen_jax.methods.base import (
  DatasetEvaluation,
  Method,
  MethodMode,
  Samples,
  class_rows,
  grad_accum_steps,
  image_shape_of,
)
from gen_jax.methods.diffusion import inpainting, inpainting_mode, likelihood
from gen_jax.methods.diffusion.process import (
  LEARNED_VARIANCES,
  TARGETS,
  Schedule,
  output_channels,
  q_sample,
  schedule_from_config,
  split_output,
  training_target,
)
from gen_jax.methods.diffusion.sampling import (  # noqa: F401
  DDIM_SIGMAS,
  TIMESTEP_SPACINGS,
  DenoiseFn,
  LabelledDenoiseFn,
  ddim_sample,
  ddim_sigma,
  ddim_timesteps,
  ddpm_sample,
  guided_denoise,
)
from gen_jax.models.unet import UNet

# What the network is trained on: 'simple' (Ho et al. Eq. 14: the squared error of its
# target; for target 'mu', Table 2's ||mu~ - mu_theta||^2), 'kl' (the true bound L, Eq. 5:
# the per-timestep KL with the discretized decoder at t = 0) or 'hybrid' (Nichol & Dhariwal
# Eq. 16: L_simple + lambda L_vlb, the mean held fixed in L_vlb).
LOSSES = ("simple", "kl", "hybrid")


# ---------------------------------------------------------------------------------- loss


def sample_t_and_noise(sched: Schedule, rng: jax.Array,
                       shape_BxHxWxC: tuple[int, ...]) -> tuple[jax.Array, jax.Array]:
  """Per-example t ~ U{0, ..., T-1} [B] and eps ~ N(0, I) [B, H, W, C] (Ho et al., Alg. 1)."""
  t_rng, noise_rng = jax.random.split(rng)
  t_B = jax.random.randint(t_rng, (shape_BxHxWxC[0],), 0, sched.num_timesteps)
  return t_B, jax.random.normal(noise_rng, shape_BxHxWxC, jnp.float32)


def diffusion_loss(sched: Schedule, denoise: DenoiseFn, x0: jax.Array, t_B: jax.Array,
                   noise: jax.Array, *, target: str = "eps", loss: str = "simple",
                   variance: str = "beta", hybrid_lambda: float = 1e-3) -> jax.Array:
  """The training objective at given t and eps, a scalar in float32 (a bfloat16 network's
  output is cast first). One network call at x_t = q_sample(x0, t, noise) (Eq. 4).

    simple: mean over examples and pixels of (target - prediction)^2 (Ho et al. Eq. 14).
    kl:     mean over examples of the bound's term L_t at each example's t, in bits/dim
            (`likelihood.vlb_terms_from_output`, the terms bits/dim sums): an
            unbiased estimate of (L - L_T) / T, as the authors' code trains 'kl'; x0_hat
            is not clipped (as there).
    hybrid: simple + hybrid_lambda * T * (the kl term with the mean's output under
            stop_gradient, so L_vlb trains only the variance): Nichol & Dhariwal Eq. 16,
            lambda = 0.001, with L_vlb = sum_t L_t estimated as T L_t.

  Args:
    denoise: (x_t, t_B) -> output [B, H, W, C] (the target), with C more channels for a
      learned `variance`.
    x0: [B, H, W, C] data; t_B: [B] timesteps; noise: [B, H, W, C].
    target, variance: the parameterization (process.TARGETS, VARIANCES).
  """
  if loss not in LOSSES:
    raise ValueError(f"diffusion.loss={loss!r}; expected one of {LOSSES}.")
  output = denoise(q_sample(sched, x0, t_B, noise), t_B).astype(jnp.float32)
  mean_out, var_out = split_output(output, variance)
  mse = jnp.mean((training_target(sched, x0, noise, t_B, target) - mean_out) ** 2)
  if loss == "simple":
    return mse
  if loss == "hybrid":
    mean_out = jax.lax.stop_gradient(mean_out)
  vlb_output = mean_out if var_out is None else jnp.concatenate([mean_out, var_out], axis=-1)
  terms_B = likelihood.vlb_terms_from_output(
      sched, vlb_output, x0, t_B, noise, target=target, variance=variance, clip_x0=False)
  vlb_bpd = jnp.mean(terms_B) / (math.prod(x0.shape[1:]) * math.log(2.0))
  if loss == "kl":
    return vlb_bpd
  return mse + hybrid_lambda * sched.num_timesteps * vlb_bpd


def denoising_loss(sched: Schedule, denoise: DenoiseFn, x0: jax.Array, t_B: jax.Array,
                   noise: jax.Array, target: str = "eps") -> jax.Array:
  """The squared error of `l_simple` at given t and eps, averaged over examples and pixels,
  in float32 (a bfloat16 network's output is cast before the subtraction)."""
  return diffusion_loss(sched, denoise, x0, t_B, noise, target=target)


def l_simple(sched: Schedule, denoise: DenoiseFn, x0: jax.Array, rng: jax.Array,
             target: str = "eps") -> jax.Array:
  """Ho et al. 2020, Eq. 14 (for target='eps'):

    L_simple = E_{t, x_0, eps} || eps - eps_theta(sqrt(abar_t) x_0 + sqrt(1-abar_t) eps, t) ||^2

  with t uniform over the T steps; the squared error is averaged over pixels.
  """
  t_B, noise = sample_t_and_noise(sched, rng, x0.shape)
  return denoising_loss(sched, denoise, x0, t_B, noise, target)


# ------------------------------------------------------------------------------- method


@dataclasses.dataclass(frozen=True)
class DiffusionMethod(Method):
  """DDPM training (L_simple, the bound L or the hybrid) on a U-Net, with ancestral or DDIM
  sampling.

  `variance` is the reverse process's: 'learned' / 'learned_range' (`diffusion.variance`,
  the U-Net outputs twice the channels), else the fixed `sample.variance`.
  """

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
  loss: str = "simple"
  variance: str = "beta"
  hybrid_lambda: float = 1e-3
  num_classes: int = 0          # K > 0: class-conditional U-Net (Ho & Salimans 2022)
  p_uncond: float = 0.1         # probability of training on the null label (Alg. 1)
  sample_label: int = -1        # sample.label: -1 = classes in blocks (rows), c = class c
  guidance: float = 0.0         # sample.guidance: w of Alg. 2

  @classmethod
  def from_config(cls, config: ml_collections.ConfigDict, spec) -> DiffusionMethod:
    image_shape = image_shape_of(spec)
    cfg = config.diffusion
    if cfg.target not in TARGETS:
      raise ValueError(f"diffusion.target={cfg.target!r}; expected one of {TARGETS}.")
    loss, model_variance = cfg.loss, cfg.variance
    if loss not in LOSSES:
      raise ValueError(f"diffusion.loss={loss!r}; expected one of {LOSSES}.")
    if model_variance not in ("fixed", *LEARNED_VARIANCES):
      raise ValueError(f"diffusion.variance={model_variance!r}; expected 'fixed' or one of "
                       f"{LEARNED_VARIANCES}.")
    if loss == "hybrid" and model_variance == "fixed":
      raise ValueError("diffusion.loss='hybrid' trains a learned variance with L_vlb; set "
                       "diffusion.variance='learned_range' (Nichol & Dhariwal) or 'learned'.")
    variance = config.sample.variance if model_variance == "fixed" else model_variance
    _validate_sample_config(config.sample, cfg.num_timesteps)
    e = config.eval
    if e.bpd_num_images % e.bpd_batch_size:
      raise ValueError(f"eval.bpd_num_images={e.bpd_num_images} must be a multiple of "
                       f"eval.bpd_batch_size={e.bpd_batch_size}.")
    m = config.model
    K, p_uncond = m.num_classes, cfg.p_uncond
    label, guidance = config.sample.label, config.sample.guidance
    _validate_conditioning(K, p_uncond, label, guidance)
    out_channels = (output_channels(image_shape[-1], variance)
                    if variance in LEARNED_VARIANCES else None)
    model = UNet(ch=m.ch, ch_mult=tuple(m.ch_mult), num_res_blocks=m.num_res_blocks,
                 attn_resolutions=tuple(m.attn_resolutions), dropout=m.dropout,
                 num_groups=m.num_groups, out_channels=out_channels,
                 remat=m.remat, num_classes=K, dtype=jnp.dtype(config.dtype))
    return cls(model=model, schedule=schedule_from_config(cfg), tx=make_optimizer(config.train),
               image_shape=image_shape, target=cfg.target,
               ema_decay=config.train.ema_decay, ema_warmup=config.train.ema_warmup,
               sample_cfg=config.sample, eval_cfg=config.eval,
               grad_accum_steps=grad_accum_steps(config), loss=loss, variance=variance,
               hybrid_lambda=cfg.hybrid_lambda, num_classes=K,
               p_uncond=p_uncond, sample_label=label, guidance=float(guidance))

  def init(self, rng, batch) -> TrainState:
    x = jnp.zeros((1, *self.image_shape), jnp.float32)
    params = self.model.init(rng, x, jnp.zeros((1,), jnp.int32), train=False)["params"]
    return TrainState.create(params, self.tx)

  def _denoise_fn(self, params, train: bool, dropout_rng: jax.Array | None = None,
                  labels=None) -> DenoiseFn:
    """(x_t, t_B) -> output; a conditional model's for `labels` [B] (None: the null class)."""
    rngs = {"dropout": dropout_rng} if train and dropout_rng is not None else None
    # flax annotates apply's result as (output, state) too; without `mutable` it is output.
    denoise: DenoiseFn = lambda x, t: self.model.apply(  # pyright: ignore[reportAssignmentType]
        {"params": params}, x, t, labels, train=train, rngs=rngs)
    return denoise

  def _labels(self, batch) -> jax.Array | None:
    """The batch's class labels for a conditional model (None when unconditional)."""
    if not self.num_classes:
      return None
    if "label" not in batch:
      raise ValueError(f"model.num_classes={self.num_classes} needs class labels: the batch "
                       f"has only {sorted(batch)}; image datasets give {{'image', 'label'}}.")
    return batch["label"].astype(jnp.int32)

  def drop_labels(self, labels_B: jax.Array, rng: jax.Array) -> jax.Array:
    """Ho & Salimans 2022, Alg. 1 line 3: c <- null with probability p_uncond, per example
    (the null class is K), so one network learns eps(x, c) and eps(x, null)."""
    drop_B = jax.random.bernoulli(rng, self.p_uncond, labels_B.shape)
    return jnp.where(drop_B, self.num_classes, labels_B)

  def _loss(self, denoise: DenoiseFn, x0, t_B, noise) -> jax.Array:
    return diffusion_loss(self.schedule, denoise, x0, t_B, noise, target=self.target,
                          loss=self.loss, variance=self.variance,
                          hybrid_lambda=self.hybrid_lambda)

  def train_step(self, state: TrainState, batch, rng):
    """One update on `diffusion.loss` (L_simple, Eq. 14, by default).

    t and eps are drawn for the whole batch before it is split into `grad_accum_steps`
    micro-batches, so without dropout the update does not depend on the split; dropout
    masks come from per-micro-batch keys. A conditional model's labels are dropped to the
    null class (`drop_labels`) from fold_in(rng, 1), also before the split.
    """
    loss_rng, dropout_rng = jax.random.split(rng)
    t_B, noise = sample_t_and_noise(self.schedule, loss_rng, batch["image"].shape)
    rows = (batch["image"], t_B, noise)
    labels = self._labels(batch)   # None when unconditional
    if labels is not None:
      rows += (self.drop_labels(labels, jax.random.fold_in(rng, 1)),)

    def loss_fn(params, rows, key):
      x0, t, eps, *labels = rows
      return self._loss(self._denoise_fn(params, True, key, *labels), x0, t, eps)

    loss, grads = accumulated_value_and_grad(loss_fn, state.params, rows,
                                             dropout_rng, self.grad_accum_steps)
    state, health = apply_gradients(state, grads, self.tx, self.ema_decay, self.ema_warmup)
    return state, {"loss": loss, **health}

  def eval_step(self, state: TrainState, batch, rng):
    """The training objective on held-out images with EMA and raw weights (same t and
    noise for both; a conditional model's with the batch's labels)."""
    t_B, noise = sample_t_and_noise(self.schedule, rng, batch["image"].shape)
    labels = self._labels(batch)
    return {f"{name}/loss": self._loss(self._denoise_fn(params, False, labels=labels),
                                       batch["image"], t_B, noise)
            for name, params in (("ema", state.ema_params), ("raw", state.params))}

  def dataset_evaluation(self) -> DatasetEvaluation | None:
    """Bits/dim of the first `eval.bpd_num_images` eval images (0: none) with the EMA
    weights: the variational bound (Ho et al. 2020, Eq. 5) of the model the DDPM sampler
    draws from (its reverse variance, `sample.clip_x0`); the terms are described in
    `gen_jax.methods.diffusion.likelihood.bits_per_dim`."""
    cfg = self.eval_cfg
    if not cfg.bpd_num_images:
      return None
    batch_fn = lambda state, batch, rng: self.bits_per_dim(
        state.ema_params, batch["image"], rng, timestep_batch=cfg.bpd_timestep_batch)
    return DatasetEvaluation(name="bits/dim", num_examples=cfg.bpd_num_images,
                             batch_size=cfg.bpd_batch_size, batch_fn=batch_fn,
                             summarize=likelihood.summarize_bits_per_dim)

  def bits_per_dim(self, params, x0: jax.Array, rng: jax.Array, *,
                   timestep_batch: int = 10) -> dict[str, jax.Array]:
    """`likelihood.bits_per_dim` of images x0 [B, H, W, C] with this U-Net in eval
    mode (no dropout), its target, its reverse variance (learned, or `sample.variance`) and
    `sample.clip_x0`, so the bound is for the model the DDPM sampler draws from. Pass
    `state.ema_params` (the default for evaluation) or `state.params`."""
    # flax annotates apply's result as (output, state) too; without `mutable` it is output.
    apply_fn: likelihood.ApplyFn = lambda p, x, t: self.model.apply(  # pyright: ignore[reportAssignmentType]
        {"params": p}, x, t, train=False)
    return likelihood.bits_per_dim(
        apply_fn, params, self.schedule, x0, rng, target=self.target, variance=self.variance,
        clip_x0=self.sample_cfg.clip_x0, timestep_batch=timestep_batch)

  def inpaint(self, params, x0: jax.Array, known: jax.Array, rng: jax.Array, *,
              sampler: str = "repaint", jump_length: int = 10, jump_n_sample: int = 10,
              steps: int = 0) -> jax.Array:
    """Fills the unknown pixels of x0 [B, H, W, C] (`known` [B, H, W, 1] True where kept)
    with this U-Net (eval mode), target, reverse variance and `sample.clip_x0`
    (`inpainting.repair`: replacement or RePaint, over all T steps or `steps`).

    Returns:
      [B, H, W, C] repaired images clipped to [-1, 1] (the known pixels are x0's).
    """
    # flax annotates apply's result as (output, state) too; without `mutable` it is output.
    denoise: DenoiseFn = lambda x, t: self.model.apply(  # pyright: ignore[reportAssignmentType]
        {"params": params}, x, t, train=False)
    return inpainting.repair(denoise, self.schedule, x0, known, rng, target=self.target,
                             variance=self.variance, clip_x0=self.sample_cfg.clip_x0,
                             sampler=sampler, jump_length=jump_length,
                             jump_n_sample=jump_n_sample, steps=steps)

  def modes(self) -> dict[str, MethodMode]:
    """`--mode=inpaint` (`inpainting_mode.run_inpaint_mode`, the `inpaint` config group)."""
    run = lambda ctx, cfg: inpainting_mode.run_inpaint_mode(
        ctx, cfg, repair_fn=self.inpaint, num_timesteps=self.schedule.num_timesteps,
        image_shape=self.image_shape, use_ema=self.sample_cfg.use_ema)
    return {"inpaint": MethodMode(
        help="repair masked eval images (config.inpaint: RePaint or replacement); grids and "
             "PSNR/SSIM of the filled pixels in <workdir>/inpaint/",
        config_group="inpaint", run=run, report=inpainting_mode.format_report)}

  @property
  def sample_tag(self) -> str:
    """'<sampler><steps>', plus a conditional model's '_label<c>' (one class) and '_w<w>'."""
    cfg = self.sample_cfg
    tag = f"{cfg.sampler}{cfg.steps or self.schedule.num_timesteps}"
    if self.num_classes:
      tag += (f"_label{self.sample_label}" if self.sample_label >= 0 else "") + \
             f"_w{self.guidance:g}"
    return tag

  def sample(self, state: TrainState, rng, num: int, use_ema: bool = True, batch=None,
             labels=None) -> Samples:
    """`num` images with `config.sample`: sampler 'ddpm' (Alg. 2) or 'ddim' (Eq. 12), with
    the model's reverse variance where the sampler uses one. A conditional model draws
    them for `labels` [num] (None: `sample_labels(num)`) with classifier-free guidance of
    weight `sample.guidance` (Ho & Salimans 2022, Alg. 2; `guided_denoise`: one network
    call on 2 num rows per step).

    Returns:
      `Samples`: images [num, H, W, C] clipped to [-1, 1]; labels [num] when conditional.
    """
    cfg, shape = self.sample_cfg, (num, *self.image_shape)
    params = state.ema_params if use_ema else state.params
    if self.num_classes:
      labels = jnp.asarray(self.sample_labels(num) if labels is None else labels, jnp.int32)
      # flax annotates apply's result as (output, state) too; without `mutable` it is output.
      apply: LabelledDenoiseFn = lambda x, t, y: self.model.apply(  # pyright: ignore[reportAssignmentType]
          {"params": params}, x, t, y, train=False)
      denoise = guided_denoise(apply, labels, self.num_classes, self.guidance, self.variance)
    elif labels is not None:
      raise ValueError("This DDPM is unconditional (model.num_classes=0): it takes no labels.")
    else:
      denoise = self._denoise_fn(params, False)
    _validate_sample_config(cfg, self.schedule.num_timesteps)
    if cfg.sampler == "ddpm":
      x = ddpm_sample(denoise, self.schedule, rng, shape, target=self.target,
                      variance=self.variance, clip_x0=cfg.clip_x0)
    else:
      x = ddim_sample(denoise, self.schedule, rng, shape, target=self.target, eta=cfg.eta,
                      num_steps=cfg.steps or self.schedule.num_timesteps, clip_x0=cfg.clip_x0,
                      timesteps=cfg.timesteps,
                      sigma=cfg.ddim_sigma, variance=self.variance)
    return Samples(images=jnp.clip(x, -1.0, 1.0), labels=labels)


def _validate_conditioning(num_classes, p_uncond, label, guidance) -> None:
  """Clear errors for the class-conditioning fields before anything is compiled."""
  if not isinstance(num_classes, int) or num_classes < 0:
    raise ValueError(f"model.num_classes={num_classes!r}: expected 0 (unconditional) or the "
                     "number of classes of the dataset's labels (10 for digits).")
  if not 0.0 <= p_uncond <= 1.0:
    raise ValueError(f"diffusion.p_uncond={p_uncond} must be a probability in [0, 1] "
                     "(Ho & Salimans 2022 use 0.1 or 0.2).")
  if not num_classes and (label != -1 or guidance != 0.0):
    raise ValueError(f"sample.label={label} / sample.guidance={guidance} need a "
                     "class-conditional model: train with model.num_classes > 0 "
                     "(configs/ddpm.py:conditional).")
  if num_classes:
    class_rows(1, num_classes, label)   # raises for a label outside [-1, K)


def _validate_sample_config(cfg: ml_collections.ConfigDict, T: int) -> None:
  """Clear errors for `config.sample` before anything is compiled."""
  if cfg.sampler not in ("ddpm", "ddim"):
    raise ValueError(f"sample.sampler={cfg.sampler!r}; expected 'ddpm' or 'ddim'.")
  if cfg.sampler == "ddpm" and cfg.steps not in (0, T):
    raise ValueError(f"sample.sampler='ddpm' runs all T={T} steps; for sample.steps={cfg.steps} "
                     "use --config.sample.sampler=ddim (with sample.eta=1 for a stochastic chain,"
                     " or sample.ddim_sigma=model for ancestral steps with the model's variance).")
  if cfg.sampler == "ddim" and not 0 <= cfg.steps <= T:
    raise ValueError(f"sample.steps={cfg.steps} must be in [1, T={T}] (0 means all T).")
  if cfg.variance not in ("beta", "beta_tilde"):
    raise ValueError(f"sample.variance={cfg.variance!r}; expected 'beta' or 'beta_tilde'.")
  spacing, sigma = cfg.timesteps, cfg.ddim_sigma
  if spacing not in TIMESTEP_SPACINGS:
    raise ValueError(f"sample.timesteps={spacing!r}; expected one of {TIMESTEP_SPACINGS}.")
  if sigma not in DDIM_SIGMAS:
    raise ValueError(f"sample.ddim_sigma={sigma!r}; expected one of {DDIM_SIGMAS}.")
