"""Variational autoencoders, trained on the ELBO or the importance-weighted bound.

Kingma & Welling 2014, "Auto-Encoding Variational Bayes" (arXiv:1312.6114): the
reparameterization z = mu + sigma * eps (§2.4), the SGVB estimators (Eq. 6: generic;
Eq. 7: with the KL in closed form), the VAE objective (Eq. 10), the analytic KL to N(0, I)
(App. B), Bernoulli and Gaussian MLP decoders (App. C.1, C.2), the latent manifold (Fig. 4).
Burda, Grosse, Salakhutdinov 2016, "Importance Weighted Autoencoders" (arXiv:1509.00519):
the k-sample bound L_k (Eq. 8), L_k <= L_{k+1} <= log p(x) (Theorem 1), the test NLL as
-L_5000 (§5), the training schedule (§5: Adam, 3^i epochs at lr 1e-3 * 10^(-i/7)).

Data convention. With `data.binarize` = 'dynamic' or 'fixed' the pipeline yields images in
{0, 1} and the decoder must be 'bernoulli'. With `data.binarize='none'` images are in
[-1, 1] (pixel levels k/127.5 - 1) and the decoder is 'gaussian' (a density on R^D) or
'discretized_gaussian' (a probability of the 256 pixel levels, comparable across models).
Images returned by `sample` are in [-1, 1] for display: Bernoulli means p map to 2p - 1.

All log-probabilities are in nats per image, summed over pixels; `loss` is -bound / image.
"""
from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable

import dm_pix
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import scipy.special

from gen_jax.core.optimizer import make_optimizer
from gen_jax.core.probability import discretized_gaussian_log_likelihood
from gen_jax.core.state import TrainState, accumulated_value_and_grad, apply_gradients
from gen_jax.methods.base import Method, Samples, grad_accum_steps, image_shape_of
from gen_jax.models.vae import VAE, build_vae

DECODERS = ("bernoulli", "gaussian", "discretized_gaussian")
OBJECTIVES = ("elbo", "iwae")
# The ELBO's estimator: K&W's estimator B (Eq. 7; KL in closed form, App. B) or A (Eq. 6:
# the mean of the log-weights log p(x, z_l) - log q(z_l|x), what Burda et al.'s code trains
# for its VAE rows: `T.sum(log_ws) / num_samples`).
ELBOS = ("analytic_kl", "monte_carlo")
LR_SCHEDULES = ("engine", "burda2016")
WEIGHTS = ("ema", "raw")
LOG_2PI = math.log(2.0 * math.pi)
# 'gaussian' decoder: log sigma^2 is clipped below at this value (sigma >= 0.011, 1.4 pixel
# levels on [-1, 1]). A density on 256-level data is unbounded as sigma -> 0 on constant
# pixels (MNIST's background); 'discretized_gaussian' has no such problem.
MIN_LOG_VAR = -9.0
DecodeFn = Callable[[jax.Array], jax.Array]   # z [..., L] -> decoder params [..., H, W, C*P]


# ------------------------------------------------------------------------ distributions


def reparameterize(mean: jax.Array, log_var: jax.Array, eps: jax.Array) -> jax.Array:
  """Kingma & Welling 2014, §2.4: z = mu + sigma * eps with eps ~ N(0, I).

  mean, log_var: [B, L]; eps: [..., B, L]; returns z with the shape of eps.
  """
  return mean + jnp.exp(0.5 * log_var) * eps


def kl_to_standard_normal(mean_BxL: jax.Array, log_var_BxL: jax.Array) -> jax.Array:
  """Kingma & Welling 2014, App. B: KL(N(mu, sigma^2) || N(0, I)) in closed form,

    -KL = 1/2 sum_j (1 + log sigma_j^2 - mu_j^2 - sigma_j^2).     Returns [B].
  """
  return -0.5 * jnp.sum(1.0 + log_var_BxL - mean_BxL**2 - jnp.exp(log_var_BxL), axis=-1)


def standard_normal_log_prob(z: jax.Array) -> jax.Array:
  """The prior p(z) = N(z; 0, I) (Kingma & Welling 2014, §3), log-density summed over the
  last axis."""
  return -0.5 * jnp.sum(LOG_2PI + z**2, axis=-1)


