"""Batches of token shards, memory-mapped: random windows (nanoGPT) or BOS-aligned documents
packed into rows with segment ids (modded-nanogpt).

    loader = shard_loader.make_shard_loader(config.data, tokenizer.identity(), split="train",
                                            global_batch_size=64, seed=0)
    batch = next(iter(loader))    # (or data.make_loader(config.data, ...), which calls it)
    # batching='windows':   {"tokens": int32 [B, L + 1]}
    # batching='documents': {"tokens": int32 [B, L + 1], "segment_ids": int32 [B, L + 1]}

Streams (`ShardStreamSpec`: batching x shuffle):

- windows, shuffle: global batch i holds B windows of L + 1 tokens drawn uniformly, with
  `np.random.default_rng([seed, 0, i])`, from all windows of all shards (a window never
  spans two shards): nanoGPT's `get_batch`. With one shard it draws exactly the windows of
  the in-memory text loader (gen_jax/data/text.py) over the same tokens.
- documents, shuffle: documents in file order (a document is a BOS token and what follows it
  up to the next BOS or the shard's end; tokens before a shard's first BOS are skipped),
  packed row after row: a row takes whole documents while they fit and cuts the one that
  does not at the row's end, dropping its rest; the next row starts at the next document.
  So every row starts at a BOS and holds whole documents or a document's prefix, never a
  padding token (modded-nanogpt's `distributed_data_generator(align_to_bos=True)`, which
  packs one flat row per GPU the same way). After the last shard the stream starts again.
- shuffle=False (evaluation): non-overlapping windows at 0, L, 2L, ... of each shard in
  order, `num_epochs` times; with 'documents' they carry segment ids too (modded-nanogpt's
  validation reads its shards this way, its attention cut at BOS tokens).

`segment_ids[b, t]` is the number of BOS tokens in row b at positions <= t, so positions
of one document share an id and different documents of a row differ (a window's first,
partial document is 0). The model attends from t to s <= t only where they are equal.

Position: windows streams are functions of the batch index (the position is the number of
batches read); the documents stream is sequential, and its cursor (epoch, shard, document)
is saved with it. Every process computes the whole global batch's plan (index arithmetic
only) and reads its own rows [first_row, first_row + rows), so the state is the same on
every process. `get_state()` / `set_state()`, as gen_jax's text loader.
"""
from __future__ import annotations

import dataclasses
import json

import ml_collections
import numpy as np

from gen_jax.core.errors import ConfigError
from gen_jax.data import pipeline, token_shards
from gen_jax.data.errors import DamagedDatasetError, DatasetTooSmallError
from gen_jax.data.token_shards import ShardSplit

BATCHINGS = ("windows", "documents")


@dataclasses.dataclass(frozen=True)
class ShardStreamSpec:
  """Everything that fixes a stream of batches; saved with the position, checked on restore.

  Attributes:
    shards: the shards' file names (not folders: a run may resume where they are mounted
      elsewhere), in order, and their token counts.
    batching: 'windows' or 'documents'.
    seq_len: L; rows hold L + 1 tokens.
    global_batch_size: B, rows per batch over all processes.
    seed: (windows, shuffle) seeds the window offsets.
    shuffle: the training streams (random windows; packed documents) or the evaluation one.
    num_epochs: (shuffle=False) passes over the split; None = forever.
    bos_id: (documents) the id that starts every document; -1 for windows.
    vocab_size: ids must be below it (checked on every batch).
  """
  shards: tuple[tuple[str, int], ...]
  batching: str
  seq_len: int
  global_batch_size: int
  seed: int
  shuffle: bool
  num_epochs: int | None
  bos_id: int
  vocab_size: int

  def windows_per_shard(self) -> np.ndarray:
    """Random windows: n - L per shard of n tokens; sequential: (n - 1) // L."""
    n = np.asarray([count for _, count in self.shards], np.int64)
    L = self.seq_len
    return np.maximum(n - L, 0) if self.shuffle else np.maximum(n - 1, 0) // L

  def batches_per_epoch(self) -> int:
    """Sequential windows: whole global batches per pass over the split."""
    return int(self.windows_per_shard().sum()) // self.global_batch_size


