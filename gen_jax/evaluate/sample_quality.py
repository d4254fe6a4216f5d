"""Sample-quality metrics computed from feature sets of any feature extractor.

Every function takes features as arrays [N, D] (e.g. Inception pool3 activations for FID and
KID, VGG-16 fc2 activations for precision/recall) and is plain numpy/scipy in float64:

* Fréchet distance (FID when the features are Inception's): Heusel et al. 2017, "GANs
  Trained by a Two Time-Scale Update Rule Converge to a Local Nash Equilibrium"
  (arXiv:1706.08500), §"Fréchet Inception Distance".
* Kernel Inception Distance: Bińkowski et al. 2018, "Demystifying MMD GANs"
  (arXiv:1801.01401), §4 and Appendix D.
* Improved precision and recall: Kynkäänniemi et al. 2019, "Improved Precision and Recall
  Metric for Assessing Generative Models" (arXiv:1904.06991), §2, Eq. 1-3.
"""
from __future__ import annotations

import numpy as np
import scipy.linalg


def _as_features(features, name: str) -> np.ndarray:
  features = np.asarray(features, np.float64)
  if features.ndim != 2 or features.shape[0] < 2:
    raise ValueError(f"{name} must have shape [N >= 2, D]; got {features.shape}.")
  return features


# ------------------------------------------------------------------------ Fréchet distance


def feature_statistics(features) -> tuple[np.ndarray, np.ndarray]:
  """Mean [D] and unbiased covariance [D, D] (float64) of features [N, D]."""
  features_NxD = _as_features(features, "features")
  return features_NxD.mean(axis=0), np.cov(features_NxD, rowvar=False, ddof=1)


def frechet_distance(mu1, sigma1, mu2, sigma2, eps: float = 1e-6,
                     max_imag: float = 1e-3) -> float:
  """Fréchet (2-Wasserstein) distance between N(mu1, sigma1) and N(mu2, sigma2).

  Heusel et al. 2017, FID definition:

    d^2 = ||mu1 - mu2||^2 + Tr(sigma1 + sigma2 - 2 (sigma1 sigma2)^{1/2}).

  The square root is scipy's `sqrtm`. When sigma1 sigma2 is (near-)singular and `sqrtm`
  returns non-finite values, eps*I is added to both covariances' diagonals (the usual fix
  for fewer samples than feature dimensions). Round-off can leave a small imaginary part
  in the root; it is dropped, and a ValueError is raised if it exceeds `max_imag`.

  Args:
    mu1, mu2: means [D].
    sigma1, sigma2: covariances [D, D].
    eps: diagonal offset used only when the plain square root is not finite.
    max_imag: the largest |imaginary part| on the root's diagonal that is tolerated.

  Returns:
    The squared Fréchet distance (what is reported as FID), a Python float.
  """
  mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
  sigma1 = np.atleast_2d(np.asarray(sigma1, np.float64))
  sigma2 = np.atleast_2d(np.asarray(sigma2, np.float64))
  D = mu1.shape[0]
  if mu2.shape != (D,) or sigma1.shape != (D, D) or sigma2.shape != (D, D):
    raise ValueError(f"frechet_distance: shapes mu1 {mu1.shape}, sigma1 {sigma1.shape}, "
                     f"mu2 {mu2.shape}, sigma2 {sigma2.shape} do not agree.")

  covmean = scipy.linalg.sqrtm(sigma1 @ sigma2)
  if not np.all(np.isfinite(covmean)):
    offset = eps * np.eye(D)
    covmean = scipy.linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
  if np.iscomplexobj(covmean):
    largest_imag = np.max(np.abs(np.imag(np.diagonal(covmean))))
    if largest_imag > max_imag:
      raise ValueError(f"frechet_distance: sqrtm(sigma1 sigma2) has an imaginary component "
                       f"{largest_imag:.3g} > {max_imag}; are the covariances valid?")
    covmean = np.real(covmean)

  diff = mu1 - mu2
  return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * np.trace(covmean))


# -------------------------------------------------------------- Kernel Inception Distance


def polynomial_kernel(x_NxD: np.ndarray, y_MxD: np.ndarray) -> np.ndarray:
  """Bińkowski et al. 2018, §4: k(x, y) = (x^T y / d + 1)^3, as a [N, M] Gram matrix."""
  return (x_NxD @ y_MxD.T / x_NxD.shape[1] + 1.0) ** 3


def mmd2_unbiased(x_MxD: np.ndarray, y_MxD: np.ndarray) -> float:
  """Unbiased estimator of MMD^2 (Gretton et al. 2012, Lemma 6; Bińkowski et al. 2018,
  Eq. 2) for two samples of the same size m:

    1/(m(m-1)) sum_{i!=j} [k(x_i,x_j) + k(y_i,y_j)] - 2/m^2 sum_{i,j} k(x_i,y_j).
  """
  m = x_MxD.shape[0]
  k_xx, k_yy = polynomial_kernel(x_MxD, x_MxD), polynomial_kernel(y_MxD, y_MxD)
  k_xy = polynomial_kernel(x_MxD, y_MxD)
  within = (k_xx.sum() - np.trace(k_xx) + k_yy.sum() - np.trace(k_yy)) / (m * (m - 1))
  return float(within - 2.0 * k_xy.sum() / m**2)


