"""Supervised image classification (softmax cross-entropy), trained by the same engine as
the generative families. Its checkpoint is the feature extractor of the sample-quality
metrics (`gen_jax/engine/sample_metrics.py`). It has nothing to sample (`can_sample = False`).
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import ml_collections
import optax

from gen_jax.core.optimizer import make_optimizer
from gen_jax.core.state import TrainState, apply_gradients
from gen_jax.methods.base import Method, image_shape_of
from gen_jax.models.classifier import Classifier


def cross_entropy_and_accuracy(logits_BxK: jax.Array, labels_B: jax.Array):
  """Mean softmax cross-entropy -log p(y|x) (nats) and mean top-1 accuracy."""
  loss = optax.softmax_cross_entropy_with_integer_labels(logits_BxK, labels_B).mean()
  accuracy = jnp.mean(jnp.argmax(logits_BxK, axis=-1) == labels_B)
  return loss, accuracy


@dataclasses.dataclass(frozen=True)
class ClassifierMethod(Method):
  """A `Classifier` trained with cross-entropy on {"image", "label"} batches."""

  # Discriminative: nothing to sample (configs/classifier.py has no sample group).
  can_sample = False
  can_classify = True   # its runs are the sample metrics' feature extractor (`classify`)

  model: Classifier
  tx: optax.GradientTransformation
  image_shape: tuple[int, int, int]
  ema_decay: float
  ema_warmup: bool

  @classmethod
  def from_config(cls, config: ml_collections.ConfigDict, spec) -> ClassifierMethod:
    m = config.model
    if m.num_classes < 2:
      raise ValueError(f"model.num_classes={m.num_classes} must be >= 2.")
    model = Classifier(num_classes=m.num_classes, features=m.features,
                       feature_dim=m.feature_dim, dtype=jnp.dtype(config.dtype))
    return cls(model=model, tx=make_optimizer(config.train),
               image_shape=image_shape_of(spec), ema_decay=config.train.ema_decay,
               ema_warmup=config.train.ema_warmup)

  def init(self, rng, batch) -> TrainState:
    params = self.model.init(rng, jnp.zeros((1, *self.image_shape), jnp.float32))["params"]
    return TrainState.create(params, self.tx)

  def apply(self, params, images_BxHxWxC: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(logits [B, K], features [B, D]) of images in [-1, 1]."""
    # flax annotates apply's result as (output, state) too; without `mutable` it is output.
    return self.model.apply({"params": params}, images_BxHxWxC)  # pyright: ignore[reportReturnType]

  def classify(self, params, images: jax.Array) -> tuple[jax.Array, jax.Array]:
    """`apply`: the sample metrics' features come from this classifier."""
    return self.apply(params, images)

  def train_step(self, state: TrainState, batch, rng):
    def loss_fn(params):
      logits, _ = self.apply(params, batch["image"])
      return cross_entropy_and_accuracy(logits, batch["label"])

    (loss, accuracy), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    state, health = apply_gradients(state, grads, self.tx, self.ema_decay, self.ema_warmup)
    return state, {"loss": loss, "accuracy": accuracy, **health}

  def eval_step(self, state: TrainState, batch, rng):
    """Held-out cross-entropy and accuracy with the EMA and the raw weights."""
    metrics = {}
    for name, params in (("ema", state.ema_params), ("raw", state.params)):
      loss, accuracy = cross_entropy_and_accuracy(self.apply(params, batch["image"])[0],
                                                  batch["label"])
      metrics.update({f"{name}/loss": loss, f"{name}/accuracy": accuracy})
    return metrics
