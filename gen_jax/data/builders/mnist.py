"""Full MNIST (LeCun et al. 1998) from the canonical idx files, without TensorFlow.

Splits: `train` (60,000) and `test` (10,000), in the files' original order
(the first ten train labels are 5 0 4 1 9 2 1 3 1 4).
"""
from __future__ import annotations

import gzip

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from gen_jax.data.builders import image_label, raw_files
from gen_jax.data.errors import DatasetUnavailableError

IMAGE_MAGIC = 2051  # idx3: unsigned byte, 3 dims
LABEL_MAGIC = 2049  # idx1: unsigned byte, 1 dim
HEIGHT = WIDTH = 28

SPLIT_FILES = {  # split -> (images file, labels file, expected count)
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", 60_000),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz", 10_000),
}
RAW_FILES = tuple(name for images, labels, _ in SPLIT_FILES.values() for name in (images, labels))
MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
)


def _read_idx(path: epath.Path, *, magic: int, num_dims: int) -> tuple[tuple[int, ...], bytes]:
  """Reads a gzipped idx file; returns (dims, payload) after checking the header."""
  try:
    data = gzip.decompress(path.read_bytes())
  except (OSError, EOFError) as err:
    raise DatasetUnavailableError(
        f"mnist: {path} is not a readable gzip file ({err}); replace it with the "
        "canonical file from an MNIST mirror.") from None
  header_size = 4 * (1 + num_dims)
  if len(data) < header_size:
    raise DatasetUnavailableError(f"mnist: {path} is truncated ({len(data)} bytes).")
  header = np.frombuffer(data[:header_size], dtype=">u4")
  if int(header[0]) != magic:
    raise DatasetUnavailableError(
        f"mnist: {path} has idx magic number {int(header[0])}, expected {magic}.")
  dims = tuple(int(d) for d in header[1:])
  payload = data[header_size:]
  if len(payload) != int(np.prod(dims)):
    raise DatasetUnavailableError(
        f"mnist: {path} holds {len(payload)} bytes of data, its header {dims} "
        f"promises {int(np.prod(dims))} (truncated or corrupted file).")
  return dims, payload


def read_idx_images(path: epath.Path, expected_count: int) -> np.ndarray:
  """Returns the images of an idx3 file as uint8 [N, 28, 28, 1], checking N and 28x28."""
  dims, payload = _read_idx(path, magic=IMAGE_MAGIC, num_dims=3)
  if dims != (expected_count, HEIGHT, WIDTH):
    raise DatasetUnavailableError(
        f"mnist: {path} holds images of shape {dims}, expected "
        f"({expected_count}, {HEIGHT}, {WIDTH}).")
  return np.frombuffer(payload, dtype=np.uint8).reshape(expected_count, HEIGHT, WIDTH, 1)


def read_idx_labels(path: epath.Path, expected_count: int) -> np.ndarray:
  """Returns the labels of an idx1 file as uint8 [N], checking N and the range 0..9."""
  dims, payload = _read_idx(path, magic=LABEL_MAGIC, num_dims=1)
  if dims != (expected_count,):
    raise DatasetUnavailableError(
        f"mnist: {path} holds {dims[0]} labels, expected {expected_count}.")
  labels = np.frombuffer(payload, dtype=np.uint8)
  if labels.max(initial=0) > 9:
    raise DatasetUnavailableError(
        f"mnist: {path} holds label {int(labels.max())}, expected 0..9.")
  return labels


class Mnist(image_label.ImageLabelBuilder, skip_registration=True):
  """MNIST handwritten digits, 28x28x1 uint8, labels 0..9."""

  IMAGE_SHAPE = (HEIGHT, WIDTH, 1)
  LABEL_NAMES = tuple(str(d) for d in range(10))
  DESCRIPTION = "MNIST handwritten digits in the original idx order."
  HOMEPAGE = "https://yann.lecun.com/exdb/mnist/"

  name = "mnist"
  # 1.0.0, not TFDS's 3.0.1: a TF-prepared `mnist/3.0.1` in the same data dir
  # is never mistaken for ours (different record order and code).
  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "gen_jax TF-free builder from the idx files."}
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      f"Put {', '.join(RAW_FILES)} (from any MNIST mirror, e.g. {MIRRORS[1]}) "
      "in manual_dir.")

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    paths = raw_files.locate_raw_files(
        dl_manager, dataset=self.name, filenames=RAW_FILES, mirrors=MIRRORS)
    # Parse and check every file before writing anything.
    arrays = {
        split: (read_idx_images(paths[images], count), read_idx_labels(paths[labels], count))
        for split, (images, labels, count) in SPLIT_FILES.items()
    }
    return {split: self._generate_examples(*arrays[split]) for split in SPLIT_FILES}
