"""Generative adversarial networks: one train step holding both players.

Goodfellow et al. 2014, "Generative Adversarial Nets" (arXiv:1406.2661): the minimax game
(Eq. 1) and the non-saturating generator objective (§3).
Radford, Metz, Chintala 2016, "Unsupervised Representation Learning with Deep Convolutional
GANs" (arXiv:1511.06434): the DCGAN networks (gen_jax/models/dcgan.py) and recipe.
Lim & Ye 2017 "Geometric GAN" (arXiv:1705.02894); Miyato et al. 2018 (arXiv:1802.05957, §4):
the hinge objective.
Gulrajani et al. 2017, "Improved Training of Wasserstein GANs" (arXiv:1704.00028): the
critic loss with gradient penalty (Eq. 3) and its training loop (Algorithm 1).

State. The engine sees one `TrainState`:
  params       = {"generator": G params, "discriminator": D params}
  opt_state    = {"generator": G's Adam state, "discriminator": D's Adam state}
  model_state  = {"generator": G batch_stats, "discriminator": D batch_stats ({} without BN)}
  ema_params   = EMA of `params` (same structure, so the engine's `init_from` works); only
                 the generator's average is used: for sampling and the `ema/` eval metrics.
BatchNorm runs on batch statistics in every training forward pass; under `jax.jit` on
global arrays sharded over the mesh these are the statistics of the global (sub)batch, so
1 and 8 devices compute the same step. Sampling and evaluation of G use the running
averages in `model_state` (updated by every training forward pass of G).

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
schedule in train steps.
"""
from __future__ import annotations

import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp
import ml_collections
import optax

from gen_jax.core.optimizer import learning_rate_schedule, make_optimizer
from gen_jax.core.state import (TrainState, accumulated_value_and_grad, finish_step,
                                optimizer_step)
from gen_jax.methods.base import Method, grad_accum_steps, image_shape_of
from gen_jax.models import dcgan

LOSSES = ("non_saturating", "hinge", "wgan_gp")
Z_PRIORS = ("normal", "uniform")
G, D = "generator", "discriminator"
CriticFn = Callable[[jax.Array], jax.Array]   # images [B, H, W, C] -> logits [B]


# ------------------------------------------------------------------------------ losses


def d_loss_non_saturating(real_logits_B: jax.Array, fake_logits_B: jax.Array) -> jax.Array:
  """Goodfellow et al. 2014, Eq. 1, D's side: maximize E log D(x) + E log(1 - D(G(z))).

  With D = sigmoid(logit): -log D = softplus(-logit), -log(1 - D) = softplus(logit), so the
  loss is E softplus(-l_real) + E softplus(l_fake) (the binary cross-entropy DCGAN uses).
  """
  return jnp.mean(jax.nn.softplus(-real_logits_B)) + jnp.mean(jax.nn.softplus(fake_logits_B))


def g_loss_non_saturating(fake_logits_B: jax.Array) -> jax.Array:
  """Goodfellow et al. 2014, §3: "train G to maximize log D(G(z))" rather than minimize
  log(1 - D(G(z))) (which saturates early on). Loss: E softplus(-l_fake).
  """
  return jnp.mean(jax.nn.softplus(-fake_logits_B))


def d_loss_hinge(real_logits_B: jax.Array, fake_logits_B: jax.Array) -> jax.Array:
  """Lim & Ye 2017; Miyato et al. 2018, §4: E max(0, 1 - D(x)) + E max(0, 1 + D(G(z)))."""
  return jnp.mean(jax.nn.relu(1.0 - real_logits_B)) + jnp.mean(jax.nn.relu(1.0 + fake_logits_B))


def g_loss_hinge(fake_logits_B: jax.Array) -> jax.Array:
  """Lim & Ye 2017; Miyato et al. 2018, §4: the generator minimizes -E D(G(z))."""
  return -jnp.mean(fake_logits_B)


def d_loss_wasserstein(real_logits_B: jax.Array, fake_logits_B: jax.Array) -> jax.Array:
  """Gulrajani et al. 2017, Eq. 3, first two terms: E D(x~) - E D(x), x~ = G(z).

  Its negative is the critic's estimate of the Wasserstein-1 distance (Arjovsky et al.
  2017, Eq. 3).
  """
  return jnp.mean(fake_logits_B) - jnp.mean(real_logits_B)


