"""Generative adversarial networks: one train step holding both players.

Goodfellow et al. 2014, "Generative Adversarial Nets" (arXiv:1406.2661): the minimax game
(Eq. 1) and the non-saturating generator objective (§3).
Radford, Metz, Chintala 2016, "Unsupervised Representation Learning with Deep Convolutional
GANs" (arXiv:1511.06434): the DCGAN networks (gen_jax/models/dcgan.py) and recipe.
Lim & Ye 2017 "Geometric GAN" (arXiv:1705.02894); Miyato et al. 2018 (arXiv:1802.05957, §4):
the hinge objective.
Gulrajani et al. 2017, "Improved Training of Wasserstein GANs" (arXiv:1704.00028): the
critic loss with gradient penalty (Eq. 3) and its training loop (Algorithm 1).
Huang et al. 2024, "The GAN is dead; long live the GAN! A Modern GAN Baseline" (R3GAN,
arXiv:2501.05441): the relativistic pairing loss with R1 and R2 penalties (§2) and the
ConvNet of gen_jax/models/r3gan.py (§3).
The objectives are in gan_objectives.py, the latents in gan_latents.py.

State. The engine sees one `TrainState`:
  params       = {"generator": G params, "discriminator": D params}
  opt_state    = {"generator": G's Adam state, "discriminator": D's Adam state}
  model_state  = {"generator": G batch_stats, "discriminator": D batch_stats ({} without BN)},
                 and with a spectrally normalized D (`gan.d_spectral_norm`) also
                 "discriminator_spectral_norm": the power iteration's u vectors of D's layers
  ema_params   = EMA of `params` (same structure, so the engine's `init_from` works); only
                 the generator's average is used: for sampling and the `ema/` eval metrics.
BatchNorm runs on batch statistics in every training forward pass; under `jax.jit` on
global arrays sharded over the mesh these are the statistics of the global (sub)batch, so
1 and 8 devices compute the same step. G keeps running averages in `model_state` (updated
by every training forward pass of G).

BatchNorm when sampling (`sample.batch_norm`). The reference codes never use running
averages: the DCGAN authors' `_gen` (dcgan_code, lib/ops.py `batchnorm` without u, s) and
WGAN-GP's `Generator` (tflib batchnorm.py with is_training=None: `fused_batch_norm` in
training mode) normalize every generated batch by its own statistics, also for sample grids
and the Inception-score batches of 100. 'batch' (the default) does the same: every call of
G that draws images -- the sample grid, each `eval.sample_batch_size` batch of the sample
metrics, the fakes of `eval_step`, `TrainedRun.sample` -- normalizes by the statistics of
that batch, so a sample depends on the other latents of its batch and on the batch size
(the interpolation grid is its own batch). 'running' uses the running averages: each image
depends only on its latent.

Architectures (`gan.arch`): 'dcgan' (gen_jax/models/dcgan.py, any loss), 'resnet'
(Gulrajani et al.'s 32x32 CIFAR-10 ResNet, gen_jax/models/resnet_gan.py) or 'r3gan' (Huang
et al.'s ConvNet, gen_jax/models/r3gan.py: stages from `gan.r3gan`, no normalization, G's
output not squashed by a tanh). `gan.layer_style`
picks DCGAN's layer conventions: 'radford' or 'tflib' (the WGAN-GP release's init, biases
and first BatchNorm; the ResNet uses tflib's with either), or for the ResNet 'sngan':
Miyato et al.'s release (sngan_projection): D's features summed over H, W, no bias in its
read-out, G's BatchNorm eps 2e-5.

Spectral normalization (`gan.d_spectral_norm`; Miyato et al. 2018, arXiv:1802.05957,
gen_jax/models/spectral_norm.py): every weight of D (convolutions, read-out, class
embedding) computes as W / sigma(W). The power iteration's u vectors are model state
(checkpointed). As in the authors' chainer links, every training forward pass of D takes
one power iteration and keeps its u: a D update has two (the real batch, then the fakes,
on the u the real pass left), the G update one (D on G's fakes); the WGAN-GP penalty's
pass on the interpolates and `eval_step`'s passes iterate without keeping u. With
gradient accumulation the micro-batches' u (equal: the iteration reads no data) are
averaged like BatchNorm's running averages.

Real images (`data.dequantize`, gan_real_images.py): 'uniform' replaces the pipeline's
x / 127.5 - 1 by Gulrajani et al.'s (x + U(0, 1)) / 128 - 1 in the train step (noise from
fold_in(rng, 2), so the other draws stay those of 'none'); 'none' keeps them.

Batch split. `train.batch_size` (B) real images feed one `train_step`: `n_critic` D
updates, then one G update (Gulrajani et al. 2017, Alg. 1; DCGAN is n_critic = 1). The
batch is cut into n_critic slices of m = B / n_critic images, slice k holding rows
k, k + n_critic, k + 2 n_critic, ... (a reshape [B] -> [m, n_critic]: every slice is spread
over all batch shards in the same proportion, so no image moves between devices and the
split does not depend on the device count). D update k sees real slice k and m fakes from
fresh noise; the G update sees m fakes from fresh noise. Choose B a multiple of
n_critic x (batch shards) to keep every slice evenly sharded.

Gradient accumulation (`train.grad_accum_steps` = M). Every optimizer step keeps its batch:
each of the n_critic D updates still takes its m real images and m fakes, and the G update m
fakes; only each of these m-row batches is cut into M micro-batches of m / M rows whose
gradients are averaged before that one optimizer step (`accumulated_value_and_grad`). So M
trades time for memory and leaves Alg. 1's schedule alone (accumulating across the n_critic
slices instead would merge the n_critic D updates into one). B must be a multiple of
n_critic x M. Latents and the penalty's interpolation weights are drawn per example before
the split. BatchNorm, however, normalizes each micro-batch by its own statistics when M > 1
(inherent: the whole batch's statistics need the whole batch in memory), so with BatchNorm
the update is not the large-batch one; the running averages take the mean of the M
micro-batches' updates. Without BatchNorm in D (the WGAN-GP critic) D's loss is a mean over
examples, so its accumulated gradient is the large-batch gradient for the same fakes; but G
always has BatchNorm, so the fakes themselves depend on M.

`train.*` optimizer settings apply to both nets (Radford et al.: Adam 2e-4, beta1 0.5;
Gulrajani et al.: Adam 1e-4, betas (0, 0.9)). D's learning-rate schedule runs n_critic
times as many updates, so its warmup/decay are stretched by n_critic: both nets follow the
schedule in train steps. `gan.l2` adds the DCGAN code's coupled L2 penalty l2 * theta to
the gradient of every parameter of both nets before Adam (dcgan_code lib/updates.py:
`Regularizer.gradient_regularize`, l2 = 1e-5; it is applied after gradient clipping there,
before it here, which differs only with train.grad_clip > 0).

Options of the reference codes' loops:
  * `gan.alternate_minibatches` (dcgan_code, train_uncond_dcgan.py: `if n_updates % (k+1)
    == 0: _train_g(imb, zmb) else: _train_d(imb, zmb)`): every update, G's included, takes
    its own minibatch in turn, G first. A train step then holds n_critic + 1 slices of m
    images: the G update comes first (its slice's real images go unused, as `_train_g`'s
    cost does not read them) and D update k takes slice k + 1. So D sees n_critic / (n_critic
    + 1) of every epoch, and with the code's minibatch m an epoch of N images is
    N / ((n_critic + 1) m) steps.
  * `gan.g_batch_multiple` (gan_cifar_resnet.py: GEN_BS_MULTIPLE = 2): the G update takes
    this many times m fakes.

RpGAN + R1 + R2 (`gan.loss` = 'rpgan'; Huang et al. 2024, §2; the authors' Trainer.py). D
minimizes E softplus(D(G(z_b)) - D(x_b)) + gamma/2 (E ||grad D(x)||^2 + E ||grad D(G(z))||^2)
over pairs (real b, fake b); G minimizes E softplus(D(x_b) - D(G(z_b))), so G's update scores
real images too. With `alternate_minibatches` these are slice 0's images (G's own minibatch,
as the authors' loop draws a second batch of reals for G's phase; their order is D then G,
here G's update comes first in a step, so the runs differ by where the alternation starts);
otherwise G reuses the last critic slice's images. gamma follows a cosine from `gan.gamma`
to gamma x `gan.gamma_final_ratio` at train.decay_steps (or num_steps) and stays there (the
release's gamma_scheduler); a conditional model's fakes take their real partner's label
(the authors' loss passes the real batch's conditions to G and D alike). D must have no
BatchNorm (the penalties are per example). `gan.ema_halflife_steps` > 0 replaces
train.ema_decay by the release's EMA: decay 0.5^(1 / h(t)), the half-life h rising from 0 to
that many steps along the same cosine (their ema_scheduler, in images / batch), and
`gan.b2_final` > 0 moves Adam's beta2 from train.b2 to it along that cosine (their
beta2_scheduler).

Class conditioning (`model.num_classes` = K > 0; Miyato & Koyama 2018, "cGANs with Projection
Discriminator", arXiv:1802.05637). G has conditional BatchNorms and D the projection head
(gen_jax/models/class_conditioning.py), both archs; the authors' layer conventions and
spectral normalization of D are gan.layer_style='sngan' (ResNet) and gan.d_spectral_norm
(experiments/miyato2018_projection/cifar10.py). Real images come with their labels
(`batch["label"]`, sliced with the images); every fake is drawn for a label y ~ U{0..K-1},
in D's updates and in G's alike, as the authors' updater does (sngan_projection
updater.py: `sample_categorical(n_classes, ...)` for both; gan_cifar_resnet.py instead
gives D's fakes the real batch's labels). Every objective scores D(x, y_real) and
D(G(z, y), y). The WGAN-GP penalty differentiates D(x^, y_real) on the interpolates x^ =
eps x + (1 - eps) G(z, y), with the real images' labels (gan_cifar_resnet.py's
conditional critic does the same; there its fakes share those labels). A fake's label is
drawn from fold_in(its latent's key, 1), so K = 0 draws exactly the latents it always did.
Samples: `sample.label` = -1 draws the classes in equal blocks (`base.class_rows`: one grid
row per class at sample.num = K^2), c >= 0 only class c; `sample_labels` tells the engine,
whose sample metrics then report the classifier's agreement with the drawn labels.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from gen_jax.core.optimizer import learning_rate_schedule, make_optimizer
from gen_jax.core.state import (
  TrainState,
  accumulated_value_and_grad,
  ema_update,
  finish_step,
  optimizer_step,
)
from gen_jax.methods.base import Method, Samples, class_rows, grad_accum_steps, image_shape_of
from gen_jax.methods.gan_latents import interpolation_latents, sample_latents
from gen_jax.methods.gan_objectives import (
  OBJECTIVES,
  PAIRED_OBJECTIVES,
  gradient_penalty,
  zero_centered_gradient_penalty,
)
from gen_jax.methods.gan_real_images import DEQUANTIZATIONS, dequantize_uniform
from gen_jax.models import dcgan, r3gan, resnet_gan, spectral_norm

LOSSES = (*OBJECTIVES, *PAIRED_OBJECTIVES)
Z_PRIORS = ("normal", "uniform")
ARCHS = ("dcgan", "resnet", "r3gan")
LAYER_STYLES = (*dcgan.STYLES, "sngan")    # 'sngan': the ResNet only
SAMPLE_BATCH_NORMS = ("batch", "running")
G, D = "generator", "discriminator"
D_SN = "discriminator_spectral_norm"   # model_state key of D's spectral-norm u vectors


def critic_slices(x_BxHxWxC: jax.Array, n_critic: int) -> jax.Array:
  """[B, ...] -> [n_critic, B / n_critic, ...]; slice k holds rows k, k + n_critic, ...

  (A reshape to [m, n_critic]: on a batch-sharded array every slice keeps the same
  proportion on each shard, so nothing moves between devices; see the module docstring.)
  """
  B = x_BxHxWxC.shape[0]
  if B % n_critic:
    raise ValueError(f"train.batch_size={B} must be divisible by gan.n_critic={n_critic}.")
  return x_BxHxWxC.reshape(B // n_critic, n_critic, *x_BxHxWxC.shape[1:]).swapaxes(0, 1)


# ------------------------------------------------------------------------------- method


@dataclasses.dataclass(frozen=True)
class GANMethod(Method):
  """DCGAN, ResNet or R3GAN networks trained with a non-saturating, hinge, WGAN-GP or
  RpGAN + R1 + R2 objective."""

  generator: dcgan.Generator | resnet_gan.Generator | r3gan.Generator
  discriminator: dcgan.Discriminator | resnet_gan.Discriminator | r3gan.Discriminator
  tx_g: optax.GradientTransformation
  tx_d: optax.GradientTransformation
  image_shape: tuple[int, int, int]
  loss: str
  n_critic: int
  gp_weight: float
  z_dim: int
  z_prior: str
  ema_decay: float
  ema_warmup: bool
  interpolation: str
  interpolation_steps: int
  sample_batch_stats: bool = True    # sample.batch_norm == 'batch'
  alternate_minibatches: bool = False
  g_batch_multiple: int = 1
  grad_accum_steps: int = 1     # micro-batches per D or G update (see the module docstring)
  num_classes: int = 0          # K > 0: class-conditional G and projection D
  sample_label: int = -1        # sample.label: -1 = classes in blocks (rows), c = class c
  d_spectral_norm: bool = False  # gan.d_spectral_norm: u vectors in model_state[D_SN]
  dequantize: str = "none"      # data.dequantize of the real images in train_step
  gamma: float = 0.0            # rpgan: the R1/R2 weight at step 0 ...
  gamma_final_ratio: float = 1.0   # ... times this at `schedule_steps` (cosine)
  schedule_steps: int = 1       # train.decay_steps or num_steps: gamma's and the EMA's horizon
  ema_halflife_steps: float = 0.0  # > 0: the release's EMA half-life (module docstring)

  @classmethod
  def from_config(cls, config: ml_collections.ConfigDict, spec) -> GANMethod:
    image_shape = image_shape_of(spec)
    cfg = config.gan
    _validate(config, image_shape)
    dtype = jnp.dtype(config.dtype)
    K = config.model.num_classes
    sn = cfg.d_spectral_norm
    if cfg.arch == "resnet":
      sngan = cfg.layer_style == "sngan"    # Miyato et al.'s release (module docstring)
      generator = resnet_gan.Generator(image_shape=image_shape, dim=cfg.ngf,
                                       num_classes=K, dtype=dtype,
                                       bn_epsilon=2e-5 if sngan else 1e-5)
      discriminator = resnet_gan.Discriminator(dim=cfg.ndf, norm=_d_norm(cfg), num_classes=K,
                                               dtype=dtype, spectral_norm=sn,
                                               pooling="sum" if sngan else "mean",
                                               readout_bias=not sngan)
    elif cfg.arch == "r3gan":
      # The release's D mirrors G: the same stages, listed from full resolution down.
      net = cfg.r3gan
      generator = r3gan.Generator(image_shape=image_shape, widths=tuple(net.widths),
                                  blocks=tuple(net.blocks), cardinality=tuple(net.cardinality),
                                  expansion=net.expansion, num_classes=K,
                                  embed_dim=cfg.z_dim if K else 0, dtype=dtype)
      discriminator = r3gan.Discriminator(widths=tuple(reversed(net.widths)),
                                          blocks=tuple(reversed(net.blocks)),
                                          cardinality=tuple(reversed(net.cardinality)),
                                          expansion=net.expansion, num_classes=K, dtype=dtype)
    else:
      generator = dcgan.Generator(image_shape=image_shape, ngf=cfg.ngf,
                                  kernel_size=cfg.kernel_size, style=cfg.layer_style,
                                  num_classes=K, dtype=dtype)
      discriminator = dcgan.Discriminator(ndf=cfg.ndf, norm=_d_norm(cfg),
                                          kernel_size=cfg.kernel_size, style=cfg.layer_style,
                                          num_classes=K, dtype=dtype, spectral_norm=sn)
    # D takes n_critic optimizer steps per train step: stretch its schedule to match G's.
    d_schedule = learning_rate_schedule(config.train, updates_per_step=cfg.n_critic)
    # dcgan_code's coupled L2: g + l2 * theta goes into Adam (the module docstring).
    l2 = lambda tx: optax.chain(optax.add_decayed_weights(cfg.l2), tx) if cfg.l2 > 0 else tx
    return cls(
        generator=generator, discriminator=discriminator,
        tx_g=l2(make_optimizer(config.train, b2_schedule=adam_b2_schedule(config, 1))),
        tx_d=l2(make_optimizer(config.train, schedule=d_schedule,
                               b2_schedule=adam_b2_schedule(config, cfg.n_critic))),
        image_shape=image_shape, loss=cfg.loss, n_critic=cfg.n_critic,
        gp_weight=cfg.gp_weight, z_dim=cfg.z_dim, z_prior=cfg.z_prior,
        ema_decay=config.train.ema_decay, ema_warmup=config.train.ema_warmup,
        interpolation=config.sample.interpolation,
        interpolation_steps=config.sample.interpolation_steps,
        sample_batch_stats=config.sample.batch_norm == "batch",
        alternate_minibatches=cfg.alternate_minibatches, g_batch_multiple=cfg.g_batch_multiple,
        num_classes=K, sample_label=config.sample.label, d_spectral_norm=sn,
        dequantize=config.data.dequantize,
        gamma=cfg.gamma, gamma_final_ratio=cfg.gamma_final_ratio,
        schedule_steps=config.train.decay_steps or config.train.num_steps,
        ema_halflife_steps=cfg.ema_halflife_steps,
        grad_accum_steps=grad_accum_steps(
            config, config.train.batch_size // _slices(cfg),
            f"the {config.train.batch_size // _slices(cfg)} real images of each critic update "
            f"(train.batch_size={config.train.batch_size} / {_slices_desc(cfg)})"))

  # ------------------------------------------------------------------ network calls

  def init(self, rng, batch) -> TrainState:
    g_rng, d_rng = jax.random.split(rng)
    y = jnp.zeros((1,), jnp.int32) if self.num_classes else None
    g_vars = self.generator.init(g_rng, jnp.zeros((1, self.z_dim)), train=False, labels_B=y)
    d_vars = self.discriminator.init(d_rng, jnp.zeros((1, *self.image_shape)), train=False,
                                     labels_B=y)
    model_state = {G: g_vars.get("batch_stats", {}), D: d_vars.get("batch_stats", {})}
    if self.d_spectral_norm:
      model_state[D_SN] = d_vars[spectral_norm.COLLECTION]
    return TrainState.create(
        {G: g_vars["params"], D: d_vars["params"]}, {G: self.tx_g, D: self.tx_d},
        model_state=model_state)

  def generate(self, params_g, stats_g, z_BxZ, train: bool,
               labels_B=None) -> tuple[jax.Array, Any]:
    """G(z) (G(z, y) for a conditional G, `labels_B` [B]); in training mode (BatchNorm on
    batch statistics) also returns G's updated running averages."""
    variables = {"params": params_g, "batch_stats": stats_g}
    if not train:
      # flax annotates apply's result as (output, state) too; without `mutable` it is output.
      x = self.generator.apply(variables, z_BxZ, train=False, labels_B=labels_B)
      return x, stats_g  # pyright: ignore[reportReturnType]
    x, updated = self.generator.apply(variables, z_BxZ, train=True, labels_B=labels_B,
                                      mutable=["batch_stats"])
    return x, updated["batch_stats"]

  def discriminate(self, params_d, stats, x_BxHxWxC, labels_B=None):
    """D(x) (D(x, y) with the projection term for a conditional D) logits in training mode:
    BatchNorm on batch statistics (how D is always used; see `eval_step`) and one power
    iteration of spectral normalization.

    Args:
      params_d: D's params.
      stats: the model state {G, D[, D_SN]} (module docstring).

    Returns:
      (logits [B], stats with D's entries as this pass leaves them: BatchNorm running
      averages and spectral-norm u vectors).
    """
    collections = {"batch_stats": stats[D]}
    if self.d_spectral_norm:
      collections[spectral_norm.COLLECTION] = stats[D_SN]
    logits, updated = self.discriminator.apply({"params": params_d, **collections}, x_BxHxWxC,
                                               train=True, labels_B=labels_B,
                                               mutable=list(collections))
    new = {**stats, D: updated.get("batch_stats", stats[D])}
    if self.d_spectral_norm:
      new[D_SN] = updated[spectral_norm.COLLECTION]
    return logits, new

  def draw(self, params_g, stats_g, z_BxZ, labels_B=None) -> jax.Array:
    """Images G(z) (or G(z, y)) as samples are drawn (`sample.batch_norm`): BatchNorm on the
    statistics of this batch of z ('batch', the reference codes') or on the running
    averages."""
    return self.generate(params_g, stats_g, z_BxZ, self.sample_batch_stats, labels_B)[0]

  def _latents(self, rng, num: int) -> jax.Array:
    return sample_latents(rng, (num, self.z_dim), self.z_prior)

  def _fake_labels(self, rng, num: int) -> jax.Array | None:
    """Labels [num] ~ U{0..K-1} of the fakes whose latents `rng` draws (Miyato & Koyama's
    updater), from fold_in(rng, 1) so the latents stay those of K = 0; None when
    unconditional."""
    if not self.num_classes:
      return None
    return jax.random.randint(jax.random.fold_in(rng, 1), (num,), 0, self.num_classes)

  def _real_labels(self, batch) -> jax.Array | None:
    """The batch's labels for a conditional model (None when unconditional)."""
    if not self.num_classes:
      return None
    if "label" not in batch:
      raise ValueError(f"model.num_classes={self.num_classes} needs class labels: the batch has "
                       f"only {sorted(batch)}; image datasets give {{'image', 'label'}}.")
    return batch["label"]

  # ------------------------------------------------------------------------ training

  def discriminator_loss(self, params_d, stats, real, fake, gp_eps_B, real_labels=None,
                         fake_labels=None, gamma: float | jax.Array = 0.0):
    """The D objective of `config.gan.loss`; returns (loss, (stats, metrics)).

    `stats`: the model state (`discriminate`), returned with D's entries after the real
    and the fake pass. `gp_eps_B`: the interpolation weights of the gradient penalty (used
    by wgan_gp only). `real_labels`, `fake_labels` [B]: the classes of a conditional
    model's real and fake images (None when unconditional); the penalty's interpolates
    take the real ones. `gamma`: the weight of rpgan's R1 and R2 penalties at this step.
    """
    d_loss_fn, _ = self.objective
    real_logits, stats = self.discriminate(params_d, stats, real, real_labels)
    fake_logits, stats = self.discriminate(params_d, stats, fake, fake_labels)
    loss = d_loss_fn(real_logits, fake_logits)
    metrics = {"d_real": jnp.mean(real_logits), "d_fake": jnp.mean(fake_logits)}
    if self.loss == "rpgan":
      # Huang et al. 2024, §2: + gamma/2 E||grad D(x)||^2 (R1) + gamma/2 E||grad D(G(z))||^2
      # (R2), each on its own images and labels. D has no BatchNorm (checked in from_config).
      r1 = zero_centered_gradient_penalty(
          lambda x: self.discriminate(params_d, stats, x, real_labels)[0], real, gamma)
      r2 = zero_centered_gradient_penalty(
          lambda x: self.discriminate(params_d, stats, x, fake_labels)[0], fake, gamma)
      metrics.update(r1=r1, r2=r2, gamma=jnp.asarray(gamma, jnp.float32))
      loss = loss + r1 + r2
    if self.loss == "wgan_gp":
      # Alg. 1 line 7: L = D(x~) - D(x) + lambda (||grad D(x^)|| - 1)^2. The critic has no
      # BatchNorm (checked in `from_config`); this pass's spectral-norm u is not kept.
      critic = lambda x: self.discriminate(params_d, stats, x, real_labels)[0]
      gp = gradient_penalty(critic, real, fake, gp_eps_B, self.gp_weight)
      metrics["gp"] = gp
      loss = loss + gp
    return loss, (stats, metrics)

  def discriminator_grads(self, params_d, params_g, stats, rows, gamma: float | jax.Array = 0.0):
    """D's loss and gradient on one critic slice, averaged over `grad_accum_steps` micro-batches.

    Args:
      params_d, params_g: the two nets' params (only D's are differentiated).
      stats: the model state {G, D[, D_SN]}: BatchNorm running averages (and u vectors).
      rows: (real [m, H, W, C], z [m, Z], gp_eps [m]) -- the slice's real images, the
        latents of its fakes (made by G in training mode, per micro-batch) and the
        penalty's interpolation weights; a conditional model's rows add (real_labels [m],
        fake_labels [m]), the classes of the real images and of the fakes.
      gamma: rpgan's R1/R2 weight at this step.

    Returns:
      ((loss, (stats, metrics)), grads): stats and metrics averaged over micro-batches.
    """
    def loss_fn(params_d, rows, _):
      real, z, gp_eps, *labels = rows
      real_labels, fake_labels = labels or (None, None)
      # G makes the fakes in training mode, so its running averages move in D's updates too.
      fake, stats_g = self.generate(params_g, stats[G], z, True, fake_labels)
      return self.discriminator_loss(params_d, {**stats, G: stats_g}, real,
                                     jax.lax.stop_gradient(fake), gp_eps, real_labels,
                                     fake_labels, gamma)

    return accumulated_value_and_grad(loss_fn, params_d, rows, None, self.grad_accum_steps,
                                      has_aux=True)

  def generator_grads(self, params_g, params_d, stats, z_BxZ, labels_B=None, real=None):
    """G's loss and gradient on the fakes G(z) (G(z, y) scored as D(G(z, y), y) for a
    conditional model, `labels_B` [B]), averaged over `grad_accum_steps` micro-batches.

    `real` [B, H, W, C]: a paired objective's real images, row b the partner of fake b (and
    of label b); None for the others.

    Returns ((loss, stats), grads): stats the model state with G's running averages moved
    and, with spectral normalization, D's u moved by this pass (the authors' chainer links
    keep it); D runs on batch statistics and its running averages are not updated here.
    """
    _, g_loss_fn = self.objective

    def loss_fn(params_g, rows, _):
      z, labels, real = rows
      fake, stats_g = self.generate(params_g, stats[G], z, True, labels)
      fake_logits, after_d = self.discriminate(params_d, stats, fake, labels)
      if real is None:
        loss = g_loss_fn(fake_logits)
      else:
        real_logits, after_d = self.discriminate(params_d, after_d, real, labels)
        loss = g_loss_fn(real_logits, fake_logits)
      moved = {G: stats_g, **({D_SN: after_d[D_SN]} if self.d_spectral_norm else {})}
      return loss, moved

    (loss, moved), grads = accumulated_value_and_grad(
        loss_fn, params_g, (z_BxZ, labels_B, real), None, self.grad_accum_steps, has_aux=True)
    return (loss, {**stats, **moved}), grads

  @property
  def objective(self):
    """(D's loss, G's loss) of `config.gan.loss`; a paired objective's G loss also takes the
    real logits (`PAIRED_OBJECTIVES`)."""
    return {**OBJECTIVES, **PAIRED_OBJECTIVES}[self.loss]

  @property
  def paired(self) -> bool:
    """Whether the objective scores (real, fake) pairs, so that G's update needs reals."""
    return self.loss in PAIRED_OBJECTIVES

  def critic_update(self, params, opt_state, stats, rows, gamma: float | jax.Array = 0.0):
    """One D (critic) optimizer step on `rows` (see `discriminator_grads`).

    Returns:
      (D params, D optimizer state, running averages {G, D}, metrics).
    """
    (d_loss, (stats, metrics)), grads = self.discriminator_grads(params[D], params[G], stats,
                                                                 rows, gamma)
    params_d, opt_d, norms = optimizer_step(self.tx_d, params[D], opt_state[D], grads)
    return params_d, opt_d, stats, {"d_loss": d_loss, **metrics,
                                    "d_grad_norm": norms["grad_norm"],
                                    "d_update_norm": norms["update_norm"]}

  def generator_update(self, params, opt_state, stats, z_BxZ, labels_B=None, real=None):
    """One G optimizer step on the fakes G(z) (or G(z, y)) (Alg. 1, lines 10-11); `real`:
    a paired objective's real partners.

    Returns:
      (G params, G optimizer state, the model state after it (`generator_grads`), metrics).
    """
    (g_loss, stats), grads = self.generator_grads(params[G], params[D], stats, z_BxZ,
                                                  labels_B, real)
    params_g, opt_g, norms = optimizer_step(self.tx_g, params[G], opt_state[G], grads)
    return params_g, opt_g, stats, {"g_loss": g_loss, "g_grad_norm": norms["grad_norm"],
                                    "g_update_norm": norms["update_norm"]}

  def train_step(self, state: TrainState, batch, rng):
    """One iteration of Gulrajani et al. 2017, Alg. 1: n_critic D updates, update k on real
    slice k and fresh fakes (lines 2-9); one G update on fresh fakes (lines 10-11); then the
    step count and the EMA of both nets. With `alternate_minibatches` (dcgan_code) the G
    update comes first, on slice 0's turn, and D update k takes slice k + 1.

    Keys: D update k draws its latents and penalty weights from key k of
    split(d_rng, n_critic), the G update from g_rng, (d_rng, g_rng) = split(rng); a
    conditional model's fake labels from the latents' keys (`_fake_labels`), or for a paired
    objective (rpgan) the labels of their real partners.
    """
    slices = self.n_critic + self.alternate_minibatches
    real = batch["image"]
    if self.dequantize == "uniform":
      real = dequantize_uniform(real, jax.random.fold_in(rng, 2))
    real_NxMxHxWxC = critic_slices(real, slices)
    real_labels = self._real_labels(batch)
    labels_NxM = None if real_labels is None else critic_slices(real_labels, slices)
    # A paired objective's G update scores reals: G's own slice 0 with alternate_minibatches,
    # else the last critic slice (see the module docstring); the others use none.
    g_slice = 0 if self.alternate_minibatches else slices - 1
    real_g = real_NxMxHxWxC[g_slice] if self.paired else None
    if self.alternate_minibatches:   # slice 0 is G's turn (its images unused but by rpgan)
      real_NxMxHxWxC = real_NxMxHxWxC[1:]
    m = real_NxMxHxWxC.shape[1]
    d_rng, g_rng = jax.random.split(rng)
    d_keys = jax.random.split(d_rng, self.n_critic)
    params, opt_state, stats = dict(state.params), dict(state.opt_state), state.model_state
    z_g = self._latents(g_rng, m * self.g_batch_multiple)
    y_g = self._fake_labels(g_rng, m * self.g_batch_multiple)
    if self.paired and labels_NxM is not None:
      y_g = labels_NxM[g_slice]
    if self.alternate_minibatches:
      labels_NxM = None if labels_NxM is None else labels_NxM[1:]
    gamma = self.gamma_at(state.step)

    if self.alternate_minibatches:
      params[G], opt_state[G], stats, g_metrics = self.generator_update(
          params, opt_state, stats, z_g, y_g, real_g)
    d_metrics = []
    # A Python loop (unrolled when traced), not lax.scan: XLA:CPU runs convolutions inside
    # a while loop many times slower.
    for k in range(self.n_critic):
      z_key, gp_key = jax.random.split(d_keys[k])
      y_real = None if labels_NxM is None else labels_NxM[k]
      y_fake = y_real if self.paired else self._fake_labels(z_key, m)
      rows = (real_NxMxHxWxC[k], self._latents(z_key, m), jax.random.uniform(gp_key, (m,)),
              y_real, y_fake)
      params[D], opt_state[D], stats, metrics = self.critic_update(params, opt_state, stats,
                                                                   rows, gamma)
      d_metrics.append(metrics)
    if not self.alternate_minibatches:
      params[G], opt_state[G], stats, g_metrics = self.generator_update(
          params, opt_state, stats, z_g, y_g, real_g)

    new = finish_step(state, self.ema_decay, self.ema_warmup, params=params,
                      opt_state=opt_state, model_state=stats)
    if self.ema_halflife_steps > 0:
      new = new.replace(ema_params=ema_update(state.ema_params, new.params,
                                              self.ema_decay_at(state.step)))
    d_metrics = jax.tree.map(lambda *xs: jnp.mean(jnp.stack(xs)), *d_metrics)
    metrics = {"loss": d_metrics["d_loss"], **d_metrics, **g_metrics,
               "g_param_norm": optax.tree.norm(params[G]),
               "d_param_norm": optax.tree.norm(params[D])}
    return new, metrics

  def gamma_at(self, step: jax.Array) -> jax.Array:
    """rpgan's R1/R2 weight at `step`: a cosine from `gamma` to gamma x gamma_final_ratio at
    `schedule_steps`, constant after (R3GAN train.py's gamma_scheduler)."""
    return jnp.asarray(optax.cosine_decay_schedule(self.gamma, self.schedule_steps,
                                                   alpha=self.gamma_final_ratio)(step))

  def ema_decay_at(self, step: jax.Array) -> jax.Array:
    """The release's EMA decay at `step` (`gan.ema_halflife_steps` > 0): 0.5^(1 / h), the
    half-life h rising from 0 to ema_halflife_steps along a cosine over `schedule_steps`
    (R3GAN training_loop.py: ema_beta = 0.5^(batch / ema_nimg), ema_nimg cosine-scheduled);
    0 at step 0, where the average is the weights themselves."""
    H = self.ema_halflife_steps
    halflife = H - optax.cosine_decay_schedule(H, self.schedule_steps)(step)
    return jnp.power(0.5, 1.0 / jnp.maximum(halflife, 1e-8))

  # ---------------------------------------------------------------------- evaluation

  def eval_step(self, state: TrainState, batch, rng):
    """D and G objectives on held-out real images and fresh noise, for EMA and raw G (rpgan:
    without the R1/R2 penalties; a conditional model's fakes paired with the reals' labels).

    G draws its fakes as samples are drawn (`draw`). D, like in training, on batch
    statistics of the real batch and of the fake batch (its running averages mix both and
    are never used in training). For wgan_gp, `d_loss` has no penalty term: it is minus the
    critic's Wasserstein estimate. The same noise (and, conditional, the same uniformly
    drawn fake labels; the real images keep theirs) serves both generators.
    """
    d_loss_fn, g_loss_fn = self.objective
    x = batch["image"]
    z = self._latents(rng, x.shape[0])
    y_real = self._real_labels(batch)
    y_fake = y_real if self.paired else self._fake_labels(rng, x.shape[0])
    params_d, stats = state.params[D], state.model_state
    real_logits, _ = self.discriminate(params_d, stats, x, y_real)
    metrics = {"raw/d_real": jnp.mean(real_logits)}
    for name, params in (("ema", state.ema_params), ("raw", state.params)):
      fake = self.draw(params[G], state.model_state[G], z, y_fake)
      fake_logits, _ = self.discriminate(params_d, stats, fake, y_fake)
      metrics[f"{name}/d_loss"] = d_loss_fn(real_logits, fake_logits)
      metrics[f"{name}/g_loss"] = (g_loss_fn(real_logits, fake_logits) if self.paired
                                   else g_loss_fn(fake_logits))
      metrics[f"{name}/d_fake"] = jnp.mean(fake_logits)
    return metrics

  # ------------------------------------------------------------------------ sampling

  def sample(self, state: TrainState, rng, num: int, use_ema: bool = True, batch=None,
             labels=None) -> Samples:
    """Images from fixed latents (the engine's key is fixed across training).

    Args:
      labels: a conditional model's classes [num] for the samples; None = `sample_labels(num)`.

    Returns:
      `Samples`: images [num, H, W, C]; labels [num] when conditional; grids
      {"interpolation": [S*S, H, W, C]}: S rows, each walking in S steps between two random
      latents (`sample.interpolation`: slerp or linear; S = `sample.interpolation_steps`, 0
      omits the grid), a conditional model's row r for class `class_rows(S)[r]`. BatchNorm
      as `sample.batch_norm` says (`draw`); in 'batch' mode each grid is one batch,
      normalized by its own statistics.
    """
    if labels is None:
      labels = self.sample_labels(num)
    elif not self.num_classes:
      raise ValueError("This GAN is unconditional (model.num_classes=0): it takes no labels.")
    if labels is not None:
      labels = jnp.asarray(labels, jnp.int32)
    params_g = (state.ema_params if use_ema else state.params)[G]
    stats_g = state.model_state[G]
    z_rng, path_rng = jax.random.split(rng)
    images = self.draw(params_g, stats_g, self._latents(z_rng, num), labels)
    grids = {}
    S = self.interpolation_steps
    if S:
      z_path = interpolation_latents(path_rng, S, S, self.z_dim, self.z_prior, self.interpolation)
      row_labels = self.sample_labels(S)
      path_labels = None if row_labels is None else np.repeat(row_labels, S)
      grids["interpolation"] = self.draw(params_g, stats_g, z_path, path_labels)
    return Samples(images=images, labels=labels, grids=grids)

  @property
  def sample_tag(self) -> str:
    """'label<c>' for a conditional model drawing only class c (`sample.label`), else ''."""
    return f"label{self.sample_label}" if self.num_classes and self.sample_label >= 0 else ""


