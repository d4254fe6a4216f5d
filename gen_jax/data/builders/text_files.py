"""Any `.txt` file, or a folder of them, as a text dataset with Tiny Shakespeare's splits
(`data.dataset='text_files'`, `data.text_path`).

The text: the file's bytes, or the bytes of every `.txt` file below the folder (any case,
hidden files and folders skipped), concatenated in the order of their relative paths with
nothing between them, like the documents of a split in `gen_jax.data.text`.

Splits, Tiny Shakespeare's rule (nanoGPT's): `train` = the first `int(0.9 * N)` characters,
`validation` = the rest, one example each (`tiny_shakespeare.split_point`). N counts
characters when every file is UTF-8; when one is not, the text can only be read as bytes
(`data.tokenizer='byte'`), so N counts bytes and the dataset's metadata names that file
(`non_utf8_file`), which the char tokenizer then reports.
"""
from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator, Mapping
from typing import Any

import tensorflow_datasets as tfds
from absl import logging

from gen_jax.data.builders import tiny_shakespeare, user_files
from gen_jax.data.errors import UserDataError

EXTENSIONS = (".txt",)


@dataclasses.dataclass(eq=False, kw_only=True)
class TextFilesConfig(tfds.core.BuilderConfig):
  """What `scan_text_path` found: the builder config of one file or folder."""
  root: str = ""
  relpaths: tuple[str, ...] = ()   # the files, relative to root, in reading order


def scan_text_path(text_path: str) -> TextFilesConfig:
  """Lists and checks the text files of `text_path` (a file, or a folder of .txt files).

  Returns:
    The builder config, named as `user_files.config_name` says (path and contents).

  Raises:
    UserDataError: the path is not set, does not exist or is no regular file or folder
      (e.g. /dev/zero), the folder holds no .txt file, or a file is empty.
  """
  if not text_path:
    raise UserDataError("data.dataset='text_files' reads --config.data.text_path=/path/to/"
                        "file.txt (or a folder of .txt files), which is not set.")
  path = user_files.expanded_path(text_path)
  if os.path.isfile(path):
    stat = os.stat(path)
    root = os.path.dirname(path)
    files = [user_files.FileEntry(os.path.basename(path), stat.st_size, stat.st_mtime_ns)]
  elif os.path.isdir(path):
    root = path
    files, aliases = user_files.walk_files(path, EXTENSIONS)
    for alias in aliases:   # each file's text once, however many links reach it
      logging.warning("text_files: %s is %s again (a symlink): read once.",
                      os.path.join(root, alias.relpath), os.path.join(root, alias.original))
    if not files:
      raise UserDataError(f"text_files: {path} holds no .txt file (in it or its subfolders).")
  elif os.path.exists(path):   # a device, a pipe, a socket: no end to read up to
    raise UserDataError(f"text_files: data.text_path={text_path} is neither a regular file "
                        "nor a folder; give a .txt file or a folder of them.")
  else:
    raise UserDataError(f"text_files: data.text_path={text_path} does not exist.")
  for entry in files:
    if entry.size == 0:
      raise UserDataError(f"text_files: {os.path.join(root, entry.relpath)} is empty: remove "
                          "it or give it text.")
  return TextFilesConfig(
      name=user_files.config_name(path, "text", files), root=root,
      relpaths=tuple(f.relpath for f in files),
      description=f"{path}: {len(files)} text file(s), split 90/10 like Tiny Shakespeare.")


def split_text(parts: list[bytes], relpaths: tuple[str, ...]
               ) -> tuple[dict[str, str | bytes], str]:
  """The train and validation text of the files' contents, and the first non-UTF-8 file.

  Returns:
    ({"train": ..., "validation": ...}, non_utf8_file): str splits cut in characters when
    every part is UTF-8 (non_utf8_file = ""), else bytes cut in bytes.
  """
  non_utf8 = ""
  for raw, relpath in zip(parts, relpaths, strict=True):
    try:
      raw.decode("utf-8")
    except UnicodeDecodeError:
      non_utf8 = relpath
      break
  text: str | bytes = b"".join(parts)
  if not non_utf8:
    text = text.decode("utf-8")
  cut = tiny_shakespeare.split_point(len(text))
  return {"train": text[:cut], "validation": text[cut:]}, non_utf8


class TextFiles(user_files.UserFilesBuilder, skip_registration=True):
  """The text of `data.text_path` as two one-example splits (module docstring)."""

  TEXT_FEATURE = "text"  # the feature the text pipeline reads

  name = "text_files"
  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Files concatenated by path; Tiny Shakespeare's 90/10 split."}
  CONFIG_FIELDS = ("text_path",)

  @classmethod
  def make_config(cls, options: Mapping[str, Any]) -> TextFilesConfig:
    return scan_text_path(options.get("text_path", ""))

  @property
  def user_config(self) -> TextFilesConfig:
    config = super().user_config
    if not isinstance(config, TextFilesConfig):
      raise TypeError(f"text_files: a TextFilesConfig was expected, got {type(config)}.")
    return config

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description=self.user_config.description,
        features=tfds.features.FeaturesDict({self.TEXT_FEATURE: tfds.features.Text()}),
        # non_utf8_file: the first file that is not UTF-8 ("" when all are).
        metadata=tfds.core.MetadataDict(),
        disable_shuffling=True,
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    del dl_manager  # the files are the user's, on this machine
    self.warn_about_older_copies()
    config = self.user_config
    parts = []
    for relpath in config.relpaths:
      path = os.path.join(config.root, relpath)
      try:
        with open(path, "rb") as f:
          parts.append(f.read())
      except OSError as err:
        raise UserDataError(f"text_files: cannot read {path} ({err.strerror}).") from None
    splits, non_utf8 = split_text(parts, config.relpaths)
    metadata = self.info.metadata
    if metadata is None:
      raise ValueError("text_files: the dataset info has no metadata dict (`_info` makes one).")
    metadata["non_utf8_file"] = os.path.join(config.root, non_utf8) if non_utf8 else ""
    return {split: self._generate_examples(text) for split, text in splits.items()}

  def _generate_examples(self, text: str | bytes) -> Iterator:
    yield 0, {self.TEXT_FEATURE: text}
