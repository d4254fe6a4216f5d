"""Token shards on disk: the reference `.bin` layout byte for byte, its header checks, the BPE
tokenizers (tiny ones the tests build), the shards' record of their tokenizer, and the
tokenize-once command (numpy and the tokenizer libraries only; no JAX compile)."""
import base64
import json
import os

import numpy as np
import pytest
from smoke import FIXTURES
from tokenizers import Tokenizer, decoders, models, pre_tokenizers

from gen_jax.data import bpe, shard_file, token_shards, tokenize_shards
from gen_jax.data.shard_file import UINT16, UINT32, TokenShardError

FIXTURE = os.path.join(FIXTURES, "token_shards")
# tools/make_token_shard_fixture.py's tokens.
GPT2_TOKENS = [50256, 15496, 995, 13, 50256, 464, 3290, 318, 40000, 65535, 0, 50256, 1, 2, 3]
LLAMA3_TOKENS = [128000, 9906, 1917, 13, 128001, 2**32 - 1, 0]


@pytest.mark.parametrize("name, tokens, layout", [
    ("gpt2_val_000000.bin", GPT2_TOKENS, UINT16), ("llama3_val_000000.bin", LLAMA3_TOKENS, UINT32)])
def test_a_reference_shard_loads_and_ours_has_its_bytes(tmp_path, name, tokens, layout):
  reference = os.path.join(FIXTURE, name)
  loaded = shard_file.read_token_shard(reference)
  assert loaded.dtype == layout.dtype and loaded.tolist() == tokens
  ours = tmp_path / name
  shard_file.write_token_shard(ours, np.asarray(tokens, np.int64), layout)
  assert ours.read_bytes() == open(reference, "rb").read()


def _write_bytes(path, header_values, num_token_bytes):
  header = np.zeros(256, "<i4")
  header[:len(header_values)] = header_values
  path.write_bytes(header.tobytes() + b"\x01" * num_token_bytes)
  return path


@pytest.mark.parametrize("header, token_bytes, message", [
    ((20240521, 1, 4), 8, "magic number 20240521"),
    ((20240520, 2, 4), 8, "version 2 with magic 20240520"),
    ((20240520, 1, 4), 6, "announces 4 tokens .* has 1030 bytes .truncated"),
    ((20240520, 1, 4), 10, "trailing data"),
    ((20240801, 7, 4), 8, "truncated"),     # uint32: 4 tokens are 16 bytes
])
def test_a_bad_header_or_size_is_a_clear_error(tmp_path, header, token_bytes, message):
  path = _write_bytes(tmp_path / "x.bin", header, token_bytes)
  with pytest.raises(TokenShardError, match=message):
    shard_file.read_token_shard(path)


def test_a_file_shorter_than_a_header_and_ids_too_large_are_errors(tmp_path):
  (tmp_path / "short.bin").write_bytes(b"\0" * 100)
  with pytest.raises(TokenShardError, match="100 bytes, shorter than"):
    shard_file.read_token_shard(tmp_path / "short.bin")
  with pytest.raises(ValueError, match="do not fit uint16"):
    shard_file.write_token_shard(tmp_path / "big.bin", np.asarray([1, 65536]))
  assert not os.path.exists(tmp_path / "big.bin")
  assert shard_file.layout_for_vocab(65536) == UINT16
  assert shard_file.layout_for_vocab(128256) == UINT32


def _rank_file(path):
  """A tiny tiktoken rank file: the 256 bytes, then merges th, the, ' the'."""
  ranks = [bytes([b]) for b in range(256)] + [b"th", b"the", b" the"]
  path.write_text("".join(f"{base64.b64encode(t).decode()} {r}\n" for r, t in enumerate(ranks)))
  return path


