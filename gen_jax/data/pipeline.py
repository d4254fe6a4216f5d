"""Deterministic, checkpointable grain input pipeline for image datasets.

    source (array_record, random access)
      -> the GLOBAL stream: seeded shuffle, a new order every epoch, repeated for
         `num_epochs` (None = forever); position s of the stream is the same example
         whatever the number of processes
      -> [RandomHorizontalFlip]: rng from (seed, s)
      -> ScaleToSymmetricRange: uint8 [0, 255] -> float32 [-1, 1]
         (or, with `data.binarize`, DynamicBinarize / FixedBinarize: -> float32 {0, 1})
      -> this process's rows: global batch k is stream positions kB ... kB + B - 1, and
         process p of P reads only rows p*b ... p*b + b - 1 of it (b = B / P)
      -> Batch: the LOCAL batch of b examples

Each batch is `{"image": float32 [B_local, H, W, C], "label": int32 [B_local]}`, images in
[-1, 1], or in {0, 1} when binarized (for Bernoulli likelihoods, e.g. the VAE).

Because process p's rows are a contiguous block of the global batch, the global array
that `jax.make_array_from_process_local_data` assembles from all processes is the same
batch, row for row, on 1 process or 64: a multi-host run sees exactly the data of a
single-host one. The iterator `iter(loader)` saves and restores its position with
`get_state()` / `set_state(state)` (a dict: the number of batches read, the same on
every process), or in an orbax checkpoint with `grain.checkpoint.CheckpointSave(it)` /
`CheckpointRestore(it)`.
"""
from __future__ import annotations

import dataclasses
import os
import sys
from typing import Any

import grain
import jax
from absl import flags
import ml_collections
import numpy as np

from gen_jax.data import sources


class ScaleToSymmetricRange(grain.transforms.Map):
  """uint8 image -> float32 in [-1, 1] (x / 127.5 - 1); label -> int32; other keys dropped."""

  def map(self, element: dict[str, Any]) -> dict[str, np.ndarray]:
    image = element["image"]
    if image.dtype != np.uint8:
      raise ValueError(f"expected uint8 images, got {image.dtype} {image.shape}")
    return {
        "image": image.astype(np.float32) / np.float32(127.5) - np.float32(1.0),
        "label": np.int32(element["label"]),
    }


class RandomHorizontalFlip(grain.transforms.RandomMap):
  """Mirrors the image left-right with probability 1/2 (rng from grain: deterministic)."""

  def random_map(self, element: dict[str, Any], rng: np.random.Generator) -> dict[str, Any]:
    if rng.random() < 0.5:
      element = {**element, "image": element["image"][:, ::-1, :]}
    return element


BINARIZATIONS = ("none", "dynamic", "fixed")


def _bernoulli_image(element: dict[str, Any], rng: np.random.Generator) -> dict[str, np.ndarray]:
  """uint8 image -> float32 {0, 1} with P(pixel = 1) = intensity / 255 (= (x + 1) / 2 for the
  [-1, 1] image x of ScaleToSymmetricRange); label -> int32; other keys dropped."""
  image = element["image"]
  if image.dtype != np.uint8:
    raise ValueError(f"expected uint8 images, got {image.dtype} {image.shape}")
  on = rng.random(image.shape, dtype=np.float32) * np.float32(255.0) < image
  return {"image": on.astype(np.float32), "label": np.int32(element["label"])}


class DynamicBinarize(grain.transforms.RandomMap):
  """Dynamic binarization: a fresh Bernoulli(intensity / 255) sample every time an image is
  read. grain seeds each record's rng with (sampler seed + position in the stream), so an
  image gets a different sample in every epoch, and the same ones again for the same seed."""

  def random_map(self, element: dict[str, Any], rng: np.random.Generator) -> dict[str, Any]:
    return _bernoulli_image(element, rng)


class FixedBinarize(grain.transforms.Map):
  """Fixed binarization: one Bernoulli(intensity / 255) sample per image, the same in every
  epoch and every run: its rng is seeded with (`seed`, the image's index in the split)."""

  def __init__(self, seed: int):
    self.seed = int(seed)

  def map(self, element: dict[str, Any]) -> dict[str, Any]:
    rng = np.random.default_rng([self.seed, int(element["record_key"])])
    return _bernoulli_image(element, rng)


class _WithRecordKey:
  """A random-access source whose records also carry their index ("record_key")."""

  def __init__(self, source: sources.RandomAccessSource):
    self._source = source

  def __len__(self) -> int:
    return len(self._source)

  def __getitem__(self, index: int) -> dict[str, Any]:
    return {**self._source[index], "record_key": index}

  def __repr__(self) -> str:
    return f"_WithRecordKey({self._source!r})"


def _open_split(data_config: ml_collections.ConfigDict, split: str) -> sources.RandomAccessSource:
  return sources.open_split(data_config, split)


def image_shape(data_config: ml_collections.ConfigDict, split: str = "train") -> tuple[int, int, int]:
  """Returns (H, W, C) of the dataset's images.

  Known statically for gen_jax's builders (nothing is prepared, so `--mode=summary`
  works without the data; image_folder: from data.image_size and data.channels);
  read from the prepared dataset otherwise.

  Args:
    data_config: the `config.data` ConfigDict (dataset, data_dir, manual_dir, ...).
    split: the split to look at.

  Returns:
    (height, width, channels), e.g. (28, 28, 1) for MNIST.

  Raises:
    ValueError: the dataset is text (e.g. tiny_shakespeare), or its images vary in shape.
  """
  shape = sources.static_image_shape(data_config)
  return shape or sources.dataset_image_shape(_open_split(data_config, split))


