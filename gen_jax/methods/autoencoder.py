"""The KL-regularized autoencoder of latent diffusion, trained on reconstruction + beta * KL.

Rombach et al. 2022, "High-Resolution Image Synthesis with Latent Diffusion Models"
(arXiv:2112.10752), §3.1 and App. G; the loss is the first-stage objective of Esser,
Rombach, Ommer 2021 ("Taming Transformers", arXiv:2012.09841, §3.1) with a KL term in place
of the codebook's: per image,

  L = sum_pixels |x - D(z)|  +  beta * KL(q(z|x) || N(0, I)),    z = mu + sigma * eps  (1)

the reconstruction summed over pixels and the KL over latent dimensions, as ldm's
`LPIPSWithDiscriminator` sums them (ldm/modules/losses/contperceptual.py; beta =
`kl_weight`, 1e-6 for 256^2 images there). `autoencoder.recon_loss='mse'` uses the squared
error instead.

Left out of the paper's loss, and why:
  * LPIPS (the perceptual term, weight 1 in ldm): it needs a pretrained VGG-16 and LPIPS'
    linear heads, weights that cannot be had offline here.
  * The PatchGAN discriminator with the hinge loss and Esser et al.'s adaptive weight (the
    ratio of the reconstruction's and the GAN loss's gradient norms at the decoder's last
    layer; ldm's f = 8 config switches it on after 50k steps of 256^2 training): its job is
    sharp texture at high resolution; at 28x28 digits L1 alone reconstructs well
    (docs/results.md). Not implemented yet.
  * ldm's learned scalar log-variance of the L1 "likelihood" (nll = |x - x~| / e^s + s): a
    learned weight of the reconstruction against the KL, whose role the measured beta plays
    here.

Images are in [-1, 1] (the pipeline's, `data.binarize='none'`). The KL is in nats.
"""
from __future__ import annotations

import dataclasses

import dm_pix
import jax
import jax.numpy as jnp
import ml_collections
import optax

from gen_jax.core.optimizer import make_optimizer
from gen_jax.core.state import TrainState, accumulated_value_and_grad, apply_gradients
from gen_jax.interop import diffusers_vae
from gen_jax.methods import base, latents_mode
from gen_jax.methods.base import (
  Method,
  MethodMode,
  ModeContext,
  Params,
  Samples,
  grad_accum_steps,
  image_shape_of,
)
from gen_jax.methods.latents import model_fields
from gen_jax.models.autoencoder_kl import AutoencoderKL

RECON_LOSSES = ("l1", "mse")
WEIGHTS = ("ema", "raw")


def kl_to_standard_normal(mean: jax.Array, logvar: jax.Array) -> jax.Array:
  """KL(N(mean, e^logvar) || N(0, I)) summed over every latent dimension (Kingma & Welling
  2014, App. B; ldm's DiagonalGaussianDistribution.kl):

    KL = 1/2 sum (mean^2 + e^logvar - 1 - logvar).       mean, logvar [B, ...] -> [B]
  """
  axes = tuple(range(1, mean.ndim))
  return 0.5 * jnp.sum(mean**2 + jnp.exp(logvar) - 1.0 - logvar, axis=axes)


def reconstruction_loss(kind: str, x: jax.Array, x_rec: jax.Array) -> jax.Array:
  """sum over pixels of |x - x~| ('l1', Eq. (1)) or (x - x~)^2 ('mse').    [B]"""
  err = x_rec - x
  return jnp.sum(jnp.abs(err) if kind == "l1" else err**2, axis=(1, 2, 3))


def psnr(x: jax.Array, x_rec: jax.Array) -> jax.Array:
  """PSNR in dB of reconstructions (clipped to [-1, 1]) against images in [-1, 1], both read
  as [0, 1] images (dm-pix).    [B]"""
  return jnp.asarray(dm_pix.psnr((x + 1.0) / 2.0, (jnp.clip(x_rec, -1.0, 1.0) + 1.0) / 2.0))


