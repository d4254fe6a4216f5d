"""Byte-level BPE tokenizers (GPT-2's scheme, Radford et al. 2019, Sec. 2.2) from files.

    tokenizer = bpe.load_bpe("/path/gpt2.tiktoken")      # a tiktoken rank file, or
    tokenizer = bpe.load_bpe("/path/tokenizer.json")     # a Hugging Face tokenizer.json
    tokenizer = bpe.train_bpe(texts, vocab_size=8192, path="out/tokenizer.json")
    ids = tokenizer.encode("Hello")   # int32 [n]; "<|endoftext|>" in text is plain text
    tokenizer.eot_id                  # the id of <|endoftext|>: the document delimiter
    tokenizer.identity()              # {"kind", "vocab_size", "eot_id", "fingerprint"}

Two file formats hold the same kind of tokenizer:
- a tiktoken rank file: one line per token, `<base64 of its bytes> <rank>`, ranks 0 ... n-1
  both the merge priority and the id; the text is split before merging by GPT-2's pattern,
  and `<|endoftext|>` is id n (GPT-2: 50256). Read here without tiktoken's downloads.
- a `tokenizer.json` of the `tokenizers` library with a BPE model and the ByteLevel
  pre-tokenizer (GPT-2's on the Hugging Face hub, or one `train_bpe` wrote).

The fingerprint is a sha256 over every id's bytes (GPT-2's printable-unicode spelling of
bytes undone for tokenizer.json), so GPT-2 read from either file has one fingerprint; token
shards record it (gen_jax/data/token_shards.py) and a run with another tokenizer stops.

`tiktoken` and `tokenizers` are optional dependencies: pip install -e ".[text]".
"""
from __future__ import annotations

import base64
import hashlib
import json
import os
from collections.abc import Callable, Iterable, Sequence

import numpy as np

