"""Inception-v3 of the FID variant (the TensorFlow 2015-12-05 graph), as a Flax linen module.

This is the network behind FID (Heusel et al. 2017, arXiv:1706.08500) and the Inception
score (Salimans et al. 2016, arXiv:1606.03498) as every image paper reports them: the TF
FID/IS code runs the graph `inception-2015-12-05`, and pytorch-fid ports its weights to
`pt_inception-2015-12-05-6726825d.pth`. To give the same numbers the module follows
pytorch-fid's `InceptionV3(use_fid_inception=True, resize_input=True, normalize_input=True)`
(Szegedy et al. 2016, arXiv:1512.00567, Fig. 5-7 for the blocks), including the places where
that graph differs from torchvision's Inception-v3:

* the 3x3 average pools inside blocks A, C and E_1 ignore the zero padding
  (`count_include_pad=False`, TensorFlow's SAME average pool);
* the last block (`Mixed_7c`, E_2) pools its side branch with a 3x3 *max* pool;
* BatchNorm uses eps = 1e-3 and its stored statistics (inference mode);
* the input is resized to 299x299 with bilinear interpolation, half-pixel centres and no
  antialiasing (torch's `F.interpolate(..., 'bilinear', align_corners=False)`), then mapped
  from [0, 1] to [-1, 1] by 2x - 1.

Outputs: the 2048-d global average pool ("pool3", FID/KID features) and the 1008-way logits
`pool @ W_fc` *without* the fc bias, which is what the original TF Inception-score code
(`softmax/logits/MatMul` on pool3) and torch-fidelity (`logits_unbiased`) feed the softmax.

Parameter names mirror the torch state dict (`Mixed_5b/branch1x1/conv/kernel` is
`Mixed_5b.branch1x1.conv.weight`), so conversion is a rename and a transpose
(gen_jax/evaluate/inception_weights.py).
"""
from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from gen_jax.evaluate import inception_weights

INPUT_SIZE = 299      # the graph's input resolution
POOL_DIM = 2048       # pool3 features (FID, KID)
NUM_LOGITS = 1008     # 1000 ImageNet classes + 8 unused outputs of the 2015 graph


# ----------------------------------------------------------------------- input pipeline


def resize_bilinear(images_BxHxWxC: jax.Array, size: tuple[int, int]) -> jax.Array:
  """Bilinear resize of NHWC images to `size` = (H', W') as torch's
  `F.interpolate(mode='bilinear', align_corners=False)` does it.

  Output pixel i samples the input at s = (i + 0.5) * in/out - 0.5 (half-pixel centres),
  from its 2 nearest input pixels (weights renormalized at the borders, i.e. the edge pixel
  repeated). No antialiasing: when downsampling, torch reads only those 2 pixels, while
  `jax.image.resize`'s default (antialias=True) widens the kernel and gives different values
  (up to 0.45 on [0, 1] images in tests/evaluate/test_inception.py), so it is switched off here.
  """
  B, _, _, C = images_BxHxWxC.shape
  return jax.image.resize(images_BxHxWxC, (B, *size, C), method="bilinear", antialias=False,
                          precision=jax.lax.Precision.HIGHEST)


def quantize_to_01(images_BxHxWxC: jax.Array) -> jax.Array:
  """Model images in [-1, 1] -> the [0, 1] floats a PNG of them would give.

  round((clip(x) + 1) * 127.5) / 255: the uint8 rounding of gen_jax's sample dumps
  (engine/outputs.to_uint8), so features of in-memory samples equal those that pytorch-fid
  computes from the dumped PNGs. One-channel images are repeated to RGB, as pytorch-fid
  does when it opens a grayscale PNG with `.convert('RGB')`.
  """
  x = jnp.round((jnp.clip(images_BxHxWxC.astype(jnp.float32), -1.0, 1.0) + 1.0) * 127.5)
  x = x / 255.0
  if x.shape[-1] == 1:
    x = jnp.repeat(x, 3, axis=-1)
  if x.shape[-1] != 3:
    raise ValueError(f"Inception takes RGB (or grayscale) images; got {x.shape[-1]} channels.")
  return x


# ----------------------------------------------------------------------------- blocks


