"""Any folder of PNG/JPEG images as a labelled image dataset, resized and centre-cropped
(`data.dataset='image_folder'`, `data.image_folder`, `data.image_size`, `data.channels`).

Labels: the sorted names of the folder's subfolders are the classes (label i = the i-th
name; images anywhere below a class subfolder belong to it). A folder without subfolders
is one class, label 0.

Splits:
  * a folder holding both `train/` and `test/` subfolders: those are the splits (each
    with the same class subfolders, or both without any);
  * otherwise 1 image in 10 of each class is held out as `test` (the `n // 10` images
    of a class with the smallest sha256 of their relative path: deterministic, blind to
    file names, and an added file moves at most one other), the rest is `train`.
Each split is written in the order of that hash, so classes are mixed and every prefix of
the test split (what evaluations read) is a sample of it.

Symlinks are followed, but no folder is entered twice and each file is read once (both
known by their device and inode): a link back to a folder above it (a loop) is skipped with
a warning, and a file or folder reachable by two paths is one image, whose two places must
be in the same split and class (otherwise an error names both).

Each image: EXIF orientation applied, converted to `channels` (1 grey 'L', 2 'LA', 3 'RGB',
4 'RGBA'; 0 = the files' own count, which must then be the same for every file; 16-bit
greys are scaled to 8 bits), its shorter side resized to `image_size` (bicubic, which
Pillow antialiases when shrinking), and the centre `image_size` x `image_size` square
cropped: the preprocessing of ADM's `center_crop_arr` (Dhariwal & Nichol 2021,
guided-diffusion `image_datasets.py`). JPEGs are decoded at a reduced DCT scale first when
they are at least twice as large as needed (Pillow's `draft`), which is much faster on
photos and only changes the filter that shrinks them.
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import os
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import tensorflow_datasets as tfds
from absl import logging
from PIL import Image, ImageOps

from gen_jax.data.builders import image_label, user_files
from gen_jax.data.errors import UserDataError

EXTENSIONS = (".png", ".jpg", ".jpeg")
CHANNEL_MODES = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}
HOLD_OUT_EVERY = 10                           # 1 image in 10 of each class -> test
SPLIT_FOLDERS = ("train", "test")
_SIXTEEN_BIT_MODES = ("I", "I;16", "I;16L", "I;16B", "I;16N")   # greys up to 65535
_NATIVE_CHANNELS = {"1": 1, "L": 1, "F": 1, **{m: 1 for m in _SIXTEEN_BIT_MODES},
                    "LA": 2, "La": 2, "RGB": 3, "YCbCr": 3, "CMYK": 3, "LAB": 3, "HSV": 3,
                    "RGBA": 4, "RGBa": 4, "PA": 4}
_DECODE_BATCH = 256   # images decoded in parallel threads at a time while preparing


# ---------------------------------------------------------------- one image

def native_channels(image: Image.Image) -> int:
  """The channel count a file has: 1 grey, 2 grey + alpha, 3 colour, 4 colour + alpha
  (a palette image has 4 when it declares a transparent colour)."""
  if image.mode == "P":
    return 4 if "transparency" in image.info else 3
  return _NATIVE_CHANNELS.get(image.mode, len(image.getbands()))


def to_channels(image: Image.Image, channels: int) -> Image.Image:
  """`image` in the mode of `channels` (CHANNEL_MODES); 16-bit greys scaled by 255/65535."""
  if image.mode in _SIXTEEN_BIT_MODES:   # Pillow's convert clips these to 255
    grey = np.asarray(image, np.float64) * (255.0 / 65535.0)
    image = Image.fromarray(np.clip(np.rint(grey), 0, 255).astype(np.uint8), "L")
  mode = CHANNEL_MODES[channels]
  if image.mode == mode:
    return image
  if image.mode == "P" or image.mode not in ("1", "L", "LA", "RGB", "RGBA"):
    image = image.convert("RGBA" if native_channels(image) in (2, 4) else "RGB")
  return image.convert(mode)


def resize_and_center_crop(image: Image.Image, size: int) -> Image.Image:
  """Shorter side resized to `size` (bicubic; untouched when it already is), then the
  centre `size` x `size` square ((long - size) // 2 pixels cut before it, the rest after)."""
  width, height = image.size
  scale = size / min(width, height)
  new_width, new_height = max(size, round(width * scale)), max(size, round(height * scale))
  if (new_width, new_height) != (width, height):
    image = image.resize((new_width, new_height), Image.Resampling.BICUBIC)
  left, top = (new_width - size) // 2, (new_height - size) // 2
  return image.crop((left, top, left + size, top + size))


def load_image(path: str, size: int, channels: int) -> np.ndarray:
  """Decodes one file and returns it as uint8 [size, size, channels] (module docstring).

  Raises:
    UserDataError: the file cannot be decoded (not an image, truncated, too large).
  """
  try:
    with Image.open(path) as image:
      width, height = image.size
      if image.format == "JPEG" and min(width, height) >= 2 * size:
        scale = size / min(width, height)
        image.draft(None, (int(np.ceil(width * scale)), int(np.ceil(height * scale))))
      image = ImageOps.exif_transpose(image)   # also loads the pixels
      image = resize_and_center_crop(to_channels(image, channels), size)
      return np.asarray(image, np.uint8).reshape(size, size, channels)
  except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
    raise UserDataError(f"image_folder: cannot read the image {path} ({err}). Delete or "
                        "replace it.") from None


# ---------------------------------------------------------------- the folder

@dataclasses.dataclass(eq=False, kw_only=True)
class ImageFolderConfig(tfds.core.BuilderConfig):
  """What `scan_folder` found: the builder config of one folder at one size."""
  root: str = ""
  image_size: int = 0
  channels: int = 0
  label_names: tuple[str, ...] = ()
  # (relative path, label, split) of every image, in the order each split is written.
  examples: tuple[tuple[str, int, str], ...] = ()


def _check_settings(folder: str, image_size: Any, channels: Any) -> None:
  if not folder:
    raise UserDataError("data.dataset='image_folder' reads the images of "
                        "--config.data.image_folder=/path/to/images, which is not set.")
  if not isinstance(image_size, int) or image_size < 1:
    raise UserDataError(f"data.image_size={image_size!r}: give the side, in pixels, of the "
                        "square images to train on (e.g. 32).")
  if channels not in (0, *CHANNEL_MODES):
    raise UserDataError(f"data.channels={channels!r}: expected 1 (grey), 3 (RGB), 4 (RGBA), "
                        "2 (grey + alpha) or 0 (the files' own count).")


def _subfolders(path: str) -> list[str]:
  return sorted(e.name for e in os.scandir(path)
                if e.is_dir() and not user_files.is_hidden(e.name))


def _labelled(root: str, prefix: str, files: list[user_files.FileEntry],
              classes: list[str] | None = None) -> tuple[list[str], list[tuple[str, int]]]:
  """(class names, [(relative path, label)]) of the files under `root/prefix`.

  `classes`: those of the train/ folder, which a test/ folder's subfolders must be among
  (labels are their indices there); None: this folder's own subfolders are the classes.
  """
  folder = os.path.join(root, prefix)
  names = _subfolders(folder)
  if classes is None:
    classes = names
  elif set(names) - set(classes) or bool(names) != bool(classes):
    raise UserDataError(
        f"image_folder: {folder} has the class subfolders {names}, "
        f"{os.path.join(root, 'train')} has {classes}: give test/ class subfolders "
        "among train/'s (or neither any).")
  base = f"{prefix}/" if prefix else ""
  mine = [f for f in files if f.relpath.startswith(base)]
  if not names:
    return [os.path.basename(root) or "images"], [(f.relpath, 0) for f in mine]
  by_class: dict[str, list[str]] = {name: [] for name in names}
  for entry in mine:
    top, _, rest = entry.relpath[len(base):].partition("/")
    if not rest:
      raise UserDataError(
          f"image_folder: {os.path.join(root, entry.relpath)} lies next to the class "
          f"subfolders of {folder} ({', '.join(names[:5])}{', ...' if len(names) > 5 else ''})"
          ": move it into one of them, or move every image out of the subfolders.")
    by_class[top].append(entry.relpath)
  for name, paths in by_class.items():
    if not paths:
      raise UserDataError(
          f"image_folder: the class folder {os.path.join(folder, name)} holds no PNG or JPEG "
          "files: add images to it or remove it (each subfolder is a class).")
  return classes, [(path, classes.index(name)) for name in names for path in by_class[name]]


def check_aliases(root: str, aliases: list[user_files.Alias], depth: int) -> None:
  """Refuses a file or folder reachable by two paths in different places (split and class:
  the first `depth` path components); skips, with a warning, a link to a folder above it.

  Raises:
    UserDataError: naming both paths.
  """
  for alias in aliases:
    if alias.is_dir and (alias.original == "" or alias.relpath.startswith(alias.original + "/")):
      logging.warning("image_folder: %s links to %s, a folder above it (a loop): not followed.",
                      os.path.join(root, alias.relpath), os.path.join(root, alias.original))
      continue
    original_place = tuple(alias.original.split("/")[:depth])
    alias_place = tuple(alias.relpath.split("/")[:depth])
    if alias.is_dir:   # a folder shallower than a class reaches several places
      short = min(len(alias.original.split("/")), len(alias.relpath.split("/")))
      differ = short < depth or original_place != alias_place
    else:
      differ = original_place != alias_place
    if differ:
      what = "folder" if alias.is_dir else "image"
      raise UserDataError(
          f"image_folder: {os.path.join(root, alias.original)} and "
          f"{os.path.join(root, alias.relpath)} are the same {what} (a symlink) in two "
          "places (split or class): one image has one label and one split. Remove one of the "
          "two.")


def _hash_order(relpath: str) -> str:
  return hashlib.sha256(relpath.encode("utf-8")).hexdigest()


def split_examples(root: str, files: list[user_files.FileEntry],
                   aliases: Sequence[user_files.Alias] = ()
                   ) -> tuple[list[str], list[tuple[str, int, str]]]:
  """The classes and the (relative path, label, split) of every image (module docstring).

  Args:
    root: the folder.
    files: its images (`user_files.walk_files`).
    aliases: second paths of files and folders in `files` (`user_files.walk_files`).

  Raises:
    UserDataError: images outside train/ and test/ next to them, a class folder without
      images, test/ classes unlike train/'s, an empty split, or one file in two places.
  """
  split_layout = all(os.path.isdir(os.path.join(root, s)) for s in SPLIT_FOLDERS)
  has_classes = bool(_subfolders(os.path.join(root, "train") if split_layout else root))
  check_aliases(root, list(aliases), int(split_layout) + int(has_classes))
  if split_layout:
    outside = [f.relpath for f in files if f.relpath.split("/", 1)[0] not in SPLIT_FOLDERS]
    if outside:
      raise UserDataError(
          f"image_folder: {os.path.join(root, outside[0])} lies outside the train/ and test/ "
          f"subfolders of {root}, which are the splits: move it into one of them.")
    classes, train = _labelled(root, "train", files, None)
    _, test = _labelled(root, "test", files, classes if _subfolders(
        os.path.join(root, "train")) else [])
    examples = [(p, label, "train") for p, label in train] + [
        (p, label, "test") for p, label in test]
  else:
    classes, labelled = _labelled(root, "", files, None)
    by_label: dict[int, list[str]] = {}
    for path, label in labelled:
      by_label.setdefault(label, []).append(path)
    examples = []
    for label, paths in by_label.items():
      paths = sorted(paths, key=_hash_order)
      num_test = len(paths) // HOLD_OUT_EVERY
      examples += [(p, label, "test") for p in paths[:num_test]]
      examples += [(p, label, "train") for p in paths[num_test:]]
  for split in SPLIT_FOLDERS:
    if not any(s == split for _, _, s in examples):
      raise UserDataError(
          f"image_folder: the {split} split of {root} is empty: the test split holds 1 image "
          f"in {HOLD_OUT_EVERY} of each class, so give a class at least {HOLD_OUT_EVERY} "
          "images, or put the images in train/ and test/ subfolders.")
  return classes, sorted(examples, key=lambda e: (e[2], _hash_order(e[0])))


@functools.lru_cache(maxsize=8)
def files_channels(root: str, files: tuple[user_files.FileEntry, ...]) -> int:
  """The channel count every file has (read from the headers, once per process and
  folder contents).

  Raises:
    UserDataError: a file is not an image, or two files differ (naming both).
  """
  first = None
  for entry in files:
    path = os.path.join(root, entry.relpath)
    try:
      with Image.open(path) as image:
        count, mode = native_channels(image), image.mode
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
      raise UserDataError(f"image_folder: cannot read the image {path} ({err}). Delete or "
                          "replace it.") from None
    if first is None:
      first = (path, count, mode)
    elif count != first[1]:
      raise UserDataError(
          f"image_folder: the images have different channel counts: {first[0]} has "
          f"{first[1]} ({first[2]}), {path} has {count} ({mode}). Set "
          "--config.data.channels to convert every image: 3 (RGB), 1 (grey) or 4 (RGBA).")
  if first is None:
    raise UserDataError(f"image_folder: no images in {root}.")
  return first[1]


def scan_folder(folder: str, image_size: int, channels: int) -> ImageFolderConfig:
  """Lists and checks the images of `folder` and returns the builder config preparing them.

  Args:
    folder: the data.image_folder path (`~` allowed).
    image_size: side of the square images, in pixels.
    channels: 1, 2, 3 or 4, or 0 = the files' own count (each file's header is read).

  Returns:
    The config, named as `user_files.config_name` says (path, size, channels, contents).

  Raises:
    UserDataError: bad settings, a missing or empty folder, images that cannot be split or
      labelled as described in the module docstring, or (channels=0) unreadable headers or
      mixed channel counts.
  """
  _check_settings(folder, image_size, channels)
  root = user_files.expanded_path(folder)
  if not os.path.isdir(root):
    raise UserDataError(f"image_folder: data.image_folder={folder} is not a folder.")
  files, aliases = user_files.walk_files(root, EXTENSIONS)
  if not files:
    raise UserDataError(f"image_folder: {root} holds no PNG or JPEG files (.png, .jpg, "
                        ".jpeg, in it or its subfolders).")
  classes, examples = split_examples(root, files, aliases)
  if channels == 0:
    channels = files_channels(root, tuple(files))
  name = user_files.config_name(root, f"{image_size}px_{channels}ch", files)
  return ImageFolderConfig(
      name=name, root=root, image_size=image_size, channels=channels,
      label_names=tuple(classes), examples=tuple(examples),
      description=f"{root}: {len(files)} images as {image_size}x{image_size}x{channels}.")


class ImageFolder(user_files.UserFilesBuilder, skip_registration=True):
  """The images of `data.image_folder`: uint8 [image_size, image_size, channels], a label
  per class subfolder; train / test splits (module docstring)."""

  name = "image_folder"
  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Shorter side resized, centre crop; 1 in 10 of each class held out."}
  CONFIG_FIELDS = ("image_folder", "image_size", "channels")

  @classmethod
  def make_config(cls, options: Mapping[str, Any]) -> ImageFolderConfig:
    return scan_folder(options.get("image_folder", ""), options.get("image_size", 0),
                       options.get("channels", 0))

  @classmethod
  def static_image_shape(cls, options: Mapping[str, Any]) -> tuple[int, int, int] | None:
    """(H, W, C) from the settings alone when the channel count is given, else None."""
    size, channels = options.get("image_size", 0), options.get("channels", 0)
    _check_settings(options.get("image_folder", ""), size, channels)
    return (size, size, channels) if channels else None

  @property
  def folder_config(self) -> ImageFolderConfig:
    """`builder_config`, which tfds types as any BuilderConfig or None."""
    config = self.builder_config
    if not isinstance(config, ImageFolderConfig):
      raise TypeError(f"image_folder is built from an ImageFolderConfig, not {config!r}.")
    return config

  def _info(self) -> tfds.core.DatasetInfo:
    config = self.folder_config
    shape = (config.image_size, config.image_size, config.channels)
    return tfds.core.DatasetInfo(
        builder=self,
        description=config.description,
        features=image_label.image_label_features(shape=shape, label_names=config.label_names),
        supervised_keys=("image", "label"),
        disable_shuffling=True,  # keep the written order; grain shuffles at read time
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    del dl_manager  # the images are the user's, on this machine
    self.warn_about_older_copies()
    return {split: self._generate_examples(split) for split in SPLIT_FOLDERS}

  def _generate_examples(self, split: str) -> Iterator:
    """Example i of the split: its i-th image in hash order, decoded by a few threads."""
    config = self.folder_config
    rows = [(relpath, label) for relpath, label, s in config.examples if s == split]
    decode = functools.partial(_load_relpath, config.root, config.image_size, config.channels)
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
      for start in range(0, len(rows), _DECODE_BATCH):
        chunk = rows[start:start + _DECODE_BATCH]
        images = pool.map(decode, [relpath for relpath, _ in chunk])
        for offset, (image, (_, label)) in enumerate(zip(images, chunk, strict=True)):
          yield start + offset, {"image": image, "label": label}


def _load_relpath(root: str, size: int, channels: int, relpath: str) -> np.ndarray:
  return load_image(os.path.join(root, relpath), size, channels)
