"""Tiny Shakespeare (Karpathy 2015, char-rnn) from the canonical `input.txt`, without TensorFlow.

The file is 1,115,394 characters (65 distinct) of Shakespeare's plays. It is
downloaded from char-rnn's repository when online, or read from `manual_dir`
(a folder holding `input.txt`) when one is given.

Splits, cut at `int(0.9 * len(text))` like nanoGPT (TFDS's own builder cuts
differently, into train/validation/test):
  * `train`      = the first 90% of the characters (1,003,854),
  * `validation` = the last 10% (111,540).
Each split is ONE example, `{"text": the split's characters}`; the text pipeline
(`gen_jax.data.text`) cuts it into windows.

The file's sha256 is checked, strictly: a different file is rejected, never
prepared under this name, so that `tiny_shakespeare/1.0.0` in a data dir always
means the same characters and losses compare across machines and papers. To
train on other text, prepare it as another TFDS dataset with a text feature
(see `gen_jax.data.text`). Tests replace `SHA256` with the hash of their own file.
"""
from __future__ import annotations

import hashlib
from collections.abc import Iterator

import tensorflow_datasets as tfds
from etils import epath

from gen_jax.data.builders import raw_files
from gen_jax.data.errors import DatasetUnavailableError

INPUT_FILE = "input.txt"
MIRRORS = ("https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/",)
SHA256 = "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"
NUM_CHARS = 1_115_394  # of the canonical file; 65 distinct
TRAIN_FRACTION = 0.9


def split_point(num_chars: int) -> int:
  """Index of the first validation character: nanoGPT's `int(0.9 * len(text))`."""
  return int(TRAIN_FRACTION * num_chars)


def read_input_text(path: epath.Path) -> str:
  """Reads `input.txt`, checking its sha256 against `SHA256`.

  Raises:
    DatasetUnavailableError: the file differs from the canonical one (a partial
      download, or another text), or is not UTF-8.
  """
  raw = path.read_bytes()
  digest = hashlib.sha256(raw).hexdigest()
  if digest != SHA256:
    raise DatasetUnavailableError(
        f"tiny_shakespeare: {path} ({len(raw):,} bytes) has sha256 {digest}, expected "
        f"{SHA256} (the canonical {NUM_CHARS:,}-character file). Replace it with "
        f"{MIRRORS[0]}{INPUT_FILE}. To train on other text, prepare it as another "
        "TFDS dataset with a text feature instead.")
  try:
    return raw.decode("utf-8")
  except UnicodeDecodeError as err:
    raise DatasetUnavailableError(f"tiny_shakespeare: {path} is not UTF-8 ({err}).") from None


class TinyShakespeare(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Tiny Shakespeare as two one-example splits of raw text (no IMAGE_SHAPE: it is text)."""

  TEXT_FEATURE = "text"  # the feature the text pipeline reads

  name = "tiny_shakespeare"
  VERSION = tfds.core.Version("1.0.0")  # not TFDS's: different splits, never confused
  RELEASE_NOTES = {"1.0.0": "gen_jax TF-free builder, nanoGPT's 90/10 split."}
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      f"Put {INPUT_FILE} (from {MIRRORS[0]}{INPUT_FILE}, sha256 {SHA256}) in manual_dir.")

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description="Tiny Shakespeare: the first 90% of input.txt for train, the rest "
                    "for validation, one example per split.",
        features=tfds.features.FeaturesDict({self.TEXT_FEATURE: tfds.features.Text()}),
        homepage="https://github.com/karpathy/char-rnn",
        disable_shuffling=True,
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    path = raw_files.locate_raw_files(
        dl_manager, dataset=self.name, filenames=(INPUT_FILE,), mirrors=MIRRORS)[INPUT_FILE]
    text = read_input_text(path)  # checked before anything is written
    cut = split_point(len(text))
    return {
        "train": self._generate_examples(text[:cut]),
        "validation": self._generate_examples(text[cut:]),
    }

  def _generate_examples(self, text: str) -> Iterator:
    yield 0, {self.TEXT_FEATURE: text}
