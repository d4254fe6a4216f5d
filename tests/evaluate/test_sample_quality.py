"""FID / KID / precision-recall math against closed forms and brute-force definitions."""
import numpy as np
import pytest
import scipy.spatial.distance
import scipy.stats

from gen_jax.evaluate import sample_quality as sq


def _rotation(D, seed):
  return scipy.stats.ortho_group.rvs(D, random_state=seed)


# ------------------------------------------------------------------------ Fréchet distance


def test_feature_statistics_are_mean_and_unbiased_covariance():
  x = np.random.default_rng(0).standard_normal((7, 3)).astype(np.float32)
  mu, sigma = sq.feature_statistics(x)
  assert mu.dtype == sigma.dtype == np.float64
  centred = x.astype(np.float64) - x.mean(0)
  np.testing.assert_allclose(mu, x.astype(np.float64).mean(0), rtol=1e-12)
  np.testing.assert_allclose(sigma, centred.T @ centred / 6, rtol=1e-12)


def test_frechet_distance_of_commuting_gaussians_matches_closed_form():
  # For S1 = Q diag(a) Q^T, S2 = Q diag(b) Q^T: Tr(S1 + S2 - 2 (S1 S2)^{1/2}) =
  # sum (sqrt(a) - sqrt(b))^2, so d^2 = ||mu1 - mu2||^2 + sum (sqrt(a) - sqrt(b))^2.
  D = 6
  rng = np.random.default_rng(1)
  a, b = rng.uniform(0.2, 3.0, D), rng.uniform(0.2, 3.0, D)
  mu1, mu2 = rng.standard_normal(D), rng.standard_normal(D)
  expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
  np.testing.assert_allclose(sq.frechet_distance(mu1, np.diag(a), mu2, np.diag(b)), expected,
                             rtol=1e-10)
  Q = _rotation(D, 2)
  s1, s2 = Q @ np.diag(a) @ Q.T, Q @ np.diag(b) @ Q.T
  np.testing.assert_allclose(sq.frechet_distance(mu1, s1, mu2, s2), expected, rtol=1e-8)
  np.testing.assert_allclose(sq.frechet_distance(mu2, s2, mu1, s1), expected, rtol=1e-8)


def test_frechet_distance_of_one_dimensional_gaussians():
  # W2^2(N(m1, s1^2), N(m2, s2^2)) = (m1 - m2)^2 + (s1 - s2)^2.
  assert sq.frechet_distance([1.0], [[4.0]], [-2.0], [[0.25]]) == pytest.approx(9 + 1.5**2)


def test_frechet_distance_of_identical_feature_sets_is_zero():
  rng = np.random.default_rng(3)
  feats = rng.standard_normal((500, 16)) @ rng.standard_normal((16, 16))
  mu, sigma = sq.feature_statistics(feats)
  assert abs(sq.frechet_distance(mu, sigma, mu, sigma)) < 1e-8


@pytest.mark.filterwarnings("ignore:Matrix is singular")
def test_frechet_distance_of_singular_covariances_falls_back_to_eps():
  # Fewer samples than dimensions: rank-deficient covariances (sqrtm of a nilpotent-like
  # product returns inf; the eps*I fallback must give a finite, near-zero distance).
  feats = np.random.default_rng(5).standard_normal((4, 10))
  mu, sigma = sq.feature_statistics(feats)
  nilpotent = np.array([[0.0, 1.0], [0.0, 0.0]])
  d = sq.frechet_distance(np.zeros(2), nilpotent, np.zeros(2), np.eye(2))
  assert np.isfinite(d)
  assert abs(sq.frechet_distance(mu, sigma, mu, sigma)) < 1e-4


def test_frechet_distance_from_samples_converges_to_closed_form():
  D, N = 4, 20000
  rng = np.random.default_rng(6)
  Q = _rotation(D, 7)
  a, b = np.array([0.5, 1.0, 2.0, 3.0]), np.array([1.5, 0.3, 2.0, 1.0])
  mu1, mu2 = np.zeros(D), np.array([0.5, -0.5, 0.0, 1.0])
  x1 = mu1 + (rng.standard_normal((N, D)) * np.sqrt(a)) @ Q.T
  x2 = mu2 + (rng.standard_normal((N, D)) * np.sqrt(b)) @ Q.T
  expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)   # 2.99
  estimate = sq.frechet_distance(*sq.feature_statistics(x1), *sq.feature_statistics(x2))
  assert estimate == pytest.approx(expected, abs=0.05)


def test_frechet_distance_rejects_bad_shapes():
  with pytest.raises(ValueError, match="shapes"):
    sq.frechet_distance(np.zeros(3), np.eye(3), np.zeros(2), np.eye(2))


# ---------------------------------------------------------------------------------- KID