def kernel_inception_distance(feats_a, feats_b, num_subsets: int = 100,
                              subset_size: int = 1000, rng=0) -> tuple[float, float]:
  """KID: the unbiased MMD^2 with the cubic polynomial kernel, averaged over subsets.

  Bińkowski et al. 2018, §4 and Appendix D: `num_subsets` times, draw `subset_size` rows of
  each set without replacement and compute `mmd2_unbiased`. `subset_size` is clipped to the
  smaller set. Each subset estimate is unbiased, so KID has expectation 0 when both sets
  come from the same distribution (it can be slightly negative).

  Args:
    feats_a, feats_b: features [N_a, D] and [N_b, D].
    num_subsets: number of subset pairs to average over.
    subset_size: rows per subset (1000 in the paper).
    rng: seed or numpy Generator for the subset draws.

  Returns:
    (mean, std) over the subsets; std is the spread of one subset's estimate, not the
    standard error of the mean (subsets overlap, so they are not independent).
  """
  a_NxD, b_NxD = _as_features(feats_a, "feats_a"), _as_features(feats_b, "feats_b")
  if a_NxD.shape[1] != b_NxD.shape[1]:
    raise ValueError(f"KID: feature dims differ: {a_NxD.shape} vs {b_NxD.shape}.")
  rng = np.random.default_rng(rng)
  m = min(subset_size, a_NxD.shape[0], b_NxD.shape[0])
  estimates = [
      mmd2_unbiased(a_NxD[rng.choice(a_NxD.shape[0], m, replace=False)],
                    b_NxD[rng.choice(b_NxD.shape[0], m, replace=False)])
      for _ in range(num_subsets)]
  return float(np.mean(estimates)), float(np.std(estimates))


# -------------------------------------------------------------- precision and recall


def _squared_distances(a_BxD: np.ndarray, b_NxD: np.ndarray) -> np.ndarray:
  """||a_i - b_j||^2 as a [B, N] matrix (clipped at 0 against round-off)."""
  d2 = (np.sum(a_BxD**2, axis=1)[:, None] + np.sum(b_NxD**2, axis=1)[None, :]
        - 2.0 * a_BxD @ b_NxD.T)
  return np.maximum(d2, 0.0)


def knn_radii_squared(features_NxD: np.ndarray, k: int, batch_size: int) -> np.ndarray:
  """Squared distance from each point to its k-th nearest neighbour in the same set, the
  point itself excluded (Kynkäänniemi et al. 2019, Eq. 2: NN_k(phi') ). Shape [N]."""
  N = features_NxD.shape[0]
  if not 1 <= k < N:
    raise ValueError(f"precision_recall: k={k} needs at least k+1={k + 1} points per set; got {N}.")
  radii = []
  for start in range(0, N, batch_size):
    d2_BxN = _squared_distances(features_NxD[start:start + batch_size], features_NxD)
    # Index k of the sorted row: index 0 is the point itself (distance 0).
    radii.append(np.partition(d2_BxN, k, axis=1)[:, k])
  return np.concatenate(radii)


def fraction_inside(query_QxD: np.ndarray, ref_NxD: np.ndarray, ref_radii2_N: np.ndarray,
                    batch_size: int) -> float:
  """Kynkäänniemi et al. 2019, Eq. 1-3: the fraction of queries phi with
  f(phi, ref) = 1, i.e. ||phi - phi'|| <= NN_k(phi') for at least one reference phi'."""
  inside = [np.any(_squared_distances(query_QxD[s:s + batch_size], ref_NxD) <= ref_radii2_N,
                   axis=1)
            for s in range(0, query_QxD.shape[0], batch_size)]
  return float(np.mean(np.concatenate(inside)))


def precision_recall(real_feats, fake_feats, k: int = 3,
                     batch_size: int = 1024) -> tuple[float, float]:
  """Improved precision and recall (Kynkäänniemi et al. 2019, §2, Eq. 1-3).

  Each set's manifold is the union of balls around its points, with radius the distance to
  the point's k-th nearest neighbour in its own set. Precision is the fraction of fake
  samples inside the real manifold; recall is the fraction of real samples inside the fake
  manifold. The paper uses k=3 on VGG-16 features of 50k images per set. Distances are
  computed `batch_size` rows at a time, so memory is O(batch_size * N).

  Args:
    real_feats, fake_feats: features [N_real, D] and [N_fake, D].
    k: the neighbour whose distance sets a ball's radius.
    batch_size: query rows per distance block.

  Returns:
    (precision, recall), each in [0, 1].
  """
  real_NxD = _as_features(real_feats, "real_feats")
  fake_MxD = _as_features(fake_feats, "fake_feats")
  if real_NxD.shape[1] != fake_MxD.shape[1]:
    raise ValueError(
        f"precision_recall: feature dims differ: {real_NxD.shape} vs {fake_MxD.shape}.")
  real_radii2 = knn_radii_squared(real_NxD, k, batch_size)
  fake_radii2 = knn_radii_squared(fake_MxD, k, batch_size)
  precision = fraction_inside(fake_MxD, real_NxD, real_radii2, batch_size)
  recall = fraction_inside(real_NxD, fake_MxD, fake_radii2, batch_size)
  return precision, recall