class BasicConv(nn.Module):
  """Conv (no bias) -> BatchNorm(eps=1e-3, stored statistics) -> ReLU."""
  features: int
  kernel: tuple[int, int]
  strides: int = 1
  padding: tuple[int, int] = (0, 0)
  precision: str = "highest"

  @nn.compact
  def __call__(self, x):
    ph, pw = self.padding
    x = nn.Conv(self.features, self.kernel, strides=self.strides, padding=((ph, ph), (pw, pw)),
                use_bias=False, precision=self.precision, name="conv")(x)
    x = nn.BatchNorm(use_running_average=True, epsilon=1e-3, name="bn")(x)
    return nn.relu(x)


# flax's pools leave `padding` unannotated, so pyright takes the type of its default ('VALID')
# for it; their docstrings also take the (low, high) pairs passed here.
def _avg_pool_same(x):
  """3x3 stride-1 average over the valid pixels only (count_include_pad=False)."""
  return nn.avg_pool(x, (3, 3), strides=(1, 1),
                     padding=((1, 1), (1, 1)),  # pyright: ignore[reportArgumentType]
                     count_include_pad=False)


def _max_pool(x, stride: int, pad: int):
  return nn.max_pool(x, (3, 3), strides=(stride, stride),
                     padding=((pad, pad), (pad, pad)))  # pyright: ignore[reportArgumentType]


class InceptionA(nn.Module):
  """35x35 block (Mixed_5b-d): 1x1 | 1x1-5x5 | 1x1-3x3-3x3 | avgpool-1x1."""
  pool_features: int
  precision: str = "highest"

  @nn.compact
  def __call__(self, x):
    conv = functools.partial(BasicConv, precision=self.precision)
    b1 = conv(64, (1, 1), name="branch1x1")(x)
    b5 = conv(48, (1, 1), name="branch5x5_1")(x)
    b5 = conv(64, (5, 5), padding=(2, 2), name="branch5x5_2")(b5)
    b3 = conv(64, (1, 1), name="branch3x3dbl_1")(x)
    b3 = conv(96, (3, 3), padding=(1, 1), name="branch3x3dbl_2")(b3)
    b3 = conv(96, (3, 3), padding=(1, 1), name="branch3x3dbl_3")(b3)
    bp = conv(self.pool_features, (1, 1), name="branch_pool")(_avg_pool_same(x))
    return jnp.concatenate([b1, b5, b3, bp], axis=-1)


class InceptionB(nn.Module):
  """35 -> 17 reduction (Mixed_6a): 3x3/2 | 1x1-3x3-3x3/2 | maxpool/2."""
  precision: str = "highest"

  @nn.compact
  def __call__(self, x):
    conv = functools.partial(BasicConv, precision=self.precision)
    b3 = conv(384, (3, 3), strides=2, name="branch3x3")(x)
    bd = conv(64, (1, 1), name="branch3x3dbl_1")(x)
    bd = conv(96, (3, 3), padding=(1, 1), name="branch3x3dbl_2")(bd)
    bd = conv(96, (3, 3), strides=2, name="branch3x3dbl_3")(bd)
    return jnp.concatenate([b3, bd, _max_pool(x, 2, 0)], axis=-1)


class InceptionC(nn.Module):
  """17x17 block (Mixed_6b-e) with factorized 7x7 convolutions (1x7 and 7x1)."""
  channels_7x7: int
  precision: str = "highest"

  @nn.compact
  def __call__(self, x):
    conv = functools.partial(BasicConv, precision=self.precision)
    c7 = self.channels_7x7
    b1 = conv(192, (1, 1), name="branch1x1")(x)
    b7 = conv(c7, (1, 1), name="branch7x7_1")(x)
    b7 = conv(c7, (1, 7), padding=(0, 3), name="branch7x7_2")(b7)
    b7 = conv(192, (7, 1), padding=(3, 0), name="branch7x7_3")(b7)
    bd = conv(c7, (1, 1), name="branch7x7dbl_1")(x)
    bd = conv(c7, (7, 1), padding=(3, 0), name="branch7x7dbl_2")(bd)
    bd = conv(c7, (1, 7), padding=(0, 3), name="branch7x7dbl_3")(bd)
    bd = conv(c7, (7, 1), padding=(3, 0), name="branch7x7dbl_4")(bd)
    bd = conv(192, (1, 7), padding=(0, 3), name="branch7x7dbl_5")(bd)
    bp = conv(192, (1, 1), name="branch_pool")(_avg_pool_same(x))
    return jnp.concatenate([b1, b7, bd, bp], axis=-1)


