"""Tests for EDM's non-leaky augmentation (gen_jax/data/edm_augment.py) against the authors'
`training/augment.py` (fixture: tools/make_edm_augment_fixture.py)."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from smoke import FIXTURES

from gen_jax.data import edm_augment
from gen_jax.data.edm_augment import AugmentDraws, Strengths

# One compile for every call below: the draws, p and the strengths are traced arguments
# (float32 scalars in every call, so that they trace alike).
_augment_with_draws = jax.jit(edm_augment.augment_with_draws)
_EDM_STRENGTHS = Strengths(scale_std=np.float32(0.2), translate_frac_std=np.float32(0.125))


@pytest.fixture(scope="module")
def fixture():
  return np.load(os.path.join(FIXTURES, "edm_augment", "parity.npz"))


def _closed_draws(batch: int, **fields) -> AugmentDraws:
  """Draws under which nothing happens at p = 0.5 (every gate u = 0.9; the x-flip gate is
  always open, its bit 0), with `fields` replaced."""
  draws = {f: np.full((2, batch) if f == "translate_z" else (batch,), 0.9, np.float32)
           for f in AugmentDraws._fields}
  draws["xflip_bit"] = draws["yflip_bit"] = np.zeros(batch, np.int32)
  return AugmentDraws(**{**draws, **fields})


@pytest.mark.parametrize("case", ["random", "zoom_out", "wide"])
def test_matches_the_authors_pipeline(fixture, case):
  # The authors' AugmentPipe with EDM's CIFAR-10 arguments, given the same random numbers:
  # random ones at p = 0.75; zoom-outs whose samples reach beyond the batch's padding (zeros
  # in their code); strong zooms and translations that need the widest padding.
  get = lambda key: fixture[f"{case}/{key}"]
  draws = AugmentDraws(**{f: get(f) for f in AugmentDraws._fields})
  strengths = Strengths(scale_std=get("scale_std"), translate_frac_std=get("translate_frac_std"))
  out, labels = _augment_with_draws(get("images"), draws, get("p"), strengths)
  assert out.shape == get("out").shape and out.dtype == jnp.float32
  assert labels.shape == (4, edm_augment.AUGMENT_DIM) and labels.dtype == jnp.float32
  np.testing.assert_allclose(labels, get("labels"), rtol=0, atol=1e-6)
  np.testing.assert_allclose(out, get("out"), rtol=0, atol=1e-5 * np.abs(get("out")).max())


def test_no_augmentation_is_the_identity_and_flips_are_flips(fixture):
  images = fixture["random/images"]
  p = np.float32(0.5)
  out, labels = _augment_with_draws(images, _closed_draws(4), p, _EDM_STRENGTHS)
  assert not np.asarray(labels).any()
  # The sym6 up- and downsampling around an identity warp gives the image back (the
  # wavelet's filters are orthogonal), up to float32 rounding.
  np.testing.assert_allclose(out, images, rtol=0, atol=1e-5)

  flips = _closed_draws(4, xflip_bit=np.array([1, 0, 1, 0]), yflip_bit=np.array([0, 1, 1, 0]),
                        yflip_gate_u=np.full(4, 0.1, np.float32))
  out, labels = _augment_with_draws(images, flips, p, _EDM_STRENGTHS)
  expected = np.stack([images[0, :, ::-1], images[1, ::-1], images[2, ::-1, ::-1], images[3]])
  np.testing.assert_allclose(out, expected, rtol=0, atol=1e-5)
  np.testing.assert_array_equal(labels[:, :2], [[1, 0], [0, 1], [1, 1], [0, 0]])
  assert not np.asarray(labels[:, 2:]).any()


def test_each_transform_happens_with_the_authors_probability():
  # xflip * p >= 1 (always drawn, so half the images flip), y-flip p / 2, each geometric
  # transform p; the anisotropic axis is rotated in half the anisotropic scalings.
  p, n = 0.12, 20_000
  sample = jax.jit(lambda key: edm_augment.labels_and_inverse_transform(
      edm_augment.draw(key, n), 32, 32, p)[2])
  labels = np.asarray(sample(jax.random.key(0)))
  on = labels != 0
  rate = lambda column: on[:, column].mean()
  np.testing.assert_allclose([rate(0), rate(1), rate(2), rate(4), rate(5), rate(7)],
                             [0.5, p / 2, p, p, p, p], atol=0.012)
  assert (on[:, 7] == on[:, 8]).all()                         # x and y translate together
  np.testing.assert_allclose(on[on[:, 5], 6].mean(), 0.5, atol=0.05)   # rotated axes
  np.testing.assert_allclose((labels[:, 3] + 1) ** 2 + labels[:, 4] ** 2, 1, atol=1e-5)


def test_augment_checks_its_arguments():
  images = jnp.zeros((2, 8, 8, 3))
  with pytest.raises(ValueError, match="p must be in"):
    edm_augment.augment(jax.random.key(0), images, p=1.5)
  with pytest.raises(ValueError, match=r"\[B, H, W, C\]"):
    edm_augment.augment(jax.random.key(0), images[0])