def posterior_log_prob(eps: jax.Array, log_var_BxL: jax.Array) -> jax.Array:
  """Kingma & Welling 2014, Eq. 9: log q(z|x) = log N(z; mu, sigma^2 I), at z = mu + sigma eps:
  -1/2 sum_j (log 2pi + log sigma_j^2 + eps_j^2) (the density written in eps; exact)."""
  return -0.5 * jnp.sum(LOG_2PI + log_var_BxL + eps**2, axis=-1)


def bernoulli_log_prob(x: jax.Array, logits: jax.Array) -> jax.Array:
  """Kingma & Welling 2014, App. C.1: log p(x|z) = sum_i x_i log y_i + (1 - x_i) log(1 - y_i)
  with y = sigmoid(logits); written stably as sum_i x_i l_i - softplus(l_i).

  x: {0, 1} [..., H, W, C]; logits broadcastable to x. Returns [...] (sum over H, W, C).
  """
  return jnp.sum(x * logits - jax.nn.softplus(logits), axis=(-3, -2, -1))


def gaussian_log_prob(x: jax.Array, mean: jax.Array, log_var: jax.Array) -> jax.Array:
  """Kingma & Welling 2014, App. C.2: log N(x; mu, sigma^2 I), summed over H, W, C."""
  return -0.5 * jnp.sum(LOG_2PI + log_var + (x - mean)**2 * jnp.exp(-log_var), axis=(-3, -2, -1))


def split_decoder_output(decoder: str, out: jax.Array) -> tuple[jax.Array, jax.Array | None]:
  """Decoder output [..., H, W, C*P] -> (Bernoulli logits, None) (K&W App. C.1) or
  (Gaussian mean, log sigma^2) (App. C.2; 'gaussian' clips log sigma^2 at MIN_LOG_VAR)."""
  if decoder == "bernoulli":
    return out, None
  mean, log_var = jnp.split(out, 2, axis=-1)
  return mean, jnp.maximum(log_var, MIN_LOG_VAR) if decoder == "gaussian" else log_var


def data_log_prob(decoder: str, x: jax.Array, out: jax.Array) -> jax.Array:
  """log p(x|z) for decoder output `out` [..., H, W, C*P] and images x [B, H, W, C], summed
  over H, W, C. Returns [...].

  'bernoulli' and 'gaussian': K&W App. C.1 / C.2. 'discretized_gaussian': N(mu, sigma^2)
  integrated over each pixel's bin (Ho et al. 2020, Eq. 13; `discretized_gaussian_log_likelihood`).
  """
  loc, log_var = split_decoder_output(decoder, out)
  if decoder == "bernoulli":
    return bernoulli_log_prob(x, loc)
  assert log_var is not None   # the Gaussian decoders' second parameter
  if decoder == "gaussian":
    return gaussian_log_prob(x, loc, log_var)
  return jnp.sum(discretized_gaussian_log_likelihood(x, loc, 0.5 * log_var), axis=(-3, -2, -1))


def decoder_mean(decoder: str, out: jax.Array) -> jax.Array:
  """E[x|z] in the data's range: Bernoulli probabilities in [0, 1], Gaussian means clipped to
  [-1, 1]."""
  loc, _ = split_decoder_output(decoder, out)
  return jax.nn.sigmoid(loc) if decoder == "bernoulli" else jnp.clip(loc, -1.0, 1.0)


# ------------------------------------------------------------------------------ bounds


def sample_eps(rng: jax.Array, sample_ids_K: jax.Array, shape_BxL: tuple[int, int]) -> jax.Array:
  """The noise of the reparameterization (K&W §2.4): eps_i ~ N(0, I) [K, B, L], the i-th drawn
  from fold_in(rng, i), so importance sample i is the same however the K samples are
  split into chunks (`iwae_log_likelihood`)."""
  return jax.vmap(lambda i: jax.random.normal(jax.random.fold_in(rng, i), shape_BxL))(sample_ids_K)


def sample_log_probs(decode: DecodeFn, decoder: str, x: jax.Array, mean: jax.Array,
                     log_var: jax.Array, eps_KxBxL: jax.Array):
  """(log p(x|z_i), log p(z_i), log q(z_i|x)), each [K, B], at z_i = mu + sigma eps_i (§2.4)."""
  z = reparameterize(mean, log_var, eps_KxBxL)
  return (data_log_prob(decoder, x, decode(z)), standard_normal_log_prob(z),
          posterior_log_prob(eps_KxBxL, log_var))


