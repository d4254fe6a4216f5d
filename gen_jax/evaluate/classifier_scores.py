"""What a classifier says about generated images: its confidence and how the samples spread
over its classes (mode coverage). Plain numpy on logits [N, K].

A generator that drops modes leaves classes empty (low coverage, low entropy of the
predicted-class histogram); one that draws ambiguous images gets low confidence; a
class-conditional one that ignores its label gets low label agreement.
"""
from __future__ import annotations

import numpy as np
import scipy.special


def class_scores(logits_NxK, min_share: float = 0.05) -> dict[str, float]:
  """Confidence and class coverage of a set of images from their classifier logits.

  Args:
    logits_NxK: classifier logits of N images over K classes.
    min_share: a class is covered when at least this share of the images is predicted as it
      (0.05 = half the uniform share of 10 classes).

  Returns:
    clf_confidence: mean over images of the top softmax probability, in [1/K, 1];
    class_coverage: number of classes predicted for >= min_share of the images, in [0, K];
    class_entropy: entropy (nats) of the predicted-class histogram, in [0, log K]
      (log 10 = 2.303 for a perfectly balanced 10-class set).
  """
  logits_NxK = np.asarray(logits_NxK, np.float64)
  if logits_NxK.ndim != 2 or logits_NxK.shape[0] < 1:
    raise ValueError(f"logits must have shape [N >= 1, K]; got {logits_NxK.shape}.")
  N, K = logits_NxK.shape
  probs_NxK = scipy.special.softmax(logits_NxK, axis=1)
  share_K = np.bincount(np.argmax(logits_NxK, axis=1), minlength=K) / N
  nonzero = share_K[share_K > 0]
  return {"clf_confidence": float(probs_NxK.max(axis=1).mean()),
          "class_coverage": float(np.sum(share_K >= min_share)),
          "class_entropy": float(-np.sum(nonzero * np.log(nonzero)))}


def label_agreement(logits_NxK, labels_N) -> float:
  """The fraction of a conditional generator's samples that the classifier assigns to the
  class they were drawn for: mean over i of [argmax_k logits_ik == labels_i] (the
  classification accuracy of generated samples, e.g. Miyato & Koyama 2018's and Ho &
  Salimans 2022's measure of how well samples follow their label).

  Args:
    logits_NxK: classifier logits of N samples over K classes.
    labels_N: the class each sample was drawn for, ints in [0, K).

  Returns:
    The agreement in [0, 1]; 1/K for samples that ignore their label (balanced labels).

  Raises:
    ValueError: shapes that do not match, or labels outside the classifier's classes.
  """
  logits_NxK = np.asarray(logits_NxK)
  labels_N = np.asarray(labels_N)
  if logits_NxK.ndim != 2 or labels_N.shape != logits_NxK.shape[:1] or not len(labels_N):
    raise ValueError(f"label_agreement needs logits [N >= 1, K] and labels [N]; got "
                     f"{logits_NxK.shape} and {labels_N.shape}.")
  K = logits_NxK.shape[1]
  if labels_N.min() < 0 or labels_N.max() >= K:
    raise ValueError(f"Sample labels span [{labels_N.min()}, {labels_N.max()}], outside the "
                     f"classifier's {K} classes: the generator's model.num_classes must match "
                     "the classifier's dataset.")
  return float(np.mean(np.argmax(logits_NxK, axis=1) == labels_N))