def g_loss_wasserstein(fake_logits_B: jax.Array) -> jax.Array:
  """Gulrajani et al. 2017, Alg. 1, line 11: G descends -E D(G(z))."""
  return -jnp.mean(fake_logits_B)


def gradient_penalty(critic: CriticFn, real_BxHxWxC: jax.Array, fake_BxHxWxC: jax.Array,
                     eps_B: jax.Array, weight: float = 10.0) -> jax.Array:
  """Gulrajani et al. 2017, Eq. 3 third term and Alg. 1, lines 6-7:

    x^ = eps x + (1 - eps) x~,  eps ~ U[0, 1] per example,
    GP = lambda E (||grad_x^ D(x^)||_2 - 1)^2          (two-sided, lambda = 10).

  `critic` must treat examples independently (no BatchNorm), so the gradient of
  sum_b D(x^_b) w.r.t. x^ is the per-example gradient. Differentiable w.r.t. the critic's
  parameters (closed over by `critic`).

  Args:
    critic: images -> logits [B].
    real_BxHxWxC, fake_BxHxWxC: real and generated images.
    eps_B: interpolation weights in [0, 1].
    weight: lambda.

  Returns:
    The scalar penalty lambda E (||grad||_2 - 1)^2.
  """
  eps = eps_B[:, None, None, None]
  x_hat = eps * real_BxHxWxC + (1.0 - eps) * fake_BxHxWxC
  grads_BxHxWxC = jax.grad(lambda x: jnp.sum(critic(x)))(x_hat)
  # A tiny constant keeps the sqrt differentiable at a zero gradient.
  norms_B = jnp.sqrt(jnp.sum(grads_BxHxWxC ** 2, axis=(1, 2, 3)) + 1e-12)
  return weight * jnp.mean((norms_B - 1.0) ** 2)


OBJECTIVES = {  # loss -> (discriminator loss, generator loss)
    "non_saturating": (d_loss_non_saturating, g_loss_non_saturating),
    "hinge": (d_loss_hinge, g_loss_hinge),
    "wgan_gp": (d_loss_wasserstein, g_loss_wasserstein),
}


# ------------------------------------------------------------------------------ latents


def sample_latents(rng: jax.Array, shape: tuple[int, ...], prior: str) -> jax.Array:
  """z ~ N(0, I) or U(-1, 1)^Z (the DCGAN authors' code draws uniform noise)."""
  if prior == "uniform":
    return jax.random.uniform(rng, shape, jnp.float32, -1.0, 1.0)
  return jax.random.normal(rng, shape, jnp.float32)


def slerp(z0_Z: jax.Array, z1_Z: jax.Array, t: jax.Array) -> jax.Array:
  """Spherical interpolation (White 2016, "Sampling Generative Networks", arXiv:1609.04468):

    slerp(z0, z1; t) = sin((1-t) w) / sin w z0 + sin(t w) / sin w z1,  cos w = <z0, z1> / |z0||z1|

  which keeps intermediate Gaussian latents at a typical norm; linear when w ~ 0.
  """
  cos = jnp.sum(z0_Z * z1_Z, -1, keepdims=True) / (
      jnp.linalg.norm(z0_Z, axis=-1, keepdims=True) * jnp.linalg.norm(z1_Z, axis=-1, keepdims=True))
  omega = jnp.arccos(jnp.clip(cos, -1.0, 1.0))
  sin = jnp.sin(omega)
  safe = sin > 1e-6
  sin = jnp.where(safe, sin, 1.0)
  w0 = jnp.where(safe, jnp.sin((1.0 - t) * omega) / sin, 1.0 - t)
  w1 = jnp.where(safe, jnp.sin(t * omega) / sin, t)
  return w0 * z0_Z + w1 * z1_Z


