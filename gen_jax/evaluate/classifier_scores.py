"""What a classifier says about generated images: its confidence and how the samples spread
over its classes (mode coverage). Plain numpy on logits [N, K].

A generator that drops modes leaves classes empty (low coverage, low entropy of the
predicted-class histogram); one that draws ambiguous images gets low confidence.
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
