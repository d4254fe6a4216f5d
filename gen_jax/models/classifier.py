"""A small convolutional image classifier (our own, no paper's architecture): the features for
FID (Heusel et al. 2017), KID and precision/recall "with an MNIST classifier" without Inception.

  x [B, H, W, C] -> conv3x3(F) -> ReLU -> avg-pool 2 -> conv3x3(2F) -> ReLU -> avg-pool 2
    -> flatten -> dense(D) -> ReLU = features [B, D] -> dense(num_classes) = logits

The penultimate activations (after the ReLU) are the features, as Inception's pool3 layer
is for FID (Heusel et al. 2017).
"""
from __future__ import annotations

from typing import Any

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp


class Classifier(nn.Module):
  """Two convolutions and a hidden dense layer; returns (logits, features).

  Attributes:
    num_classes: number of output classes (10 for digits).
    features: F, channels of the first convolution (the second has 2F).
    feature_dim: D, width of the penultimate (feature) layer.
    dtype: compute dtype of conv/dense layers; outputs are float32.
  """
  num_classes: int = 10
  features: int = 32
  feature_dim: int = 128
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x_BxHxWxC: jax.Array) -> tuple[jax.Array, jax.Array]:
    chex.assert_rank(x_BxHxWxC, 4)
    h = x_BxHxWxC.astype(self.dtype)
    for width in (self.features, 2 * self.features):
      h = nn.relu(nn.Conv(width, (3, 3), dtype=self.dtype)(h))
      h = nn.avg_pool(h, (2, 2), strides=(2, 2))
    h = h.reshape(h.shape[0], -1)
    features_BxD = nn.relu(nn.Dense(self.feature_dim, dtype=self.dtype)(h))
    logits_BxK = nn.Dense(self.num_classes, dtype=self.dtype)(features_BxD)
    chex.assert_shape(logits_BxK, (x_BxHxWxC.shape[0], self.num_classes))
    return logits_BxK.astype(jnp.float32), features_BxD.astype(jnp.float32)
