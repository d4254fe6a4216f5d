"""Tokenize a corpus once into token shards (the llm.c / modded-nanogpt `.bin` layout).

    python -m gen_jax.data.tokenize_shards --input=corpus/ --out=shards/ \\
        --tokenizer=/path/gpt2.tiktoken            # or a tokenizer.json
    python -m gen_jax.data.tokenize_shards --input=corpus/ --out=shards/ \\
        --train_vocab_size=8192                     # a BPE trained on the corpus first
    python launch.py --config=configs/gpt.py:dataset=token_shards \\
        --config.data.shards='shards/corpus_{split}_*.bin' \\
        --config.data.tokenizer_path=shards/tokenizer.json

Input: a `.txt` file (one document), a `.jsonl` file (one document per line, its "text"),
or a folder of them (every such file below it, in sorted order). Each document is written
as <|endoftext|> followed by its tokens (nanoGPT's and modded-nanogpt's FineWeb scripts
write the same), into shards of `--shard_size` tokens: the first `--val_tokens` tokens are
the split 'val' (`<name>_val_000000.bin`, ...), the rest 'train' (numbered on), a document
cut at a shard's end continuing in the next, as those scripts do.

Each shard is written to a temporary file and renamed, and after each the sidecar
`token_shards.json` records the tokenizer and where the next shard starts; a rerun of the
same command continues after the last complete shard (same input files, same tokenizer).
"""
from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import os
from collections.abc import Iterator, Sequence

import numpy as np

from gen_jax.data import bpe, shard_file, token_shards

SUFFIXES = (".txt", ".jsonl")
ENCODE_BATCH = 64   # documents tokenized per call (the libraries' batch encoders)


def input_files(path: str) -> list[str]:
  """The corpus files under `path` (itself if a file), sorted.

  Raises:
    FileNotFoundError: nothing there, or no .txt/.jsonl file in the folder.
  """
  if os.path.isfile(path):
    return [path]
  files = sorted(os.path.join(d, f) for d, _, names in os.walk(path) for f in names
                 if f.endswith(SUFFIXES))
  if not files:
    raise FileNotFoundError(f"--input={path}: no {' or '.join(SUFFIXES)} files there.")
  return files


def read_documents(files: Sequence[str]) -> Iterator[str]:
  """The documents of the corpus files in order: a .txt file is one, a .jsonl line one."""
  for path in files:
    if path.endswith(".jsonl"):
      with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
          if line.strip():
            record = json.loads(line)
            if not isinstance(record, dict) or not isinstance(record.get("text"), str):
              raise ValueError(f"{path}:{number}: a .jsonl line must be an object with 'text'.")
            yield record["text"]
    else:
      with open(path, encoding="utf-8") as f:
        yield f.read()


def document_tokens(tokenizer: bpe.BpeTokenizer, documents: Iterator[str]) -> Iterator[np.ndarray]:
  """Each document's ids, <|endoftext|> first (the reference writers' document delimiter)."""
  eot = np.asarray([tokenizer.eot_id], np.int32)
  batch: list[str] = []
  for document in documents:
    batch.append(document)
    if len(batch) == ENCODE_BATCH:
      yield from (np.concatenate([eot, ids]) for ids in tokenizer.encode_batch(batch))
      batch = []
  yield from (np.concatenate([eot, ids]) for ids in tokenizer.encode_batch(batch))


@dataclasses.dataclass
class Progress:
  """The shards written so far (name: tokens), and where the next one starts: after
  `documents` whole documents and the first `carried` tokens of the next."""
  shards: dict[str, int] = dataclasses.field(default_factory=dict)
  documents: int = 0
  carried: int = 0