def num_examples(data_config: ml_collections.ConfigDict, split: str) -> int:
  """Returns the number of examples in a split (all processes together).

  Args:
    data_config: the `config.data` ConfigDict.
    split: e.g. "train" or "test".

  Returns:
    The split's size, e.g. 60000 for MNIST train.
  """
  return len(_open_split(data_config, split))


def local_batch_size(global_batch_size: int) -> int:
  """Returns this process's share of the global batch.

  Raises:
    ValueError: global_batch_size is not a positive multiple of jax.process_count().
  """
  process_count = jax.process_count()
  if global_batch_size <= 0 or global_batch_size % process_count:
    raise ValueError(
        f"global_batch_size={global_batch_size} must be a positive multiple of "
        f"jax.process_count()={process_count}.")
  return global_batch_size // process_count


@dataclasses.dataclass(frozen=True)
class LoaderArgs:
  """What every loader is asked for: `make_image_loader`, `text.make_text_loader` and
  `spec.make_loader` take `data_config` and then these fields, by keyword.

  Attributes:
    split: TFDS split, e.g. "train", "test", "train[:10%]".
    global_batch_size: examples per batch summed over all processes; each process yields
      global_batch_size // jax.process_count() of them, its `process_rows()`.
    seed: seeds everything random in the stream.
    shuffle: a random stream (for training), or the split in order (for evaluation).
    num_epochs: passes over the split; None repeats forever.
  """
  split: str
  global_batch_size: int
  seed: int
  shuffle: bool = True
  num_epochs: int | None = None

  def process_rows(self) -> tuple[int, int]:
    """(first row, number of rows) of each global batch that this process reads.

    Raises:
      ValueError: global_batch_size is not a positive multiple of jax.process_count().
    """
    rows = local_batch_size(self.global_batch_size)
    return jax.process_index() * rows, rows


def make_image_loader(data_config: ml_collections.ConfigDict, **kwargs) -> grain.IterDataset:
  """Builds the loader of one split; each process reads only its rows of every batch.

  Args:
    data_config: `config.data` with fields `dataset` (str), `data_dir` (str, ""
      = TFDS default), `manual_dir` (str, "" = download), `random_flip` (bool; applied
      to training streams (shuffle=True) only, never to in-order evaluation reads),
      `num_workers` (int, grain worker processes; 0 = in this process), `binarize`
      ('none' (default): images in [-1, 1]; 'dynamic': a new Bernoulli sample of each
      image every time it is read; 'fixed': one sample per image, seeded by
      `binarize_seed` (default 0) and its index: images in {0, 1}).
    **kwargs: the `LoaderArgs` fields. Here `seed` seeds the shuffle order, the random
      flips and dynamic binarization (an int in [0, 2**32)); `shuffle` shuffles globally
      (a new order every epoch); a finite stream (`num_epochs`) ends with the last whole
      global batch (the remainder is dropped).

  Returns:
    A `grain.IterDataset`; `iter(loader)` yields {"image": float32 [B_local, H, W, C]
    in [-1, 1] (in {0, 1} when binarized), "label": int32 [B_local]} and is checkpointable.

  Raises:
    ValueError: global_batch_size not divisible by the process count, a bad binarize.
    DatasetUnavailableError: the dataset cannot be obtained.
  """
  args = LoaderArgs(**kwargs)
  first_row, rows = args.process_rows()
  binarize = data_config.get("binarize", "none")
  if binarize not in BINARIZATIONS:
    raise ValueError(f"data.binarize={binarize!r}; expected one of {BINARIZATIONS}.")
  source = _open_split(data_config, args.split)
  sources.dataset_image_shape(source)  # fail here, not mid-batch, on ragged images
  if binarize == "fixed":
    source = _WithRecordKey(source)

  # The global stream; random transforms are seeded by (seed, stream position).
  stream = grain.MapDataset.source(source).seed(args.seed)
  if args.shuffle:
    stream = stream.shuffle()   # a different permutation in every epoch
  stream = stream.repeat(args.num_epochs)
  if data_config.get("random_flip", False) and args.shuffle:   # training streams only
    stream = stream.random_map(RandomHorizontalFlip())
  if binarize == "dynamic":
    stream = stream.random_map(DynamicBinarize())
  elif binarize == "fixed":
    stream = stream.map(FixedBinarize(data_config.get("binarize_seed", 0)))
  else:
    stream = stream.map(ScaleToSymmetricRange())

  # This process's rows: local example j is row first_row + j % rows of global batch
  # j // rows. A finite stream keeps its whole global batches only.
  B = args.global_batch_size
  num_batches = (sys.maxsize // B if args.num_epochs is None
                 else args.num_epochs * len(source) // B)
  local = grain.MapDataset.range(num_batches * rows).map(
      lambda j: stream[(j // rows) * B + first_row + j % rows])
  loader = local.batch(rows, drop_remainder=True).to_iter_dataset(_read_options(rows))
  worker_count = int(data_config.get("num_workers", 0) or 0)
  if worker_count > 0:
    if not flags.FLAGS.is_parsed():
      # grain 0.2.18's worker processes read an absl flag unconditionally, which
      # fails unless absl parsed the command line (true under absl.app, not under
      # pytest or in a notebook). Unparsed means "no flags given": use the defaults.
      flags.FLAGS.mark_as_parsed()
    loader = loader.mp_prefetch(grain.MultiprocessingOptions(num_workers=worker_count))
  return loader


def _read_options(batch_size: int) -> grain.ReadOptions:
  """Reader threads and prefetch depth scaled to the host and the batch.

  grain's defaults (16 threads, 500 prefetched records) triple the cost per
  record on a 2-core machine, so the prefetch is kept to a few batches.
  """
  return grain.ReadOptions(num_threads=min(16, os.cpu_count() or 1),
                           prefetch_buffer_size=max(2, min(500 // batch_size, 4)))