def _mmd2_unbiased_by_loops(x, y):
  k = lambda u, v: (u @ v / x.shape[1] + 1.0) ** 3
  m = len(x)
  xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j)
  yy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j)
  xy = sum(k(x[i], y[j]) for i in range(m) for j in range(m))
  return xx / (m * (m - 1)) + yy / (m * (m - 1)) - 2 * xy / m**2


def test_kid_of_whole_sets_is_the_unbiased_mmd2_with_cubic_kernel():
  rng = np.random.default_rng(8)
  x, y = rng.standard_normal((6, 5)), rng.standard_normal((6, 5)) + 0.3
  # subset_size is clipped to 6, so every subset is a permutation of the whole set.
  mean, std = sq.kernel_inception_distance(x, y, num_subsets=3, subset_size=100, rng=0)
  np.testing.assert_allclose(mean, _mmd2_unbiased_by_loops(x, y), rtol=1e-10)
  assert std < 1e-10


def test_kid_is_unbiased_for_equal_distributions_and_positive_for_shifted_ones():
  # R independent pairs of small sets: the biased (V-statistic) estimator would average
  # about +0.4 here; the unbiased one must average 0 within 3 standard errors.
  R, m, D = 200, 40, 8
  rng = np.random.default_rng(9)
  same = np.array([sq.kernel_inception_distance(rng.standard_normal((m, D)),
                                                rng.standard_normal((m, D)),
                                                num_subsets=1, subset_size=m, rng=r)[0]
                   for r in range(R)])
  assert abs(same.mean()) < 3 * same.std(ddof=1) / np.sqrt(R)
  shifted_mean, shifted_std = sq.kernel_inception_distance(
      rng.standard_normal((400, D)), rng.standard_normal((400, D)) + 0.5,
      num_subsets=20, subset_size=100, rng=0)
  assert shifted_mean > 10 * shifted_std / np.sqrt(20) and shifted_mean > 0.1


def test_kid_is_reproducible_from_its_seed():
  rng = np.random.default_rng(10)
  x, y = rng.standard_normal((50, 3)), rng.standard_normal((60, 3))
  run = lambda seed: sq.kernel_inception_distance(x, y, num_subsets=5, subset_size=20, rng=seed)
  assert run(1) == run(1) and run(1) != run(2)


# ----------------------------------------------------------------- precision and recall


def _precision_recall_brute_force(real, fake, k):
  def radii(a):
    return np.sort(scipy.spatial.distance.cdist(a, a), axis=1)[:, k]
  inside = lambda q, ref: np.mean(np.any(scipy.spatial.distance.cdist(q, ref) <= radii(ref),
                                         axis=1))
  return inside(fake, real), inside(real, fake)


def test_precision_recall_of_identical_and_disjoint_sets():
  real = np.random.default_rng(11).standard_normal((200, 5))
  assert sq.precision_recall(real, real.copy(), k=3) == (1.0, 1.0)
  assert sq.precision_recall(real, real + 100.0, k=3) == (0.0, 0.0)


def test_fake_covering_half_the_clusters_has_full_precision_half_recall():
  rng = np.random.default_rng(12)
  centres = 50.0 * np.eye(4, 3)  # 4 well-separated clusters in 3-D
  real = np.concatenate([c + rng.standard_normal((60, 3)) for c in centres])
  fake = np.concatenate([c + rng.standard_normal((60, 3)) for c in centres[:2]])
  precision, recall = sq.precision_recall(real, fake, k=3)
  # Fake balls miss a few real points at their clusters' edges (and vice versa).
  assert precision > 0.8 and 0.4 < recall <= 0.5
  # Fake = the real points of two clusters: exactly (1, 0.5).
  assert sq.precision_recall(real, real[:120], k=3) == (1.0, 0.5)


def test_radius_is_kth_neighbour_excluding_the_point_itself():
  # 1-D real set {0, 1, 3}: k=1 radii (1, 1, 2); k=2 radii (3, 2, 3).
  real = np.array([[0.0], [1.0], [3.0]])
  assert sq.precision_recall(real, np.array([[4.9], [5.1], [0.5], [-1.0]]), k=1)[0] == 0.75
  assert sq.precision_recall(real, np.array([[5.9], [6.1], [3.0], [-3.1]]), k=2)[0] == 0.5


def test_precision_recall_matches_brute_force_for_any_batch_size():
  rng = np.random.default_rng(13)
  real, fake = rng.standard_normal((90, 4)), rng.standard_normal((70, 4)) * 1.3 + 0.4
  expected = _precision_recall_brute_force(real, fake, k=3)
  assert 0.2 < expected[0] < 0.98 and 0.2 < expected[1] < 0.98   # a non-trivial case
  for batch_size in (7, 64, 1000):
    assert sq.precision_recall(real, fake, k=3, batch_size=batch_size) == pytest.approx(expected)


def test_precision_recall_rejects_too_few_points():
  with pytest.raises(ValueError, match="k=3"):
    sq.precision_recall(np.zeros((3, 2)), np.zeros((5, 2)), k=3)
