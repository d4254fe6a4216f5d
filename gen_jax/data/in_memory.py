"""Image splits as arrays: decoded once per process (and once per machine, on disk).

    store = in_memory.image_store(source, split)   # ArrayImages or RecordImages
    images_u8, labels = store.read(np.array([3, 1, 4]))   # uint8 [3, H, W, C], int32 [3]

A split whose images take at most `MAX_IN_MEMORY_BYTES` as uint8 (all of gen_jax's
builders: mnist 47 MB, cifar10 154 MB) is decoded from its array_record shards ONCE into
one uint8 array, kept per process (keyed by the shard files, so a dataset prepared again
is decoded again), and saved as an .npz next to the prepared data, so the next process
(a resume, an evaluation) loads it in a fraction of a second. Larger splits are read
record by record at each batch (`RecordImages`), as before.
"""
from __future__ import annotations

import hashlib
import os
import re
import threading
from typing import Any, Protocol

import numpy as np
from absl import logging

from gen_jax.data import sources

# Splits up to this size (images as uint8) are held in memory.
MAX_IN_MEMORY_BYTES = 2 * 2**30
CACHE_FOLDER = "gen_jax_arrays"   # inside the prepared dataset's folder
_DECODE_CHUNK = 1024              # records per `__getitems__` call while decoding


