"""Tests for the DDPM++ / NCSN++ SongUNet (NVlabs/edm `training/networks.py`).

The CIFAR-10 networks are only traced with `jax.eval_shape` (nothing allocated or compiled);
the forward pass is checked on three tiny networks against the authors' PyTorch code through
the fixture tools/make_song_unet_fixture.py writes.
"""

import functools
import json
import math
import os
import zlib
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from smoke import FIXTURES

from gen_jax.models.song_unet import (
    Conv2d,
    InitScheme,
    Linear,
    SongUNet,
    ddpmpp_cifar10_kwargs,
    weight_init,
)


def _param_count_of(model: SongUNet, conditional: bool) -> int:
  """Counts parameters from shapes alone: nothing is allocated or compiled."""
  res, C = model.img_resolution, model.in_channels
  x = jax.ShapeDtypeStruct((1, res, res, C), jnp.float32)
  sigma = jax.ShapeDtypeStruct((1,), jnp.float32)
  labels = jax.ShapeDtypeStruct((1,), jnp.int32) if conditional else None
  augment = jax.ShapeDtypeStruct((1, model.augment_dim), jnp.float32)
  variables = jax.eval_shape(functools.partial(model.init, train=False), jax.random.key(0),
                             x, sigma, labels, augment)
  return sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(variables["params"]))


def test_edm_cifar10_ddpmpp_has_the_authors_parameter_count():
  # NVlabs/edm train.py --arch=ddpmpp with --augment (augment_dim 9): the authors' SongUNet
  # has 55,733,891 parameters unconditional and 55,735,299 with --cond=1 (label_dim 10),
  # counted with sum(p.numel() for p in net.parameters()).
  assert _param_count_of(SongUNet(**ddpmpp_cifar10_kwargs()), conditional=False) == 55_733_891
  assert _param_count_of(SongUNet(**ddpmpp_cifar10_kwargs(label_dim=10)),
                         conditional=True) == 55_735_299


def _fixture_weight(path: str, shape: tuple[int, ...], seed: int) -> np.ndarray:
  """tools/make_song_unet_fixture.py's `fixture_weight` (the same values, from the path)."""
  noise = np.random.default_rng([seed, zlib.crc32(path.encode())]).standard_normal(shape)
  leaf = path.rsplit("/", 1)[-1]
  if leaf == "kernel":
    return (noise / math.sqrt(math.prod(shape[:-1]))).astype(np.float32)
  if leaf == "scale":
    return (1 + 0.1 * noise).astype(np.float32)
  if leaf == "freqs":
    return (4 * noise).astype(np.float32)
  return (0.1 * noise).astype(np.float32)


@pytest.mark.parametrize("name", ["ddpmpp", "ncsnpp", "skip_encoder"])
def test_forward_matches_the_authors_code(name):
  # Tiny networks with random weights (none near zero), run by NVlabs/edm's SongUNet in
  # eval mode: tools/make_song_unet_fixture.py. Together they run both embeddings, the three
  # encoders, both decoders, both resampling filters, attention, class and augment labels
  # (the second class label is the null one, which the authors' code gets as a zero row).
  fixture = np.load(os.path.join(FIXTURES, "song_unet", "parity.npz"))
  get = lambda key: fixture[f"{name}/{key}"] if f"{name}/{key}" in fixture else None
  kwargs: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v
                            for k, v in json.loads(str(get("kwargs"))).items()}
  model = SongUNet(**kwargs)
  x, noise_labels = get("x"), get("noise_labels")
  class_labels, augment_labels = get("class_labels"), get("augment_labels")

  # gen_jax's parameters are the authors' state dict, name for name and shape for shape.
  shapes = jax.eval_shape(functools.partial(model.init, train=False), jax.random.key(0),
                          x, noise_labels, class_labels, augment_labels)["params"]
  ours = {"/".join(k.key for k in path): leaf.shape
          for path, leaf in jax.tree_util.tree_leaves_with_path(shapes)}
  theirs = dict(zip(get("param_names").tolist(),
                    map(tuple, json.loads(str(get("param_shapes")))), strict=True))
  assert ours == theirs

  seed = int(fixture["seed"])
  params = jax.tree_util.tree_map_with_path(
      lambda path, leaf: _fixture_weight("/".join(k.key for k in path), leaf.shape, seed),
      shapes)
  inputs = ({"params": params}, x, noise_labels, class_labels, augment_labels)
  # One run of a small program: XLA's backend optimizations would cost more time (about
  # half the compile) than they save.
  out = jax.jit(functools.partial(model.apply, train=False)).lower(*inputs).compile(
      {"xla_backend_optimization_level": 0})(*inputs)
  expected = get("out")
  assert out.shape == expected.shape
  np.testing.assert_allclose(out, expected, rtol=0, atol=2e-5 * np.abs(expected).max())


@pytest.mark.parametrize("mode,bound,std", [
    ("xavier_uniform", math.sqrt(6 / 150), math.sqrt(2 / 150)),
    ("xavier_normal", None, math.sqrt(2 / 150)),
    ("kaiming_uniform", math.sqrt(3 / 100), math.sqrt(1 / 100)),
    ("kaiming_normal", None, math.sqrt(1 / 100))])
def test_weight_init_draws_the_authors_distributions(mode, bound, std):
  # NVlabs/edm weight_init with fan_in 100, fan_out 50, times the gain 0.5.
  values = np.asarray(weight_init(mode, 100, 50, 0.5)(jax.random.key(0), (200, 100)))
  np.testing.assert_allclose(values.std(), 0.5 * std, rtol=0.02)
  if bound is not None:
    assert 0.99 * 0.5 * bound < np.abs(values).max() <= 0.5 * bound


def test_layers_get_the_authors_init_schemes():
  # NVlabs/edm SongUNet: xavier_uniform everywhere with bias scale 0; weight scale 1e-5 for
  # every block's conv1, every attention's proj and the output conv (init_zero), sqrt(0.2)
  # for the attention's qkv (init_attn), 1 for the rest.
  model = SongUNet(img_resolution=8, in_channels=3, out_channels=3, label_dim=2, augment_dim=9,
                   model_channels=8, channel_mult=(1, 2), num_blocks=1, attn_resolutions=(8,),
                   encoder_type="residual", decoder_type="skip")
  modules = model.module_paths(jax.random.key(0), jnp.zeros((1, 8, 8, 3)), jnp.zeros((1,)),
                               jnp.zeros((1,), jnp.int32), jnp.zeros((1, 9)), train=False)
  weights = {"conv1": 1e-5, "proj": 1e-5, "qkv": math.sqrt(0.2)}
  seen = 0
  for path, module in modules.items():
    if isinstance(module, Linear) or (isinstance(module, Conv2d) and module.kernel_size):
      name = path.rsplit("/", 1)[-1]
      weight = 1e-5 if name.endswith("aux_conv") else weights.get(name, 1.0)
      assert module.init == InitScheme("xavier_uniform", weight, 0.0), path
      seen += 1
  # map_label, map_augment, map_layer0/1, the input conv; 10 blocks x (conv0, affine, conv1)
  # and 7 of them with a skip conv; 3 attentions x (qkv, proj); aux_residual; 2 aux_conv.
  assert seen == 5 + 30 + 7 + 6 + 1 + 2