def adam_b2_schedule(config: ml_collections.ConfigDict, updates_per_step: int):
  """Adam's beta2 along a cosine from train.b2 to gan.b2_final at train.decay_steps (or
  num_steps) train steps, constant after (R3GAN's beta2_scheduler); None when b2_final is 0
  (a constant train.b2). `updates_per_step` stretches it over D's n_critic updates."""
  b2, b2_final = config.train.b2, config.gan.b2_final
  if not b2_final:
    return None
  steps = (config.train.decay_steps or config.train.num_steps) * updates_per_step
  rise = optax.cosine_decay_schedule(b2 - b2_final, steps)
  return lambda count: b2_final + rise(count)


def _slices(cfg) -> int:
  """Slices of m real images a train step's batch is cut into (see the module docstring)."""
  return cfg.n_critic + int(cfg.alternate_minibatches)


def _slices_desc(cfg) -> str:
  extra = " + 1 (gan.alternate_minibatches)" if cfg.alternate_minibatches else ""
  return f"gan.n_critic={cfg.n_critic}{extra}"


def _d_norm(cfg) -> str:
  """gan.d_norm with 'auto' resolved: the ResNet critic 'none' (gan_cifar_resnet.py), the
  DCGAN critic 'layer' for wgan_gp (Gulrajani et al. §4), 'none' for rpgan (Huang et al.
  2024, §3: no normalization), else 'batch'."""
  if cfg.d_norm != "auto":
    return cfg.d_norm
  if cfg.arch in ("resnet", "r3gan") or cfg.loss == "rpgan":
    return "none"
  return "layer" if cfg.loss == "wgan_gp" else "batch"


