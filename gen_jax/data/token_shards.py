"""A split of token shards: the files a glob names, and the record of the tokenizer that
wrote them.

    shards = token_shards.open_split("/data/fineweb10B/fineweb_{split}_*.bin", "train")
    shards.paths, shards.num_tokens      # sorted by name; counts from the headers
    shards.tokens(i)                     # np.memmap of shard i (shard_file.read_token_shard)
    shards.tokenizer                     # the record's identity dict, or None
    token_shards.check_tokenizer(shards, run_identity)   # one-line error on a mismatch

The record is a sidecar next to the shards, `token_shards.json` in their folder, written by
`python -m gen_jax.data.tokenize_shards`:

    {"format": "gen_jax token shards", "tokenizer": {"kind": "bpe", "vocab_size": 50257,
     "eot_id": 50256, "fingerprint": "sha256:..."}, "shards": {"x_train_000000.bin": n, ...}}

The `.bin` files stay exactly the reference layout, so their readers (llm.c, nanoGPT,
modded-nanogpt), which never look at the sidecar, load them unchanged. Shards without a
sidecar (written by those projects) load too; nothing is known then of their tokenizer
but the id range their header allows.
"""
from __future__ import annotations

import dataclasses
import functools
import glob
import json
import os

import numpy as np

from gen_jax.data import shard_file
from gen_jax.data.errors import DatasetUnavailableError, UserDataError

SIDECAR = "token_shards.json"
FORMAT = "gen_jax token shards"
SPLIT_FIELD = "{split}"


class TokenizerMismatchError(UserDataError):
  """The run's tokenizer is not the one that wrote its token shards."""


@dataclasses.dataclass(frozen=True)
class ShardSplit:
  """The shards of one split, in name order.

  Attributes:
    pattern: the glob they were found by.
    paths: the files, sorted.
    num_tokens: tokens per shard, from the headers (checked against the file sizes).
    tokenizer: the identity the sidecar records, or None without one.
  """
  pattern: str
  paths: tuple[str, ...]
  num_tokens: tuple[int, ...]
  tokenizer: dict | None
  modified: tuple[int, ...]   # each file's mtime (ns) when opened: a rewritten file is reread

  def tokens(self, index: int) -> np.ndarray:
    """Shard `index`'s tokens, memory-mapped: uint16 or uint32 [num_tokens[index]]."""
    return _mapped(self.paths[index], self.modified[index])

  def document_starts(self, index: int, bos_id: int) -> np.ndarray:
    """int64 [documents]: where shard `index`'s BOS tokens are (found once, cached)."""
    return _bos_positions(self.paths[index], self.modified[index], bos_id)

  @property
  def names(self) -> tuple[str, ...]:
    return tuple(os.path.basename(p) for p in self.paths)


@functools.lru_cache(maxsize=64)
def _mapped(path: str, modified: int) -> np.ndarray:
  del modified   # part of the cache key only
  return shard_file.read_token_shard(path)


@functools.lru_cache(maxsize=64)
def _bos_positions(path: str, modified: int, bos_id: int) -> np.ndarray:
  positions = np.flatnonzero(_mapped(path, modified) == bos_id)
  positions.setflags(write=False)
  return positions


def split_pattern(pattern: str, split: str) -> str:
  """`data.shards` with `{split}` replaced by the split's name ('train', 'val', ...).

  Raises:
    UserDataError: the pattern is empty or has no `{split}`.
  """
  if not pattern or SPLIT_FIELD not in pattern:
    raise UserDataError(
        f"data.shards={pattern!r}: name the token shards by a glob with {SPLIT_FIELD} for the "
        "split, e.g. /data/fineweb10B/fineweb_{split}_*.bin (data.train_split='train', "
        "data.eval_split='val').")
  return os.path.expanduser(pattern.replace(SPLIT_FIELD, split))