def interpolation_latents(rng: jax.Array, rows: int, steps: int, z_dim: int,
                          prior: str, kind: str) -> jax.Array:
  """[rows * steps, Z]: row r walks from one random latent to another in `steps` steps."""
  ends = sample_latents(rng, (2, rows, 1, z_dim), prior)
  t = jnp.linspace(0.0, 1.0, steps)[None, :, None]
  path = slerp(ends[0], ends[1], t) if kind == "slerp" else (1.0 - t) * ends[0] + t * ends[1]
  return path.reshape(rows * steps, z_dim)


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
  """DCGAN-style networks trained with a non-saturating, hinge or WGAN-GP objective."""

  generator: dcgan.Generator
  discriminator: dcgan.Discriminator
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
  grad_accum_steps: int = 1     # micro-batches per D or G update (see the module docstring)

  @classmethod
  def from_config(cls, config: ml_collections.ConfigDict, spec) -> "GANMethod":
    image_shape = image_shape_of(spec)
    cfg = config.gan
    _validate(config, image_shape)
    norm = cfg.d_norm if cfg.d_norm != "auto" else ("layer" if cfg.loss == "wgan_gp" else "batch")
    dtype = jnp.dtype(config.dtype)
    # D takes n_critic optimizer steps per train step: stretch its schedule to match G's.
    d_schedule = learning_rate_schedule(config.train, updates_per_step=cfg.n_critic)
    return cls(
        generator=dcgan.Generator(image_shape=tuple(image_shape), ngf=cfg.ngf,
                                  kernel_size=cfg.kernel_size, dtype=dtype),
        discriminator=dcgan.Discriminator(ndf=cfg.ndf, norm=norm, kernel_size=cfg.kernel_size,
                                          dtype=dtype),
        tx_g=make_optimizer(config.train),
        tx_d=make_optimizer(config.train, schedule=d_schedule),
        image_shape=tuple(image_shape), loss=cfg.loss, n_critic=cfg.n_critic,
        gp_weight=cfg.gp_weight, z_dim=cfg.z_dim, z_prior=cfg.z_prior,
        ema_decay=config.train.ema_decay, ema_warmup=config.train.ema_warmup,
        interpolation=config.sample.interpolation,
        interpolation_steps=config.sample.interpolation_steps,
        grad_accum_steps=grad_accum_steps(
            config, config.train.batch_size // cfg.n_critic,
            f"the {config.train.batch_size // cfg.n_critic} real images of each critic update "
            f"(train.batch_size={config.train.batch_size} / gan.n_critic={cfg.n_critic})"))

  # ------------------------------------------------------------------ network calls

  def init(self, rng, batch) -> TrainState:
    g_rng, d_rng = jax.random.split(rng)
    g_vars = self.generator.init(g_rng, jnp.zeros((1, self.z_dim)), train=False)
    d_vars = self.discriminator.init(d_rng, jnp.zeros((1, *self.image_shape)), train=False)
    return TrainState.create(
        {G: g_vars["params"], D: d_vars["params"]}, {G: self.tx_g, D: self.tx_d},
        model_state={G: g_vars.get("batch_stats", {}), D: d_vars.get("batch_stats", {})})

  def generate(self, params_g, stats_g, z_BxZ, train: bool):
    """G(z); in training mode also returns G's updated running averages."""
    variables = {"params": params_g, "batch_stats": stats_g}
    if not train:
      return self.generator.apply(variables, z_BxZ, train=False), stats_g
    x, updated = self.generator.apply(variables, z_BxZ, train=True, mutable=["batch_stats"])
    return x, updated["batch_stats"]

  def discriminate(self, params_d, stats_d, x_BxHxWxC):
    """D(x) logits with batch statistics (how D is always used; see `eval_step`)."""
    variables = {"params": params_d, "batch_stats": stats_d}
    logits, updated = self.discriminator.apply(variables, x_BxHxWxC, train=True,
                                               mutable=["batch_stats"])
    return logits, updated.get("batch_stats", stats_d)

  def _latents(self, rng, num: int) -> jax.Array:
    return sample_latents(rng, (num, self.z_dim), self.z_prior)

  # ------------------------------------------------------------------------ training

  def discriminator_loss(self, params_d, stats_d, real, fake, gp_eps_B):
    """The D objective of `config.gan.loss`; returns (loss, (stats, metrics)).

    `gp_eps_B`: the interpolation weights of the gradient penalty (used by wgan_gp only).
    """
    d_loss_fn, _ = OBJECTIVES[self.loss]
    real_logits, stats_d = self.discriminate(params_d, stats_d, real)
    fake_logits, stats_d = self.discriminate(params_d, stats_d, fake)
    loss = d_loss_fn(real_logits, fake_logits)
    metrics = {"d_real": jnp.mean(real_logits), "d_fake": jnp.mean(fake_logits)}
    if self.loss == "wgan_gp":
      # Alg. 1 line 7: L = D(x~) - D(x) + lambda (||grad D(x^)|| - 1)^2. The critic has no
      # BatchNorm (checked in `from_config`), so its stats do not change here.
      critic = lambda x: self.discriminate(params_d, stats_d, x)[0]
      gp = gradient_penalty(critic, real, fake, gp_eps_B, self.gp_weight)
      metrics["gp"] = gp
      loss = loss + gp
    return loss, (stats_d, metrics)

  def discriminator_grads(self, params_d, params_g, stats, rows):
    """D's loss and gradient on one critic slice, averaged over `grad_accum_steps` micro-batches.

    Args:
      params_d, params_g: the two nets' params (only D's are differentiated).
      stats: {G: ..., D: ...} BatchNorm running averages.
      rows: (real [m, H, W, C], z [m, Z], gp_eps [m]) -- the slice's real images, the
        latents of its fakes (made by G in training mode, per micro-batch) and the
        penalty's interpolation weights.

    Returns:
      ((loss, (stats, metrics)), grads): stats and metrics averaged over micro-batches.
    """
    def loss_fn(params_d, rows, _):
      real, z, gp_eps = rows
      # G makes the fakes in training mode, so its running averages move in D's updates too.
      fake, stats_g = self.generate(params_g, stats[G], z, train=True)
      loss, (stats_d, metrics) = self.discriminator_loss(
          params_d, stats[D], real, jax.lax.stop_gradient(fake), gp_eps)
      return loss, ({G: stats_g, D: stats_d}, metrics)

    return accumulated_value_and_grad(loss_fn, params_d, rows, None, self.grad_accum_steps,
                                      has_aux=True)

  def generator_grads(self, params_g, params_d, stats, z_BxZ):
    """G's loss and gradient on the fakes G(z), averaged over `grad_accum_steps` micro-batches.

    Returns ((loss, G's running averages), grads); D runs on batch statistics and its
    running averages are not updated here.
    """
    _, g_loss_fn = OBJECTIVES[self.loss]

    def loss_fn(params_g, z, _):
      fake, stats_g = self.generate(params_g, stats[G], z, train=True)
      fake_logits, _ = self.discriminate(params_d, stats[D], fake)
      return g_loss_fn(fake_logits), stats_g

    return accumulated_value_and_grad(loss_fn, params_g, z_BxZ, None, self.grad_accum_steps,
                                      has_aux=True)

  def train_step(self, state: TrainState, batch, rng):
    """One iteration of Gulrajani et al. 2017, Alg. 1: n_critic D updates, update k on real
    slice k and fresh fakes (lines 2-9); one G update on fresh fakes (lines 10-11); then the
    step count and the EMA of both nets.

    Keys: D update k draws its latents and penalty weights from key k of
    split(d_rng, n_critic), the G update from g_rng, (d_rng, g_rng) = split(rng).
    """
    real_NxMxHxWxC = critic_slices(batch["image"], self.n_critic)
    m = real_NxMxHxWxC.shape[1]
    d_rng, g_rng = jax.random.split(rng)
    d_keys = jax.random.split(d_rng, self.n_critic)
    params, opt_state, stats = dict(state.params), dict(state.opt_state), state.model_state

    d_metrics = []
    # A Python loop (unrolled when traced), not lax.scan: XLA:CPU runs convolutions inside
    # a while loop many times slower.
    for k in range(self.n_critic):
      z_key, gp_key = jax.random.split(d_keys[k])
      rows = (real_NxMxHxWxC[k], self._latents(z_key, m), jax.random.uniform(gp_key, (m,)))
      (d_loss, (stats, metrics)), grads = self.discriminator_grads(params[D], params[G],
                                                                   stats, rows)
      params[D], opt_state[D], norms = optimizer_step(self.tx_d, params[D], opt_state[D], grads)
      d_metrics.append({"d_loss": d_loss, **metrics, "d_grad_norm": norms["grad_norm"]})

    (g_loss, stats_g), grads = self.generator_grads(params[G], params[D], stats,
                                                    self._latents(g_rng, m))
    params[G], opt_state[G], norms = optimizer_step(self.tx_g, params[G], opt_state[G], grads)

    new = finish_step(state, self.ema_decay, self.ema_warmup, params=params,
                      opt_state=opt_state, model_state={**stats, G: stats_g})
    d_metrics = jax.tree.map(lambda *xs: jnp.mean(jnp.stack(xs)), *d_metrics)
    metrics = {"loss": d_metrics["d_loss"], **d_metrics,
               "g_loss": g_loss, "g_grad_norm": norms["grad_norm"],
               "g_param_norm": optax.tree.norm(params[G]),
               "d_param_norm": optax.tree.norm(params[D])}
    return new, metrics

  # ---------------------------------------------------------------------- evaluation

  def eval_step(self, state: TrainState, batch, rng):
    """D and G objectives on held-out real images and fresh noise, for EMA and raw G.

    G runs on its running averages (as when sampling). D, like in training, on batch
    statistics of the real batch and of the fake batch (its running averages mix both and
    are never used in training). For wgan_gp, `d_loss` has no penalty term: it is minus the
    critic's Wasserstein estimate. The same noise serves both generators.
    """
    d_loss_fn, g_loss_fn = OBJECTIVES[self.loss]
    x = batch["image"]
    z = self._latents(rng, x.shape[0])
    params_d, stats_d = state.params[D], state.model_state[D]
    real_logits, _ = self.discriminate(params_d, stats_d, x)
    metrics = {"raw/d_real": jnp.mean(real_logits)}
    for name, params in (("ema", state.ema_params), ("raw", state.params)):
      fake, _ = self.generate(params[G], state.model_state[G], z, train=False)
      fake_logits, _ = self.discriminate(params_d, stats_d, fake)
      metrics[f"{name}/d_loss"] = d_loss_fn(real_logits, fake_logits)
      metrics[f"{name}/g_loss"] = g_loss_fn(fake_logits)
      metrics[f"{name}/d_fake"] = jnp.mean(fake_logits)
    return metrics

  # ------------------------------------------------------------------------ sampling

  def sample(self, state: TrainState, rng, num: int, use_ema: bool = True, batch=None):
    """Images from fixed latents (the engine's key is fixed across training).

    Returns:
      {"samples": [num, H, W, C], "interpolation": [S*S, H, W, C]}: S rows, each walking
      in S steps between two random latents (`sample.interpolation`: slerp or linear;
      S = `sample.interpolation_steps`, 0 omits the grid). G uses running BN averages.
    """
    params_g = (state.ema_params if use_ema else state.params)[G]
    stats_g = state.model_state[G]
    z_rng, path_rng = jax.random.split(rng)
    out = {"samples": self.generate(params_g, stats_g, self._latents(z_rng, num), False)[0]}
    S = self.interpolation_steps
    if S:
      z_path = interpolation_latents(path_rng, S, S, self.z_dim, self.z_prior, self.interpolation)
      out["interpolation"] = self.generate(params_g, stats_g, z_path, False)[0]
    return out


