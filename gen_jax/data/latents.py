"""A dataset of autoencoder latents (Rombach et al. 2022, "High-Resolution Image Synthesis with
Latent Diffusion Models", §3): extracted once, then any image family trains on them.

    python launch.py --workdir=<autoencoder run> --mode=latents      # writes <folder> below
    python launch.py --config=configs/ddpm.py:latents --config.data.latents_dir=<folder>

A latents folder holds, per split, array_record shards `<split>-<i:05d>-of-<n:05d>.array_record`
whose records are one example each: the encoder's posterior q(z|x) = N(mean, diag(std^2))
and the label (`encode_records`), and `latents.json`:

    {"format": "gen_jax_latents", "version": 1,
     "latent_shape": [h, w, c], "scaling_factor": s,
     "source": {"dataset": ..., "image_shape": [H, W, C], ...the data config's fields},
     "splits": {"train": {"num_examples": N, "shards": [[file, count], ...]}, ...},
     "decoder": {"config": "autoencoder_config.json", "weights": "decoder.safetensors"}}

The decoder files beside it (the autoencoder's config and weights) let a run on the latents
turn its samples back into images without the autoencoder's run (gen_jax/methods/latents.py).

The loader (`make_latents_loader`) reads the posteriors and draws, at every read,

    z = s * (mean + std * eps),   eps ~ N(0, I)

(LDM's `DiagonalGaussianDistribution.sample()` times its `scale_factor`), where eps is a
function of (seed, stream position) alone (`stream.position_bits`, purpose LATENT): a new
sample of each example every epoch, the same ones again on a resumed run. Batches are
`{"image": float32 [B, h, w, c] (z), "label": int32 [B]}`: the network's input under the
name every image family reads.
"""
from __future__ import annotations

import dataclasses
import json
import os
import sys
from collections.abc import Mapping, Sequence
from typing import Any

import grain
import ml_collections
import numpy as np
from array_record.python.array_record_module import ArrayRecordReader, ArrayRecordWriter

from gen_jax.core.errors import ConfigError
from gen_jax.data import in_memory, sources, stream
from gen_jax.data.errors import DamagedDatasetError, DatasetUnavailableError
from gen_jax.data.pipeline import LoaderArgs, scale_to_symmetric_range

DATASET = "latents"              # data.dataset of a latents folder (data.latents_dir)
FORMAT, VERSION = "gen_jax_latents", 1
METADATA = "latents.json"
DECODER_CONFIG = "autoencoder_config.json"
DECODER_WEIGHTS = "decoder.safetensors"
MAX_IN_MEMORY_BYTES = 2 * 2**30  # splits up to this size (mean and std) are read once


def is_latents_dataset(data_config: ml_collections.ConfigDict) -> bool:
  return data_config.get("dataset") == DATASET


# ------------------------------------------------------------------ records


def encode_records(mean: np.ndarray, std: np.ndarray, labels: np.ndarray) -> list[bytes]:
  """One record per example: float32 mean, float32 std (each h*w*c, row-major), int32 label.

  Args:
    mean, std: [n, h, w, c] of the posterior q(z|x).
    labels: [n] ints.
  """
  mean = np.ascontiguousarray(mean, "<f4")
  std = np.ascontiguousarray(std, "<f4")
  labels = np.asarray(labels, "<i4")
  if mean.shape != std.shape or len(mean) != len(labels):
    raise ValueError(f"mean {mean.shape}, std {std.shape} and labels {labels.shape} must "
                     "describe the same examples.")
  return [m.tobytes() + s.tobytes() + label.tobytes()
          for m, s, label in zip(mean, std, labels, strict=True)]