def segment_ids(tokens: np.ndarray, bos_id: int) -> np.ndarray:
  """int32 [B, T]: per row, the number of BOS tokens at or before each position."""
  return np.cumsum(tokens == bos_id, axis=1, dtype=np.int32)


# (shard, start, length): a piece of a row, in order.
Piece = tuple[int, int, int]


def pack_documents(shards: ShardSplit, bos_id: int, row_len: int, num_rows: int,
                   cursor: tuple[int, int, int]) -> tuple[list[list[Piece]],
                                                          tuple[int, int, int]]:
  """Packs the next documents into `num_rows` rows of `row_len` tokens.

  Args:
    shards: the split.
    bos_id: the id that starts a document.
    row_len: tokens per row (L + 1).
    num_rows: rows to fill.
    cursor: (epoch, shard, document index in the shard) of the next document.

  Returns:
    (the pieces of each row, the cursor after them).

  Raises:
    DatasetTooSmallError: no shard holds a BOS token.
  """
  epoch, shard, doc = cursor
  rows = []
  shards_without_documents = 0   # shards passed since the last document
  for _ in range(num_rows):
    pieces, filled = [], 0
    while filled < row_len:
      starts = shards.document_starts(shard, bos_id)
      if doc >= len(starts):   # this shard is done: the next one (after the last, the first)
        shard, doc = shard + 1, 0
        if shard == len(shards.paths):
          epoch, shard = epoch + 1, 0
        shards_without_documents += 1
        if shards_without_documents > len(shards.paths):
          raise DatasetTooSmallError(
              f"no document starts (token {bos_id}) in {shards.pattern}: set data.bos_id to "
              "the id that starts each document, or use data.batching='windows'.")
        continue
      shards_without_documents = 0
      start = int(starts[doc])
      end = int(starts[doc + 1]) if doc + 1 < len(starts) else shards.num_tokens[shard]
      length = min(end - start, row_len - filled)
      pieces.append((shard, start, length))
      filled += length
      doc += 1
    rows.append(pieces)
  return rows, (epoch, shard, doc)


