"""Tests for the DDPM++ / NCSN++ SongUNet (NVlabs/edm `training/networks.py`).

The CIFAR-10 networks are only traced with `jax.eval_shape` (nothing allocated or compiled);
the forward pass is checked on a tiny network against the authors' PyTorch code through the
fixture tools/make_song_unet_fixture.py writes.
"""

import functools
import math

import jax
import jax.numpy as jnp

from gen_jax.models.song_unet import SongUNet, ddpmpp_cifar10_kwargs


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