class ImageStore(Protocol):
  """Reads images and labels of a split by record index."""

  num_records: int
  image_shape: tuple[int, int, int]

  def read(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 [n, H, W, C] images, int32 [n] labels) of the records `indices`."""
    ...


def _check_image(image: Any, shape: tuple[int, ...], index: int) -> np.ndarray:
  image = np.asarray(image)
  if image.dtype != np.uint8 or image.shape != shape:
    raise ValueError(f"record {index}: expected a uint8 image of shape {shape}, got "
                     f"{image.dtype} {image.shape}.")
  return image


def _label(element: dict[str, Any], index: int) -> int:
  if "label" not in element:
    raise ValueError(f"record {index} has no 'label' feature (its features: "
                     f"{', '.join(element)}); the image pipeline needs one.")
  return int(element["label"])


class RecordImages:
  """A split read record by record at every batch (for splits too large for memory)."""

  def __init__(self, source: sources.RandomAccessSource, image_shape: tuple[int, int, int]):
    self._source = source
    self.num_records = len(source)
    height, width, channels = image_shape
    self.image_shape = (int(height), int(width), int(channels))

  def read(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    keys = [int(i) for i in indices]
    getitems = getattr(self._source, "__getitems__", None)
    elements = getitems(keys) if getitems else [self._source[k] for k in keys]
    images = np.stack([_check_image(e["image"], self.image_shape, k)
                       for e, k in zip(elements, keys, strict=True)]) if keys else (
                           np.zeros((0, *self.image_shape), np.uint8))
    labels = np.array([_label(e, k) for e, k in zip(elements, keys, strict=True)], np.int32)
    return images, labels


class ArrayImages:
  """A split held as arrays; pickles as its key (a worker process loads it itself)."""

  def __init__(self, images: np.ndarray, labels: np.ndarray, key: tuple | None = None):
    self.images, self.labels, self.key = images, labels, key
    self.num_records = len(images)
    self.image_shape = tuple(images.shape[1:])

  def read(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return self.images[indices], self.labels[indices]

  def __reduce__(self):
    if self.key is None:
      return (ArrayImages, (self.images, self.labels))
    return (_arrays_for_key, (self.key,))


def _fingerprint(source: sources.RandomAccessSource, split: str) -> tuple | None:
  """What identifies a split's contents: its shard files (path, size, mtime) and the
  records it takes from each; None when the source does not say (no dataset_info)."""
  info = getattr(source, "dataset_info", None)
  if info is None:
    return None
  try:
    shards = info.splits[split].file_instructions
  except Exception:  # pylint: disable=broad-except  # a split TFDS cannot slice
    return None
  parts = []
  for shard in shards:
    path = os.fspath(shard.filename)
    try:
      stat = os.stat(path)
      parts.append((path, stat.st_size, stat.st_mtime_ns, shard.skip, shard.take))
    except OSError:
      parts.append((path, shard.skip, shard.take))
  return (split, tuple(parts))


def _cache_path(source: sources.RandomAccessSource, split: str) -> str | None:
  """<prepared dataset folder>/gen_jax_arrays/<split>-<hash>.npz; None for remote data."""
  info = getattr(source, "dataset_info", None)
  folder = os.fspath(getattr(info, "data_dir", "") or "")
  if not folder or "://" in folder:
    return None
  slug = re.sub(r"[^A-Za-z0-9_.-]", "_", split)[:60]
  digest = hashlib.sha256(split.encode()).hexdigest()[:8]
  return os.path.join(folder, CACHE_FOLDER, f"{slug}-{digest}.npz")


def _decode(source: sources.RandomAccessSource,
            image_shape: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray]:
  """Every record of the source, in order: uint8 [N, H, W, C] and int32 [N]."""
  n = len(source)
  images = np.empty((n, *image_shape), np.uint8)
  labels = np.empty((n,), np.int32)
  store = RecordImages(source, image_shape)
  for start in range(0, n, _DECODE_CHUNK):
    indices = np.arange(start, min(n, start + _DECODE_CHUNK))
    images[indices], labels[indices] = store.read(indices)
  return images, labels


def _load_file(path: str, fingerprint: tuple) -> tuple[np.ndarray, np.ndarray] | None:
  """The arrays saved at `path` if they were decoded from the same shards, else None."""
  try:
    with np.load(path, allow_pickle=False) as saved:
      if str(saved["fingerprint"]) != repr(fingerprint):
        return None
      return saved["images"], saved["labels"]
  except (OSError, KeyError, ValueError, EOFError):  # absent, partial or damaged: decode
    return None


def _save_file(path: str, fingerprint: tuple, images: np.ndarray, labels: np.ndarray) -> None:
  """Writes the arrays atomically (a unique temporary file, then a rename); a folder that
  cannot be written only costs the next process a decode."""
  tmp = f"{path}.{os.getpid()}.{threading.get_ident()}.tmp"
  try:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(tmp, "wb") as f:
      np.savez(f, images=images, labels=labels, fingerprint=np.array(repr(fingerprint)))
    os.replace(tmp, path)
  except OSError as err:
    logging.warning("Could not save the decoded split to %s (%s); the next process will "
                    "decode it again.", path, err)
    try:
      os.remove(tmp)
    except OSError:
      pass


_ARRAYS: dict[tuple, ArrayImages] = {}
_LOCK = threading.Lock()


def _arrays_for_key(key: tuple) -> ArrayImages:
  """The arrays of a key (after unpickling in a worker process: from the .npz, or decoded)."""
  with _LOCK:
    if key in _ARRAYS:
      return _ARRAYS[key]
  source_args = key[-1]
  source = sources.load_split(*source_args[:2], data_dir=source_args[2],
                              manual_dir=source_args[3], options=dict(source_args[4]))
  return _build(source, source_args[1], sources.dataset_image_shape(source), key)


def _build(source, split: str, image_shape, key: tuple) -> ArrayImages:
  fingerprint = key[0]
  path = _cache_path(source, split)
  arrays = _load_file(path, fingerprint) if path else None
  if arrays is None or arrays[0].shape != (len(source), *image_shape):
    arrays = _decode(source, image_shape)
    if path:
      _save_file(path, fingerprint, *arrays)
  images, labels = arrays
  images.setflags(write=False)   # shared by every loader of this process
  labels.setflags(write=False)
  store = ArrayImages(images, labels, key)
  with _LOCK:
    _ARRAYS[key] = store
  return store


def image_store(source: sources.RandomAccessSource, split: str,
                image_shape: tuple[int, int, int], source_args: tuple) -> ImageStore:
  """The store a loader reads a split from: in memory when it fits, else per record.

  Args:
    source: the split's random-access source (`sources.open_split`).
    split: its TFDS split name.
    image_shape: (H, W, C) of its images.
    source_args: (dataset, split, data_dir, manual_dir, builder options as sorted
      (field, value) pairs): how a worker process opens the same source again.

  Returns:
    `ArrayImages` (decoded once per process and per prepared copy) or `RecordImages`.

  Raises:
    ValueError: a record is not a uint8 image of `image_shape`, or has no label.
  """
  if len(source) * int(np.prod(image_shape)) > MAX_IN_MEMORY_BYTES:
    return RecordImages(source, image_shape)
  fingerprint = _fingerprint(source, split)
  if fingerprint is None:   # nothing identifies the contents: decode for this loader only
    return ArrayImages(*_decode(source, image_shape))
  key = (fingerprint, source_args)
  with _LOCK:
    if key in _ARRAYS:
      return _ARRAYS[key]
  return _build(source, split, image_shape, key)