def write_sidecar(directory: str | os.PathLike, tokenizer: dict, shards: dict[str, int],
                  **extra) -> None:
  """Writes (atomically) the folder's record: the tokenizer, the shards' token counts, and
  any `extra` JSON fields (the writer's progress)."""
  path = os.path.join(directory, SIDECAR)
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    json.dump({"format": FORMAT, "tokenizer": tokenizer, "shards": shards, **extra}, f,
              indent=1, sort_keys=True)
    f.write("\n")
  os.replace(tmp, path)


def read_sidecar(directory: str | os.PathLike) -> dict | None:
  """The folder's record, or None when it has none.

  Raises:
    UserDataError: a sidecar that is not the record's JSON.
  """
  path = os.path.join(directory, SIDECAR)
  if not os.path.exists(path):
    return None
  try:
    with open(path) as f:
      record = json.load(f)
  except json.JSONDecodeError as err:
    raise UserDataError(f"{path} is not JSON ({err}); rewrite the shards or remove it.") from None
  if not isinstance(record, dict) or record.get("format") != FORMAT:
    raise UserDataError(f"{path} is not a record of {FORMAT}; remove it or rewrite the shards.")
  return record


def open_split(pattern: str, split: str) -> ShardSplit:
  """The shards of `split`: their headers are read and checked, their sidecars compared.

  Args:
    pattern: `data.shards`, a glob with `{split}`.
    split: e.g. 'train' or 'val'.

  Returns:
    A `ShardSplit`.

  Raises:
    DatasetUnavailableError: no file matches.
    TokenShardError: a file is not a readable shard (shard_file.read_shard_header).
    UserDataError: shards of one split recorded with different tokenizers.
  """
  split_glob = split_pattern(pattern, split)
  paths = tuple(sorted(glob.glob(split_glob)))
  if not paths:
    raise DatasetUnavailableError(
        f"no token shards match {split_glob} (data.shards={pattern!r}, split {split!r}); write "
        "them with python -m gen_jax.data.tokenize_shards, or set data.shards.")
  num_tokens = tuple(shard_file.read_shard_header(p)[1] for p in paths)
  records = {d: read_sidecar(d) for d in sorted({os.path.dirname(p) for p in paths})}
  identities = {json.dumps(r["tokenizer"], sort_keys=True) if r else None
                for r in records.values()}
  if len(identities) > 1:
    raise UserDataError(f"the shards of {split_glob} were written by different tokenizers "
                        f"(the {SIDECAR} of {', '.join(records)} differ): use one of them.")
  record = next(iter(records.values()))
  return ShardSplit(pattern=split_glob, paths=paths, num_tokens=num_tokens,
                    tokenizer=record["tokenizer"] if record else None,
                    modified=tuple(os.stat(p).st_mtime_ns for p in paths))


def check_tokenizer(shards: ShardSplit, identity: dict, setting: str) -> None:
  """Stops a run whose tokenizer is not the one that wrote its shards.

  Args:
    shards: the split.
    identity: the run's tokenizer's (`kind`, `vocab_size`, and for a tokenizer read from
      files `fingerprint`); kind 'ids' (the run names only the id range) is compared by
      vocab_size alone.
    setting: how the run chose its tokenizer, for the message (e.g. "data.tokenizer_path=...").

  Raises:
    TokenizerMismatchError: the identities differ (nothing is checked without a sidecar).
  """
  recorded = shards.tokenizer
  if recorded is None:
    return
  if identity["kind"] == "ids":
    same = recorded["vocab_size"] == identity["vocab_size"]
  else:
    same = recorded.get("fingerprint") == identity.get("fingerprint")
  if not same:
    def describe(x: dict) -> str:
      return f"{x['kind']}, {x['vocab_size']} ids, {x.get('fingerprint', '-')[:19]}"
    raise TokenizerMismatchError(
        f"the shards {shards.pattern} were written by another tokenizer ({describe(recorded)}) "
        f"than this run's {setting} ({describe(identity)}): point the run at the tokenizer "
        f"the shards' {SIDECAR} records, or rewrite the shards with this one.")