EOT = "<|endoftext|>"
# GPT-2's pre-tokenization pattern, as released with its encoder (contractions, letters,
# numbers, other symbols, whitespace), each optionally led by one space.
GPT2_PATTERN = (r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+""")


def _tiktoken():
  try:
    import tiktoken  # an optional dependency: pip install -e ".[text]"
  except ImportError:
    raise ImportError('tiktoken rank files need the tiktoken package: pip install -e ".[text]" '
                      "(or pip install tiktoken).") from None
  return tiktoken


def _tokenizers():
  try:
    import tokenizers  # an optional dependency: pip install -e ".[text]"
  except ImportError:
    raise ImportError('BPE tokenizer.json files need the tokenizers package: pip install -e '
                      '".[text]" (or pip install tokenizers).') from None
  return tokenizers


def byte_to_unicode() -> dict[int, str]:
  """GPT-2's reversible spelling of bytes as printable characters (its encoder.py): the
  188 printable Latin-1 bytes stand for themselves, the other 68 for U+0100 onwards."""
  printable = [*range(ord("!"), ord("~") + 1), *range(ord("\xa1"), ord("\xac") + 1),
               *range(ord("\xae"), ord("\xff") + 1)]
  spelled, extra = {b: chr(b) for b in printable}, 0
  for b in range(256):
    if b not in spelled:
      spelled[b] = chr(256 + extra)
      extra += 1
  return spelled


def fingerprint(token_bytes: Sequence[bytes]) -> str:
  """sha256 over the bytes of ids 0 ... n-1, each preceded by its length (4 bytes, LE)."""
  digest = hashlib.sha256()
  for b in token_bytes:
    digest.update(len(b).to_bytes(4, "little"))
    digest.update(b)
  return "sha256:" + digest.hexdigest()


class BpeTokenizer:
  """A byte-level BPE tokenizer: `encode`, `decode`, `vocab_size`, `eot_id`, `identity()`.

  Built by `load_bpe` or `train_bpe` over a `tiktoken.Encoding` or a `tokenizers.Tokenizer`:
  `encode_texts` is that library's batch encoder (texts -> lists of ids, no special tokens).
  """

  def __init__(self, encode_texts: Callable[[list[str]], list[list[int]]],
               token_bytes: list[bytes], source: str):
    self._encode_texts = encode_texts
    self._token_bytes = token_bytes
    self.source = source          # the file it was read from
    eot = EOT.encode()
    self.eot_id = token_bytes.index(eot) if eot in token_bytes else None
    self._fingerprint = fingerprint(token_bytes)

  @property
  def vocab_size(self) -> int:
    return len(self._token_bytes)

  def identity(self) -> dict:
    """What token shards record of the tokenizer that wrote them (JSON-able)."""
    return {"kind": "bpe", "vocab_size": self.vocab_size, "eot_id": self.eot_id,
            "fingerprint": self._fingerprint}

  def encode_batch(self, texts: Sequence[str]) -> list[np.ndarray]:
    """int32 ids of each text; special tokens' spellings in the text are ordinary text."""
    return [np.asarray(i, np.int32) for i in self._encode_texts(list(texts))]

  def encode(self, text: str) -> np.ndarray:
    """Returns int32 [n] ids of `text`."""
    return self.encode_batch([text])[0]

  def decode(self, ids) -> str:
    """The text of a 1-D sequence of ids; bytes that are not UTF-8 become U+FFFD."""
    ids = np.asarray(ids).reshape(-1)
    if ids.size and (ids.min() < 0 or ids.max() >= self.vocab_size):
      raise ValueError(f"ids must be in [0, {self.vocab_size}), got [{ids.min()}, {ids.max()}].")
    return b"".join(self._token_bytes[i] for i in ids.tolist()).decode("utf-8", "replace")

  def __eq__(self, other) -> bool:
    return isinstance(other, BpeTokenizer) and other._fingerprint == self._fingerprint

  def __hash__(self) -> int:
    return hash(self._fingerprint)

  def __repr__(self) -> str:
    return f"BpeTokenizer({self.source!r}, vocab_size={self.vocab_size})"


def read_rank_file(path: str | os.PathLike) -> dict[bytes, int]:
  """A tiktoken rank file's {token bytes: rank}.

  Raises:
    ValueError: a line that is not `<base64> <rank>`, or ranks that are not 0 ... n-1.
  """
  ranks = {}
  with open(path, "rb") as f:
    for number, line in enumerate(f, 1):
      if not line.strip():
        continue
      try:
        token, rank = line.split()
        ranks[base64.b64decode(token, validate=True)] = int(rank)
      except ValueError:
        raise ValueError(f"{path}:{number}: {line[:60]!r} is not '<base64 token> <rank>' "
                         "(is it a tiktoken rank file?).") from None
  if sorted(ranks.values()) != list(range(len(ranks))):
    raise ValueError(f"{path}: the ranks are not 0 ... {len(ranks) - 1} without gaps.")
  return ranks


def _from_rank_file(path: str) -> BpeTokenizer:
  ranks = read_rank_file(path)
  eot_id = len(ranks)   # GPT-2: 50,256 merges and bytes, then <|endoftext|>
  encoding = _tiktoken().Encoding(
      name=os.path.basename(path), pat_str=GPT2_PATTERN, mergeable_ranks=ranks,
      special_tokens={EOT: eot_id})
  token_bytes = [b""] * len(ranks)
  for b, rank in ranks.items():
    token_bytes[rank] = b
  return BpeTokenizer(encoding.encode_ordinary_batch, [*token_bytes, EOT.encode()], path)


def _token_bytes_of(tokenizer, path: str) -> list[bytes]:
  """Each id's bytes of a byte-level BPE `tokenizers.Tokenizer`."""
  spec = json.loads(tokenizer.to_str())
  pre = json.dumps(spec.get("pre_tokenizer"))
  if (spec.get("model") or {}).get("type") != "BPE" or '"ByteLevel"' not in pre:
    raise ValueError(f"{path}: not a byte-level BPE tokenizer (model "
                     f"{(spec.get('model') or {}).get('type')!r}, pre-tokenizer {pre}); "
                     "gen_jax reads GPT-2-style byte-level BPE.")
  unspell = {c: b for b, c in byte_to_unicode().items()}
  special = {t["content"]: t["id"] for t in spec.get("added_tokens", [])}
  vocab = tokenizer.get_vocab(with_added_tokens=True)
  token_bytes = [b""] * len(vocab)
  for token, i in vocab.items():
    if i >= len(vocab):
      raise ValueError(f"{path}: ids are not 0 ... {len(vocab) - 1} without gaps.")
    if token in special:
      token_bytes[i] = token.encode()
    else:
      try:
        token_bytes[i] = bytes(unspell[c] for c in token)
      except KeyError:
        raise ValueError(f"{path}: token {token!r} is not spelled in GPT-2's byte "
                         "alphabet; gen_jax reads byte-level BPE.") from None
  return token_bytes


def _from_tokenizer_json(path: str) -> BpeTokenizer:
  tokenizer = _tokenizers().Tokenizer.from_file(path)
  tokenizer.encode_special_tokens = True   # "<|endoftext|>" in a document is plain text

  def encode_texts(texts: list[str]) -> list[list[int]]:
    return [e.ids for e in tokenizer.encode_batch(texts, add_special_tokens=False)]

  return BpeTokenizer(encode_texts, _token_bytes_of(tokenizer, path), path)


def load_bpe(path: str | os.PathLike) -> BpeTokenizer:
  """Reads a byte-level BPE tokenizer: a `.json` file is a Hugging Face tokenizer.json, any
  other a tiktoken rank file.

  Args:
    path: the file (e.g. GPT-2's `gpt2.tiktoken`-style rank file, or its tokenizer.json).

  Returns:
    A `BpeTokenizer`.

  Raises:
    FileNotFoundError: no such file.
    ValueError: the file is not a byte-level BPE tokenizer of either format.
    ImportError: the format's optional package is not installed.
  """
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise FileNotFoundError(f"no tokenizer file {path}.")
  return _from_tokenizer_json(path) if path.endswith(".json") else _from_rank_file(path)


def train_bpe(texts: Iterable[str], vocab_size: int, path: str | os.PathLike) -> BpeTokenizer:
  """Trains a byte-level BPE on `texts` with the `tokenizers` library (offline) and saves it.

  GPT-2's recipe at another size: the 256 bytes, then merges of the most frequent adjacent
  pairs within GPT-2's pre-tokenized words until `vocab_size`; `<|endoftext|>` is id 0.

  Args:
    texts: the corpus, one document per item.
    vocab_size: ids in all, bytes and <|endoftext|> included (>= 257); a corpus with
      fewer distinct pairs gives fewer.
    path: where the tokenizer.json is written.

  Returns:
    The trained tokenizer, as `load_bpe(path)` reads it.

  Raises:
    ValueError: vocab_size < 257.
  """
  if vocab_size < 257:
    raise ValueError(f"vocab_size={vocab_size}: a byte-level BPE needs >= 257 ids (the 256 "
                     "bytes and <|endoftext|>).")
  tk = _tokenizers()
  tokenizer = tk.Tokenizer(tk.models.BPE())
  tokenizer.pre_tokenizer = tk.pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
  tokenizer.decoder = tk.decoders.ByteLevel()
  trainer = tk.trainers.BpeTrainer(
      vocab_size=vocab_size, special_tokens=[EOT], show_progress=False,
      initial_alphabet=tk.pre_tokenizers.ByteLevel.alphabet())
  tokenizer.train_from_iterator(texts, trainer)
  tmp = f"{os.fspath(path)}.tmp"
  tokenizer.save(tmp)
  os.replace(tmp, path)
  return load_bpe(path)