class InceptionD(nn.Module):
  """17 -> 8 reduction (Mixed_7a): 1x1-3x3/2 | 1x1-1x7-7x1-3x3/2 | maxpool/2."""
  precision: str = "highest"

  @nn.compact
  def __call__(self, x):
    conv = functools.partial(BasicConv, precision=self.precision)
    b3 = conv(192, (1, 1), name="branch3x3_1")(x)
    b3 = conv(320, (3, 3), strides=2, name="branch3x3_2")(b3)
    b7 = conv(192, (1, 1), name="branch7x7x3_1")(x)
    b7 = conv(192, (1, 7), padding=(0, 3), name="branch7x7x3_2")(b7)
    b7 = conv(192, (7, 1), padding=(3, 0), name="branch7x7x3_3")(b7)
    b7 = conv(192, (3, 3), strides=2, name="branch7x7x3_4")(b7)
    return jnp.concatenate([b3, b7, _max_pool(x, 2, 0)], axis=-1)


class InceptionE(nn.Module):
  """8x8 block (Mixed_7b, 7c) with split 1x3 / 3x1 outputs. `max_pool_branch`: the FID
  graph's Mixed_7c pools its side branch with a max pool, Mixed_7b with an average pool."""
  max_pool_branch: bool
  precision: str = "highest"

  @nn.compact
  def __call__(self, x):
    conv = functools.partial(BasicConv, precision=self.precision)
    b1 = conv(320, (1, 1), name="branch1x1")(x)
    b3 = conv(384, (1, 1), name="branch3x3_1")(x)
    b3 = jnp.concatenate([conv(384, (1, 3), padding=(0, 1), name="branch3x3_2a")(b3),
                          conv(384, (3, 1), padding=(1, 0), name="branch3x3_2b")(b3)], axis=-1)
    bd = conv(448, (1, 1), name="branch3x3dbl_1")(x)
    bd = conv(384, (3, 3), padding=(1, 1), name="branch3x3dbl_2")(bd)
    bd = jnp.concatenate([conv(384, (1, 3), padding=(0, 1), name="branch3x3dbl_3a")(bd),
                          conv(384, (3, 1), padding=(1, 0), name="branch3x3dbl_3b")(bd)],
                         axis=-1)
    pooled = _max_pool(x, 1, 1) if self.max_pool_branch else _avg_pool_same(x)
    bp = conv(192, (1, 1), name="branch_pool")(pooled)
    return jnp.concatenate([b1, b3, bd, bp], axis=-1)


# ---------------------------------------------------------------------------- network


class FIDInceptionV3(nn.Module):
  """Images in [0, 1], [B, H, W, 3] (any H, W) -> (pool [B, 2048], logits [B, 1008]).

  Variables: `params` (conv kernels, BatchNorm scale/bias, fc kernel/bias) and
  `batch_stats` (BatchNorm mean/var), loaded from the FID weights file.
  """
  precision: str = "highest"   # of the convolutions; 'highest' = full float32 on any device

  @nn.compact
  def __call__(self, images_01_BxHxWx3):
    conv = functools.partial(BasicConv, precision=self.precision)
    x = resize_bilinear(images_01_BxHxWx3.astype(jnp.float32), (INPUT_SIZE, INPUT_SIZE))
    x = 2.0 * x - 1.0                                       # [0, 1] -> [-1, 1]
    x = conv(32, (3, 3), strides=2, name="Conv2d_1a_3x3")(x)              # 149
    x = conv(32, (3, 3), name="Conv2d_2a_3x3")(x)                         # 147
    x = conv(64, (3, 3), padding=(1, 1), name="Conv2d_2b_3x3")(x)
    x = _max_pool(x, 2, 0)                                                # 73
    x = conv(80, (1, 1), name="Conv2d_3b_1x1")(x)
    x = conv(192, (3, 3), name="Conv2d_4a_3x3")(x)                        # 71
    x = _max_pool(x, 2, 0)                                                # 35
    for name, pool_features in (("Mixed_5b", 32), ("Mixed_5c", 64), ("Mixed_5d", 64)):
      x = InceptionA(pool_features, self.precision, name=name)(x)
    x = InceptionB(self.precision, name="Mixed_6a")(x)                    # 17
    for name, c7 in (("Mixed_6b", 128), ("Mixed_6c", 160), ("Mixed_6d", 160), ("Mixed_6e", 192)):
      x = InceptionC(c7, self.precision, name=name)(x)
    x = InceptionD(self.precision, name="Mixed_7a")(x)                    # 8
    x = InceptionE(False, self.precision, name="Mixed_7b")(x)
    x = InceptionE(True, self.precision, name="Mixed_7c")(x)
    pool_Bx2048 = jnp.mean(x, axis=(1, 2))
    # pool3 @ W_fc: the file's fc bias is not used (inception_weights drops it).
    logits_Bx1008 = nn.Dense(NUM_LOGITS, use_bias=False, precision=self.precision,
                             name="fc")(pool_Bx2048)
    return pool_Bx2048, logits_Bx1008


