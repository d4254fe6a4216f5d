"""The R3GAN ConvNet (gen_jax/models/r3gan.py) against the authors' Networks.py: parameter
counts of the released CIFAR-10 configuration, and a tiny conditional G and D whose weights
and outputs tests/fixtures/r3gan_tiny.npz holds (tools/make_r3gan_fixture.py)."""
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from smoke import FIXTURES

from gen_jax.core.state import count_params
from gen_jax.models import r3gan

CIFAR10 = dict(widths=(768,) * 4, blocks=(2,) * 4, cardinality=(96,) * 4, expansion=2)


@pytest.mark.parametrize("name,K", [("unconditional", 0), ("conditional", 10)])
def test_cifar10_param_counts_match_the_authors_networks(name, K):
  # The counts tools/make_r3gan_fixture.py prints from R3GAN/Networks.py (train.py's preset).
  y = jnp.zeros((1,), jnp.int32) if K else None
  G = r3gan.Generator((32, 32, 3), num_classes=K, embed_dim=64 if K else 0, **CIFAR10)
  D = r3gan.Discriminator(num_classes=K, **CIFAR10)
  g = jax.eval_shape(lambda: G.init(jax.random.key(0), jnp.zeros((1, 64)), train=False,
                                    labels_B=y))
  d = jax.eval_shape(lambda: D.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)), train=False,
                                    labels_B=y))
  assert (count_params(g["params"]), count_params(d["params"])) == r3gan.CIFAR10_PARAM_COUNTS[name]


def _conv(w_OxIxKxK):
  return np.transpose(w_OxIxKxK, (2, 3, 1, 0))


def _block(f, prefix):
  return {"expand": {"kernel": _conv(f[f"{prefix}.LinearLayer1.Layer.weight"])},
          "grouped": {"kernel": _conv(f[f"{prefix}.LinearLayer2.Layer.weight"])},
          "project": {"kernel": _conv(f[f"{prefix}.LinearLayer3.Layer.weight"])},
          "act1": {"bias": f[f"{prefix}.NonLinearity1.Bias"]},
          "act2": {"bias": f[f"{prefix}.NonLinearity2.Bias"]}}


def _generator_params(f):
  return {"embed": {"kernel": f["G/EmbeddingLayer.weight"].T},
          "basis": np.transpose(f["G/MainLayers.0.Layers.0.Basis"], (1, 2, 0)),
          "basis_scale": {"kernel": f["G/MainLayers.0.Layers.0.LinearLayer.weight"].T},
          "stage0_block0": _block(f, "G/MainLayers.0.Layers.1"),
          "stage1_transition": {
              "kernel": _conv(f["G/MainLayers.1.Layers.0.LinearLayer.Layer.weight"])},
          "stage1_block0": _block(f, "G/MainLayers.1.Layers.1"),
          "to_image": {"kernel": _conv(f["G/AggregationLayer.Layer.weight"])}}


def _discriminator_params(f):
  return {"from_image": {"kernel": _conv(f["D/ExtractionLayer.Layer.weight"])},
          "stage0_block0": _block(f, "D/MainLayers.0.Layers.0"),
          "stage0_transition": {
              "kernel": _conv(f["D/MainLayers.0.Layers.1.LinearLayer.Layer.weight"])},
          "stage1_block0": _block(f, "D/MainLayers.1.Layers.0"),
          "basis": {"kernel": _conv(f["D/MainLayers.1.Layers.1.Basis.weight"])},
          "readout": {"kernel": f["D/MainLayers.1.Layers.1.LinearLayer.weight"].T},
          "embed": {"kernel": f["D/EmbeddingLayer.weight"].T}}


def test_tiny_networks_match_the_authors_forward_pass():
  # Every weight of the fixture is off its initialization; the G stages change width (8 -> 4:
  # a 1x1 conv before the upsampling), D's too (4 -> 8: after the downsampling).
  f = np.load(os.path.join(FIXTURES, "r3gan_tiny.npz"))
  G = r3gan.Generator((8, 8, 3), widths=(8, 4), blocks=(1, 1), cardinality=(2, 2),
                      num_classes=3, embed_dim=6)
  D = r3gan.Discriminator(widths=(4, 8), blocks=(1, 1), cardinality=(2, 2), num_classes=3)
  labels = jnp.asarray(f["labels"])
  g_params = _generator_params(f)
  d_params = _discriminator_params(f)
  # The mapping covers every parameter our modules create, with the same shapes.
  for net, params, x in ((G, g_params, jnp.zeros((1, 5))), (D, d_params, jnp.zeros((1, 8, 8, 3)))):
    shapes = jax.eval_shape(lambda net=net, x=x: net.init(jax.random.key(0), x, train=False,
                                                          labels_B=labels[:1]))["params"]
    assert jax.tree.map(np.shape, params) == jax.tree.map(lambda s: s.shape, shapes)
  images = G.apply({"params": g_params}, jnp.asarray(f["z"]), train=False, labels_B=labels)
  np.testing.assert_allclose(images, np.transpose(f["g_out_NCHW"], (0, 2, 3, 1)),
                             rtol=1e-4, atol=1e-4)
  logits = D.apply({"params": d_params}, jnp.asarray(np.transpose(f["d_in_NCHW"], (0, 2, 3, 1))),
                   train=False, labels_B=labels)
  np.testing.assert_allclose(logits, f["d_out"], rtol=1e-4, atol=1e-4)


def test_blocks_start_as_the_identity_and_resampling_keeps_constants():
  # Fix-up initialization: each block's last conv is zero, so a fresh block is x -> x; the
  # low-pass kernels sum to 1 (x 4 for the zero-stuffed upsampling): a constant image stays
  # constant away from the borders.
  block = r3gan.ResidualBlock(cardinality=2, expansion=2, num_blocks_total=4)
  x = jax.random.normal(jax.random.key(1), (2, 8, 8, 4))
  params = jax.jit(block.init)(jax.random.key(2), x)
  np.testing.assert_array_equal(block.apply(params, x), x)
  ones = jnp.ones((1, 8, 8, 2))
  np.testing.assert_allclose(r3gan.upsample_2x(ones)[:, 2:-2, 2:-2], 1.0, rtol=1e-6)
  np.testing.assert_allclose(r3gan.downsample_2x(ones)[:, 1:-1, 1:-1], 1.0, rtol=1e-6)
  assert r3gan.upsample_2x(ones).shape == (1, 16, 16, 2)
  assert r3gan.downsample_2x(ones).shape == (1, 4, 4, 2)
