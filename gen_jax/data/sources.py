"""Random-access sources of prepared datasets: prepare once, then read array_record.

`mnist`, `cifar10`, `mnist_5k` and `tiny_shakespeare` are gen_jax's own TF-free builders
(`gen_jax.data.builders`); they are prepared into the TFDS data dir on first use
and reused afterwards. `image_folder` and `text_files` prepare the user's own files
(`data.image_folder` / `data.text_path`, the `options` below), one copy per folder,
settings and contents. Any other name must already be prepared in array_record
form in the data dir (e.g. with `tfds build --file_format=array_record` on a
machine with TensorFlow) and is opened with `tfds.data_source`.

    source = sources.open_split(config.data, "train")   # source[i] -> {"image": ..., "label": ...}
"""
from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Protocol

import ml_collections
import tensorflow_datasets as tfds
from array_record.python.array_record_module import ArrayRecordReader
from etils import epath
from tensorflow_datasets.core import constants as tfds_constants
from tensorflow_datasets.core.data_sources.base import BaseDataSource

from gen_jax.data.builders import BUILDERS, ImageFolder, ImageLabelBuilder, UserFilesBuilder
from gen_jax.data.errors import DamagedDatasetError, DatasetUnavailableError


class RandomAccessSource(Protocol):
  """What `load_split` returns: `len(source)` and `source[i] -> {feature name: value}`."""

  def __len__(self) -> int: ...

  def __getitem__(self, index: int, /) -> dict[str, Any]: ...


def _one_split(source: Any) -> BaseDataSource:
  """The source TFDS returns for one split name (typed by TFDS as a tree of sources, which
  a tree of split names would give).

  Raises:
    TypeError: `source` is not a TFDS data source (a list or dict of them).
  """
  if not isinstance(source, BaseDataSource):
    raise TypeError(f"expected the TFDS data source of one split, got {type(source)}.")
  return source


def _or_none(path: str | None) -> str | None:
  """Config fields use '' for "not set"; TFDS wants None."""
  return path or None


@contextlib.contextmanager
def _exclusive_lock(lock_path: epath.Path) -> Iterator[None]:
  """Holds an exclusive file lock, so that processes sharing a local data dir prepare once.

  Remote data dirs (gs://...) are not locked: prepare those from one process.
  """
  if "://" in os.fspath(lock_path):
    yield
    return
  lock_path.parent.mkdir(parents=True, exist_ok=True)
  with open(lock_path, "w") as lock_file:
    fcntl.flock(lock_file, fcntl.LOCK_EX)
    try:
      yield
    finally:
      fcntl.flock(lock_file, fcntl.LOCK_UN)


def _is_prepared(builder: tfds.core.DatasetBuilder) -> bool:
  # Looking for dataset_info.json first spares a TFDS warning about a missing one.
  return (epath.Path(builder.data_dir) / "dataset_info.json").exists() and builder.is_prepared()


def _check_manual_dir(dataset: str, manual_dir: str) -> None:
  """A manual_dir that was given must exist and hold files: we never download then."""
  path = epath.Path(manual_dir).expanduser()
  if not path.is_dir() or not any(path.iterdir()):
    instructions = BUILDERS[dataset].MANUAL_DOWNLOAD_INSTRUCTIONS or ""
    raise DatasetUnavailableError(
        f"{dataset}: manual_dir={manual_dir} does not exist or is empty. {instructions}")


def builder_options(data_config: ml_collections.ConfigDict) -> dict[str, Any]:
  """The fields of `config.data` that configure its dataset's builder: for image_folder and
  text_files their `CONFIG_FIELDS` (e.g. {"text_path": "corpus/"}); {} for the others."""
  builder = BUILDERS.get(data_config.dataset)
  if builder is None or not issubclass(builder, UserFilesBuilder):
    return {}
  return {field: data_config.get(field) for field in builder.CONFIG_FIELDS
          if data_config.get(field) is not None}