def _validate(config: ml_collections.ConfigDict, image_shape) -> None:
  """Clear errors for `config.gan` / `config.sample` before anything is compiled."""
  cfg = config.gan
  if cfg.loss not in LOSSES:
    raise ValueError(f"gan.loss={cfg.loss!r}; expected one of {LOSSES}.")
  if cfg.n_critic < 1:
    raise ValueError(f"gan.n_critic={cfg.n_critic} must be >= 1.")
  if config.train.batch_size % cfg.n_critic:
    raise ValueError(
        f"train.batch_size={config.train.batch_size} must be divisible by "
        f"gan.n_critic={cfg.n_critic}: each of the n_critic D updates takes "
        f"batch_size / n_critic real images (e.g. --config.train.batch_size="
        f"{cfg.n_critic * max(1, config.train.batch_size // cfg.n_critic)}).")
  if cfg.d_norm not in ("auto", *dcgan.NORMS):
    raise ValueError(f"gan.d_norm={cfg.d_norm!r}; expected 'auto' or one of {dcgan.NORMS}.")
  if cfg.loss == "wgan_gp" and cfg.d_norm == "batch":
    raise ValueError("gan.loss='wgan_gp' needs a critic without BatchNorm (Gulrajani et al. "
                     "2017, §4: the penalty is per example); set gan.d_norm to 'layer', 'none' "
                     "or 'auto'.")
  if cfg.gp_weight < 0:
    raise ValueError(f"gan.gp_weight={cfg.gp_weight} must be >= 0.")
  if cfg.z_prior not in Z_PRIORS:
    raise ValueError(f"gan.z_prior={cfg.z_prior!r}; expected one of {Z_PRIORS}.")
  if config.sample.interpolation not in ("slerp", "linear"):
    raise ValueError(f"sample.interpolation={config.sample.interpolation!r}; "
                     "expected 'slerp' or 'linear'.")
  dcgan.layout(image_shape)   # ValueError for unsupported image sizes
