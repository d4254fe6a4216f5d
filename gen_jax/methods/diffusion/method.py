"""The diffusion family's Method: one network, the process, prediction and sampler from the config.

`diffusion.process='ddpm'` trains and samples as Ho et al. 2020 (gen_jax/methods/diffusion/
ddpm.py: Alg. 1 with Table 2's targets and objectives, Alg. 2; ddim.py), with its bound as
bits/dim. The continuous processes of core.py ('vp', 'edm', 'linear', 'gvp') regress
`diffusion.prediction` at x_t = alpha(t) x_0 + sigma(t) eps, with t drawn as each paper
does (uniform on the process's time range; EDM: ln sigma ~ N(P_mean, P_std^2) and the
weight lambda(sigma), edm.py), and sample with samplers.py; their bits/dim come from the
probability-flow ODE (likelihood.py).

Ho & Salimans 2022, "Classifier-Free Diffusion Guidance" (arXiv:2207.12598): with
`model.num_classes` = K > 0 the network is class-conditional, training replaces each label
by the null class with probability `diffusion.p_uncond` (Alg. 1), and samples are drawn
with guidance weight `sample.guidance` (Alg. 2, `guidance.guided_network`) inside
`sample.guidance_interval` for the labels `sample.label` names (`base.class_rows`). Bits/dim
and inpainting (`--mode=inpaint`, every process: inpainting_mode.py) use the unconditional
model.
"""
from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from gen_jax.core.errors import ConfigError
from gen_jax.core.optimizer import make_optimizer
from gen_jax.core.state import TrainState, accumulated_value_and_grad, apply_gradients
from gen_jax.data import edm_augment
from gen_jax.data.couplings import PAIRS_SPLIT
from gen_jax.methods.base import (
  DatasetEvaluation,
  Method,
  MethodMode,
  Samples,
  grad_accum_steps,
  image_shape_of,
)
from gen_jax.methods.diffusion import (
  core,
  edm,
  flow,
  inpainting_mode,
  likelihood,
  reflow,
  samplers,
)
from gen_jax.methods.diffusion.config_checks import validate_config
from gen_jax.methods.diffusion.core import Schedule, schedule_from_config
from gen_jax.methods.diffusion.ddim import ddim_sample, ddim_timesteps
from gen_jax.methods.diffusion.ddpm import (
  LabelledNetworkFn,
  NetworkFn,
  ddpm_objective,
  ddpm_sample,
  sample_t_and_noise,
)
from gen_jax.methods.diffusion.guidance import guided_network, guided_steps
from gen_jax.methods.diffusion.variances import LEARNED_VARIANCES, output_channels
from gen_jax.models.dit import DiT, dit_kwargs
from gen_jax.models.song_unet import SongUNet, ddpmpp_cifar10_kwargs
from gen_jax.models.unet import UNet

# Width of EDM's augmentation labels (gen_jax/data/edm_augment.py).
AUGMENT_DIM = 9


def build_network(config: ml_collections.ConfigDict, image_shape: tuple[int, int, int],
                  out_channels: int | None) -> nn.Module:
  """The network of `model.architecture`: Ho et al.'s U-Net, DDPM++ (`SongUNet` with
  `ddpmpp_cifar10_kwargs`, EDM's settings) whose widths, depth, attention resolutions and
  dropout are the U-Net's fields (model.ch, ch_mult, num_res_blocks, attn_resolutions,
  dropout) and which takes EDM's augmentation labels when `data.augment='edm'`, or the DiT
  (`dit_network`).

  Args:
    out_channels: output channels (None: the image's).
  """
  m = config.model
  if m.architecture == "unet":
    return UNet(ch=m.ch, ch_mult=tuple(m.ch_mult), num_res_blocks=m.num_res_blocks,
                attn_resolutions=tuple(m.attn_resolutions), dropout=m.dropout,
                num_groups=m.num_groups, out_channels=out_channels,
                remat=m.remat, num_classes=m.num_classes, dtype=jnp.dtype(config.dtype))
  if m.architecture == "dit":
    return dit_network(config, image_shape, out_channels)
  H, _, C = image_shape
  kwargs = ddpmpp_cifar10_kwargs(label_dim=m.num_classes)
  kwargs.update(img_resolution=H, in_channels=C, out_channels=out_channels or C,
                augment_dim=AUGMENT_DIM if config.data.augment == "edm" else 0,
                model_channels=m.ch, channel_mult=tuple(m.ch_mult), num_blocks=m.num_res_blocks,
                attn_resolutions=tuple(m.attn_resolutions), dropout=m.dropout)
  return SongUNet(**kwargs, remat=m.remat, dtype=jnp.dtype(config.dtype))


