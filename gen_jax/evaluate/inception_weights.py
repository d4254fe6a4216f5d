"""The FID Inception weights: the user's `.pth` file, checked, converted once, cached.

pytorch-fid's `pt_inception-2015-12-05-6726825d.pth` is the TensorFlow FID graph's weights
as a torch state dict. It is read without torch and without unrestricted unpickling
(gen_jax/evaluate/pickle_reader.py), checked against its sha256, and converted on first use
to a plain `.npz` of {torch name: array} in the cache folder, named by the digest and
holding it (`SOURCE_KEY`); later runs read that `.npz` (a second of work instead of a pickle
parse) after checking the digest it holds. The source file is hashed again after its
conversion, so a file that changed while it was read is never cached under the old digest.

This module is numpy-only (no jax), so tools/make_inception_fixture.py can import it from a
torch environment to build the same random weights as the tests.
"""
from __future__ import annotations

import hashlib
import os
import zlib
from collections.abc import Mapping

import numpy as np

from gen_jax.core.errors import UserError
from gen_jax.evaluate import pickle_reader

FID_WEIGHTS_URL = ("https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/"
                   "pt_inception-2015-12-05-6726825d.pth")
FID_WEIGHTS_FILENAME = "pt_inception-2015-12-05-6726825d.pth"
# The file's sha256 (as recorded for the identical copy torch-fidelity ships under the name
# weights-inception-2015-12-05-6726825d.pth); its first 8 digits are the torch-hub hash
# prefix in the file name.
FID_WEIGHTS_SHA256 = "6726825d0af5f729cebd5821db510b11b1cfad8faad88a03f1befd49fb9129b2"
DEFAULT_WEIGHTS_PATH = os.path.join("~", ".cache", "gen_jax", "inception", FID_WEIGHTS_FILENAME)
DEFAULT_CACHE_DIR = os.path.join("~", ".cache", "gen_jax", "inception")
SOURCE_KEY = "__source_sha256__"   # the cache entry holding the digest of its source file


class InceptionWeightsMissing(UserError, FileNotFoundError):
  """The weights file named by the config does not exist."""


class InceptionWeightsMismatch(UserError, ValueError):
  """The weights file is not the expected one (sha256 or tensor names/shapes differ)."""


def missing_weights_message(path: str, field: str) -> str:
  """The one message for a missing file, one line: where to get it, where to put it, which
  field."""
  return (
      f"The Inception weights for FID/IS/KID are not at {path} ({field}): download "
      f"pytorch-fid's file (about 92 MB) there (mkdir -p {os.path.dirname(path) or '.'} && "
      f"curl -L -o {path} {FID_WEIGHTS_URL}), or point --config.{field}=/path/to/"
      f"{FID_WEIGHTS_FILENAME}; --config.eval.sample_metrics=False skips the metrics.")


def check_weights_file(path: str, field: str) -> str:
  """The expanded path if the file exists; else `InceptionWeightsMissing` (the message of
  `missing_weights_message`). Cheap: call it before any sampling."""
  full = os.path.expanduser(path)
  if not os.path.isfile(full):
    raise InceptionWeightsMissing(missing_weights_message(full, field))
  return full


def sha256_of_file(path: str) -> str:
  digest = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      digest.update(block)
  return digest.hexdigest()


def load_state_dict(path: str, expected_sha256: str = FID_WEIGHTS_SHA256,
                    cache_dir: str = DEFAULT_CACHE_DIR,
                    field: str = "eval.inception_weights") -> tuple[dict[str, np.ndarray], str]:
  """{torch name: float array} of the weights file, and its sha256.

  The `.pth` is hashed; a digest other than `expected_sha256` stops the load (pass '' to
  accept any file, e.g. random weights for a test). The converted arrays are cached in
  `<cache_dir>/fid_inception_<sha256[:16]>.npz`, with the digest inside, and read from there
  on later calls whose file has that digest.

  Raises:
    InceptionWeightsMissing: no file at `path`.
    InceptionWeightsMismatch: the digest differs from `expected_sha256`.
    InceptionWeightsMismatch: the file is not a torch state dict, or is damaged.
    pickle_reader.UnsafePickleError: the file is a pickle that names other Python objects.
  """
  path = check_weights_file(path, field)
  sha = sha256_of_file(path)
  if expected_sha256 and sha != expected_sha256.lower():
    raise InceptionWeightsMismatch(
        f"{path} has sha256 {sha}, not the FID Inception weights' {expected_sha256}: a "
        f"different or damaged file. Download it again from {FID_WEIGHTS_URL} (or, for a "
        "file you trust on purpose, set eval.inception_sha256 to its digest).")
  cache = os.path.join(os.path.expanduser(cache_dir), f"fid_inception_{sha[:16]}.npz")
  if os.path.isfile(cache):
    try:
      with np.load(cache) as stored:
        if SOURCE_KEY in stored.files and str(stored[SOURCE_KEY]) == sha:
          return {name: stored[name] for name in stored.files if name != SOURCE_KEY}, sha
    except (OSError, ValueError, zlib.error, EOFError):   # damaged: convert again
      pass
  try:
    loaded = pickle_reader.load_torch_state_dict(path)
  except pickle_reader.UnsafePickleError:
    raise
  except pickle_reader.TorchFileError as e:
    raise InceptionWeightsMismatch(f"{e} Download the FID Inception weights again from "
                                   f"{FID_WEIGHTS_URL}.") from None
  state = {name: value for name, value in loaded.items()
           if not name.endswith("num_batches_tracked")}
  if SOURCE_KEY in state:
    raise InceptionWeightsMismatch(f"{path} holds a tensor named {SOURCE_KEY}.")
  if sha256_of_file(path) != sha:
    raise InceptionWeightsMismatch(f"{path} changed while it was read; load it again once "
                                   "it is complete.")
  os.makedirs(os.path.dirname(cache), exist_ok=True)
  tmp = cache + f".tmp{os.getpid()}.npz"
  # numpy's stub reads the ** arrays as its allow_pickle keyword.
  np.savez(tmp, **state, **{SOURCE_KEY: np.asarray(sha)})  # pyright: ignore[reportArgumentType]
  os.replace(tmp, cache)    # complete files only
  return state, sha