def prepare_builder(
    dataset: str, *, data_dir: str | None = None, manual_dir: str | None = None,
    options: Mapping[str, Any] | None = None,
) -> tfds.core.DatasetBuilder:
  """Returns one of our builders, prepared in `data_dir` (preparing it if needed).

  Args:
    dataset: one of `BUILDERS` ("mnist", "cifar10", "mnist_5k", "tiny_shakespeare",
      "image_folder", "text_files").
    data_dir: TFDS data dir; None or "" means TFDS's default (~/tensorflow_datasets
      or $TFDS_DATA_DIR).
    manual_dir: folder with the raw files; when set, nothing is downloaded. None or
      "" means download from the public mirrors.
    options: image_folder and text_files only: the `builder_options` of the data config
      (which files, what size); their files are scanned and checked at every call.

  Returns:
    The prepared `tfds.core.DatasetBuilder`.

  Raises:
    DatasetUnavailableError: the raw files cannot be found, read or downloaded, or
      (`UserDataError`) the user's files cannot be used.
  """
  if dataset not in BUILDERS:
    raise ValueError(f"{dataset!r} is not one of gen_jax's builders {sorted(BUILDERS)}.")
  data_dir, manual_dir = _or_none(data_dir), _or_none(manual_dir)
  builder_cls = BUILDERS[dataset]
  config = (builder_cls.config_for(options or {})
            if issubclass(builder_cls, UserFilesBuilder) else None)
  builder = builder_cls(data_dir=data_dir, config=config, file_format="array_record")
  if _is_prepared(builder):
    return builder
  if manual_dir is not None and builder_cls.MANUAL_DOWNLOAD_INSTRUCTIONS:
    _check_manual_dir(dataset, manual_dir)
  lock_name = f".{dataset}{'.' + config if config else ''}.prepare.lock"
  with _exclusive_lock(epath.Path(builder.data_dir_root) / lock_name):
    # Rebuilt under the lock: another process may have prepared it meanwhile.
    builder = builder_cls(data_dir=data_dir, config=config, file_format="array_record")
    if not _is_prepared(builder):
      try:
        builder.download_and_prepare(
            download_config=tfds.download.DownloadConfig(manual_dir=manual_dir))
      except DatasetUnavailableError as err:
        raise type(err)(str(err)) from None  # drop TFDS's frames
  return builder


def load_split(
    dataset: str, split: str, *, data_dir: str | None = None, manual_dir: str | None = None,
    options: Mapping[str, Any] | None = None,
) -> RandomAccessSource:
  """Opens one split of a dataset as a random-access source.

  Args:
    dataset: "mnist", "cifar10", "mnist_5k", "tiny_shakespeare" (our builders,
      prepared on first use), or the name of any TFDS dataset already prepared in
      array_record form in `data_dir` (e.g. "fashion_mnist" or "fashion_mnist/3.0.1").
    split: a TFDS split, e.g. "train", "test", "train[:90%]".
    data_dir: TFDS data dir; None or "" means TFDS's default.
    manual_dir: folder with the raw files of our builders; None or "" means
      download them. Ignored for other datasets.
    options: image_folder and text_files: the `builder_options` of the data config.

  Returns:
    A source with `len(source)` and `source[i]` -> dict of the dataset's features:
    for image datasets "image" (uint8 HxWxC numpy array) and "label" (int); for
    text datasets their text feature (UTF-8 bytes), e.g. tiny_shakespeare's "text".

  Raises:
    DatasetUnavailableError: the dataset cannot be obtained; the message says how
      to provide it.
  """
  data_dir = _or_none(data_dir)
  if dataset in BUILDERS:
    builder = prepare_builder(dataset, data_dir=data_dir, manual_dir=manual_dir,
                              options=options)
    # (TFDS's logging decorator, made with wrapt, hides the method's signature.)
    source = _one_split(builder.as_data_source(split=split))  # pyright: ignore[reportCallIssue]
    folder = epath.Path(builder.data_dir).parent
    origin = ("from your files" if builder.builder_config is not None else
              "from data.manual_dir or its download; mnist_5k needs neither")
    check_shards(source, split, f"Delete {folder} and rerun: gen_jax prepares {dataset} "
                 f"again ({origin}).")
    return source
  try:
    tree = tfds.data_source(dataset, split=split, data_dir=data_dir, download=False)
  except Exception as err:  # pylint: disable=broad-except  # TFDS raises many kinds
    cause = (str(err).strip().splitlines() or [type(err).__name__])[0][:300]
    where = data_dir or tfds_constants.DATA_DIR
    raise DatasetUnavailableError(
        f"dataset {dataset!r} split {split!r} is not available ({cause}). gen_jax "
        f"builds {', '.join(sorted(BUILDERS))} itself; any other dataset must be "
        f"prepared in array_record form in the data dir {where} "
        f"(e.g. `tfds build {dataset} --data_dir={where} --file_format=array_record` on "
        "a machine with TensorFlow), then set --config.data.data_dir to that folder."
    ) from None
  source = _one_split(tree)
  where = data_dir or tfds_constants.DATA_DIR
  check_shards(source, split, f"Rebuild it: delete {source.dataset_info.data_dir}, then "
               f"`tfds build {dataset} --data_dir={where} --file_format=array_record` on a "
               "machine with TensorFlow.")
  return source


