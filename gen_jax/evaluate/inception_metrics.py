"""Inception score, and the FID/KID inputs on Inception features, as the standard tools compute
them (numpy/scipy, float64).

* Inception score (Salimans et al. 2016, "Improved Techniques for Training GANs",
  arXiv:1606.03498, §4): IS = exp(E_x KL(p(y|x) || p(y))), with p(y) the mean of p(y|x) over
  the split; the mean and std over 10 splits are reported. As in the authors' TF code
  (`inception_score.py`: softmax of pool3 @ W of `softmax/logits/MatMul`) and torch-fidelity
  (`logits_unbiased`), p(y|x) is the softmax over all 1008 outputs of the 2015 graph
  (1000 ImageNet classes + 8 never-trained ones, whose probabilities are tiny) of the logits
  *without* the fc bias. Splits are consecutive blocks of the samples in their order, as in
  the TF code (torch-fidelity shuffles them first with a fixed seed; for i.i.d. samples the
  expectation is the same).
* FID (Heusel et al. 2017): `sample_quality.frechet_distance` on `feature_statistics` —
  the same mean, ddof=1 covariance, scipy `sqrtm`, eps = 1e-6 diagonal offset when the
  product is singular, and 1e-3 tolerance on the imaginary part as pytorch-fid's
  `calculate_frechet_distance`.
* KID (Bińkowski et al. 2018): `sample_quality.kernel_inception_distance`, 100 subsets of
  1000 (torch-fidelity's defaults).

Reference statistics files: the `.npz` of `mu` [2048] and `sigma` [2048, 2048] that
pytorch-fid (`--save-stats`) and the TTUR code (`fid_stats_cifar10_train.npz`) write.
"""
from __future__ import annotations

import os

import numpy as np
from scipy.special import log_softmax, logsumexp

IS_SPLITS = 10


def inception_score(logits_NxK, splits: int = IS_SPLITS) -> tuple[float, float]:
  """Salimans et al. 2016, §4: exp(E_x KL(p(y|x) || p(y))) per split; (mean, std) over splits.

  Args:
    logits_NxK: unnormalized log-probabilities p(y|x) of N samples (the 1008 unbiased
      Inception logits).
    splits: number of consecutive, equal-size blocks (the last N mod splits samples are
      dropped, as `N // splits` per block).

  Returns:
    (mean, std) of the per-split scores; each is in [1, K].
  """
  logits = np.asarray(logits_NxK, np.float64)
  N = logits.shape[0]
  if logits.ndim != 2 or N < splits or splits < 1:
    raise ValueError(f"inception_score: logits must be [N >= splits={splits}, K]; "
                     f"got {logits.shape}.")
  log_p = log_softmax(logits, axis=1)
  size = N // splits
  scores = []
  for i in range(splits):
    log_p_split = log_p[i * size:(i + 1) * size]
    p_split = np.exp(log_p_split)
    # log p(y) = log mean_x p(y|x), in log space: finite even where every p(y|x) underflows.
    log_marginal = logsumexp(log_p_split, axis=0) - np.log(size)
    kl = np.sum(p_split * (log_p_split - log_marginal[None, :]), axis=1)  # KL per sample
    scores.append(np.exp(np.mean(kl)))
  return float(np.mean(scores)), float(np.std(scores))


def load_reference_stats(path: str, dim: int = 2048) -> tuple[np.ndarray, np.ndarray]:
  """`mu` [dim] and `sigma` [dim, dim] (float64) from a pytorch-fid/TTUR statistics `.npz`.

  Raises:
    FileNotFoundError: no file at `path`.
    ValueError: missing keys or wrong shapes (e.g. statistics of another network layer).
  """
  path = os.path.expanduser(path)
  if not os.path.isfile(path):
    raise FileNotFoundError(f"No FID reference statistics at {path} "
                            "(eval.inception_reference_stats); '' computes them from "
                            "eval.reference_split instead.")
  with np.load(path) as stats:
    if "mu" not in stats.files or "sigma" not in stats.files:
      raise ValueError(f"{path} has {stats.files}; FID reference statistics need 'mu' and "
                       "'sigma' (as pytorch-fid --save-stats writes).")
    mu, sigma = np.asarray(stats["mu"], np.float64), np.asarray(stats["sigma"], np.float64)
  if mu.shape != (dim,) or sigma.shape != (dim, dim):
    raise ValueError(f"{path}: mu {mu.shape} and sigma {sigma.shape} are not Inception pool3 "
                     f"statistics ([{dim}] and [{dim}, {dim}]).")
  return mu, sigma