class ShardIterator:
  """Yields batches of a `ShardSplit` per its `ShardStreamSpec`; see the module docstring."""

  def __init__(self, shards: ShardSplit, spec: ShardStreamSpec, first_row: int, rows: int):
    self._shards, self._spec = shards, spec
    self._rows = slice(first_row, first_row + rows)
    self._position = 0                 # global batches read
    self._cursor = (0, 0, 0)           # documents: (epoch, shard, document)
    windows = spec.windows_per_shard()
    self._first_window = np.concatenate([[0], np.cumsum(windows)])   # [shards + 1]
    self._end = None if spec.num_epochs is None else spec.num_epochs * spec.batches_per_epoch()

  def __iter__(self) -> ShardIterator:
    return self

  def __next__(self) -> dict[str, np.ndarray]:
    spec = self._spec
    if self._end is not None and self._position >= self._end:
      raise StopIteration
    if spec.batching == "documents" and spec.shuffle:
      plan, self._cursor = pack_documents(self._shards, spec.bos_id, spec.seq_len + 1,
                                          spec.global_batch_size, self._cursor)
      tokens = np.stack([self._read(pieces) for pieces in plan[self._rows]])
    else:
      tokens = np.stack([self._read([(s, o, spec.seq_len + 1)])
                         for s, o in zip(*self._window_starts(self._position), strict=True)])
    self._position += 1
    if tokens.size and tokens.max() >= spec.vocab_size:
      raise DamagedDatasetError(
          f"token id {tokens.max()} in {self._shards.pattern} is outside this run's vocabulary "
          f"of {spec.vocab_size}: the shards were written with another tokenizer.")
    batch = {"tokens": tokens}
    if spec.batching == "documents":
      batch["segment_ids"] = segment_ids(tokens, spec.bos_id)
    return batch

  def _read(self, pieces: list[Piece]) -> np.ndarray:
    return np.concatenate([self._shards.tokens(s)[o:o + n] for s, o, n in pieces]).astype(
        np.int32)

  def _window_starts(self, position: int) -> tuple[np.ndarray, np.ndarray]:
    """(shard, offset) of this process's windows of global batch `position`."""
    spec = self._spec
    B = spec.global_batch_size
    if spec.shuffle:   # uniform over every window of every shard, a fresh draw per batch
      rng = np.random.default_rng([spec.seed, 0, position])
      window = rng.integers(0, self._first_window[-1], size=B)[self._rows]
    else:              # global batch b holds sequential windows bB ... (b+1)B - 1
      batch = position % spec.batches_per_epoch()
      window = batch * B + np.arange(B)[self._rows]
    shard = np.searchsorted(self._first_window, window, side="right") - 1
    offset = window - self._first_window[shard]
    return shard, offset if spec.shuffle else offset * spec.seq_len

  def get_state(self) -> bytes:
    """The position (and the documents' cursor) with the spec it applies to, as JSON bytes."""
    return json.dumps({"token_shard_iterator": _spec_json(self._spec),
                       "position": self._position, "cursor": list(self._cursor)},
                      sort_keys=True).encode()

  def set_state(self, state: bytes) -> None:
    """Moves to a saved position; ValueError if it was saved under a different spec."""
    saved = json.loads(state)
    if not isinstance(saved, dict) or "token_shard_iterator" not in saved:
      raise ValueError("not the state of a gen_jax token-shard iterator (another loader's?).")
    mine = _spec_json(self._spec)
    differ = {k: (saved["token_shard_iterator"].get(k), v) for k, v in mine.items()
              if saved["token_shard_iterator"].get(k) != v}
    if differ:
      raise ValueError(
          "the saved token-shard iterator state does not fit this iterator: " +
          "; ".join(f"{k}: saved {str(a)[:80]}, here {str(b)[:80]}"
                    for k, (a, b) in differ.items()) +
          ". Restore with the shards, data config, global batch size and seed it was saved "
          "with (any number of processes).")
    self._position = int(saved["position"])
    epoch, shard, doc = saved["cursor"]
    self._cursor = (int(epoch), int(shard), int(doc))

  def start_prefetch(self) -> None:
    """Nothing to prefetch (a batch is a few slices of mapped files); grain's checkpoint
    handler calls it."""


def _spec_json(spec: ShardStreamSpec) -> dict:
  return json.loads(json.dumps(dataclasses.asdict(spec)))   # tuples as lists, as saved


class ShardLoader:
  """Each `iter(loader)` starts a new stream at batch 0."""

  def __init__(self, shards: ShardSplit, spec: ShardStreamSpec, first_row: int, rows: int):
    if spec.batching not in BATCHINGS:
      raise ValueError(f"data.batching={spec.batching!r}; expected one of {BATCHINGS}.")
    windows = spec.windows_per_shard()
    if spec.shuffle and spec.batching == "windows" and not windows.sum():
      raise DatasetTooSmallError(
          f"{shards.pattern}: no shard holds seq_len + 1 = {spec.seq_len + 1} tokens; lower "
          "data.seq_len.")
    if not spec.shuffle and spec.batches_per_epoch() == 0:
      raise DatasetTooSmallError(
          f"{shards.pattern} holds {int(windows.sum())} windows of seq_len={spec.seq_len}, fewer "
          f"than one global batch of {spec.global_batch_size}: lower the batch size or seq_len.")
    self.shards, self.spec = shards, spec
    self.first_row, self.rows = first_row, rows

  def __iter__(self) -> ShardIterator:
    return ShardIterator(self.shards, self.spec, self.first_row, self.rows)


