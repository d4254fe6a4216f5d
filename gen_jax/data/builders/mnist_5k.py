"""5,000 real MNIST digits (LeCun et al. 1998) shipped inside gen_jax: an offline,
download-free default dataset.

`gen_jax/data/assets/mnist_5k.npz` holds the first 500 images of each digit class of the
MNIST training set (`train-images-idx3-ubyte`, in file order; checked against the original
idx files when the asset was made) as `images` uint8 [5000, 28, 28, 1] and `labels` uint8
[5000], sorted by class (500 zeros, then 500 ones, ...), and `mnist_train_index`, each
row's index in the MNIST training set. MNIST is by Yann LeCun, Corinna Cortes and
Christopher J. C. Burges (http://yann.lecun.com/exdb/mnist/), available under CC BY-SA 3.0.

Taking the first 4,500 rows as `train` would leave `test` all nines, so the split is per
class instead:

  * `train` (4,500) = the first 450 rows of each class,
  * `test` (500)    = the last 50 rows of each class,

each interleaved across classes (0, 1, ..., 9, 0, 1, ...) so that every prefix of
a split is class-balanced.
"""
from __future__ import annotations

import hashlib
import importlib.resources

import numpy as np
import tensorflow_datasets as tfds

from gen_jax.data.builders import image_label
from gen_jax.data.errors import DatasetUnavailableError

NUM_ROWS = 5000
NUM_CLASSES = 10
TRAIN_PER_CLASS = 450  # of the 500 rows per class; the other 50 are test
HEIGHT = WIDTH = 28
ASSET_SHA256 = "3c7dfbae0f66539aef1338fec39b44d7df2bb4a90b0ed509b9ea7290c61a6c21"
_MODULE_DOC = __doc__ or ""  # the dataset's description (in a class body, __doc__ is the class's)


def asset_path():
  """The `importlib.resources` path of the packaged `mnist_5k.npz`."""
  return importlib.resources.files("gen_jax.data") / "assets" / "mnist_5k.npz"


def read_mnist_5k() -> tuple[np.ndarray, np.ndarray]:
  """Reads and checks the packaged digits.

  Returns:
    (images uint8 [5000, 28, 28, 1], labels uint8 [5000]) in the file's order.

  Raises:
    DatasetUnavailableError: the file is missing or its checksum or contents are wrong.
  """
  path = asset_path()
  try:
    raw = path.read_bytes()
  except OSError as err:
    raise DatasetUnavailableError(f"mnist_5k: cannot read {path} ({err}); reinstall gen_jax "
                                  "(pip install -e .).") from None
  if hashlib.sha256(raw).hexdigest() != ASSET_SHA256:
    raise DatasetUnavailableError(f"mnist_5k: {path} does not match its sha256 checksum "
                                  "(damaged file?); reinstall gen_jax.")
  with importlib.resources.as_file(path) as local_path, np.load(local_path) as arrays:
    images, labels = arrays["images"], arrays["labels"]
  if images.shape != (NUM_ROWS, HEIGHT, WIDTH, 1) or labels.shape != (NUM_ROWS,):
    raise DatasetUnavailableError(f"mnist_5k: {path} holds arrays of shapes {images.shape}, "
                                  f"{labels.shape}.")
  return images.astype(np.uint8), labels.astype(np.uint8)


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
  """5,000 MNIST digits shipped with gen_jax (no download): train 4,500 / test 500."""

  IMAGE_SHAPE = (HEIGHT, WIDTH, 1)
  LABEL_NAMES = tuple(str(d) for d in range(NUM_CLASSES))
  DESCRIPTION = _MODULE_DOC
  HOMEPAGE = "http://yann.lecun.com/exdb/mnist/"

  name = "mnist_5k"
  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Per-class 450/50 split of the first 500 training digits per class."}

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    del dl_manager  # the data ships with gen_jax
    images, labels = read_mnist_5k()
    return {
        split: self._generate_examples(images[rows], labels[rows])
        for split, rows in split_row_indices(labels).items()
    }