def dit_network(config: ml_collections.ConfigDict, image_shape: tuple[int, int, int],
                out_channels: int | None) -> DiT:
  """Peebles & Xie's DiT (gen_jax/models/dit.py) on images of `image_shape` (square): the
  paper's `model.dit_size` ('DiT-S/2', ...) or, when it is '', model.patch_size,
  hidden_size, depth and num_heads; learned sigma when the process's variance is learned
  (out_channels 2C: diffusion.variance='learned_range', the authors' choice). Its time input
  is the process's (DDPM's timesteps, a continuous process's noise labels). The label table
  has the null class (class_dropout_prob = diffusion.p_uncond > 0), but the DiT drops no
  labels itself: `DiffusionMethod.drop_labels` does, once, as for every network.
  """
  m = config.model
  H, W, C = image_shape
  sizes = (dit_kwargs(m.dit_size) if m.dit_size else
           dict(patch_size=m.patch_size, hidden_size=m.hidden_size, depth=m.depth,
                num_heads=m.num_heads))
  if H != W or H % sizes["patch_size"]:
    raise ConfigError(f"The DiT takes square images whose side the patch size divides; the "
                      f"data are {H}x{W}x{C} and the patch size is {sizes['patch_size']} "
                      "(model.patch_size or model.dit_size).")
  return DiT(input_size=H, in_channels=C, mlp_ratio=m.mlp_ratio, num_classes=m.num_classes,
             class_dropout_prob=config.diffusion.p_uncond if m.num_classes else 0.0,
             learn_sigma=out_channels == 2 * C, train_label_dropout=False,
             dtype=jnp.dtype(config.dtype), remat=m.remat,
             attention_impl=m.attention_impl or None, **sizes)