def bos_id(data_config: ml_collections.ConfigDict, shards: ShardSplit,
           tokenizer_identity: dict) -> int:
  """The id that starts a document: `data.bos_id`, or when it is -1 the <|endoftext|> id
  the shards' sidecar records, else the run's tokenizer's.

  Raises:
    ConfigError: none of them names one.
  """
  chosen = int(data_config.get("bos_id", -1))
  if chosen >= 0:
    return chosen
  for identity in (shards.tokenizer or {}, tokenizer_identity):
    if identity.get("eot_id") is not None:
      return int(identity["eot_id"])
  raise ConfigError(
      f"data.batching='documents' needs the id that starts each document, and neither the "
      f"shards {shards.pattern} nor data.tokenizer={data_config.tokenizer!r} records one: set "
      "data.bos_id (GPT-2's <|endoftext|>: 50256).")


def open_checked_split(data_config: ml_collections.ConfigDict, split: str,
                       tokenizer_identity: dict) -> ShardSplit:
  """The shards of `split` (`data.shards`), checked against the run's tokenizer and batching.

  Raises:
    ConfigError: an unknown data.batching, or no BOS id for 'documents'.
    DatasetUnavailableError: no shards, or unreadable ones (TokenShardError), or shards of
      another tokenizer (TokenizerMismatchError).
  """
  batching = data_config.get("batching", "windows")
  if batching not in BATCHINGS:
    raise ConfigError(f"data.batching={batching!r}; expected one of {BATCHINGS}.")
  shards = token_shards.open_split(data_config.get("shards", ""), split)
  setting = f"data.tokenizer={data_config.tokenizer!r}" + (
      f" ({data_config.tokenizer_path})" if data_config.get("tokenizer_path") else "")
  token_shards.check_tokenizer(shards, tokenizer_identity, setting)
  if batching == "documents":
    bos_id(data_config, shards, tokenizer_identity)
  return shards


def make_shard_loader(data_config: ml_collections.ConfigDict, tokenizer_identity: dict,
                      **kwargs) -> ShardLoader:
  """Builds the loader of one split of token shards, sharded over JAX processes.

  Args:
    data_config: `config.data`: shards (a glob with {split}), batching ('windows' |
      'documents'), seq_len, bos_id (-1: the recorded <|endoftext|>).
    tokenizer_identity: the run's tokenizer's `identity()` (its vocab_size bounds the ids).
    **kwargs: the `pipeline.LoaderArgs` fields (split, global_batch_size, seed, shuffle,
      num_epochs), as for the in-memory text loader; see the module docstring.

  Returns:
    A `ShardLoader`; `iter(loader)` yields {"tokens": int32 [B_local, seq_len + 1]} (and
    with 'documents' "segment_ids": int32 [B_local, seq_len + 1]), checkpointable.

  Raises:
    ValueError: a bad seq_len, seed, batch size or num_epochs.
    ConfigError, DatasetUnavailableError: see `open_checked_split`.
  """
  args = pipeline.LoaderArgs(**kwargs)
  seq_len = data_config.get("seq_len")
  if not isinstance(seq_len, int) or seq_len < 1:
    raise ValueError(f"data.seq_len={seq_len!r}: token shards need a window length >= 1.")
  if not isinstance(args.seed, (int, np.integer)) or args.seed < 0:
    raise ValueError(f"seed={args.seed!r} must be an int >= 0.")
  if args.shuffle and args.num_epochs is not None:
    raise ValueError(f"num_epochs={args.num_epochs}: the training streams are infinite; pass "
                     "None (or shuffle=False for epochs of sequential windows).")
  if args.num_epochs is not None and args.num_epochs < 1:
    raise ValueError(f"num_epochs={args.num_epochs} must be >= 1 or None.")
  first_row, rows = args.process_rows()
  shards = open_checked_split(data_config, args.split, tokenizer_identity)
  batching = data_config.get("batching", "windows")
  spec = ShardStreamSpec(
      shards=tuple(zip(shards.names, shards.num_tokens, strict=True)), batching=batching,
      seq_len=seq_len, global_batch_size=args.global_batch_size, seed=int(args.seed),
      shuffle=args.shuffle, num_epochs=args.num_epochs,
      bos_id=bos_id(data_config, shards, tokenizer_identity) if batching == "documents" else -1,
      vocab_size=int(tokenizer_identity["vocab_size"]))
  return ShardLoader(shards, spec, first_row, rows)