# --------------------------------------------------------- names: torch <-> flax variables


_BN_NAMES = {"weight": ("params", "scale"), "bias": ("params", "bias"),
             "running_mean": ("batch_stats", "mean"), "running_var": ("batch_stats", "var")}


def is_unused(torch_name: str) -> bool:
  """Entries of the file the network does not read: BatchNorm's num_batches_tracked, and the
  fc bias (the Inception score uses the unbiased logits, see inception.py)."""
  return torch_name.endswith("num_batches_tracked") or torch_name == "fc.bias"


def flax_location(torch_name: str) -> tuple[str, tuple[str, ...]]:
  """'Mixed_5b.branch1x1.bn.running_var' -> ('batch_stats', ('Mixed_5b', 'branch1x1', 'bn',
  'var'))."""
  *modules, leaf = torch_name.split(".")
  if modules and modules[-1] == "bn":
    collection, new_leaf = _BN_NAMES[leaf]
    return collection, (*modules, new_leaf)
  if leaf == "weight":   # conv and fc weights are 'kernel'
    return "params", (*modules, "kernel")
  raise KeyError(f"Unexpected tensor {torch_name!r} in an FID Inception state dict.")


def to_flax_layout(torch_name: str, array: np.ndarray) -> np.ndarray:
  """Conv [O, I, kh, kw] -> [kh, kw, I, O]; fc [out, in] -> [in, out]; others as they are."""
  if array.ndim == 4:
    return np.transpose(array, (2, 3, 1, 0))
  if torch_name == "fc.weight":
    return array.T
  return array


def torch_shape(flax_path: tuple[str, ...], shape: tuple[int, ...]) -> tuple[int, ...]:
  """The inverse of `to_flax_layout` on shapes."""
  if len(shape) == 4:
    kh, kw, i, o = shape
    return (o, i, kh, kw)
  if flax_path == ("fc", "kernel"):
    return tuple(reversed(shape))
  return tuple(shape)


def state_dict_to_variables(state: Mapping[str, np.ndarray]) -> dict[str, dict]:
  """{torch name: array} -> nested {'params': ..., 'batch_stats': ...} of float32 arrays."""
  variables: dict[str, dict] = {"params": {}, "batch_stats": {}}
  for name, array in state.items():
    if is_unused(name):
      continue
    collection, path = flax_location(name)
    node = variables[collection]
    for key in path[:-1]:
      node = node.setdefault(key, {})
    node[path[-1]] = np.asarray(to_flax_layout(name, np.asarray(array)), np.float32)
  return variables


# ------------------------------------------------------------- random weights for parity


def random_state_dict(shapes: Mapping[str, tuple[int, ...]], seed: int) -> dict[str, np.ndarray]:
  """Deterministic random FID-Inception weights {torch name: float32 array} for parity tests.

  Each tensor is drawn from its own generator, seeded by (`seed`, crc32 of its name), so the
  values do not depend on the order of `shapes` or on which other names it holds. Scales
  keep activations O(1) through the 94 conv layers: He-normal conv kernels (std
  sqrt(2 / fan_in)), BatchNorm scale in [0.8, 1.2], shift and mean N(0, 0.1^2), variance in
  [0.5, 1.5]; fc N(0, 1/2048).

  Args:
    shapes: {torch name: torch shape}, e.g. from the torch model or `torch_shapes()`.
    seed: the seed.

  Returns:
    {name: array}; `num_batches_tracked` entries are int64 zeros.
  """
  out = {}
  for name, shape in shapes.items():
    rng = np.random.default_rng([seed, zlib.crc32(name.encode())])
    leaf = name.rsplit(".", 1)[-1]
    shape = tuple(int(s) for s in shape)
    if leaf == "num_batches_tracked":
      out[name] = np.zeros(shape, np.int64)
      continue
    if name.endswith("conv.weight"):
      fan_in = int(np.prod(shape[1:]))
      value = rng.normal(0.0, np.sqrt(2.0 / fan_in), shape)
    elif name == "fc.weight":
      value = rng.normal(0.0, np.sqrt(1.0 / shape[1]), shape)
    elif leaf == "weight":
      value = rng.uniform(0.8, 1.2, shape)
    elif leaf == "running_var":
      value = rng.uniform(0.5, 1.5, shape)
    else:   # bn.bias, bn.running_mean, fc.bias
      value = rng.normal(0.0, 0.1, shape)
    out[name] = value.astype(np.float32)
  return out