def write_shards(files: Sequence[str], tokenizer: bpe.BpeTokenizer, out: str, name: str,
                 shard_size: int, val_tokens: int) -> list[str]:
  """Tokenizes `files` into shards in `out`, continuing an earlier run of the same command.

  Args:
    files: the corpus files (`input_files`).
    tokenizer: a BPE with <|endoftext|>.
    out: the output folder (created).
    name: the shards' name prefix: `<name>_<split>_<index:06d>.bin`.
    shard_size: tokens per shard (the last of each split holds the rest).
    val_tokens: the first `val_tokens` tokens of the stream form the split 'val' (0: none).

  Returns:
    The paths of all shards written (by this or an earlier run), in order.

  Raises:
    ValueError: bad sizes, a tokenizer without <|endoftext|>, or an earlier run into `out`
      with other inputs or another tokenizer.
  """
  if shard_size < 1 or val_tokens < 0:
    raise ValueError(f"--shard_size={shard_size} must be >= 1 and --val_tokens={val_tokens} "
                     ">= 0.")
  if tokenizer.eot_id is None:
    raise ValueError(f"{tokenizer.source} has no {bpe.EOT} to start documents with.")
  layout = shard_file.layout_for_vocab(tokenizer.vocab_size)
  os.makedirs(out, exist_ok=True)
  inputs = {os.path.abspath(f): os.path.getsize(f) for f in files}
  progress = Progress()
  earlier = token_shards.read_sidecar(out)
  if earlier is not None:
    written_by = earlier.get("written_by", {})
    if earlier["tokenizer"] != tokenizer.identity() or written_by.get("inputs") != inputs:
      raise ValueError(f"{out} holds shards of other inputs or another tokenizer: write to a "
                       "new --out.")
    progress = Progress(**written_by["progress"])

  def record() -> None:
    token_shards.write_sidecar(out, tokenizer.identity(), progress.shards, written_by={
        "inputs": inputs, "tokenizer": tokenizer.source,
        "progress": dataclasses.asdict(progress)})

  def flush(tokens: np.ndarray, documents: int, carried: int) -> None:
    """Writes the next shard (atomically), then records where the one after it starts."""
    first_token = sum(progress.shards.values())
    split = "val" if first_token < val_tokens else "train"
    shard = f"{name}_{split}_{len(progress.shards):06d}.bin"
    shard_file.write_token_shard(os.path.join(out, shard), tokens, layout)
    progress.shards[shard] = len(tokens)
    progress.documents, progress.carried = documents, carried
    record()

  def capacity() -> int:   # a 'val' shard ends where 'val' does
    first_token = sum(progress.shards.values())
    end = first_token + shard_size
    return (min(end, val_tokens) if first_token < val_tokens else end) - first_token

  buffer, filled = np.empty(capacity(), np.int64), 0
  read_whole = progress.documents
  documents = itertools.islice(read_documents(files), progress.documents, None)
  for number, ids in enumerate(document_tokens(tokenizer, documents), progress.documents):
    done = progress.carried if number == progress.documents else 0   # tokens already written
    while done < len(ids):
      take = min(len(ids) - done, len(buffer) - filled)
      buffer[filled:filled + take] = ids[done:done + take]
      filled, done = filled + take, done + take
      if filled == len(buffer):
        whole = done == len(ids)
        flush(buffer, number + 1 if whole else number, 0 if whole else done)
        buffer, filled = np.empty(capacity(), np.int64), 0
    read_whole = number + 1
  if filled:
    flush(buffer[:filled], read_whole, 0)
  record()
  by_index = sorted(progress.shards, key=lambda shard: shard[-len("000000.bin"):])
  return [os.path.join(out, shard) for shard in by_index]


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
  """The command line (argparse: importing this module registers no global flags)."""
  parser = argparse.ArgumentParser(prog="python -m gen_jax.data.tokenize_shards",
                                   description="Tokenize a corpus once into token shards.")
  parser.add_argument("--input", required=True, help="A .txt or .jsonl file, or a folder of them.")
  parser.add_argument("--out", required=True, help="The folder for the shards and sidecar.")
  tokenizer = parser.add_mutually_exclusive_group(required=True)
  tokenizer.add_argument("--tokenizer", help="A tiktoken rank file or a tokenizer.json.")
  tokenizer.add_argument("--train_vocab_size", type=int,
                         help="Train a byte-level BPE of this many ids on the input instead, "
                         "written to <out>/tokenizer.json.")
  parser.add_argument("--name", default="", help="Shard name prefix (default: the input's).")
  parser.add_argument("--shard_size", type=int, default=10**8, help="Tokens per shard.")
  parser.add_argument("--val_tokens", type=int, default=10**8,
                      help="The first tokens, written as the split 'val'.")
  return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
  args = parse_args(argv)
  files = input_files(args.input)
  if args.train_vocab_size:
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "tokenizer.json")
    tokenizer = (bpe.load_bpe(path) if os.path.exists(path) else
                 bpe.train_bpe(read_documents(files), args.train_vocab_size, path))
  else:
    tokenizer = bpe.load_bpe(args.tokenizer)
  name = args.name or os.path.splitext(os.path.basename(os.path.normpath(args.input)))[0]
  paths = write_shards(files, tokenizer, args.out, name, args.shard_size, args.val_tokens)
  print(f"{len(paths)} shards in {args.out} ({tokenizer!r}): "
        f"--config.data.shards='{os.path.join(args.out, name)}_{{split}}_*.bin'")


if __name__ == "__main__":
  main()
