"""CIFAR-10 (Krizhevsky 2009) from the binary version, without TensorFlow.

Each record of a `.bin` file is 1 label byte followed by 3072 pixel bytes in
channel-major order (1024 red, 1024 green, 1024 blue, each 32x32 row-major).
Splits: `train` (data_batch_1..5, 50,000) and `test` (test_batch, 10,000), in
the files' order. The manual dir may hold `cifar-10-binary.tar.gz` or the
extracted `cifar-10-batches-bin/` folder.
"""
from __future__ import annotations

import tarfile

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from gen_jax.data.builders import image_label, raw_files
from gen_jax.data.errors import DatasetUnavailableError

TARBALL = "cifar-10-binary.tar.gz"
FOLDER = "cifar-10-batches-bin"
MIRRORS = ("https://www.cs.toronto.edu/~kriz/",)
HEIGHT = WIDTH = 32
CHANNELS = 3
RECORD_BYTES = 1 + CHANNELS * HEIGHT * WIDTH  # 3073
RECORDS_PER_FILE = 10_000
SPLIT_FILES = {
    "train": tuple(f"data_batch_{i}.bin" for i in range(1, 6)),
    "test": ("test_batch.bin",),
}


def parse_batch_file(data: bytes, source: str) -> tuple[np.ndarray, np.ndarray]:
  """Parses one CIFAR-10 `.bin` file.

  Args:
    data: the file's bytes.
    source: where they came from, for error messages.

  Returns:
    (images uint8 [10000, 32, 32, 3], labels uint8 [10000]).

  Raises:
    DatasetUnavailableError: wrong size, or a label outside 0..9.
  """
  if len(data) != RECORDS_PER_FILE * RECORD_BYTES:
    raise DatasetUnavailableError(
        f"cifar10: {source} has {len(data)} bytes, expected "
        f"{RECORDS_PER_FILE} records x {RECORD_BYTES} = {RECORDS_PER_FILE * RECORD_BYTES} "
        "(truncated or corrupted file).")
  records = np.frombuffer(data, dtype=np.uint8).reshape(RECORDS_PER_FILE, RECORD_BYTES)
  labels = records[:, 0]
  if labels.max() > 9:
    raise DatasetUnavailableError(
        f"cifar10: {source} holds label {int(labels.max())}, expected 0..9.")
  images_NxCxHxW = records[:, 1:].reshape(RECORDS_PER_FILE, CHANNELS, HEIGHT, WIDTH)
  return images_NxCxHxW.transpose(0, 2, 3, 1), labels


def _member_bytes(archive: tarfile.TarFile, member: tarfile.TarInfo) -> bytes:
  """The contents of a regular file in `archive` (`extractfile` gives None for other kinds)."""
  file = archive.extractfile(member)
  if file is None:
    raise DatasetUnavailableError(f"cifar10: {member.name} in the tarball is not a file.")
  return file.read()


def read_batch_files(root: epath.Path) -> dict[str, bytes]:
  """Reads every `.bin` file from a tarball or an extracted folder under `root`.

  Args:
    root: the tarball itself, or a folder holding `cifar-10-binary.tar.gz`,
      `cifar-10-batches-bin/`, or the `.bin` files themselves.

  Returns:
    A dict from `.bin` file name to its bytes.
  """
  names = [name for files in SPLIT_FILES.values() for name in files]
  tarball = root if root.is_file() else root / TARBALL
  if tarball.is_file():
    try:
      with tarfile.open(tarball, mode="r:gz") as archive:
        members = {m.name.rsplit("/", 1)[-1]: m for m in archive.getmembers() if m.isfile()}
        missing = [name for name in names if name not in members]
        if missing:
          raise DatasetUnavailableError(f"cifar10: {tarball} lacks {', '.join(missing)}.")
        return {name: _member_bytes(archive, members[name]) for name in names}
    except (tarfile.TarError, OSError, EOFError) as err:
      raise DatasetUnavailableError(
          f"cifar10: {tarball} is not a readable .tar.gz ({err}).") from None
  folder = root / FOLDER if (root / FOLDER).is_dir() else root
  missing = [name for name in names if not (folder / name).is_file()]
  if missing:
    raise DatasetUnavailableError(
        f"cifar10: manual_dir={root} holds neither {TARBALL} nor {FOLDER}/ with "
        f"{', '.join(missing)}. Put {TARBALL} (from {MIRRORS[0]}{TARBALL}) there and "
        f"set --config.data.manual_dir=/path/with/{TARBALL}.")
  return {name: (folder / name).read_bytes() for name in names}


class Cifar10(image_label.ImageLabelBuilder, skip_registration=True):
  """CIFAR-10 natural images, 32x32x3 uint8, 10 classes."""

  IMAGE_SHAPE = (HEIGHT, WIDTH, CHANNELS)
  LABEL_NAMES = ("airplane", "automobile", "bird", "cat", "deer",
                 "dog", "frog", "horse", "ship", "truck")
  DESCRIPTION = "CIFAR-10 in the binary files' order."
  HOMEPAGE = "https://www.cs.toronto.edu/~kriz/cifar.html"

  name = "cifar10"
  VERSION = tfds.core.Version("1.0.0")  # not TFDS's 3.0.2: never confused with it
  RELEASE_NOTES = {"1.0.0": "gen_jax TF-free builder from the binary version."}
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      f"Put {TARBALL} (from {MIRRORS[0]}{TARBALL}) or its extracted {FOLDER}/ "
      "folder in manual_dir.")

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    manual_dir = raw_files.manual_dir_with_files(dl_manager)
    if manual_dir is not None:
      root = manual_dir
    else:
      root = raw_files.locate_raw_files(
          dl_manager, dataset=self.name, filenames=(TARBALL,), mirrors=MIRRORS)[TARBALL]
    file_bytes = read_batch_files(root)
    # Parse and check every file before writing anything.
    parsed = {name: parse_batch_file(data, f"{root}:{name}") for name, data in file_bytes.items()}
    return {
        split: self._generate_examples(
            np.concatenate([parsed[name][0] for name in files]),
            np.concatenate([parsed[name][1] for name in files]))
        for split, files in SPLIT_FILES.items()
    }
