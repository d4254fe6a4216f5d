"""One token shard on disk: the `.bin` layout of llm.c, nanoGPT's FineWeb scripts and
modded-nanogpt, read and written byte for byte.

    offset 0      256 little-endian int32: [0] magic, [1] version, [2] number of tokens,
                  [3:256] zero (unused by every reader)
    offset 1024   the tokens, little-endian: uint16 (magic 20240520, version 1: GPT-2's
                  vocabulary) or uint32 (magic 20240801, version 7: llm.c's llama-3 files)

A shard written here loads unchanged in those projects' readers (modded-nanogpt's
`_load_data_shard`, llm.c's `dataloader_init`), and theirs load here, memory-mapped: a
shard of 100M tokens is 200 MB that is paged in as windows touch it.

    write_token_shard(path, tokens)          # atomic: a temporary file, then a rename
    tokens = read_token_shard(path)          # np.memmap, uint16 or uint32 [num_tokens]
"""
from __future__ import annotations

import dataclasses
import os

import numpy as np

from gen_jax.data.errors import DamagedDatasetError

HEADER_INTS = 256
HEADER_BYTES = HEADER_INTS * 4


@dataclasses.dataclass(frozen=True)
class ShardLayout:
  """A (magic, version) pair and the token type it announces."""
  magic: int
  version: int
  dtype: np.dtype


# llm.c dev/data/data_common.py HEADERS_INFO: "gpt-2" and "llama-3".
UINT16 = ShardLayout(magic=20240520, version=1, dtype=np.dtype("<u2"))
UINT32 = ShardLayout(magic=20240801, version=7, dtype=np.dtype("<u4"))
LAYOUTS = (UINT16, UINT32)


class TokenShardError(DamagedDatasetError):
  """A file that is not a readable token shard (bad magic or version, a header whose token
  count disagrees with the file's size); the message names the file."""


def layout_for_vocab(vocab_size: int) -> ShardLayout:
  """The narrowest layout that holds ids below `vocab_size`: uint16 up to 65,536 ids.

  Raises:
    ValueError: vocab_size < 1 or > 2**32.
  """
  if not 1 <= vocab_size <= 2**32:
    raise ValueError(f"vocab_size={vocab_size} must be in [1, 2**32].")
  return UINT16 if vocab_size <= 2**16 else UINT32


def shard_header(num_tokens: int, layout: ShardLayout = UINT16) -> np.ndarray:
  """The 256 int32 of a shard's header: magic, version, token count, then zeros.

  Raises:
    ValueError: num_tokens is negative or does not fit an int32 (the header's field).
  """
  if not 0 <= num_tokens < 2**31:
    raise ValueError(f"a shard holds fewer than 2**31 tokens (the header's int32), got "
                     f"{num_tokens}: write smaller shards.")
  header = np.zeros(HEADER_INTS, "<i4")
  header[:3] = layout.magic, layout.version, num_tokens
  return header


def write_token_shard(path: str | os.PathLike, tokens: np.ndarray,
                      layout: ShardLayout = UINT16) -> None:
  """Writes `tokens` as one shard, atomically (`path` appears complete or not at all).

  Args:
    path: the shard's file name (by convention `<name>_<split>_<index:06d>.bin`).
    tokens: 1-D integer ids, each in the layout's range.
    layout: UINT16 (the default, GPT-2-sized vocabularies) or UINT32.

  Raises:
    ValueError: tokens is not 1-D integers, or an id does not fit the layout's type.
  """
  tokens = np.asarray(tokens)
  if tokens.ndim != 1 or not (tokens.size == 0 or np.issubdtype(tokens.dtype, np.integer)):
    raise ValueError(f"a shard holds 1-D integer token ids, got {tokens.dtype} {tokens.shape}.")
  limit = np.iinfo(layout.dtype).max
  if tokens.size and (int(tokens.min()) < 0 or int(tokens.max()) > limit):
    raise ValueError(f"token ids in [{tokens.min()}, {tokens.max()}] do not fit {layout.dtype} "
                     f"(0 ... {limit}): use the uint32 layout.")
  header = shard_header(len(tokens), layout)
  tmp = f"{os.fspath(path)}.tmp"
  with open(tmp, "wb") as f:
    f.write(header.tobytes())
    f.write(tokens.astype(layout.dtype, copy=False).tobytes())
  os.replace(tmp, path)


def read_shard_header(path: str | os.PathLike) -> tuple[ShardLayout, int]:
  """Checks a shard's header against its file size.

  Returns:
    (layout, number of tokens).

  Raises:
    TokenShardError: a file shorter than the header, an unknown magic or version, or a token
      count that disagrees with the file's size (a truncated or over-long file).
  """
  size = os.path.getsize(path)
  if size < HEADER_BYTES:
    raise TokenShardError(f"{path}: {size} bytes, shorter than a token shard's "
                          f"{HEADER_BYTES}-byte header; rewrite it (python -m "
                          "gen_jax.data.tokenize_shards).")
  header = np.fromfile(path, "<i4", count=HEADER_INTS)
  magic, version, num_tokens = (int(v) for v in header[:3])
  layout = next((x for x in LAYOUTS if x.magic == magic), None)
  if layout is None:
    raise TokenShardError(f"{path}: magic number {magic} is not a token shard's "
                          f"({' or '.join(str(x.magic) for x in LAYOUTS)}); is it one?")
  if version != layout.version:
    raise TokenShardError(f"{path}: version {version} with magic {magic}; this reader knows "
                          f"version {layout.version} ({layout.dtype} tokens).")
  expected = HEADER_BYTES + num_tokens * layout.dtype.itemsize
  if num_tokens < 0 or size != expected:
    raise TokenShardError(
        f"{path}: the header announces {num_tokens} tokens ({expected} bytes) but the file "
        f"has {size} bytes ({'truncated' if size < expected else 'trailing data'}); "
        "rewrite the shard.")
  return layout, num_tokens


def read_token_shard(path: str | os.PathLike) -> np.ndarray:
  """The tokens of a shard, memory-mapped read-only (nothing is read until used).

  Returns:
    np.memmap of uint16 or uint32 [num_tokens] (an empty array for an empty shard).

  Raises:
    TokenShardError: see `read_shard_header`.
  """
  layout, num_tokens = read_shard_header(path)
  if num_tokens == 0:
    return np.zeros(0, layout.dtype)
  return np.memmap(path, dtype=layout.dtype, mode="r", offset=HEADER_BYTES, shape=(num_tokens,))