def log_importance_weights(decode: DecodeFn, decoder: str, x: jax.Array, mean: jax.Array,
                           log_var: jax.Array, eps_KxBxL: jax.Array) -> jax.Array:
  """log w_i = log p(x|z_i) + log p(z_i) - log q(z_i|x), z_i = mu + sigma eps_i.   [K, B]

  Burda et al. 2016, Eq. 8 (the terms of the sum); with K = 1 this is the generic SGVB
  estimator of Kingma & Welling 2014, Eq. 6 with L = 1.
  """
  log_px, log_pz, log_qz = sample_log_probs(decode, decoder, x, mean, log_var, eps_KxBxL)
  return log_px + log_pz - log_qz


def iwae_bound(log_w_KxB: jax.Array) -> jax.Array:
  """Burda et al. 2016, Eq. 8: L_k = log (1/k) sum_i w_i, per example.   [B]"""
  return jax.nn.logsumexp(log_w_KxB, axis=0) - jnp.log(log_w_KxB.shape[0])


def elbo_terms(log_px_KxB: jax.Array, mean: jax.Array,
               log_var: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Kingma & Welling 2014, Eq. 10 (SGVB estimator B, Eq. 7, with the KL of App. B):

    L(x) ~= -KL(q(z|x) || p(z)) + 1/L sum_l log p(x | z_l),   z_l = mu + sigma * eps_l.

  Args:
    log_px_KxB: log p(x|z_l) for L samples z_l (from `sample_log_probs`).
    mean, log_var: q(z|x), [B, L].

  Returns:
    (reconstruction term 1/L sum_l log p(x|z_l) [B], KL [B]); the ELBO is their difference.
  """
  return jnp.mean(log_px_KxB, axis=0), kl_to_standard_normal(mean, log_var)


def monte_carlo_elbo(log_w_KxB: jax.Array) -> jax.Array:
  """Kingma & Welling 2014, Eq. 6 (SGVB estimator A), per example:

    L^A(x) = 1/L sum_l [log p(x, z_l) - log q(z_l|x)] = 1/L sum_l log w_l.       [B]

  Unbiased for the ELBO like Eq. 7 (the KL term is estimated instead of integrated); with
  one sample it equals the IWAE bound L_1 at the same noise (Burda et al. 2016, §3).
  """
  return jnp.mean(log_w_KxB, axis=0)


def iwae_log_likelihood(log_w_fn: Callable[[jax.Array], jax.Array], rng: jax.Array, k: int,
                        chunk: int, shape_BxL: tuple[int, int]) -> tuple[jax.Array, jax.Array]:
  """log p(x) >= L_k (Burda et al. 2016, Eq. 8; §5 estimates the test NLL as -L_5000),
  computed over k/chunk chunks of `chunk` samples in a `lax.scan`, so memory holds one
  chunk [chunk, B, ...] at a time. The running logsumexp is combined with logaddexp:

    log sum_{i<=n} w_i = logaddexp(log sum_{i<=n-c} w_i, logsumexp(log w_{chunk}))

  Args:
    log_w_fn: eps [chunk, B, L] -> log w [chunk, B] (e.g. `log_importance_weights`).
    rng: key; sample i uses eps from fold_in(rng, i) (`sample_eps`), so the result does not
      depend on `chunk`.
    k: number of importance samples; a multiple of `chunk`.
    chunk: samples per scan step.
    shape_BxL: (batch, latent dim).

  Returns:
    (L_k [B], mean_i log w_i [B]); the second is the k-sample SGVB estimate of the ELBO
    (Kingma & Welling 2014, Eq. 6), free from the same samples.
  """
  if k < 1 or chunk < 1 or k % chunk:
    raise ValueError(f"k={k} importance samples must be a positive multiple of chunk={chunk}.")
  B = shape_BxL[0]

  def body(carry, c):
    lse, total = carry
    eps = sample_eps(rng, c * chunk + jnp.arange(chunk), shape_BxL)
    log_w = log_w_fn(eps)
    return (jnp.logaddexp(lse, jax.nn.logsumexp(log_w, axis=0)), total + log_w.sum(0)), None

  init = (jnp.full((B,), -jnp.inf, jnp.float32), jnp.zeros((B,), jnp.float32))
  (lse, total), _ = jax.lax.scan(body, init, jnp.arange(k // chunk))
  return lse - math.log(k), total / k


# -------------------------------------------------------------- learning-rate schedule


def burda2016_lr_schedule(lr: float, steps_per_epoch: int, num_stages: int = 8) -> optax.Schedule:
  """Burda et al. 2016, §5: 3^i passes over the data at lr * 10^(-i/7), i = 0 .. num_stages-1
  (the paper: lr = 1e-3, 8 stages, 3280 epochs). The last rate is kept after the last stage.

  Update number `count` (0-based, as optax counts) is in stage i when
  sum_{j<i} 3^j <= count / steps_per_epoch < sum_{j<=i} 3^j.
  """
  stage_starts = jnp.asarray(
      [steps_per_epoch * sum(3**j for j in range(i)) for i in range(1, num_stages)], jnp.int32)

  def schedule(count):
    stage = jnp.sum(count >= stage_starts)
    return lr * 10.0 ** (-stage.astype(jnp.float32) / 7.0)

  return schedule


# ------------------------------------------------------------------------------ method


def manifold_latents(n: int) -> np.ndarray:
  """Kingma & Welling 2014, Fig. 4: "linearly spaced coordinates on the unit square were
  transformed through the inverse CDF of the Gaussian". An n x n grid of 2-D latents,
  row-major, at the bin centres (i + 1/2) / n; z_1 decreases down the rows, z_2 increases
  along them.  [n*n, 2] float32
  """
  u = (np.arange(n) + 0.5) / n
  z1, z2 = np.meshgrid(scipy.special.ndtri(u[::-1]), scipy.special.ndtri(u), indexing="ij")
  return np.stack([z1.ravel(), z2.ravel()], axis=-1).astype(np.float32)


@dataclasses.dataclass(frozen=True)
class VAEMethod(Method):
  """A VAE with one stochastic layer: Gaussian q(z|x), N(0, I) prior, `decoder` likelihood."""

  model: VAE
  tx: optax.GradientTransformation
  image_shape: tuple[int, int, int]
  latent_dim: int
  decoder: str
  binarized: bool
  objective: str
  elbo: str
  train_k: int
  eval_k: int
  eval_chunk: int
  eval_weights: tuple[str, ...]
  manifold_size: int
  ema_decay: float
  ema_warmup: bool
  grad_accum_steps: int = 1     # micro-batches per update (one optimizer step per batch)

  # The engine passes `sample` a fixed batch of `sample.num` eval images (reconstructions).
  sample_uses_batch = True

  @classmethod
  def from_config(cls, config: ml_collections.ConfigDict, spec) -> VAEMethod:
    image_shape = image_shape_of(spec)
    v, m = config.vae, config.model
    binarize = config.data.binarize
    if v.decoder not in DECODERS:
      raise ValueError(f"vae.decoder={v.decoder!r}; expected one of {DECODERS}.")
    if (v.decoder == "bernoulli") != (binarize != "none"):
      raise ValueError(
          f"vae.decoder={v.decoder!r} with data.binarize={binarize!r}: the Bernoulli decoder "
          "needs binary data (data.binarize='dynamic' or 'fixed'); continuous images "
          "(data.binarize='none') need vae.decoder='gaussian' or 'discretized_gaussian'.")
    if v.objective not in OBJECTIVES:
      raise ValueError(f"vae.objective={v.objective!r}; expected one of {OBJECTIVES}.")
    elbo = v.elbo
    if elbo not in ELBOS:
      raise ValueError(f"vae.elbo={elbo!r}; expected one of {ELBOS}.")
    if v.train_k < 1:
      raise ValueError(f"vae.train_k={v.train_k} must be >= 1.")
    if v.eval_k < 1 or v.eval_chunk < 1 or v.eval_k % v.eval_chunk:
      raise ValueError(f"vae.eval_k={v.eval_k} must be a positive multiple of "
                       f"vae.eval_chunk={v.eval_chunk}.")
    weights = tuple(v.eval_weights)
    if not weights or set(weights) - set(WEIGHTS):
      raise ValueError(f"vae.eval_weights={weights}; expected a non-empty subset of {WEIGHTS}.")
    if v.lr_schedule not in LR_SCHEDULES:
      raise ValueError(f"vae.lr_schedule={v.lr_schedule!r}; expected one of {LR_SCHEDULES}.")
    t = config.train
    if v.lr_schedule == "burda2016":
      if v.train_examples <= 0:
        raise ValueError("vae.lr_schedule='burda2016' counts epochs: set vae.train_examples "
                         "(60000 for MNIST).")
      tx = make_optimizer(t, schedule=burda2016_lr_schedule(
          t.lr, max(v.train_examples // t.batch_size, 1), v.lr_stages))
    else:
      tx = make_optimizer(t)
    model = build_vae(arch=m.arch, image_shape=image_shape, latent_dim=m.latent_dim,
                      hidden=tuple(m.hidden), params_per_value=1 if v.decoder == "bernoulli" else 2,
                      activation=m.activation, conv_channels=tuple(m.conv_channels),
                      init_std=m.init_std, dtype=jnp.dtype(config.dtype))
    return cls(model=model, tx=tx, image_shape=image_shape,
               latent_dim=m.latent_dim, decoder=v.decoder, binarized=binarize != "none",
               objective=v.objective, elbo=elbo, train_k=v.train_k, eval_k=v.eval_k,
               eval_chunk=v.eval_chunk, eval_weights=weights, manifold_size=v.manifold_size,
               ema_decay=config.train.ema_decay, ema_warmup=config.train.ema_warmup,
               grad_accum_steps=grad_accum_steps(config))

  # ---------------------------------------------------------------- networks

  def init(self, rng, batch) -> TrainState:
    params = self.model.init(rng, jnp.zeros((1, *self.image_shape), jnp.float32))["params"]
    return TrainState.create(params, self.tx)

  def encode(self, params, x) -> tuple[jax.Array, jax.Array]:
    """q(z | x) of images `x` [B, H, W, C]: (mean, log_var), each [B, L]."""
    # flax annotates apply's result as (output, state) too; without `mutable` it is output.
    return self.model.apply({"params": params}, x, method=VAE.encode)  # pyright: ignore[reportReturnType]

  def decode_fn(self, params) -> DecodeFn:
    """z [B, L] -> the decoder's output parameters (logits or mean), for `params`."""
    # flax annotates apply's result as (output, state) too; without `mutable` it is output.
    decode: DecodeFn = lambda z: self.model.apply(  # pyright: ignore[reportAssignmentType]
        {"params": params}, z, method=VAE.decode)
    return decode

  def _to_display(self, x: jax.Array) -> jax.Array:
    """Data-range images (or decoder means) -> [-1, 1] for the PNG grids."""
    return 2.0 * x - 1.0 if self.binarized else x

  # -------------------------------------------------------------- objectives

  def bound_at_eps(self, params, x, eps_KxBxL: jax.Array, objective: str,
                   elbo: str = "analytic_kl"):
    """(bound [B], recon [B], kl [B]) with k = eps.shape[0] samples per image, z = mu + sigma
    eps: the ELBO (`elbo`: 'analytic_kl', K&W Eq. 10; 'monte_carlo', Eq. 6) or the IWAE
    bound L_k of Burda et al. Eq. 8; recon and KL are Eq. 10's two terms (monitoring)."""
    mean, log_var = self.encode(params, x)
    log_px, log_pz, log_qz = sample_log_probs(self.decode_fn(params), self.decoder, x, mean,
                                              log_var, eps_KxBxL)
    recon, kl = elbo_terms(log_px, mean, log_var)
    log_w = log_px + log_pz - log_qz
    if objective == "iwae":
      return iwae_bound(log_w), recon, kl
    if elbo == "monte_carlo":
      return monte_carlo_elbo(log_w), recon, kl
    return recon - kl, recon, kl

  def train_step(self, state: TrainState, batch, rng):
    """One update on -bound per image. eps is drawn for the whole batch before it is split
    into `grad_accum_steps` micro-batches, so the update does not depend on the split."""
    x = batch["image"]
    eps_KxBxL = sample_eps(rng, jnp.arange(self.train_k), (x.shape[0], self.latent_dim))

    def loss_fn(params, rows, _):
      x, eps_BxKxL = rows
      bound, recon, kl = self.bound_at_eps(params, x, eps_BxKxL.swapaxes(0, 1), self.objective,
                                           self.elbo)
      return -jnp.mean(bound), {"recon": jnp.mean(recon), "kl": jnp.mean(kl)}

    (loss, aux), grads = accumulated_value_and_grad(
        loss_fn, state.params, (x, eps_KxBxL.swapaxes(0, 1)), None, self.grad_accum_steps,
        has_aux=True)
    state, health = apply_gradients(state, grads, self.tx, self.ema_decay, self.ema_warmup)
    return state, {"loss": loss, **aux, **health}

  def eval_step(self, state: TrainState, batch, rng):
    """Per weights w in `eval_weights` (same keys for each), in nats per image:

      w/elbo                 K&W Eq. 10 with one sample (analytic KL), and its terms
      w/recon, w/kl          E_q log p(x|z) (one sample) and KL(q(z|x) || p(z))
      w/elbo_k<K>            K&W Eq. 6 averaged over the K importance samples
      w/nll_iwae_k<K>        -L_K (Burda et al. Eq. 8), K = vae.eval_k (5000 in §5)
      w/recon_psnr, w/recon_ssim   (continuous images only) decoder mean at z = mu vs input,
                             through dm-pix on images in [0, 1]
    """
    x = batch["image"]
    elbo_rng, iwae_rng = jax.random.split(rng)
    metrics = {}
    for name in self.eval_weights:
      params = state.ema_params if name == "ema" else state.params
      mean, log_var = self.encode(params, x)
      decode = self.decode_fn(params)
      log_px, _, _ = sample_log_probs(
          decode, self.decoder, x, mean, log_var,
          sample_eps(elbo_rng, jnp.arange(1), (x.shape[0], self.latent_dim)))
      recon, kl = elbo_terms(log_px, mean, log_var)
      log_w_fn = functools.partial(log_importance_weights, decode, self.decoder, x, mean, log_var)
      l_k, mean_log_w = iwae_log_likelihood(log_w_fn, iwae_rng, self.eval_k, self.eval_chunk,
                                            (x.shape[0], self.latent_dim))
      metrics.update({f"{name}/elbo": jnp.mean(recon - kl), f"{name}/recon": jnp.mean(recon),
                      f"{name}/kl": jnp.mean(kl),
                      f"{name}/elbo_k{self.eval_k}": jnp.mean(mean_log_w),
                      f"{name}/nll_iwae_k{self.eval_k}": -jnp.mean(l_k)})
      if not self.binarized:
        x01 = (x + 1.0) / 2.0
        rec01 = (decoder_mean(self.decoder, decode(mean)) + 1.0) / 2.0
        metrics[f"{name}/recon_psnr"] = jnp.mean(dm_pix.psnr(x01, rec01))
        metrics[f"{name}/recon_ssim"] = jnp.mean(dm_pix.ssim(x01, rec01, max_val=1.0))
    return metrics

  # ---------------------------------------------------------------- sampling

  def reconstruct(self, params, x: jax.Array) -> jax.Array:
    """Decoder mean at the posterior mean z = mu(x), in the data's range."""
    mean, _ = self.encode(params, x)
    return decoder_mean(self.decoder, self.decode_fn(params)(mean))

  def sample(self, state: TrainState, rng, num: int, use_ema: bool = True,
             batch=None, labels=None) -> Samples:   # unconditional: labels is always None
    """`Samples` in [-1, 1]: images, decoder means E[x|z] at z ~ N(0, I), [num, H, W, C],
    and the grids

      reconstructions  (with `batch`) input | reconstruction side by side, [n, H, 2W, C]
                       for the first n = min(num, batch size) images of the batch
      manifold         (2-D latent) decoder means over the Fig. 4 grid, [S*S, H, W, C]
    """
    params = state.ema_params if use_ema else state.params
    decode = self.decode_fn(params)
    z = jax.random.normal(rng, (num, self.latent_dim))
    images = self._to_display(decoder_mean(self.decoder, decode(z)))
    grids = {}
    if batch is not None:
      x = batch["image"][:num]
      pair = jnp.concatenate([x, self.reconstruct(params, x)], axis=2)
      grids["reconstructions"] = self._to_display(pair)
    if self.latent_dim == 2 and self.manifold_size > 0:
      grid = decode(jnp.asarray(manifold_latents(self.manifold_size)))
      grids["manifold"] = self._to_display(decoder_mean(self.decoder, grid))
    return Samples(images=images, grids=grids)
