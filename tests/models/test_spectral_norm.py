"""Spectral normalization (gen_jax/models/spectral_norm.py) against a numpy transcription of the
authors' chainer power iteration (sngan_projection source/functions/max_sv.py), and the
largest singular value it converges to."""
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from gen_jax.models import spectral_norm
from gen_jax.models.spectral_norm import COLLECTION


def chainer_max_sv(W_OxI, u_1xO):
  """max_singular_value(W, u, Ip=1) of the authors' code, W [O, I] as chainer holds it."""
  l2 = lambda x: x / (np.sqrt(np.sum(x * x)) + 1e-12)
  v = l2(u_1xO @ W_OxI)
  u = l2(v @ W_OxI.T)
  return float(np.sum((u @ W_OxI) * v)), u


class Layers(nn.Module):
  """A Dense, a Conv and an Embed, each spectrally normalized."""

  @nn.compact
  def __call__(self, x_Bx3, img_Bx4x4x2, ids_B, train):
    dense = spectral_norm.wrap(nn.Dense(5, name="dense"), True, train)(x_Bx3)
    conv = spectral_norm.wrap(nn.Conv(6, (3, 3), name="conv"), True, train)(img_Bx4x4x2)
    embed = spectral_norm.wrap(nn.Embed(7, 4, name="embed"), True, train)(ids_B)
    return dense, conv, embed


def test_one_step_is_the_authors_power_iteration_and_only_training_keeps_u():
  x = jax.random.normal(jax.random.key(1), (2, 3))
  img = jax.random.normal(jax.random.key(2), (2, 4, 4, 2))
  ids = jnp.array([0, 6])
  model = Layers()
  variables = jax.jit(model.init, static_argnames="train")(jax.random.key(0), x, img, ids,
                                                           train=False)
  params, u = variables["params"], variables[COLLECTION]
  assert sorted(u) == ["conv_sn", "dense_sn", "embed_sn"] and set(params) == {"conv", "dense",
                                                                             "embed"}
  apply = jax.jit(functools.partial(model.apply, mutable=[COLLECTION]), static_argnames="train")
  (dense, conv, embed), new = apply(variables, x, img, ids, train=True)
  new_u = new[COLLECTION]

  # Dense: chainer's W is flax's kernel transposed; u [1, 5] on the output side.
  kernel = np.asarray(params["dense"]["kernel"])
  sigma, want_u = chainer_max_sv(kernel.T, np.asarray(u["dense_sn"]["u"]))
  np.testing.assert_allclose(new_u["dense_sn"]["u"], want_u, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(dense, x @ (kernel / sigma) + params["dense"]["bias"], rtol=1e-5,
                             atol=1e-6)
  # Conv: chainer's W [O, I, kh, kw] flattened to [O, I kh kw]; the same sigma and u (v is
  # permuted).
  conv_kernel = np.asarray(params["conv"]["kernel"])       # [3, 3, 2, 6]
  sigma, want_u = chainer_max_sv(conv_kernel.transpose(3, 2, 0, 1).reshape(6, -1),
                                 np.asarray(u["conv_sn"]["u"]))
  np.testing.assert_allclose(new_u["conv_sn"]["u"], want_u, rtol=1e-5, atol=1e-6)
  plain = jax.lax.conv_general_dilated(img, jnp.asarray(conv_kernel / sigma), (1, 1), "SAME",
                                       dimension_numbers=("NHWC", "HWIO", "NHWC"))
  plain = plain + params["conv"]["bias"]
  np.testing.assert_allclose(conv, plain, rtol=1e-5, atol=1e-5)
  # Embed: W [K, F] as SNEmbedID holds it, u [1, K] on the class side.
  table = np.asarray(params["embed"]["embedding"])
  sigma, want_u = chainer_max_sv(table, np.asarray(u["embed_sn"]["u"]))
  np.testing.assert_allclose(new_u["embed_sn"]["u"], want_u, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(embed, table[[0, 6]] / sigma, rtol=1e-5, atol=1e-6)

  # Evaluation iterates for sigma but keeps u: the state comes back unchanged.
  _, kept = apply(variables, x, img, ids, train=False)
  jax.tree.map(np.testing.assert_array_equal, kept[COLLECTION], u)


def test_repeated_training_passes_converge_to_the_largest_singular_value():
  # Power iteration with u carried between passes (Miyato et al. 2018, Appendix A): sigma
  # reaches the top singular value, so the normalized weight has spectral norm 1.
  W = jax.random.normal(jax.random.key(3), (7, 4))
  true_sigma = np.linalg.svd(np.asarray(W), compute_uv=False)[0]
  u = jax.random.normal(jax.random.key(4), (1, 7))
  step = jax.jit(spectral_norm.power_iteration)
  sigmas = []
  for _ in range(60):
    sigma, u = step(W, u)
    sigmas.append(float(sigma))
  assert abs(sigmas[0] - true_sigma) > 1e-3 * true_sigma       # one step is not enough
  np.testing.assert_allclose(sigmas[-1], true_sigma, rtol=1e-5)
  np.testing.assert_allclose(np.linalg.svd(np.asarray(W) / sigmas[-1], compute_uv=False)[0], 1.0,
                             rtol=1e-5)


def test_the_gradient_treats_u_and_v_as_constants():
  # d sigma / dW = u^T v with u, v held fixed (Eq. 12's derivation): not the derivative of the
  # power iteration itself.
  W = jax.random.normal(jax.random.key(5), (3, 4))
  u0 = jax.random.normal(jax.random.key(6), (1, 3))
  grad = jax.jit(jax.grad(lambda W: spectral_norm.power_iteration(W, u0)[0]))(W)
  _, u = jax.jit(spectral_norm.power_iteration)(W, u0)
  v = np.asarray(u0) @ np.asarray(W)
  v = v / np.linalg.norm(v)
  np.testing.assert_allclose(grad, u.T @ v, rtol=1e-5, atol=1e-6)