def variable_shapes(precision: str = "highest") -> dict[str, dict]:
  """The network's variables as ShapeDtypeStructs (nothing allocated)."""
  model = FIDInceptionV3(precision)
  return jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 75, 75, 3)))


def torch_shapes() -> dict[str, tuple[int, ...]]:
  """{torch state-dict name: torch shape} of every tensor the network uses (no fc.bias, no
  num_batches_tracked), derived from the module itself."""
  names = {"params": {"scale": "weight", "bias": "bias", "kernel": "weight"},
           "batch_stats": {"mean": "running_mean", "var": "running_var"}}
  out = {}
  for collection, tree in variable_shapes().items():
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
      keys = tuple(k.key for k in path)
      name = ".".join((*keys[:-1], names[collection][keys[-1]]))
      out[name] = inception_weights.torch_shape(keys, tuple(leaf.shape))
  return out


def load_variables(path: str, expected_sha256: str = inception_weights.FID_WEIGHTS_SHA256,
                   cache_dir: str = inception_weights.DEFAULT_CACHE_DIR,
                   field: str = "eval.inception_weights") -> tuple[dict, str]:
  """The network's variables from the FID weights file (checked, converted, cached), and
  the file's sha256 (see inception_weights.load_state_dict for the errors).

  Raises:
    inception_weights.InceptionWeightsMismatch: names or shapes differ from the network's.
  """
  state, sha = inception_weights.load_state_dict(path, expected_sha256, cache_dir, field)
  return variables_from_state_dict(state, source=path), sha


def variables_from_state_dict(state, source: str = "the state dict") -> dict:
  """{torch name: array} -> the network's variables, after checking every name and shape."""
  expected = torch_shapes()
  got = {k: tuple(np.shape(v)) for k, v in state.items() if not inception_weights.is_unused(k)}
  if got != expected:
    missing = sorted(set(expected) - set(got))[:5]
    extra = sorted(set(got) - set(expected))[:5]
    wrong = [f"{k}: {got[k]} != {expected[k]}" for k in sorted(set(got) & set(expected))
             if got[k] != expected[k]][:5]
    raise inception_weights.InceptionWeightsMismatch(
        f"{source} is not the FID Inception-v3 state dict: missing {missing}, unexpected "
        f"{extra}, wrong shapes {wrong}.")
  return inception_weights.state_dict_to_variables(state)


def make_apply(variables, precision: str = "highest", chunk: int = 0, out_sharding=None):
  """A jitted `images in [-1, 1], [B, H, W, C] -> (pool [B, 2048], logits [B, 1008])`.

  Model-space images are quantized as a PNG would be (`quantize_to_01`) first.

  Args:
    variables: {'params': ..., 'batch_stats': ...} (`load_variables`).
    precision: convolution precision: 'highest' (full float32, as pytorch-fid on a CPU), or
      'default' for faster TF32/bf16 passes on accelerators (not bit-comparable).
    chunk: images per network pass (0 = the whole batch): bounds the 299x299 activations'
      memory; the batch is padded to a multiple of it and mapped over (`jax.lax.map`).
    out_sharding: optional sharding of the outputs (e.g. replicated).
  """
  model = FIDInceptionV3(precision)
  variables = jax.tree_util.tree_map(jnp.asarray, variables)

  def net(images_01):
    return model.apply(variables, images_01)

  def apply(images_BxHxWxC):
    x = quantize_to_01(images_BxHxWxC)
    B = x.shape[0]
    if not chunk or chunk >= B:
      return net(x)
    num = -(-B // chunk)
    x = jnp.pad(x, ((0, num * chunk - B), (0, 0), (0, 0), (0, 0)))
    pool, logits = jax.lax.map(net, x.reshape(num, chunk, *x.shape[1:]))
    return pool.reshape(-1, POOL_DIM)[:B], logits.reshape(-1, NUM_LOGITS)[:B]

  return jax.jit(apply, out_shardings=out_sharding)
