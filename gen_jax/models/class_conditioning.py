"""Class conditioning of the GAN networks (gen_jax/models/dcgan.py, resnet_gan.py).

Miyato & Koyama 2018, "cGANs with Projection Discriminator" (arXiv:1802.05637):

  * the generator's BatchNorms become conditional (their §4 and released code,
    pfnet-research/sngan_projection `CategoricalConditionalBatchNormalization`; de Vries et
    al. 2017 / Dumoulin et al. 2017): the normalized activation is scaled and shifted by a
    per-class gain and bias,

      CBN(h, y) = gamma_y * (h - mu_B) / sqrt(var_B + eps) + beta_y,

    gamma, beta: [K, C] tables initialised to 1 and 0, replacing the plain BatchNorm's
    per-channel scale and offset (the batch statistics and running averages are the plain
    BatchNorm's: over the whole batch, all classes together);

  * the discriminator's output gets the projection term (Eq. 3):

      D(x, y) = psi(phi(x)) + embed(y) . phi(x),

    phi(x) [B, F] the features the final linear read-out psi sees, embed a [K, F] table
    (V in the paper). The unconditional D is the first term alone. With spectral
    normalization (gen_jax/models/spectral_norm.py) psi's kernel and the table are both
    normalized, as the authors' `SNLinear` l5 and `SNEmbedID` l_y; their psi has no bias
    (`nobias=True`), which `readout_bias=False` gives.

The conditional BatchNorm's eps is the authors' (`CategoricalConditionalBatchNormalization`:
2e-5, chainer's default) only where a network asks for it (`epsilon`); the networks pass
their family's (1e-5 for Radford's and Gulrajani's layers, 2e-5 for the 'sngan' ResNet).
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from gen_jax.models import spectral_norm

Initializer = Callable[..., jax.Array]


def check_labels(labels_B: jax.Array | None, num_classes: int, batch: int, who: str) -> None:
  """Raises ValueError unless a conditional net (num_classes > 0) gets labels [batch] and an
  unconditional one gets none."""
  if num_classes and labels_B is None:
    raise ValueError(f"{who} has num_classes={num_classes} (model.num_classes): pass the class "
                     "labels [B] (int) of the batch.")
  if not num_classes and labels_B is not None:
    raise ValueError(f"{who} is unconditional (num_classes=0) but got labels; set "
                     "model.num_classes to the number of classes to condition on them.")
  if labels_B is not None and labels_B.shape != (batch,):
    raise ValueError(f"{who}: labels must have shape [B]=({batch},); got {labels_B.shape}.")


def _per_example(v_BxF: jax.Array, ndim: int) -> jax.Array:
  """[B, F] -> [B, 1, ..., 1, F] broadcasting against an activation of rank `ndim`."""
  return v_BxF.reshape(v_BxF.shape[0], *(1,) * (ndim - 2), v_BxF.shape[-1])


class ConditionalBatchNorm(nn.Module):
  """BatchNorm whose scale and offset are looked up by class (module docstring).

  Normalizes over every axis but the last (per channel, or per feature of a flat [B, F]
  input) with the statistics of the batch (train) or the running averages, like
  `nn.BatchNorm(use_scale=False, use_bias=False)` (submodule 'bn', which holds the
  running averages), then applies gamma[y], beta[y].

  Attributes:
    num_classes: K, rows of the gamma and beta tables.
    momentum, epsilon: as nn.BatchNorm's.
  """

  num_classes: int
  momentum: float = 0.9
  epsilon: float = 1e-5

  @nn.compact
  def __call__(self, h: jax.Array, labels_B: jax.Array, train: bool) -> jax.Array:
    F = h.shape[-1]
    normed = nn.BatchNorm(use_running_average=not train, momentum=self.momentum,
                          epsilon=self.epsilon, use_scale=False, use_bias=False,
                          dtype=jnp.float32, name="bn")(h)
    gamma_BxF = nn.Embed(self.num_classes, F, embedding_init=nn.initializers.ones,
                         name="gamma")(labels_B)
    beta_BxF = nn.Embed(self.num_classes, F, embedding_init=nn.initializers.zeros,
                        name="beta")(labels_B)
    return _per_example(gamma_BxF, h.ndim) * normed + _per_example(beta_BxF, h.ndim)


def batch_norm(num_classes: int, labels_B: jax.Array | None, train: bool, name: str,
               scale_init: Initializer = nn.initializers.ones,
               epsilon: float = 1e-5) -> Callable[[jax.Array], jax.Array]:
  """The generator's BatchNorm (momentum 0.9, float32): plain `nn.BatchNorm` (same
  parameters as before conditioning existed) when num_classes = 0, else
  `ConditionalBatchNorm` on `labels_B`; `epsilon` added to the variance (tflib and flax:
  1e-5, chainer: 2e-5). Call it inside a compact module."""
  if not num_classes:
    return nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=epsilon,
                        dtype=jnp.float32, scale_init=scale_init, name=name)
  if labels_B is None:
    raise ValueError(f"{name}: a class-conditional BatchNorm (num_classes={num_classes}) "
                     "needs the labels [B] of the batch.")
  cbn = ConditionalBatchNorm(num_classes, epsilon=epsilon, name=name)
  return lambda h: cbn(h, labels_B, train)


def projection(phi_BxF: jax.Array, labels_B: jax.Array, num_classes: int,
               embedding_init: Initializer, name: str = "embed", normalize: bool = False,
               train: bool = False) -> jax.Array:
  """Miyato & Koyama 2018, Eq. 3's projection term embed(y) . phi(x) -> [B] (float32).

  Call it inside a compact module; it creates the [K, F] table `name`, spectrally
  normalized when `normalize` (its u moves when `train`).
  """
  table = nn.Embed(num_classes, phi_BxF.shape[-1], embedding_init=embedding_init, name=name)
  embed_BxF = spectral_norm.wrap(table, normalize, train)(labels_B)
  return jnp.sum(embed_BxF.astype(jnp.float32) * phi_BxF.astype(jnp.float32), axis=-1)


def discriminator_logits(phi_BxF: jax.Array, labels_B: jax.Array | None, num_classes: int,
                         readout_init: Initializer, dtype: Any, readout_bias: bool = True,
                         normalize: bool = False, train: bool = False) -> jax.Array:
  """The discriminator's output D(x, y) -> [B] (float32) from its features phi(x) [B, F].

  The linear read-out psi(phi(x)) (a Dense(1) named `logit`, with a bias when
  `readout_bias`), plus for a class-conditional D (num_classes > 0) Miyato & Koyama 2018,
  Eq. 3's projection term embed(y) . phi(x), whose table is initialised like the read-out.
  `normalize`: spectral normalization of psi and the table (u moves when `train`). Call it
  inside a compact module.
  """
  readout = nn.Dense(1, use_bias=readout_bias, kernel_init=readout_init, dtype=dtype,
                     name="logit")
  logits_B = spectral_norm.wrap(readout, normalize, train)(phi_BxF)[:, 0].astype(jnp.float32)
  if num_classes:
    if labels_B is None:
      raise ValueError(f"a class-conditional discriminator (num_classes={num_classes}) needs "
                       "the labels [B] of the batch.")
    logits_B = logits_B + projection(phi_BxF, labels_B, num_classes, readout_init,
                                     normalize=normalize, train=train)
  return logits_B