def test_a_tiktoken_rank_file_is_gpt2s_bpe(tmp_path):
  tokenizer = bpe.load_bpe(_rank_file(tmp_path / "tiny.tiktoken"))
  assert tokenizer.vocab_size == 260 and tokenizer.eot_id == 259   # after the ranks, as GPT-2
  # GPT-2's pattern splits "the the" into "the", " the": one merged token each.
  assert tokenizer.encode("the the").tolist() == [257, 258]
  assert tokenizer.encode("thx").tolist() == [256, ord("x")]
  # Special tokens in a document are plain text (tiktoken's encode_ordinary).
  assert bpe.EOT.encode()[0] in tokenizer.encode(bpe.EOT)
  assert tokenizer.decode([259, 257, 258]) == "<|endoftext|>the the"
  text = "the thé ✓ them"
  assert tokenizer.decode(tokenizer.encode(text)) == text


def test_gpt2_style_bpe_from_either_file_is_one_tokenizer(tmp_path):
  """The tiny rank file's BPE written as a tokenizer.json (GPT-2's byte spelling, its merges
  in rank order, <|endoftext|> added after them): the same ids and the same fingerprint."""
  spell = bpe.byte_to_unicode()
  vocab = {spell[b]: b for b in range(256)}
  merges = [("t", "h"), ("th", "e"), (spell[ord(" ")], "the")]
  for rank, (a, b) in enumerate(merges, 256):
    vocab[a + b] = rank
  hub = Tokenizer(models.BPE(vocab=vocab, merges=merges))
  hub.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  hub.decoder = decoders.ByteLevel()
  hub.add_special_tokens([bpe.EOT])
  hub.save(str(tmp_path / "tokenizer.json"))
  from_json = bpe.load_bpe(tmp_path / "tokenizer.json")
  from_ranks = bpe.load_bpe(_rank_file(tmp_path / "tiny.tiktoken"))
  assert from_json.identity() == from_ranks.identity()
  for text in ["the the", "thé then, 'the' ✓\n\n  the", bpe.EOT]:
    np.testing.assert_array_equal(from_json.encode(text), from_ranks.encode(text))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
  """Six documents (two .txt files and a .jsonl of four) and a BPE trained on them."""
  root = tmp_path_factory.mktemp("corpus")
  texts = [f"doc {i}: the cat sat on the mat {'and the dog ' * i}héllo ✓" for i in range(6)]
  (root / "a.txt").write_text(texts[0], encoding="utf-8")
  (root / "b.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in texts[1:5]))
  (root / "c.txt").write_text(texts[5], encoding="utf-8")
  tokenizer = bpe.train_bpe(texts, vocab_size=300, path=str(root / "tokenizer.json"))
  return root, texts, tokenizer


def test_a_trained_tokenizer_json_round_trips(corpus):
  root, texts, trained = corpus
  loaded = bpe.load_bpe(root / "tokenizer.json")
  assert loaded == trained and loaded.identity() == trained.identity()
  assert loaded.eot_id == 0 and 257 <= loaded.vocab_size <= 300
  ids = loaded.encode(texts[3] + " <|endoftext|> unseen ünïcode")
  assert 0 not in ids.tolist()   # the delimiter's spelling in a document is plain text
  assert loaded.decode(ids) == texts[3] + " <|endoftext|> unseen ünïcode"
  # Each id's bytes are GPT-2's printable spelling undone: "Ġ" is a space.
  assert loaded.decode(loaded.encode(" ")) == " "


def test_tokenize_writes_documents_after_eot_into_splits_and_resumes(corpus, tmp_path,
                                                                     monkeypatch):
  root, texts, tokenizer = corpus
  files = tokenize_shards.input_files(str(root))
  assert [os.path.basename(f) for f in files] == ["a.txt", "b.jsonl", "c.txt"]
  expected = np.concatenate([[tokenizer.eot_id, *tokenizer.encode(t)] for t in texts])
  paths = tokenize_shards.write_shards(files, tokenizer, str(tmp_path / "full"), "c", 30, 50)
  names = [os.path.basename(p) for p in paths]
  assert names[:3] == ["c_val_000000.bin", "c_val_000001.bin", "c_train_000002.bin"]
  sizes = [len(shard_file.read_token_shard(p)) for p in paths]
  assert sizes[:3] == [30, 20, 30] and all(s == 30 for s in sizes[2:-1])
  np.testing.assert_array_equal(
      np.concatenate([shard_file.read_token_shard(p) for p in paths]), expected)
  record = token_shards.read_sidecar(tmp_path / "full")
  assert record["tokenizer"] == tokenizer.identity()
  assert record["shards"] == dict(zip(names, sizes, strict=True))

  # Interrupted after five documents, three shards written (the last cutting the fifth
  # document), then rerun: the same bytes.
  real = tokenize_shards.read_documents

  def interrupted(files):
    for i, document in enumerate(real(files)):
      if i == 5:
        raise KeyboardInterrupt
      yield document

  monkeypatch.setattr(tokenize_shards, "read_documents", interrupted)
  monkeypatch.setattr(tokenize_shards, "ENCODE_BATCH", 1)   # shards complete before the stop
  with pytest.raises(KeyboardInterrupt):
    tokenize_shards.write_shards(files, tokenizer, str(tmp_path / "resumed"), "c", 30, 50)
  partial = token_shards.read_sidecar(tmp_path / "resumed")["written_by"]["progress"]
  assert (len(partial["shards"]), partial["documents"], partial["carried"]) == (3, 4, 14)
  monkeypatch.setattr(tokenize_shards, "read_documents", real)
  first = tmp_path / "resumed" / "c_val_000000.bin"
  first_written = first.stat().st_mtime_ns
  resumed = tokenize_shards.write_shards(files, tokenizer, str(tmp_path / "resumed"), "c", 30,
                                         50)
  for a, b in zip(paths, resumed, strict=True):
    assert open(a, "rb").read() == open(b, "rb").read()
  assert first.stat().st_mtime_ns == first_written   # continued, not started again
  with pytest.raises(ValueError, match="other inputs or another tokenizer"):
    tokenize_shards.write_shards(files[:1], tokenizer, str(tmp_path / "resumed"), "c", 30, 50)


def test_shards_of_another_tokenizer_are_refused_in_one_line(corpus, tmp_path):
  root, _, tokenizer = corpus
  tokenize_shards.main(["--input", str(root), "--out", str(tmp_path), "--name", "c",
                        "--tokenizer", str(root / "tokenizer.json"), "--shard_size", "64",
                        "--val_tokens", "0"])
  shards = token_shards.open_split(str(tmp_path / "c_{split}_*.bin"), "train")
  assert shards.tokenizer == tokenizer.identity() and sum(shards.num_tokens) > 64
  token_shards.check_tokenizer(shards, tokenizer.identity(), "bpe")   # the same: no error
  other = bpe.load_bpe(_rank_file(tmp_path / "tiny.tiktoken"))
  with pytest.raises(token_shards.TokenizerMismatchError, match="another tokenizer") as err:
    token_shards.check_tokenizer(shards, other.identity(), "data.tokenizer='bpe'")
  assert "\n" not in str(err.value)
  with pytest.raises(token_shards.TokenizerMismatchError):
    token_shards.check_tokenizer(shards, {"kind": "ids", "vocab_size": 50257}, "ids")
  token_shards.check_tokenizer(shards, {"kind": "ids", "vocab_size": tokenizer.vocab_size}, "ids")
  # A split needs {split} in its glob, and files.
  with pytest.raises(token_shards.UserDataError, match="with \\{split\\}"):
    token_shards.open_split(str(tmp_path / "c_train_*.bin"), "train")
  with pytest.raises(token_shards.DatasetUnavailableError, match="no token shards match"):
    token_shards.open_split(str(tmp_path / "c_{split}_*.bin"), "val")