def _validate_r3gan(cfg, image_shape) -> None:
  """Clear errors for `gan.r3gan` (the stages of gan.arch='r3gan')."""
  net = cfg.r3gan
  stages = (len(net.widths), len(net.blocks), len(net.cardinality))
  if len(set(stages)) != 1 or not stages[0]:
    raise ValueError(f"gan.r3gan.widths, blocks and cardinality need one entry per stage; got "
                     f"{stages[0]}, {stages[1]} and {stages[2]} entries.")
  if net.expansion < 1:
    raise ValueError(f"gan.r3gan.expansion={net.expansion} must be >= 1.")
  for width, groups in zip(net.widths, net.cardinality, strict=True):
    if groups < 1 or (width * net.expansion) % groups:
      raise ValueError(f"gan.r3gan.cardinality={tuple(net.cardinality)}: each stage's groups "
                       f"must divide its expanded width (width x expansion = "
                       f"{width} x {net.expansion}).")
  if cfg.d_norm not in ("auto", "none"):
    raise ValueError(f"gan.d_norm={cfg.d_norm!r} with gan.arch='r3gan', which has no "
                     "normalization; use 'auto'.")
  if cfg.d_spectral_norm:
    raise ValueError("gan.d_spectral_norm with gan.arch='r3gan': R3GAN's discriminator has no "
                     "normalization (Huang et al. 2024, §3); set it to False.")
  r3gan.check_image_shape(image_shape, len(net.widths))