@dataclasses.dataclass(frozen=True)
class DiffusionMethod(Method):
  """Diffusion training and sampling on a U-Net, DDPM++ or DiT (module docstring).

  `variance` is the DDPM reverse process's: 'learned' / 'learned_range'
  (`diffusion.variance`, the network outputs twice the channels), else the fixed
  `sample.variance`.
  """

  model: nn.Module              # UNet, SongUNet or DiT (`build_network`)
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
  num_classes: int = 0          # K > 0: class-conditional network (Ho & Salimans 2022)
  p_uncond: float = 0.1         # probability of training on the null label (Alg. 1)
  sample_label: int = -1        # sample.label: -1 = classes in blocks (rows), c = class c
  guidance: float = 0.0         # sample.guidance: w of Alg. 2
  process: str = "ddpm"         # diffusion.process (core.PROCESSES)
  prediction: str = "eps"       # diffusion.prediction of a continuous process
  sigma_data: float = 0.5       # diffusion.edm: Karras et al. Table 1
  p_mean: float = -1.2
  p_std: float = 1.2
  augment_p: float = 0.0        # data.augment='edm': EDM's augmentation probability, else 0
  couplings: bool = False       # data.train_split='pairs': train on each image's own noise
  clip_samples: bool = True     # clip samples to [-1, 1]: pixels yes, latents no

  @classmethod
  def from_config(cls, config: ml_collections.ConfigDict, spec) -> DiffusionMethod:
    image_shape = image_shape_of(spec)
    validate_config(config)
    if config.sample.guidance_channels > image_shape[-1]:
      raise ConfigError(f"sample.guidance_channels={config.sample.guidance_channels}: the "
                        f"images have {image_shape[-1]} channels (0: guide all of them).")
    cfg, m = config.diffusion, config.model
    variance = config.sample.variance if cfg.variance == "fixed" else cfg.variance
    out_channels = (output_channels(image_shape[-1], variance)
                    if variance in LEARNED_VARIANCES else None)
    model = build_network(config, image_shape, out_channels)
    return cls(model=model, schedule=schedule_from_config(cfg), tx=make_optimizer(config.train),
               image_shape=image_shape, target=cfg.target,
               ema_decay=config.train.ema_decay, ema_warmup=config.train.ema_warmup,
               sample_cfg=config.sample, eval_cfg=config.eval,
               grad_accum_steps=grad_accum_steps(config), loss=cfg.loss, variance=variance,
               hybrid_lambda=cfg.hybrid_lambda, num_classes=m.num_classes,
               p_uncond=cfg.p_uncond, sample_label=config.sample.label,
               guidance=float(config.sample.guidance), process=cfg.process,
               prediction=cfg.prediction, sigma_data=cfg.edm.sigma_data,
               p_mean=cfg.edm.p_mean, p_std=cfg.edm.p_std,
               augment_p=config.data.augment_p if config.data.augment == "edm" else 0.0,
               couplings=config.data.train_split == PAIRS_SPLIT,
               clip_samples=config.data.dataset != "latents")

  @property
  def continuous(self) -> bool:
    return self.process != "ddpm"

  @property
  def augments(self) -> bool:
    """Whether training augments images with EDM's pipeline (data.augment='edm')."""
    return isinstance(self.model, SongUNet) and self.model.augment_dim > 0

  def init(self, rng, batch) -> TrainState:
    x = jnp.zeros((1, *self.image_shape), jnp.float32)
    if isinstance(self.model, UNet):
      params = self.model.init(rng, x, jnp.zeros((1,), jnp.int32), train=False)["params"]
    elif isinstance(self.model, DiT):
      params = self.model.init(rng, x, jnp.zeros((1,), jnp.float32), train=False)["params"]
    else:
      augment_labels = jnp.zeros((1, AUGMENT_DIM), jnp.float32) if self.augments else None
      params = self.model.init(rng, x, jnp.zeros((1,), jnp.float32), None, augment_labels,
                               train=False)["params"]
    return TrainState.create(params, self.tx)

  # ------------------------------------------------------------------- the network

  def _network_with_labels(self, params, train: bool, dropout_rng: jax.Array | None = None,
                           augment_labels: jax.Array | None = None) -> LabelledNetworkFn:
    """(x_t, t_B, labels_B or None) -> what the network predicts at x_t: for 'ddpm' its raw
    output at timesteps t; for a continuous process at times t, its output for
    `prediction`, EDM's D(x; sigma) (`edm.denoised`) for 'edm'. `augment_labels` [B, 9]:
    EDM's augmentation of the training images (None: none, as at sampling)."""
    rngs = {"dropout": dropout_rng} if train and dropout_rng is not None else None
    extra = () if augment_labels is None else (augment_labels,)

    def raw(x, time_input_B, labels) -> jax.Array:
      # flax annotates apply's result as (output, state) too; without `mutable` it is output.
      return self.model.apply({"params": params}, x, time_input_B, labels, *extra,  # pyright: ignore[reportReturnType]
                              train=train, rngs=rngs)

    if not self.continuous:
      return raw
    if self.prediction == "edm":
      sigma_data = self.sigma_data
      return lambda x, sigma_B, labels: edm.denoised(
          lambda x_in, c_noise_B: raw(x_in, c_noise_B, labels), x, sigma_B, sigma_data)
    return lambda x, t_B, labels: raw(x, core.noise_labels(self.process, t_B), labels)

  def _network(self, params, train: bool, dropout_rng: jax.Array | None = None,
               labels=None, augment_labels=None) -> NetworkFn:
    """(x_t, t_B) -> the network's prediction; a conditional model's for `labels` [B]
    (None: the null class)."""
    network = self._network_with_labels(params, train, dropout_rng, augment_labels)
    return lambda x, t_B: network(x, t_B, labels)

  def _x0_and_eps_fn(self, network: NetworkFn) -> samplers.X0EpsFn:
    """A continuous process's network as (x_t, t_B) -> (x0_hat, eps_hat) (`core.x0_and_eps`)."""
    def x0_eps(x, t_B):
      c = core.coefficients(self.process, t_B.reshape(-1, 1, 1, 1))
      return core.x0_and_eps(self.prediction, network(x, t_B).astype(jnp.float32), x, c)
    return x0_eps

  def _noise_levels(self, t_B: jax.Array) -> jax.Array:
    """sigma / alpha of x_t at times (or DDPM timesteps) t [B]: the guidance interval's scale."""
    if self.continuous:
      return core.coefficients(self.process, t_B).noise_level
    abar = self.schedule.alphas_cumprod[t_B]
    return jnp.sqrt((1.0 - abar) / abar)

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

  # --------------------------------------------------------------------- training

  def _draw_t_and_noise(self, rng: jax.Array, shape: tuple[int, ...]):
    """Per-example times [B] and eps ~ N(0, I): DDPM's t ~ U{0..T-1} (Alg. 1); EDM's
    ln sigma ~ N(P_mean, P_std^2) (Table 1); otherwise t ~ U(t_min, t_max) of the process
    (a score prediction starts at 1e-3, where its target -eps / sigma is finite)."""
    if not self.continuous:
      return sample_t_and_noise(self.schedule, rng, shape)
    t_rng, noise_rng = jax.random.split(rng)
    noise = jax.random.normal(noise_rng, shape, jnp.float32)
    if self.process == "edm":
      t_B = edm.training_sigma(t_rng, shape[0], p_mean=self.p_mean,
                               p_std=self.p_std)
      return t_B, noise
    t_min, t_max = core.time_range(self.process, self.prediction)
    if self.prediction == "score":
      t_min = max(t_min, 1e-3)
    return jax.random.uniform(t_rng, (shape[0],), jnp.float32, t_min, t_max), noise

  def _loss(self, network: NetworkFn, x0, t_B, noise) -> jax.Array:
    """The objective at given times and noise, a float32 scalar: `ddpm.ddpm_objective` for
    'ddpm'; for a continuous process the mean squared error of the prediction's target
    (`core.prediction_target`), weighted by lambda(sigma) for EDM's D (Eq. 8, `edm.loss`)
    and by sigma(t)^2 for a score on SiT's interpolants (`flow.loss`)."""
    if not self.continuous:
      return ddpm_objective(self.schedule, network, x0, t_B, noise, target=self.target,
                            loss=self.loss, variance=self.variance,
                            hybrid_lambda=self.hybrid_lambda)
    if self.prediction == "edm":
      denoise = lambda x, sigma_B: network(x, sigma_B).astype(jnp.float32)
      return jnp.mean(edm.loss(denoise, x0, t_B, noise, self.sigma_data))
    c = core.coefficients(self.process, t_B.reshape(-1, 1, 1, 1))
    output = network(c.alpha * x0 + c.sigma * noise, t_B).astype(jnp.float32)
    if self.process in ("linear", "gvp") and self.prediction == "score":
      # SiT's score loss (flow.loss): ||sigma s + eps||^2, the error scaled by sigma(t).
      return jnp.mean(flow.loss(self.process, "score", output, x0, noise, t_B))
    return jnp.mean((core.prediction_target(self.prediction, x0, noise, c) - output) ** 2)

  def train_step(self, state: TrainState, batch, rng):
    """One update on the objective (`_loss`; L_simple, Eq. 14, by default).

    t and eps are drawn for the whole batch before it is split into `grad_accum_steps`
    micro-batches, so without dropout the update does not depend on the split; dropout
    masks come from per-micro-batch keys. A conditional model's labels are dropped to the
    null class (`drop_labels`) from fold_in(rng, 1), also before the split. With
    data.augment='edm' the images are augmented (`edm_augment.augment`, key fold_in(rng, 2))
    and the network is given their augmentation labels (Karras et al. 2022, App. C.4).
    """
    loss_rng, dropout_rng = jax.random.split(rng)
    images = batch["image"]
    augment_labels = None
    if self.augments:
      images, augment_labels = edm_augment.augment(jax.random.fold_in(rng, 2), images,
                                                   self.augment_p)
    t_B, noise = self._draw_t_and_noise(loss_rng, images.shape)
    if self.couplings:   # reflow (reflow.py): x_t between each image and its own noise
      noise = batch["noise"]
    rows = {"x0": images, "t": t_B, "eps": noise, "augment_labels": augment_labels,
            "labels": self._labels(batch)}   # labels None when unconditional
    if rows["labels"] is not None:
      rows["labels"] = self.drop_labels(rows["labels"], jax.random.fold_in(rng, 1))

    def loss_fn(params, rows, key):
      network = self._network(params, True, key, rows["labels"], rows["augment_labels"])
      return self._loss(network, rows["x0"], rows["t"], rows["eps"])

    loss, grads = accumulated_value_and_grad(loss_fn, state.params, rows,
                                             dropout_rng, self.grad_accum_steps)
    state, health = apply_gradients(state, grads, self.tx, self.ema_decay, self.ema_warmup)
    return state, {"loss": loss, **health}

  def eval_step(self, state: TrainState, batch, rng):
    """The training objective on held-out images with EMA and raw weights (same t and
    noise for both; a conditional model's with the batch's labels)."""
    t_B, noise = self._draw_t_and_noise(rng, batch["image"].shape)
    labels = self._labels(batch)
    return {f"{name}/loss": self._loss(self._network(params, False, labels=labels),
                                       batch["image"], t_B, noise)
            for name, params in (("ema", state.ema_params), ("raw", state.params))}

  # ------------------------------------------------------------------- likelihood

  def dataset_evaluation(self) -> DatasetEvaluation | None:
    """Bits/dim of the first `eval.bpd_num_images` eval images (0: none) with the EMA
    weights: for 'ddpm' the variational bound (Ho et al. 2020, Eq. 5) of the model the DDPM
    sampler draws from (`likelihood.bits_per_dim`); for a continuous process the
    probability-flow ODE's (`likelihood.ode_bits_per_dim`, `eval.bpd_ode_steps` Heun steps,
    `eval.bpd_trace`)."""
    cfg = self.eval_cfg
    if not cfg.bpd_num_images:
      return None
    if self.continuous:
      batch_fn = lambda state, batch, rng: likelihood.ode_bits_per_dim(
          self._x0_and_eps_fn(self._network(state.ema_params, False)), self.process,
          batch["image"], rng, steps=cfg.bpd_ode_steps, prediction=self.prediction,
          trace=cfg.bpd_trace)
      summarize = likelihood.summarize_ode_bits_per_dim
    else:
      batch_fn = lambda state, batch, rng: self.bits_per_dim(
          state.ema_params, batch["image"], rng, timestep_batch=cfg.bpd_timestep_batch)
      summarize = likelihood.summarize_bits_per_dim
    return DatasetEvaluation(name="bits/dim", num_examples=cfg.bpd_num_images,
                             batch_size=cfg.bpd_batch_size, batch_fn=batch_fn,
                             summarize=summarize)

  def bits_per_dim(self, params, x0: jax.Array, rng: jax.Array, *,
                   timestep_batch: int = 10) -> dict[str, jax.Array]:
    """`likelihood.bits_per_dim` of images x0 [B, H, W, C] with this DDPM's U-Net in eval
    mode (no dropout), its target, its reverse variance (learned, or `sample.variance`) and
    `sample.clip_x0`, so the bound is for the model the DDPM sampler draws from. Pass
    `state.ema_params` (the default for evaluation) or `state.params`."""
    apply_fn: likelihood.ApplyFn = lambda p, x, t: self._network(p, False)(x, t)
    return likelihood.bits_per_dim(
        apply_fn, params, self.schedule, x0, rng, target=self.target, variance=self.variance,
        clip_x0=self.sample_cfg.clip_x0, timestep_batch=timestep_batch)

  # ------------------------------------------------------------------- inpainting

  def inpaint_chain(self, cfg: ml_collections.ConfigDict) -> inpainting_mode.Chain:
    """The inpainting chain of the `inpaint` config group `cfg` with this network in eval
    mode, unconditional: `inpainting_mode.ddpm_chain` (replacement or RePaint, with the
    model's target, reverse variance and `sample.clip_x0`) or, for a continuous process,
    `inpainting_mode.continuous_chain` (replacement with `sample.sampler`).

    Raises:
      InpaintConfigError: a bad `cfg`, or one this process cannot run (before any compile).
    """
    network_of = lambda params: self._network(params, False)
    if not self.continuous:
      return inpainting_mode.ddpm_chain(cfg, network_of=network_of, schedule=self.schedule,
                                        target=self.target, variance=self.variance,
                                        clip_x0=self.sample_cfg.clip_x0)
    return inpainting_mode.continuous_chain(
        cfg, x0_eps_of=lambda params: self._x0_and_eps_fn(network_of(params)),
        process=self.process, prediction=self.prediction, sample_cfg=self.sample_cfg)

  def _ode_velocity_fn(self, params) -> reflow.VelocityFn:
    """(x_t, t_B) -> the probability-flow velocity dx/dt of the network (unconditional)."""
    x0_eps = self._x0_and_eps_fn(self._network(params, False))
    return lambda x, t_B: core.ode_velocity(
        *x0_eps(x, t_B), core.coefficients(self.process, t_B.reshape(-1, 1, 1, 1)))

  def modes(self) -> dict[str, MethodMode]:
    """`--mode=inpaint` of every process (`inpainting_mode.inpaint_mode`, the `inpaint`
    config group); for 'linear' and 'gvp' also `--mode=reflow` (`reflow.reflow_mode`, the
    `reflow` group)."""
    modes = {"inpaint": inpainting_mode.inpaint_mode(self.inpaint_chain, self.image_shape,
                                                     self.sample_cfg.use_ema)}
    if self.process in ("linear", "gvp"):
      modes["reflow"] = reflow.reflow_mode(self._ode_velocity_fn, self.image_shape,
                                           self.sample_cfg.use_ema,
                                           core.time_range(self.process, self.prediction))
    return modes

  # --------------------------------------------------------------------- sampling

  def _sampler_noise_levels(self) -> np.ndarray:
    """The noise levels sigma / alpha at which the sampler calls the network, in order."""
    cfg = self.sample_cfg
    if not self.continuous:
      T = self.schedule.num_timesteps
      t = (np.arange(T) if cfg.sampler == "ddpm"
           else ddim_timesteps(T, cfg.steps or T, cfg.timesteps))[::-1]
      abar = np.asarray(self.schedule.alphas_cumprod, np.float64)[t]
      return np.sqrt((1.0 - abar) / abar)
    if cfg.sampler == "rk45":   # adaptive: its evaluations vary with the batch
      return np.zeros((0,))
    if cfg.sampler == "edm_heun":
      sigmas = edm.sampling_sigmas(cfg.steps, core.EDM_SIGMA_MIN, core.EDM_SIGMA_MAX,
                                   samplers.EDM_RHO)
      # Alg. 2: the step from sigma_i evaluates at sigma_i (raised by churn) and sigma_{i+1}.
      return np.asarray([sigmas[0], *(s for s in sigmas[1:-1] for _ in (0, 1))])
    times = samplers.time_grid(self.process, cfg.steps, self.prediction, cfg.sampler,
                               samplers.SDEOptions.from_config(cfg))
    calls = [times[0]] + [t for t in times[1:-1] for _ in range(2 if cfg.sampler == "heun" else 1)]
    if cfg.sampler == "heun" and times[-1] > 0:
      calls.append(times[-1])
    levels = core.coefficients(self.process, jnp.asarray(np.asarray(calls), jnp.float32))
    return np.asarray(levels.noise_level, np.float64)

  @property
  def nfe(self) -> int:
    """Network evaluations per sample of `config.sample` (a guided step counts two); 0 for
    the adaptive 'rk45'."""
    levels = self._sampler_noise_levels()
    guided = 0
    if self.num_classes:
      guided = guided_steps(levels, tuple(self.sample_cfg.guidance_interval))
    return len(levels) + guided

  @property
  def sample_tag(self) -> str:
    """'<sampler><steps>', then '_nfe<N>' where the NFE differs from the steps (Heun,
    guidance), plus a conditional model's '_label<c>' (one class) and '_w<w>'."""
    cfg = self.sample_cfg
    steps = cfg.steps or self.schedule.num_timesteps
    tag = cfg.sampler if cfg.sampler == "rk45" else f"{cfg.sampler}{steps}"
    if self.num_classes:
      tag += (f"_label{self.sample_label}" if self.sample_label >= 0 else "") + \
             f"_w{self.guidance:g}"
    if self.nfe != steps and cfg.sampler != "rk45":
      tag += f"_nfe{self.nfe}"
    return tag

  def sample(self, state: TrainState, rng, num: int, use_ema: bool = True, batch=None,
             labels=None) -> Samples:
    """`num` images with `config.sample`: for 'ddpm', sampler 'ddpm' (Alg. 2) or 'ddim'
    (Eq. 12), with the model's reverse variance where the sampler uses one; for a
    continuous process, `samplers.sample`. A conditional model draws them for `labels`
    [num] (None: `sample_labels(num)`) with classifier-free guidance of weight
    `sample.guidance` in `sample.guidance_interval` (`guidance.guided_network`).

    Returns:
      `Samples`: images [num, H, W, C] clipped to [-1, 1] (latents: not clipped, and decoded
      by `gen_jax.methods.latents.LatentImages`); labels [num] when conditional.
    """
    cfg, shape = self.sample_cfg, (num, *self.image_shape)
    params = state.ema_params if use_ema else state.params
    if self.num_classes:
      labels = jnp.asarray(self.sample_labels(num) if labels is None else labels, jnp.int32)
      network = guided_network(self._network_with_labels(params, False), labels,
                               self.num_classes, self.guidance, self.variance,
                               noise_level=self._noise_levels,
                               interval=tuple(cfg.guidance_interval),
                               channels=cfg.guidance_channels)
    elif labels is not None:
      raise ValueError("This model is unconditional (model.num_classes=0): it takes no labels.")
    else:
      network = self._network(params, False)
    if self.continuous:
      edm_options = dict(s_churn=cfg.s_churn, s_tmin=cfg.s_tmin, s_tmax=cfg.s_tmax,
                         s_noise=cfg.s_noise)
      x = samplers.sample(self._x0_and_eps_fn(network), self.process, rng, shape,
                          sampler=cfg.sampler, steps=cfg.steps, prediction=self.prediction,
                          eta=cfg.eta, edm_options=edm_options,
                          sde=samplers.SDEOptions.from_config(cfg))
    elif cfg.sampler == "ddpm":
      x = ddpm_sample(network, self.schedule, rng, shape, target=self.target,
                      variance=self.variance, clip_x0=cfg.clip_x0)
    else:
      x = ddim_sample(network, self.schedule, rng, shape, target=self.target, eta=cfg.eta,
                      num_steps=cfg.steps or self.schedule.num_timesteps, clip_x0=cfg.clip_x0,
                      timesteps=cfg.timesteps, sigma=cfg.ddim_sigma, variance=self.variance)
    return Samples(images=jnp.clip(x, -1.0, 1.0) if self.clip_samples else x, labels=labels)