@dataclasses.dataclass(frozen=True)
class AutoencoderMethod(Method):
  """An AutoencoderKL trained on Eq. (1); its EMA weights encode and decode by default."""

  model: AutoencoderKL
  tx: optax.GradientTransformation
  image_shape: tuple[int, int, int]
  recon_loss: str
  kl_weight: float
  eval_weights: tuple[str, ...]
  ema_decay: float
  ema_warmup: bool
  grad_accum_steps: int = 1

  # The engine passes `sample` a fixed batch of eval images (the reconstruction grid).
  sample_uses_batch = True
  can_encode = True

  @classmethod
  def from_config(cls, config: ml_collections.ConfigDict, spec) -> AutoencoderMethod:
    H, W, C = image_shape_of(spec)
    m, a = config.model, config.autoencoder
    widths = tuple(m.block_out_channels)
    if not widths or any(w < 1 or w % m.norm_num_groups for w in widths):
      raise ValueError(f"model.block_out_channels={widths}: every width must be a positive "
                       f"multiple of model.norm_num_groups={m.norm_num_groups}.")
    if m.layers_per_block < 1 or m.latent_channels < 1:
      raise ValueError(f"model.layers_per_block={m.layers_per_block} and "
                       f"model.latent_channels={m.latent_channels} must be >= 1.")
    f = 2 ** (len(widths) - 1)
    if H % f or W % f:
      raise ValueError(
          f"model.block_out_channels has {len(widths)} levels, so the autoencoder downsamples "
          f"by f={f}, which must divide the image size {H}x{W}; use fewer levels (28x28 "
          "digits: at most 3, f=4).")
    if a.recon_loss not in RECON_LOSSES:
      raise ValueError(f"autoencoder.recon_loss={a.recon_loss!r}; expected one of "
                       f"{RECON_LOSSES}.")
    if a.kl_weight < 0:
      raise ValueError(f"autoencoder.kl_weight={a.kl_weight} must be >= 0.")
    weights = tuple(a.eval_weights)
    if not weights or set(weights) - set(WEIGHTS):
      raise ValueError(f"autoencoder.eval_weights={weights}; expected a non-empty subset of "
                       f"{WEIGHTS}.")
    model = AutoencoderKL(in_channels=C, out_channels=C, block_out_channels=widths,
                          layers_per_block=m.layers_per_block, latent_channels=m.latent_channels,
                          norm_num_groups=m.norm_num_groups, scaling_factor=m.scaling_factor,
                          dtype=jnp.dtype(config.dtype))
    return cls(model=model, tx=make_optimizer(config.train), image_shape=(H, W, C),
               recon_loss=a.recon_loss, kl_weight=float(a.kl_weight), eval_weights=weights,
               ema_decay=config.train.ema_decay, ema_warmup=config.train.ema_warmup,
               grad_accum_steps=grad_accum_steps(config))

  # ---------------------------------------------------------------- networks

  @property
  def latent_shape(self) -> tuple[int, int, int]:
    """(H/f, W/f, c) of one image's latent."""
    H, W, _ = self.image_shape
    f = self.model.downsampling_factor
    return H // f, W // f, self.model.latent_channels

  def init(self, rng, batch) -> TrainState:
    params = self.model.init(rng, jnp.zeros((1, *self.image_shape), jnp.float32))["params"]
    return TrainState.create(params, self.tx)

  def encode(self, params: Params, images: jax.Array) -> tuple[jax.Array, jax.Array]:
    """q(z|x) of images [B, H, W, C] in [-1, 1]: (mean, logvar), each [B, H/f, W/f, c]."""
    # flax annotates apply's result as (output, state) too; without `mutable` it is output.
    return self.model.apply({"params": params}, images,  # pyright: ignore[reportReturnType]
                            method=AutoencoderKL.encode)

  def decode(self, params: Params, latents: jax.Array) -> jax.Array:
    """D(z): images [B, H, W, C] (unclipped) of latents [B, H/f, W/f, c]."""
    # flax annotates apply's result as (output, state) too; without `mutable` it is output.
    return self.model.apply({"params": params}, latents,  # pyright: ignore[reportReturnType]
                            method=AutoencoderKL.decode)

  # -------------------------------------------------------------- objective

  def loss_terms(self, params: Params, x: jax.Array,
                 eps: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Eq. (1) per image at z = mean + sigma * eps: (loss, reconstruction, KL), each [B]."""
    mean, logvar = self.encode(params, x)
    z = mean + jnp.exp(0.5 * logvar) * eps
    recon = reconstruction_loss(self.recon_loss, x, self.decode(params, z))
    kl = kl_to_standard_normal(mean, logvar)
    return recon + self.kl_weight * kl, recon, kl

  def train_step(self, state: TrainState, batch, rng):
    """One update on the batch mean of Eq. (1). eps is drawn for the whole batch before it
    is split into `grad_accum_steps` micro-batches, so the update does not depend on the
    split."""
    x = batch["image"]
    eps = jax.random.normal(rng, (x.shape[0], *self.latent_shape))

    def loss_fn(params, rows, _):
      loss, recon, kl = self.loss_terms(params, *rows)
      return jnp.mean(loss), {"recon": jnp.mean(recon), "kl": jnp.mean(kl)}

    (loss, aux), grads = accumulated_value_and_grad(loss_fn, state.params, (x, eps), None,
                                                    self.grad_accum_steps, has_aux=True)
    state, health = apply_gradients(state, grads, self.tx, self.ema_decay, self.ema_warmup)
    return state, {"loss": loss, **aux, **health}

  def eval_step(self, state: TrainState, batch, rng):
    """Per weights w in `eval_weights`, averaged over images:

      w/loss, w/recon, w/kl   Eq. (1) and its terms at one posterior sample
      w/psnr                  dB, the decoding of the posterior mean against the input
      w/latent_std            std of the posterior means over the batch's latent entries:
                              1 / latent_std is the `scaling_factor` latent diffusion would
                              use (Rombach et al. App. D.1)
    """
    x = batch["image"]
    eps = jax.random.normal(rng, (x.shape[0], *self.latent_shape))
    metrics = {}
    for name in self.eval_weights:
      params = state.ema_params if name == "ema" else state.params
      loss, recon, kl = self.loss_terms(params, x, eps)
      mean, _ = self.encode(params, x)
      metrics.update({f"{name}/loss": jnp.mean(loss), f"{name}/recon": jnp.mean(recon),
                      f"{name}/kl": jnp.mean(kl),
                      f"{name}/psnr": jnp.mean(psnr(x, self.decode(params, mean))),
                      f"{name}/latent_std": jnp.std(mean)})
    return metrics

  # ---------------------------------------------------------------- sampling

  def sample(self, state: TrainState, rng, num: int, use_ema: bool = True,
             batch=None, labels=None) -> Samples:   # unconditional: labels is always None
    """`Samples` in [-1, 1]: images D(z) of z ~ N(0, I) [num, H/f, W/f, c] (what the KL
    prior alone gives: an autoencoder is not a generator, latent diffusion is), and with
    `batch` the grid 'reconstructions': input | D(posterior mean) side by side
    [n, H, 2W, C] for the first n = min(num, batch size) images."""
    params = state.ema_params if use_ema else state.params
    z = jax.random.normal(rng, (num, *self.latent_shape))
    images = jnp.clip(self.decode(params, z), -1.0, 1.0)
    grids = {}
    if batch is not None:
      x = batch["image"][:num]
      rec = jnp.clip(self.decode(params, self.encode(params, x)[0]), -1.0, 1.0)
      grids["reconstructions"] = jnp.concatenate([x, rec], axis=2)
    return Samples(images=images, grids=grids)

  # ------------------------------------------------------------ foreign weights

  def init_from_formats(self) -> tuple[str, ...]:
    """Starts from a diffusers AutoencoderKL file (`init_from='diffusers_vae:<path>'`), e.g.
    Stable Diffusion's VAE for fine-tuning."""
    return ("diffusers_vae",)

  def load_foreign_params(self, init_from: str, abstract_params: Params) -> Params:
    """The params in a diffusers safetensors file (`gen_jax.interop.diffusers_vae`)."""
    return diffusers_vae.load_params(init_from, self.model, abstract_params)

  def export_formats(self) -> tuple[str, ...]:
    """Exports as a diffusers AutoencoderKL folder (`export.format='diffusers_vae'`)."""
    return ("diffusers_vae",)

  def export_foreign(self, export_format: str, params: Params, step: int) -> base.ForeignExport:
    """A folder diffusers' `AutoencoderKL.from_pretrained` loads
    (`gen_jax.interop.diffusers_vae`)."""
    if export_format not in self.export_formats():
      return super().export_foreign(export_format, params, step)
    tensors, metadata, config = diffusers_vae.export_files(params, self.model,
                                                           self.image_shape[0], step)
    return base.ForeignExport(weights_file=diffusers_vae.WEIGHTS, tensors=tensors,
                              metadata=metadata, json_files={diffusers_vae.CONFIG: config})

  # ------------------------------------------------------------------ modes

  def modes(self) -> dict[str, MethodMode]:
    """`--mode=latents` (gen_jax/methods/latents_mode.py, the `latents` group): the dataset's
    splits encoded once into a latents folder that a diffusion run trains on
    (`data.dataset='latents'`), with this autoencoder's decoder beside them."""
    return {"latents": latents_mode.latents_mode(
        encode_params=self.encode, params_and_provenance=self._latents_params,
        decoder_fields=model_fields(self.model), latent_shape=lambda _: self.latent_shape)}

  def _latents_params(self, ctx: ModeContext) -> tuple[Params, dict]:
    """The run's EMA (or `sample.use_ema=False`: raw) weights; with no checkpoint in the
    workdir, those of `init_from='diffusers_vae:<path>'` (Stable Diffusion's VAE as it is)."""
    config = ctx.config
    use_ema = bool(config.sample.use_ema)
    try:
      state, step = ctx.restore()
    except FileNotFoundError:
      if not config.init_from.startswith("diffusers_vae:"):
        raise
      abstract = jax.eval_shape(self.init, jax.random.key(0), None).params
      return self.load_foreign_params(config.init_from, abstract), {
          "init_from": config.init_from}
    return (state.ema_params if use_ema else state.params), {
        "workdir": ctx.workdir, "step": step, "weights": "ema" if use_ema else "raw"}