def open_split(data_config: ml_collections.ConfigDict, split: str) -> RandomAccessSource:
  """`load_split` of `config.data`'s dataset (its data_dir, manual_dir and builder options)."""
  return load_split(data_config.dataset, split, data_dir=data_config.get("data_dir"),
                    manual_dir=data_config.get("manual_dir"),
                    options=builder_options(data_config))


def static_image_shape(data_config: ml_collections.ConfigDict) -> tuple[int, int, int] | None:
  """(H, W, C) of our image builders' images, known without preparing anything (so
  `--mode=summary` works without the data); None when only the prepared data can say
  (another TFDS dataset, or image_folder with channels=0).

  Raises:
    ValueError: the dataset is one of our text builders (e.g. tiny_shakespeare).
    UserDataError: image_folder settings that cannot work (e.g. image_size=0).
  """
  builder = BUILDERS.get(data_config.dataset)
  if builder is None:
    return None
  if builder is ImageFolder:
    return builder.static_image_shape(builder_options(data_config))
  if not issubclass(builder, ImageLabelBuilder):
    raise ValueError(
        f"dataset {data_config.dataset!r} is text, not images: it has no image shape "
        "(use gen_jax.data.text_tokenizer / make_text_loader for it).")
  return builder.IMAGE_SHAPE


_CHECKED: set[tuple[str, int, int]] = set()   # (file, size, mtime) of the shards found whole


def check_shards(source: RandomAccessSource, split: str, rebuild: str) -> None:
  """Opens each local array_record shard of `split` and checks it holds as many records as
  the dataset_info says (a truncated shard loses its index, which sits at its end).

  Remote data dirs (gs://...) are not checked here: one read per shard is slow there.

  Raises:
    DamagedDatasetError: naming the file, with `rebuild` (how to prepare it again).
  """
  info = getattr(source, "dataset_info", None)
  if info is None:
    return
  try:
    shards = info.splits[split].file_instructions
  except Exception:  # pylint: disable=broad-except  # a split TFDS cannot slice
    return
  for shard in shards:
    path = os.fspath(shard.filename)
    if "://" in path:
      continue
    try:
      stat = os.stat(path)
      if (path, stat.st_size, stat.st_mtime_ns) in _CHECKED:
        continue
      reader = ArrayRecordReader(path)
      found = reader.num_records()
      reader.close()
      problem = (None if found == shard.examples_in_shard else
                 f"it holds {found} readable records, the dataset_info says "
                 f"{shard.examples_in_shard}")
    except (OSError, RuntimeError, ValueError) as err:
      problem = (str(err).strip().splitlines() or [type(err).__name__])[0][:300]
    if problem is not None:
      raise DamagedDatasetError(f"{info.name}: the prepared file {path} is damaged "
                                f"({problem}). {rebuild}")
    _CHECKED.add((path, stat.st_size, stat.st_mtime_ns))


def dataset_image_shape(source: RandomAccessSource) -> tuple[int, int, int]:
  """Returns (H, W, C) of the images of a source from `load_split`.

  Raises:
    ValueError: the dataset's images do not all have one fixed shape.
  """
  info = getattr(source, "dataset_info", None)
  features = info.features.keys() if info is not None else source[0].keys()
  if "image" not in features:
    raise ValueError(f"the dataset has no 'image' feature (its features: "
                     f"{', '.join(features)}); is it text?")
  shape: Sequence[int | None] = (
      info.features["image"].shape if info is not None else source[0]["image"].shape)
  dims = [int(dim) for dim in shape if dim is not None]
  if len(shape) != 3 or len(dims) != 3:
    raise ValueError(
        f"images of shape {tuple(shape)} are not supported: the pipeline needs one "
        "fixed HxWxC shape (resize the images when preparing the dataset).")
  height, width, channels = dims
  return height, width, channels
