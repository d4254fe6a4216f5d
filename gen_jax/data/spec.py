"""What the engine needs to know about a dataset, whatever its modality.

    spec = data.describe(config.data)      # DataSpec(kind='image', image_shape=(28, 28, 1))
    loader = data.make_loader(config.data, split="train", global_batch_size=64, seed=0)

Images: batches {"image": float32 [B, H, W, C], "label": int32 [B]} (gen_jax.data.pipeline).
Text:   batches {"tokens": int32 [B, seq_len + 1]}, random windows (gen_jax.data.text), and
        with token shards packed as documents (data.batching='documents') also
        "segment_ids": int32 [B, seq_len + 1] (gen_jax.data.shard_loader).
Couplings (split 'pairs': the files `data.pairs` names): image batches with their "noise"
[B, H, W, C] too (gen_jax.data.couplings, what a reflowed flow trains on).
Latents (data.dataset='latents', data.latents_dir): image batches whose "image" is an
autoencoder latent z [B, h, w, c] (gen_jax.data.latents); the spec's `latents` says how to
decode them.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import ml_collections
import numpy as np

from gen_jax.core.errors import ConfigError
from gen_jax.data import couplings, latents, pipeline, shard_loader, text

IMAGE, TEXT = "image", "text"


@dataclasses.dataclass(frozen=True)
class DataSpec:
  """The modality and shapes of a dataset's batches.

  Attributes:
    kind: 'image' or 'text'.
    image_shape: (H, W, C) of images; None for text.
    tokenizer: text only: `encode(str) -> ids`, `decode(ids) -> str`, `vocab_size`.
    seq_len: text only: tokens a model sees per window (batches carry seq_len + 1).
    segment_ids: text only: batches carry "segment_ids" (documents packed into rows; a
      position attends only to its own document's).
    latents: a latents dataset's metadata (its decoder, scaling factor and source images);
      its batches' "image" is a latent of `image_shape` (h, w, c). None for others.
  """
  kind: str
  image_shape: tuple[int, int, int] | None = None
  tokenizer: Any = None
  seq_len: int | None = None
  segment_ids: bool = False
  latents: latents.LatentsInfo | None = None

  @classmethod
  def for_images(cls, image_shape, latents_info: latents.LatentsInfo | None = None) -> DataSpec:
    height, width, channels = image_shape
    return cls(kind=IMAGE, image_shape=(int(height), int(width), int(channels)),
               latents=latents_info)

  @classmethod
  def for_text(cls, tokenizer, seq_len: int, segment_ids: bool = False) -> DataSpec:
    return cls(kind=TEXT, tokenizer=tokenizer, seq_len=int(seq_len), segment_ids=segment_ids)

  @property
  def sample_shape(self) -> tuple[int, int, int] | None:
    """(H, W, C) of the images a generator of this data samples: the source images of
    latents (decoded), else `image_shape`."""
    return self.latents.image_shape if self.latents is not None else self.image_shape

  @property
  def vocab_size(self) -> int:
    return self.tokenizer.vocab_size

  def example_batch(self) -> dict[str, np.ndarray]:
    """A batch of one example (zeros) with the shapes and dtypes of real batches."""
    if self.kind == TEXT:
      if self.seq_len is None:
        raise ValueError("a text DataSpec needs its seq_len (DataSpec.for_text sets it).")
      tokens = np.zeros((1, self.seq_len + 1), np.int32)
      return {"tokens": tokens, "segment_ids": tokens} if self.segment_ids else {"tokens": tokens}
    if self.image_shape is None:
      raise ValueError("an image DataSpec needs its image_shape (DataSpec.for_images sets it).")
    return {"image": np.zeros((1, *self.image_shape), np.float32),
            "label": np.zeros((1,), np.int32)}


def describe(data_config: ml_collections.ConfigDict) -> DataSpec:
  """The DataSpec of `config.data` (text when `text.is_text_dataset` says so).

  Reads no data where it need not (`--mode=summary` works without it; a latents folder's
  metadata is read and its shards checked, as the shapes are there): token shards are
  checked by `make_loader` (headers, and their record against the run's tokenizer), which
  a run calls before it compiles anything.

  Raises:
    ValueError: no data.seq_len for text, or an unknown data.batching.
  """
  if text.is_text_dataset(data_config):
    if not data_config.get("seq_len"):
      raise ValueError("data.seq_len must be set for a text dataset (tokens per window).")
    batching = data_config.get("batching", "windows")
    if batching not in shard_loader.BATCHINGS:
      raise ConfigError(f"data.batching={batching!r}; expected one of {shard_loader.BATCHINGS}.")
    documents = data_config.dataset == text.TOKEN_SHARDS and batching == "documents"
    return DataSpec.for_text(text.text_tokenizer(data_config), data_config.seq_len,
                             segment_ids=documents)
  if latents.is_latents_dataset(data_config):
    info = latents.latents_info(data_config)
    return DataSpec.for_images(info.latent_shape, info)
  return DataSpec.for_images(pipeline.image_shape(data_config))


def sample_reference(data_config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """The `config.data` of the real images that samples are compared with (sample metrics):
  a latents dataset's source images, else `data_config` itself."""
  if latents.is_latents_dataset(data_config):
    return latents.latents_info(data_config).source_data_config()
  return data_config


def make_loader(data_config: ml_collections.ConfigDict, **kwargs):
  """The checkpointable loader of one split, for images or text (see the module docstring).

  `kwargs` are the `pipeline.LoaderArgs` fields (split, global_batch_size, seed, shuffle,
  num_epochs). For text, `shuffle=True` draws random windows (forever); `shuffle=False`
  reads consecutive windows, `num_epochs` times over the split (None = forever).
  """
  if text.is_text_dataset(data_config):
    return text.make_text_loader(data_config, **kwargs)
  if latents.is_latents_dataset(data_config):
    return latents.make_latents_loader(data_config, **kwargs)
  if kwargs.get("split") == couplings.PAIRS_SPLIT:
    return couplings.make_pairs_loader(data_config, **kwargs)
  return pipeline.make_image_loader(data_config, **kwargs)