def _validate(config: ml_collections.ConfigDict, image_shape) -> None:
  """Clear errors for `config.gan` / `config.sample` before anything is compiled."""
  cfg = config.gan
  if cfg.loss not in LOSSES:
    raise ValueError(f"gan.loss={cfg.loss!r}; expected one of {LOSSES}.")
  if cfg.arch not in ARCHS:
    raise ValueError(f"gan.arch={cfg.arch!r}; expected one of {ARCHS}.")
  if cfg.layer_style not in LAYER_STYLES:
    raise ValueError(f"gan.layer_style={cfg.layer_style!r}; expected one of {LAYER_STYLES}.")
  if cfg.layer_style == "sngan" and cfg.arch != "resnet":
    raise ValueError("gan.layer_style='sngan' (Miyato et al.'s ResNet conventions) needs "
                     "gan.arch='resnet'; the DCGAN takes 'radford' or 'tflib'.")
  if config.data.dequantize not in DEQUANTIZATIONS:
    raise ValueError(f"data.dequantize={config.data.dequantize!r}; expected one of "
                     f"{DEQUANTIZATIONS}.")
  if cfg.n_critic < 1:
    raise ValueError(f"gan.n_critic={cfg.n_critic} must be >= 1.")
  if config.train.batch_size % _slices(cfg):
    n = _slices(cfg)
    raise ValueError(
        f"train.batch_size={config.train.batch_size} must be divisible by {_slices_desc(cfg)}: "
        f"each of the {n} updates of a step takes batch_size / {n} real images "
        f"(e.g. --config.train.batch_size={n * max(1, config.train.batch_size // n)}).")
  if cfg.g_batch_multiple < 1:
    raise ValueError(f"gan.g_batch_multiple={cfg.g_batch_multiple} must be >= 1.")
  if cfg.l2 < 0:
    raise ValueError(f"gan.l2={cfg.l2} must be >= 0.")
  if config.sample.batch_norm not in SAMPLE_BATCH_NORMS:
    raise ValueError(f"sample.batch_norm={config.sample.batch_norm!r}; expected one of "
                     f"{SAMPLE_BATCH_NORMS}.")
  if cfg.arch == "r3gan":
    _validate_r3gan(cfg, image_shape)
  norms = {"resnet": resnet_gan.CRITIC_NORMS, "r3gan": ("none",)}.get(cfg.arch, dcgan.NORMS)
  if cfg.d_norm not in ("auto", *norms):
    raise ValueError(f"gan.d_norm={cfg.d_norm!r} with gan.arch={cfg.arch!r}; expected 'auto' "
                     f"or one of {norms}.")
  if cfg.loss == "wgan_gp" and cfg.d_norm == "batch":
    raise ValueError("gan.loss='wgan_gp' needs a critic without BatchNorm (Gulrajani et al. "
                     "2017, §4: the penalty is per example); set gan.d_norm to 'layer', 'none' "
                     "or 'auto'.")
  if cfg.gp_weight < 0:
    raise ValueError(f"gan.gp_weight={cfg.gp_weight} must be >= 0.")
  if cfg.loss == "rpgan" and cfg.d_norm == "batch":
    raise ValueError("gan.loss='rpgan' needs a discriminator without BatchNorm (the R1/R2 "
                     "penalties are per example); set gan.d_norm to 'none', 'layer' or 'auto'.")
  if cfg.loss == "rpgan" and cfg.g_batch_multiple != 1:
    raise ValueError(f"gan.g_batch_multiple={cfg.g_batch_multiple} with gan.loss='rpgan': each "
                     "fake of G's update is paired with one real image; set it to 1.")
  if cfg.gamma < 0 or cfg.gamma_final_ratio < 0:
    raise ValueError(f"gan.gamma={cfg.gamma} and gan.gamma_final_ratio={cfg.gamma_final_ratio} "
                     "must be >= 0.")
  if not 0 <= cfg.b2_final < 1 or (cfg.b2_final and config.train.optimizer != "adam"):
    raise ValueError(f"gan.b2_final={cfg.b2_final}: Adam's final beta2 in (0, 1) with "
                     "train.optimizer='adam', or 0 (a constant train.b2).")
  if cfg.ema_halflife_steps < 0:
    raise ValueError(f"gan.ema_halflife_steps={cfg.ema_halflife_steps} must be >= 0 (0 = "
                     "train.ema_decay).")
  K = config.model.num_classes
  if not isinstance(K, int) or K < 0:
    raise ValueError(f"model.num_classes={K!r}: expected 0 (unconditional) or the number of "
                     "classes of the dataset's labels (10 for digits).")
  if config.sample.label != -1 and not K:
    raise ValueError(f"sample.label={config.sample.label} needs a class-conditional GAN "
                     "(model.num_classes > 0); this one is unconditional.")
  if K:
    class_rows(1, K, config.sample.label)   # ValueError for a label not in [-1, K)
  if cfg.z_prior not in Z_PRIORS:
    raise ValueError(f"gan.z_prior={cfg.z_prior!r}; expected one of {Z_PRIORS}.")
  if config.sample.interpolation not in ("slerp", "linear"):
    raise ValueError(f"sample.interpolation={config.sample.interpolation!r}; "
                     "expected 'slerp' or 'linear'.")
  if cfg.arch == "resnet":
    resnet_gan.check_image_shape(image_shape)
  elif cfg.arch == "dcgan":
    dcgan.layout(image_shape)   # ValueError for unsupported image sizes