def decode_records(records: Sequence[bytes],
                   latent_shape: Sequence[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """(mean, std: float32 [n, h, w, c], labels: int32 [n]) of records from `encode_records`.

  Raises:
    DamagedDatasetError: a record of another size.
  """
  D = int(np.prod(latent_shape))
  size = 8 * D + 4
  if any(len(r) != size for r in records):
    bad = next(len(r) for r in records if len(r) != size)
    raise DamagedDatasetError(f"a latents record of {bad} bytes; records of latents of shape "
                              f"{tuple(latent_shape)} have {size}. Extract the latents again.")
  flat = np.frombuffer(b"".join(records), np.uint8).reshape(len(records), size)
  mean = flat[:, :4 * D].copy().view("<f4").reshape(len(records), *latent_shape)
  std = flat[:, 4 * D:8 * D].copy().view("<f4").reshape(len(records), *latent_shape)
  labels = flat[:, 8 * D:].copy().view("<i4").reshape(len(records))
  return mean.astype(np.float32), std.astype(np.float32), labels.astype(np.int32)


def shard_name(split: str, index: int, count: int) -> str:
  return f"{split}-{index:05d}-of-{count:05d}.array_record"


def write_shard(path: str, mean: np.ndarray, std: np.ndarray, labels: np.ndarray) -> None:
  """Writes one shard atomically: a temporary file, then a rename, so `path` is whole or absent.

  A killed writer leaves at most `<path>.tmp`, which the next writer overwrites.
  """
  tmp = f"{path}.tmp"
  writer = ArrayRecordWriter(tmp, "group_size:1")
  for record in encode_records(mean, std, labels):
    writer.write(record)
  writer.close()
  os.replace(tmp, path)


def read_shard(path: str, latent_shape: Sequence[int],
               indices: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """(mean, std, labels) of all records of a shard, or of `indices` in it."""
  reader = ArrayRecordReader(path)
  try:
    records = reader.read_all() if indices is None else reader.read([int(i) for i in indices])
  finally:
    reader.close()
  return decode_records(records, latent_shape)


def shard_records(path: str) -> int | None:
  """The number of readable records of a shard; None when it cannot be opened (absent or
  truncated: its index sits at its end)."""
  try:
    reader = ArrayRecordReader(path)
    count = reader.num_records()
    reader.close()
    return int(count)
  except (OSError, RuntimeError, ValueError):
    return None


# ----------------------------------------------------------------- metadata


@dataclasses.dataclass(frozen=True)
class LatentsInfo:
  """A latents folder's `latents.json`, read and checked (`open_latents`).

  Attributes:
    folder: the folder.
    latent_shape: (h, w, c) of one latent.
    scaling_factor: s of z = s * (mean + std * eps); the decoder gets z / s.
    source: the data config of the images the latents were encoded from (dataset,
      data_dir, ..., and image_shape [H, W, C]).
    splits: split -> {"num_examples": N, "shards": [[file name, records], ...]}.
    decoder_config: path of the autoencoder's config (JSON).
    decoder_weights: path of its weights (safetensors).
  """
  folder: str
  latent_shape: tuple[int, int, int]
  scaling_factor: float
  source: dict[str, Any]
  splits: dict[str, dict[str, Any]]
  decoder_config: str
  decoder_weights: str

  @property
  def image_shape(self) -> tuple[int, int, int]:
    """(H, W, C) of the source images (what decoded samples look like)."""
    height, width, channels = self.source["image_shape"]
    return int(height), int(width), int(channels)

  def source_data_config(self) -> ml_collections.ConfigDict:
    """A `config.data` of the source dataset (its name, data_dir, builder options)."""
    fields = {k: v for k, v in self.source.items() if k != "image_shape"}
    return ml_collections.ConfigDict(fields)

  def split(self, split: str) -> dict[str, Any]:
    """The split's entry.

    Raises:
      DatasetUnavailableError: the folder has no such split.
    """
    if split not in self.splits:
      raise DatasetUnavailableError(
          f"{self.folder} holds the latents of splits {sorted(self.splits)}, not {split!r}; "
          f"extract it (--mode=latents with --config.latents.splits) or set data."
          f"{'train_split' if split == 'train' else 'eval_split'} to one of them.")
    return self.splits[split]


def metadata(*, latent_shape: Sequence[int], scaling_factor: float,
             source: Mapping[str, Any], splits: Mapping[str, Mapping[str, Any]]) -> dict:
  """The content of `latents.json` (module docstring)."""
  return {"format": FORMAT, "version": VERSION,
          "latent_shape": [int(d) for d in latent_shape], "scaling_factor": float(scaling_factor),
          "source": dict(source), "splits": {k: dict(v) for k, v in splits.items()},
          "decoder": {"config": DECODER_CONFIG, "weights": DECODER_WEIGHTS}}


def write_json_atomic(path: str, content: Mapping[str, Any]) -> None:
  tmp = f"{path}.tmp"
  with open(tmp, "w") as f:
    json.dump(content, f, indent=1)
  os.replace(tmp, path)


def _extract_hint(folder: str) -> str:
  return (f"Extract the latents into {folder} with `python launch.py --workdir=<autoencoder "
          f"run> --mode=latents --config.latents.output_dir={folder}` (docs/latents.md).")


_CHECKED: set[tuple[str, int, int]] = set()   # (shard, size, mtime) found whole


def open_latents(folder: str) -> LatentsInfo:
  """Reads and checks a latents folder: its metadata, decoder files and every shard's count.

  Raises:
    ConfigError: no folder given (data.latents_dir='').
    DatasetUnavailableError: no such folder or no latents.json (an extraction not finished).
    DamagedDatasetError: a metadata file that does not parse, or a missing or truncated shard.
  """
  if not folder:
    raise ConfigError("data.dataset='latents' needs data.latents_dir: the folder that "
                      "--mode=latents wrote (docs/latents.md).")
  folder = os.path.expanduser(folder)
  path = os.path.join(folder, METADATA)
  if not os.path.isfile(path):
    raise DatasetUnavailableError(
        f"data.latents_dir={folder}: no {METADATA} there (a folder of latents gets it when "
        f"its extraction finishes). {_extract_hint(folder)}")
  try:
    with open(path) as f:
      meta = json.load(f)
    if meta.get("format") != FORMAT or meta.get("version") != VERSION:
      raise ValueError(f"format {meta.get('format')!r} version {meta.get('version')!r}, "
                       f"expected {FORMAT!r} version {VERSION}")
    h, w, c = (int(d) for d in meta["latent_shape"])
    info = LatentsInfo(
        folder=folder, latent_shape=(h, w, c), scaling_factor=float(meta["scaling_factor"]),
        source=dict(meta["source"]), splits=dict(meta["splits"]),
        decoder_config=os.path.join(folder, meta["decoder"]["config"]),
        decoder_weights=os.path.join(folder, meta["decoder"]["weights"]))
    if len(info.source["image_shape"]) != 3:
      raise ValueError(f"source image_shape {info.source['image_shape']} is not (H, W, C)")
  except (ValueError, KeyError, TypeError) as err:
    raise DamagedDatasetError(f"{path} is not a latents metadata file ({err}). "
                              f"{_extract_hint(folder)}") from None
  for name in (info.decoder_config, info.decoder_weights):
    if not os.path.isfile(name):
      raise DamagedDatasetError(f"{name} is missing: the decoder of the latents in {folder}. "
                                f"{_extract_hint(folder)}")
  for split, entry in info.splits.items():
    for file, count in entry["shards"]:
      shard = os.path.join(folder, file)
      try:
        stat = os.stat(shard)
      except OSError:
        raise DamagedDatasetError(f"{shard} is missing ({split} split of {folder}). "
                                  f"{_extract_hint(folder)}") from None
      if (shard, stat.st_size, stat.st_mtime_ns) in _CHECKED:
        continue
      found = shard_records(shard)
      if found != count:
        raise DamagedDatasetError(
            f"{shard} holds {found} readable records, {METADATA} says {count}: the file is "
            f"damaged. Delete it and extract again (finished shards are kept). "
            f"{_extract_hint(folder)}")
      _CHECKED.add((shard, stat.st_size, stat.st_mtime_ns))
  return info


def latents_info(data_config: ml_collections.ConfigDict) -> LatentsInfo:
  """`open_latents(data.latents_dir)`."""
  return open_latents(data_config.get("latents_dir", ""))


# ------------------------------------------------------- the images to encode


class SplitImages:
  """Every image of a split of an image dataset, in order, for encoding:
  `read(start, stop) -> (float32 [n, H, W, C] in [-1, 1], int32 [n] labels)`."""

  def __init__(self, data_config: ml_collections.ConfigDict, split: str):
    source = sources.open_split(data_config, split)
    self.image_shape = sources.dataset_image_shape(source)
    self.num_records = len(source)
    source_args = (data_config.dataset, split, data_config.get("data_dir") or None,
                   data_config.get("manual_dir") or None,
                   tuple(sorted(sources.builder_options(data_config).items())))
    self._store = in_memory.image_store(source, split, self.image_shape, source_args)

  def read(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
    images, labels = self._store.read(np.arange(start, stop))
    return scale_to_symmetric_range(images), labels.astype(np.int32)


def source_fields(data_config: ml_collections.ConfigDict,
                  image_shape: Sequence[int]) -> dict[str, Any]:
  """What `latents.json` records of the source dataset: the fields that name and open it
  (dataset, data_dir, manual_dir, builder options) and its image shape."""
  fields = {"dataset": data_config.dataset, "data_dir": data_config.get("data_dir", ""),
            "manual_dir": data_config.get("manual_dir", ""),
            **sources.builder_options(data_config)}
  return {**fields, "image_shape": [int(d) for d in image_shape]}


# -------------------------------------------------------------------- store


_ARRAYS: dict[tuple, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}   # per shard files


def _read_split(paths: Sequence[str], latent_shape: tuple[int, int, int]
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Every record of the shards, read once per process (keyed by the files' size and mtime,
  so shards written again are read again)."""
  key = tuple((p, os.stat(p).st_size, os.stat(p).st_mtime_ns) for p in paths)
  if key not in _ARRAYS:
    parts = [read_shard(p, latent_shape) for p in paths]
    mean, std, labels = (np.concatenate([part[i] for part in parts]) for i in range(3))
    for a in (mean, std, labels):
      a.setflags(write=False)   # shared by every loader of this process
    _ARRAYS[key] = (mean, std, labels)
  return _ARRAYS[key]


class LatentStore:
  """The posteriors of one split by record index: in memory when small (read once per
  process), else from the shards at each read."""

  def __init__(self, info: LatentsInfo, split: str):
    entry = info.split(split)
    self.latent_shape = info.latent_shape
    self.paths = [os.path.join(info.folder, file) for file, _ in entry["shards"]]
    counts = np.asarray([count for _, count in entry["shards"]], np.int64)
    self.first = np.concatenate([[0], np.cumsum(counts)])
    self.num_records = int(self.first[-1])
    self._arrays = None
    if self.paths and (self.num_records * 8 * int(np.prod(self.latent_shape))
                       <= MAX_IN_MEMORY_BYTES):
      self._arrays = _read_split(self.paths, self.latent_shape)

  def read(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mean, std: float32 [n, h, w, c], labels: int32 [n]) of records `indices`."""
    if self._arrays is not None:
      mean, std, labels = self._arrays
      return mean[indices], std[indices], labels[indices]
    shard = np.searchsorted(self.first, indices, side="right") - 1
    mean = np.empty((len(indices), *self.latent_shape), np.float32)
    std = np.empty_like(mean)
    labels = np.empty((len(indices),), np.int32)
    for s in np.unique(shard):
      rows = np.flatnonzero(shard == s)
      mean[rows], std[rows], labels[rows] = read_shard(
          self.paths[s], self.latent_shape, indices[rows] - self.first[s])
    return mean, std, labels


def standard_normal(seed: int, first: int, count: int, shape: Sequence[int]) -> np.ndarray:
  """eps ~ N(0, I) [count, *shape] of stream positions first ... first + count - 1: each
  position's from its own random bits (`stream.position_bits`, purpose LATENT), by the
  Box-Muller transform (Box & Muller 1958) of 24-bit uniforms in (0, 1)."""
  D = int(np.prod(shape))
  pairs = -(-D // 2)
  bits = stream.position_bits(seed, stream.LATENT, first, count, pairs)   # 2 uniforms a word
  u = stream.uniform_uint32(bits, (2 * pairs,)) >> np.uint32(8)
  u = (u.astype(np.float64) + 0.5) / 2.0**24                               # (0, 1)
  radius = np.sqrt(-2.0 * np.log(u[:, :pairs]))
  angle = 2.0 * np.pi * u[:, pairs:]
  eps = np.concatenate([radius * np.cos(angle), radius * np.sin(angle)], axis=1)[:, :D]
  return eps.astype(np.float32).reshape(count, *shape)


@dataclasses.dataclass
class _LatentBatchMaker:
  """Global batch k -> this process's rows of it: z = s * (mean + std * eps)."""

  store: LatentStore
  order: stream.ShuffledOrder | None   # None: the split in order
  global_batch_size: int
  first_row: int
  rows: int
  seed: int
  scaling_factor: float

  def __call__(self, k: int) -> dict[str, np.ndarray]:
    first = int(k) * self.global_batch_size + self.first_row
    positions = np.arange(first, first + self.rows, dtype=np.int64)
    indices = (self.order(positions) if self.order is not None
               else positions % self.store.num_records)
    mean, std, labels = self.store.read(indices)
    eps = standard_normal(self.seed, first, self.rows, self.store.latent_shape)
    z = np.float32(self.scaling_factor) * (mean + std * eps)
    return {"image": z.astype(np.float32), "label": labels}


def make_latents_loader(data_config: ml_collections.ConfigDict, **kwargs) -> grain.IterDataset:
  """The loader of one split of `data.latents_dir`, as `pipeline.make_image_loader`.

  Args:
    data_config: `config.data` with dataset='latents' and latents_dir.
    **kwargs: the `pipeline.LoaderArgs` fields; `seed` seeds the shuffle and eps.

  Returns:
    A checkpointable `grain.IterDataset` of {"image": float32 [B_local, h, w, c] (z),
    "label": int32 [B_local]}.

  Raises:
    ValueError: a bad seed or num_epochs, or a batch size the processes cannot split.
    ConfigError, DatasetUnavailableError: see `open_latents`.
  """
  args = LoaderArgs(**kwargs)
  first_row, rows = args.process_rows()
  if not isinstance(args.seed, (int, np.integer)) or not 0 <= args.seed < 2**32:
    raise ValueError(f"seed={args.seed!r} must be an int in [0, 2**32).")
  if args.num_epochs is not None and args.num_epochs < 1:
    raise ValueError(f"num_epochs={args.num_epochs} must be >= 1 or None.")
  info = latents_info(data_config)
  store = LatentStore(info, args.split)
  B, n = args.global_batch_size, store.num_records
  if n < 1:
    raise DatasetUnavailableError(f"the {args.split} split of {info.folder} holds no latents.")
  num_batches = sys.maxsize // B if args.num_epochs is None else args.num_epochs * n // B
  make_batch = _LatentBatchMaker(
      store=store, order=stream.ShuffledOrder(n, args.seed) if args.shuffle else None,
      global_batch_size=B, first_row=first_row, rows=rows, seed=int(args.seed),
      scaling_factor=info.scaling_factor)
  return grain.MapDataset.range(num_batches).map(make_batch).to_iter_dataset(
      grain.ReadOptions(num_threads=1, prefetch_buffer_size=2))
