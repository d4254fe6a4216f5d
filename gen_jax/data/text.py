"""Text for the language-model family: tokenizers, token arrays, and a window loader.

    tokenizer = data.text_tokenizer(config.data)        # .vocab_size, .encode, .decode
    loader = data.make_text_loader(config.data, split="train", global_batch_size=64, seed=0)
    batch = next(iter(loader))   # {"tokens": int32 [B_local, seq_len + 1]}
    # inputs, targets = batch["tokens"][:, :-1], batch["tokens"][:, 1:]

A split is read once through `sources.load_split` (any dataset with a text feature,
`data.text_feature`, default "text"), its documents concatenated in order with
NOTHING between them (neither tokenizer has a separator; windows may span a
document boundary), tokenized, and held in memory as one int32 array, cached per
process: fine for corpora up to a few hundred MB.

Config fields read (`config.data`): dataset, data_dir, manual_dir, train_split,
eval_split, tokenizer ('char' | 'byte' | 'ids' | 'bpe'), seq_len, text_feature (optional),
vocab_size ('ids' only: the id range of pre-tokenized data, e.g. GPT-2's 50257),
tokenizer_path ('bpe' only: a tiktoken rank file or a tokenizer.json, gen_jax/data/bpe.py),
text_path (dataset='text_files': the user's .txt file or folder of them).
dataset='token_shards' reads token shards on disk instead, memory-mapped (data.shards,
data.batching, data.bos_id: gen_jax/data/shard_loader.py, docs/data.md).

Loader streams (see `make_text_loader`): random windows for training (infinite,
exactly resumable), or sequential non-overlapping windows covering a split once per
epoch for evaluation. The iterator saves and restores its position with
`get_state()` / `set_state(state)` or `grain.checkpoint.CheckpointSave(it)` /
`CheckpointRestore(it)` in an orbax checkpoint, like the image pipeline's.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import os
from typing import Protocol

import ml_collections
import numpy as np

from gen_jax.data import bpe, pipeline, shard_loader, sources
from gen_jax.data.builders import BUILDERS
from gen_jax.data.errors import DatasetTooSmallError, DatasetUnavailableError, UserDataError

TOKENIZERS = ("char", "byte", "ids", "bpe")
# data.dataset of token shards on disk (gen_jax/data/shard_loader.py), not a TFDS dataset.
TOKEN_SHARDS = "token_shards"


# ---------------------------------------------------------------- tokenizers

class Tokenizer(Protocol):
  """What `text_tokenizer` returns."""

  @property
  def vocab_size(self) -> int: ...

  def encode(self, text: str) -> np.ndarray: ...

  def decode(self, ids) -> str: ...

  def identity(self) -> dict: ...


def _check_ids(ids, vocab_size: int) -> np.ndarray:
  """Returns `ids` as a 1-D integer array, checking every id is in [0, vocab_size)."""
  ids = np.asarray(ids)
  if ids.ndim != 1 or not (ids.size == 0 or np.issubdtype(ids.dtype, np.integer)):
    raise ValueError(f"decode takes a 1-D sequence of integer ids, got {ids.dtype} {ids.shape}.")
  if ids.size and (ids.min() < 0 or ids.max() >= vocab_size):
    raise ValueError(f"ids must be in [0, {vocab_size}), got [{ids.min()}, {ids.max()}].")
  return ids.astype(np.int64)


class CharTokenizer:
  """Characters <-> ids: id i is the i-th character of the sorted set of characters of
  the text it was built from (nanoGPT's scheme; built from a dataset's whole text, so
  that all splits share ids)."""

  def __init__(self, text: str):
    self.chars = "".join(sorted(set(text)))  # sorted by code point
    if not self.chars:
      raise ValueError("CharTokenizer needs a non-empty text to build its vocabulary.")
    self._code_points = np.frombuffer(self.chars.encode("utf-32-le"), dtype=np.uint32)

  @property
  def vocab_size(self) -> int:
    return len(self.chars)

  def encode(self, text: str) -> np.ndarray:
    """Returns int32 [len(text)] ids; ValueError names any character not in the vocabulary."""
    code_points = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
    ids = np.searchsorted(self._code_points, code_points)
    unknown = self._code_points[np.minimum(ids, self.vocab_size - 1)] != code_points
    if unknown.any():
      positions = np.flatnonzero(unknown)
      missing = sorted({text[i] for i in positions})
      raise ValueError(
          f"{len(missing)} character(s) {''.join(missing[:20])!r} (first at position "
          f"{positions[0]}) are not in this char vocabulary of {self.vocab_size} characters, "
          "which holds the characters of the dataset's text; use tokenizer='byte' to "
          "encode any text.")
    return ids.astype(np.int32)

  def decode(self, ids) -> str:
    """Returns the text of a 1-D sequence of ids."""
    ids = _check_ids(ids, self.vocab_size)
    return self._code_points[ids].tobytes().decode("utf-32-le")

  def identity(self) -> dict:
    """What token shards record of a tokenizer (`bpe.BpeTokenizer.identity`)."""
    return {"kind": "char", "vocab_size": self.vocab_size, "eot_id": None,
            "fingerprint": bpe.fingerprint([c.encode() for c in self.chars])}

  def __eq__(self, other) -> bool:
    return isinstance(other, CharTokenizer) and other.chars == self.chars

  def __hash__(self) -> int:
    return hash(self.chars)

  def __repr__(self) -> str:
    return f"CharTokenizer(vocab_size={self.vocab_size})"


class ByteTokenizer:
  """UTF-8 bytes as ids (vocabulary 256): encodes any text, needs no data."""

  vocab_size = 256

  def encode(self, text: str) -> np.ndarray:
    """Returns int32 [number of UTF-8 bytes of text] ids."""
    return np.frombuffer(text.encode("utf-8"), dtype=np.uint8).astype(np.int32)

  def decode(self, ids) -> str:
    """Returns the text of a 1-D sequence of ids; invalid UTF-8 (e.g. a sample cut
    mid-character) becomes U+FFFD."""
    ids = _check_ids(ids, self.vocab_size)
    return ids.astype(np.uint8).tobytes().decode("utf-8", errors="replace")

  def identity(self) -> dict:
    """What token shards record of a tokenizer (`bpe.BpeTokenizer.identity`)."""
    return {"kind": "byte", "vocab_size": 256, "eot_id": None,
            "fingerprint": bpe.fingerprint([bytes([b]) for b in range(256)])}

  def __eq__(self, other) -> bool:
    return isinstance(other, ByteTokenizer)

  def __hash__(self) -> int:
    return hash(ByteTokenizer)

  def __repr__(self) -> str:
    return "ByteTokenizer(vocab_size=256)"


class IdsTokenizer:
  """Pre-tokenized data (e.g. GPT-2 BPE ids a user wrote into a TFDS dataset): the dataset's
  feature holds integer ids already, and "text" on the command line (a sample prompt) is
  the ids themselves, written as numbers: "50256" or "464, 3290"."""

  def __init__(self, vocab_size: int):
    if vocab_size < 1:
      raise ValueError(f"data.vocab_size={vocab_size} must be set (>= 1) for tokenizer='ids'.")
    self.vocab_size = int(vocab_size)

  def encode(self, text: str) -> np.ndarray:
    """'464, 3290' -> int32 [2]: ids written as numbers, separated by commas or spaces."""
    try:
      ids = np.asarray([int(t) for t in text.replace(",", " ").split()], np.int64)
    except ValueError:
      raise ValueError(f"tokenizer='ids' reads prompts as token ids (e.g. '50256' or "
                       f"'464, 3290'), got {text!r}.") from None
    return _check_ids(ids, self.vocab_size).astype(np.int32)

  def decode(self, ids) -> str:
    """The ids as space-separated numbers (decode them with the tokenizer that made them)."""
    return " ".join(str(i) for i in _check_ids(ids, self.vocab_size))

  def identity(self) -> dict:
    """The id range only (token shards compare a run's 'ids' by vocab_size alone)."""
    return {"kind": "ids", "vocab_size": self.vocab_size, "eot_id": None}

  def __eq__(self, other) -> bool:
    return isinstance(other, IdsTokenizer) and other.vocab_size == self.vocab_size

  def __hash__(self) -> int:
    return hash((IdsTokenizer, self.vocab_size))

  def __repr__(self) -> str:
    return f"IdsTokenizer(vocab_size={self.vocab_size})"


# ---------------------------------------------------------------- reading text

def is_text_dataset(data_config: ml_collections.ConfigDict) -> bool:
  """True if `config.data` names text.

  gen_jax's builders say so themselves (text builders declare `TEXT_FEATURE`, e.g.
  tiny_shakespeare; image builders never are text). Any other dataset is text when
  `data.tokenizer` is set (non-empty).
  """
  if data_config.dataset == TOKEN_SHARDS:
    return True
  builder = BUILDERS.get(data_config.dataset)
  if builder is not None:
    return hasattr(builder, "TEXT_FEATURE")
  return bool(data_config.get("tokenizer"))


# (dataset, data_dir, manual_dir, text feature, builder options as sorted (field, value)
# pairs): what identifies the text read.
SourceKey = tuple[str, str, str, str, tuple]


def _source_key(data_config: ml_collections.ConfigDict) -> SourceKey:
  builder = BUILDERS.get(data_config.dataset)
  feature = data_config.get("text_feature") or getattr(builder, "TEXT_FEATURE", "text")
  return (data_config.dataset, data_config.get("data_dir") or "",
          data_config.get("manual_dir") or "", feature,
          tuple(sorted(sources.builder_options(data_config).items())))


def _load(dataset: str, data_dir: str, manual_dir: str, options: tuple, split: str):
  return sources.load_split(dataset, split, data_dir=data_dir, manual_dir=manual_dir,
                            options=dict(options))


@functools.cache
def _split_bytes(dataset: str, data_dir: str, manual_dir: str, feature: str, options: tuple,
                 split: str) -> bytes:
  """The documents of a split as bytes (UTF-8 for text), concatenated with nothing between."""
  source = _load(dataset, data_dir, manual_dir, options, split)
  info = getattr(source, "dataset_info", None)
  features = list(info.features.keys()) if info is not None else (
      list(source[0].keys()) if len(source) else [feature])
  if feature not in features:
    raise ValueError(
        f"dataset {dataset!r} has no text feature {feature!r} (its features: "
        f"{', '.join(features)}); set --config.data.text_feature to the one holding text.")
  documents = (source[i][feature] for i in range(len(source)))
  return b"".join(d if isinstance(d, bytes) else str(d).encode("utf-8") for d in documents)


@functools.cache
def _split_text(dataset: str, data_dir: str, manual_dir: str, feature: str, options: tuple,
                split: str) -> str:
  """The documents of a split, concatenated with nothing between them, as text.

  Raises:
    UserDataError: (text_files) a file is not UTF-8, naming it.
    DatasetUnavailableError: the split is not UTF-8.
  """
  source = _load(dataset, data_dir, manual_dir, options, split)
  metadata = getattr(getattr(source, "dataset_info", None), "metadata", None) or {}
  if metadata.get("non_utf8_file"):
    raise UserDataError(
        f"{dataset}: {metadata['non_utf8_file']} is not UTF-8 text, which "
        "tokenizer='char' needs: set --config.data.tokenizer=byte (its bytes are the "
        "tokens), or convert the file to UTF-8.")
  raw = _split_bytes(dataset, data_dir, manual_dir, feature, options, split)
  try:
    return raw.decode("utf-8")
  except UnicodeDecodeError as err:
    raise DatasetUnavailableError(
        f"{dataset}: split {split!r} is not UTF-8 text ({err}), which tokenizer='char' "
        "needs: use --config.data.tokenizer=byte.") from None


def _split_names(key: SourceKey, train_split: str, eval_split: str) -> list[str]:
  """Every split of the dataset (from its dataset_info), else its train and eval splits."""
  dataset, data_dir, manual_dir, _, options = key
  source = _load(dataset, data_dir, manual_dir, options, train_split)
  info = getattr(source, "dataset_info", None)
  if info is not None and info.splits:
    return list(info.splits.keys())
  return [train_split, eval_split]


@functools.cache
def _char_tokenizer(key: SourceKey, train_split: str,
                    eval_split: str) -> CharTokenizer:
  chars = set()
  for split in _split_names(key, train_split, eval_split):
    chars.update(_split_text(*key, split))
  return CharTokenizer("".join(chars))


def text_tokenizer(data_config: ml_collections.ConfigDict) -> Tokenizer:
  """Returns the tokenizer `config.data.tokenizer` names.

  'byte': `ByteTokenizer()`, without reading any data. 'char': a `CharTokenizer` over the
  characters of every split of the dataset (for tiny_shakespeare train + validation: 65
  characters), so all splits share ids; read once per process and cached. 'ids': the
  data's ids themselves (`data.vocab_size`). 'bpe': the byte-level BPE of the file
  `data.tokenizer_path` (a tiktoken rank file or a tokenizer.json; gen_jax/data/bpe.py).

  Raises:
    ValueError: `data.tokenizer` is none of TOKENIZERS, or 'char' for token shards.
    DatasetUnavailableError: ('char') the dataset cannot be obtained; ('bpe') no such file,
      or not a BPE tokenizer.
  """
  name = data_config.get("tokenizer")
  if name not in TOKENIZERS:
    raise ValueError(f"data.tokenizer={name!r}; expected one of {TOKENIZERS}.")
  if name == "byte":
    return ByteTokenizer()
  if name == "ids":
    return IdsTokenizer(data_config.get("vocab_size", 0))
  if name == "bpe":
    return _bpe_tokenizer(data_config.get("tokenizer_path", ""))
  if data_config.dataset == TOKEN_SHARDS:
    raise ValueError("data.tokenizer='char' builds its vocabulary from a text dataset; token "
                     "shards hold ids: use 'bpe' (data.tokenizer_path), 'byte' or 'ids'.")
  return _char_tokenizer(_source_key(data_config), data_config.get("train_split", "train"),
                         data_config.get("eval_split", "validation"))


@functools.cache
def _bpe_tokenizer(path: str) -> bpe.BpeTokenizer:
  if not path:
    raise UserDataError("data.tokenizer='bpe' reads its vocabulary from a file: set "
                        "data.tokenizer_path to a tiktoken rank file or a tokenizer.json.")
  try:
    return bpe.load_bpe(os.path.expanduser(path))
  except (FileNotFoundError, ValueError) as err:
    raise UserDataError(f"data.tokenizer_path={path}: {err}") from None


@functools.cache
def _split_ids(dataset: str, data_dir: str, manual_dir: str, feature: str, options: tuple,
               split: str, vocab_size: int) -> np.ndarray:
  """The integer-id documents of a split, concatenated (any separators, such as GPT-2's
  <|endoftext|> = 50256, are the ones the user's preparation wrote)."""
  source = _load(dataset, data_dir, manual_dir, options, split)
  if len(source) and feature not in source[0]:
    raise ValueError(f"dataset {dataset!r} has no feature {feature!r} (its features: "
                     f"{', '.join(source[0])}); set --config.data.text_feature to the one "
                     "holding the token ids.")
  documents = [np.asarray(source[i][feature]).reshape(-1) for i in range(len(source))]
  return _check_ids(np.concatenate(documents) if documents else np.zeros(0, np.int64),
                    vocab_size).astype(np.int32)


@functools.cache
def _tokens(key: SourceKey, tokenizer: Tokenizer, split: str) -> np.ndarray:
  if isinstance(tokenizer, IdsTokenizer):
    tokens = _split_ids(*key, split, tokenizer.vocab_size)
    tokens.setflags(write=False)
    return tokens
  if isinstance(tokenizer, ByteTokenizer):   # the stored bytes, UTF-8 or not
    tokens = np.frombuffer(_split_bytes(*key, split), np.uint8).astype(np.int32)
  else:
    tokens = tokenizer.encode(_split_text(*key, split))
  tokens.setflags(write=False)  # shared by every caller
  return tokens


def load_tokens(data_config: ml_collections.ConfigDict, split: str) -> np.ndarray:
  """Returns the token ids of a whole split: int32 [num_tokens], read-only, cached.

  Raises:
    ValueError: unknown tokenizer, or the dataset has no such text feature, or token shards
      (read them with `make_text_loader`, memory-mapped).
    DatasetUnavailableError: the dataset cannot be obtained.
  """
  if data_config.dataset == TOKEN_SHARDS:
    raise ValueError("token shards are read memory-mapped by make_text_loader, not loaded "
                     "whole.")
  return _tokens(_source_key(data_config), text_tokenizer(data_config), split)


# ---------------------------------------------------------------- window loader

@dataclasses.dataclass(frozen=True)
class WindowSpec:
  """Everything that fixes a stream of windows; saved with the position, checked on restore."""

  dataset: str
  split: str
  tokenizer: str
  num_tokens: int
  seq_len: int
  global_batch_size: int  # all processes together; the state is the same on every process
  seed: int
  shuffle: bool
  num_epochs: int | None

  def batches_per_epoch(self) -> int:
    """Sequential mode: whole global batches of windows j*seq_len, j < (N - 1) // seq_len."""
    num_windows = (self.num_tokens - 1) // self.seq_len
    return num_windows // self.global_batch_size


class TextIterator:
  """Yields {"tokens": int32 [batch_size, seq_len + 1]} windows of a token array.

  Global batch i depends only on the spec and i (no hidden state), so the position alone
  is the checkpoint; this process yields rows [first_row, first_row + rows) of it, so
  the global batch is the same for any number of processes and so is the state.
  """

  def __init__(self, tokens: np.ndarray, spec: WindowSpec, first_row: int, rows: int):
    self._spec = spec
    self._rows = slice(first_row, first_row + rows)
    # Row s is tokens[s : s + seq_len + 1]; a view, nothing is copied.
    self._windows = np.lib.stride_tricks.sliding_window_view(tokens, spec.seq_len + 1)
    self._position = 0  # global batches read
    self._end = None if spec.num_epochs is None else spec.num_epochs * spec.batches_per_epoch()

  def __iter__(self) -> TextIterator:
    return self

  def __next__(self) -> dict[str, np.ndarray]:
    if self._end is not None and self._position >= self._end:
      raise StopIteration
    starts = self._starts(self._position)
    self._position += 1
    return {"tokens": self._windows[starts]}  # fancy indexing copies: [B, L + 1]

  def _starts(self, position: int) -> np.ndarray:
    spec = self._spec
    B = spec.global_batch_size
    if spec.shuffle:  # uniform over all N - L windows, a fresh draw of B per (seed, batch)
      # (The 0 is the stream id the random windows have always used: runs reproduce.)
      rng = np.random.default_rng([spec.seed, 0, position])
      return rng.integers(0, len(self._windows), size=B)[self._rows]
    # Global batch b holds windows bB ... (b+1)B - 1, in order.
    batch = position % spec.batches_per_epoch()
    return (batch * B + np.arange(B)[self._rows]) * spec.seq_len

  def get_state(self) -> bytes:
    """The position and the spec it applies to, as JSON bytes."""
    return json.dumps({"text_iterator": dataclasses.asdict(self._spec),
                       "position": self._position}, sort_keys=True).encode()

  def set_state(self, state: bytes) -> None:
    """Moves to a saved position; ValueError if it was saved under a different spec."""
    saved = json.loads(state)
    if not isinstance(saved, dict) or "text_iterator" not in saved:
      raise ValueError("not the state of a gen_jax text iterator (an image pipeline's?).")
    mine = dataclasses.asdict(self._spec)
    differ = {k: (saved["text_iterator"].get(k), v) for k, v in mine.items()
              if saved["text_iterator"].get(k) != v}
    if differ:
      raise ValueError(
          "the saved text-iterator state does not fit this iterator: " +
          ", ".join(f"{k}: saved {a!r}, here {b!r}" for k, (a, b) in differ.items()) +
          ". Restore with the data config, split, global batch size and seed it was "
          "saved with (any number of processes).")
    self._position = int(saved["position"])

  def start_prefetch(self) -> None:
    """Nothing to prefetch (batches take microseconds); grain's checkpoint handler calls it."""


class TextLoader:
  """What `make_text_loader` returns: each `iter(loader)` starts a new stream at batch 0."""

  def __init__(self, tokens: np.ndarray, spec: WindowSpec, first_row: int, rows: int):
    self.tokens, self.spec = tokens, spec
    self.first_row, self.rows = first_row, rows

  def __iter__(self) -> TextIterator:
    return TextIterator(self.tokens, self.spec, self.first_row, self.rows)


def make_text_loader(data_config: ml_collections.ConfigDict,
                     **kwargs) -> TextLoader | shard_loader.ShardLoader:
  """Builds the window loader of one split, sharded over JAX processes.

  `data.dataset='token_shards'` reads the shards `data.shards` names, memory-mapped, with
  `data.batching` 'windows' or 'documents' (`shard_loader.make_shard_loader`); every other
  dataset is held in memory, as below.

  Args:
    data_config: `config.data` (dataset, data_dir, manual_dir, tokenizer, seq_len,
      text_feature).
    **kwargs: the `pipeline.LoaderArgs` fields, here:
      split: e.g. "train" or "validation".
      global_batch_size: windows per batch summed over processes; each process yields
        global_batch_size // jax.process_count().
      seed: (shuffle) seeds the window offsets; an int >= 0.
      shuffle: True: global batch i holds windows at offsets drawn uniformly from all
        N - seq_len of them with `np.random.default_rng([seed, 0, i])`: infinite, with
        replacement, resumed exactly from the position.
        False: non-overlapping windows starting at 0, seq_len, 2*seq_len, ... in order;
        the windows left over after the last whole global batch are dropped. For
        full-split evaluation.
        Either way process p of P yields rows [p B/P, (p+1) B/P) of each global batch.
      num_epochs: (shuffle=False) passes over the split, None = forever. Must be None
        when shuffling (random windows have no epochs).

  Returns:
    A `TextLoader`; `iter(loader)` yields {"tokens": int32 [B_local, seq_len + 1]}
    (inputs are [:, :-1], targets [:, 1:]) and is checkpointable.

  Raises:
    ValueError: seq_len missing or < 1, a bad batch size, seed or num_epochs.
    DatasetTooSmallError: (a DatasetUnavailableError) a split too short for one window
      (one batch, without shuffle).
    DatasetUnavailableError: the dataset cannot be obtained.
  """
  if data_config.dataset == TOKEN_SHARDS:
    return shard_loader.make_shard_loader(data_config, text_tokenizer(data_config).identity(),
                                          **kwargs)
  args = pipeline.LoaderArgs(**kwargs)
  seq_len = data_config.get("seq_len")
  if not isinstance(seq_len, int) or seq_len < 1:
    raise ValueError(f"data.seq_len={seq_len!r}: text loaders need a window length >= 1.")
  first_row, rows = args.process_rows()
  seed, num_epochs = args.seed, args.num_epochs
  if not isinstance(seed, (int, np.integer)) or seed < 0:
    raise ValueError(f"seed={seed!r} must be an int >= 0.")
  if args.shuffle and num_epochs is not None:
    raise ValueError(f"num_epochs={num_epochs}: random windows are infinite; pass None "
                     "(or shuffle=False for epochs over sequential windows).")
  if num_epochs is not None and num_epochs < 1:
    raise ValueError(f"num_epochs={num_epochs} must be >= 1 or None.")
  tokens = load_tokens(data_config, args.split)
  spec = WindowSpec(
      dataset=data_config.dataset, split=args.split, tokenizer=data_config.tokenizer,
      num_tokens=len(tokens), seq_len=seq_len, global_batch_size=args.global_batch_size,
      seed=int(seed), shuffle=args.shuffle, num_epochs=num_epochs)
  if len(tokens) < seq_len + 1:
    raise DatasetTooSmallError(
        f"split {args.split!r} of {data_config.dataset} has {len(tokens)} tokens, fewer than "
        f"seq_len + 1 = {seq_len + 1}: lower data.seq_len.")
  if not args.shuffle and spec.batches_per_epoch() == 0:
    raise DatasetTooSmallError(
        f"split {args.split!r} of {data_config.dataset} has {(len(tokens) - 1) // seq_len} "
        f"windows of seq_len={seq_len}, fewer than one global batch of "
        f"{args.global_batch_size}: lower the batch size or seq_len.")
  return TextLoader(tokens, spec, first_row, rows)
