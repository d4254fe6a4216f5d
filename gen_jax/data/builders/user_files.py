"""The base of builders of the user's own files (image_folder, text_files): one prepared copy
per folder, settings and contents (no paper: plumbing).

Such a builder reads fields of `config.data` (its `CONFIG_FIELDS`, e.g. `image_folder`,
`image_size`, `channels`), scans the files once per process, and names a TFDS builder config
after what it found:

    <folder name>_<settings>_<key>_<fingerprint>
      key:         sha256 of the absolute path and the settings (two folders never share a copy)
      fingerprint: sha256 of every file's relative path, size and mtime (a changed file, an
                   added or removed one gives a new name, so the folder is prepared again)

The copy lives in `<data_dir>/<builder name>/<config name>/1.0.0/`. When a folder is
prepared again because it changed, the older copies of the same folder and settings are
named in a warning (they are never deleted here: another run may still read one).
"""
from __future__ import annotations

import dataclasses
import hashlib
import os
import re
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import tensorflow_datasets as tfds
from absl import logging
from etils import epath

from gen_jax.data.errors import UserDataError


@dataclasses.dataclass(frozen=True)
class FileEntry:
  """One file of the user's data: its path relative to the root, size and mtime (ns)."""
  relpath: str
  size: int
  mtime_ns: int


def is_hidden(name: str) -> bool:
  """Dot-files and dot-folders (.DS_Store, .ipynb_checkpoints, .git) are never data."""
  return name.startswith(".")


@dataclasses.dataclass(frozen=True)
class Alias:
  """A second path to a file or folder already listed (through a symlink): `relpath`, which
  is not read, names the same thing as `original`."""
  original: str
  relpath: str
  is_dir: bool


def walk_files(root: str, extensions: Sequence[str]) -> tuple[list[FileEntry], list[Alias]]:
  """Every file under `root` whose name ends in one of `extensions` (any case), each once,
  and the second paths that were not followed.

  Hidden files and folders are skipped, symlinks followed, and the files sorted by relative
  path ('/'-separated); a folder or file met again under another path (same st_dev,
  st_ino: a symlink loop, or a link to something listed elsewhere) is not read again but
  becomes an `Alias` of its first path (in sorted walk order), for the caller to judge.

  Raises:
    UserDataError: a file cannot be stat'ed (e.g. a broken symlink), naming it.
  """
  entries, aliases = [], []
  seen_dirs: dict[tuple[int, int], str] = {}
  seen_files: dict[tuple[int, int], str] = {}

  def relative(path: str) -> str:
    rel = os.path.relpath(path, root).replace(os.sep, "/")
    return "" if rel == "." else rel

  def walk(folder: str) -> None:
    with os.scandir(folder) as scan:
      items = sorted(scan, key=lambda e: e.name)
    for item in items:
      if is_hidden(item.name):
        continue
      try:
        stat = os.stat(item.path)
      except OSError as err:
        if not item.name.lower().endswith(tuple(extensions)) and not item.is_symlink():
          continue
        raise UserDataError(f"cannot read {item.path} ({err.strerror}); remove it or fix the "
                            "link.") from None
      key = (stat.st_dev, stat.st_ino)
      if item.is_dir():
        if key in seen_dirs:
          aliases.append(Alias(seen_dirs[key], relative(item.path), True))
          continue
        seen_dirs[key] = relative(item.path)
        walk(item.path)
      elif item.name.lower().endswith(tuple(extensions)):
        if key in seen_files:
          aliases.append(Alias(seen_files[key], relative(item.path), False))
          continue
        seen_files[key] = relative(item.path)
        entries.append(FileEntry(relative(item.path), stat.st_size,
                                            stat.st_mtime_ns))

  root_stat = os.stat(root)
  seen_dirs[(root_stat.st_dev, root_stat.st_ino)] = ""
  walk(root)
  return sorted(entries, key=lambda e: e.relpath), aliases


def sha256_hex(*parts: Any) -> str:
  """sha256 of the repr of `parts` (strings, numbers, tuples of FileEntry)."""
  return hashlib.sha256(repr(parts).encode("utf-8")).hexdigest()


def config_name(root: str, settings: str, files: Sequence[FileEntry]) -> str:
  """`<folder name>_<settings>_<key>_<fingerprint>` (see the module docstring)."""
  slug = re.sub(r"[^a-z0-9]+", "_", os.path.basename(root.rstrip("/")).lower()).strip("_")
  key = sha256_hex(os.path.abspath(root), settings)[:12]
  fingerprint = sha256_hex(tuple(files))[:12]
  return f"{slug[:40] or 'root'}_{settings}_{key}_{fingerprint}"


def expanded_path(path: str) -> str:
  """`~` expanded, made absolute (the key of a prepared copy is the absolute path)."""
  return os.path.abspath(os.path.expanduser(path))


class UserFilesBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """A builder whose data and settings come from `config.data`, via a builder config.

  Abstract, so TFDS never registers it. A subclass sets `CONFIG_FIELDS` and writes
  `make_config(options)`, which checks the files and returns the builder config (its
  `name` as `config_name` makes it); `sources.prepare_builder` passes the config by name.
  """

  CONFIG_FIELDS: ClassVar[tuple[str, ...]]   # the config.data fields the builder reads
  _made: ClassVar[dict[str, tfds.core.BuilderConfig]]   # configs made in this process

  def __init_subclass__(cls, **kwargs):
    super().__init_subclass__(**kwargs)
    cls._made = {}

  @classmethod
  def make_config(cls, options: Mapping[str, Any]) -> tfds.core.BuilderConfig:
    """Scans and checks the files `options` (the CONFIG_FIELDS' values) name.

    Raises:
      UserDataError: the files cannot be used (the message names the file or folder).
    """
    raise NotImplementedError

  @classmethod
  def config_for(cls, options: Mapping[str, Any]) -> str:
    """`make_config(options)`, remembered by name; returns the name to build with."""
    config = cls.make_config(options)
    cls._made[config.name] = config
    return config.name

  @classmethod
  def get_builder_config(cls, name: str, version=None) -> tfds.core.BuilderConfig | None:
    """TFDS's lookup of a config by name: ours are made from the data config, not listed
    in BUILDER_CONFIGS (a config object passed directly would log a warning each time)."""
    return cls._made.get(name) or super().get_builder_config(name, version)

  @property
  def user_config(self) -> tfds.core.BuilderConfig:
    """The builder config `make_config` made, which this builder was created with.

    Raises:
      ValueError: the builder was created without one (`config_for` gives its name).
    """
    config = self.builder_config
    if config is None:
      raise ValueError(f"{self.name}: create it with the config name `config_for` returns.")
    return config

  def warn_about_older_copies(self) -> None:
    """Names the prepared copies of the same folder and settings with other contents."""
    name = self.user_config.name
    prefix = name.rsplit("_", 1)[0] + "_"
    parent = epath.Path(self.data_dir_root) / self.name
    if not parent.is_dir():
      return
    older = sorted(str(p) for p in parent.iterdir()   # (an attempt that failed left none)
                   if p.name.startswith(prefix) and p.name != name
                   and (p / str(self.VERSION)).is_dir())
    if older:
      logging.warning("%s: the files changed since they were prepared in %s; preparing them "
                      "again in %s (delete the older copies to free their space).",
                      self.name, ", ".join(older), parent / name)
