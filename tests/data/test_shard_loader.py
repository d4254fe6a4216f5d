"""Batches of token shards: nanoGPT's random windows, BOS-aligned documents packed with
segment ids, sequential evaluation windows, rows per process, and exact resume (numpy only)."""
import ml_collections
import numpy as np
import pytest
from smoke import load_config

from gen_jax.core.errors import ConfigError
from gen_jax.data import shard_file, shard_loader, spec, text
from gen_jax.data.errors import DamagedDatasetError, DatasetTooSmallError

BOS = 7
VOCAB = 50


def _documents(rng, count):
  """`count` documents: BOS then 1-19 ids in [8, VOCAB) (no BOS inside)."""
  return [np.asarray([BOS, *rng.integers(8, VOCAB, rng.integers(1, 20))]) for _ in range(count)]


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
  """Three train shards (the first starting mid-document), and a val shard; no sidecar."""
  root = tmp_path_factory.mktemp("shards")
  rng = np.random.default_rng(0)
  documents = []
  for index in range(3):
    docs = _documents(rng, 12)
    lead = [rng.integers(8, VOCAB, 5)] if index == 0 else []   # a previous shard's tail
    shard_file.write_token_shard(root / f"t_train_{index + 1:06d}.bin", np.concatenate(lead + docs))
    documents.append(docs)
  shard_file.write_token_shard(root / "t_val_000000.bin",
                               np.concatenate(_documents(rng, 20)))
  return str(root / "t_{split}_*.bin"), documents


def _config(pattern, batching, seq_len=8, bos_id=BOS):
  return ml_collections.ConfigDict(dict(
      dataset="token_shards", shards=pattern, tokenizer="ids", vocab_size=VOCAB,
      seq_len=seq_len, batching=batching, bos_id=bos_id, train_split="train", eval_split="val"))


def _loader(config, **kwargs):
  kwargs = {"split": "train", "global_batch_size": 4, "seed": 3, **kwargs}
  return text.make_text_loader(config, **kwargs)


def _take(iterator, n):
  return [next(iterator) for _ in range(n)]


def test_one_shard_gives_the_in_memory_loaders_random_windows(tmp_path):
  tokens = np.random.default_rng(1).integers(0, VOCAB, 500)
  shard_file.write_token_shard(tmp_path / "x_train_000000.bin", tokens)
  config = _config(str(tmp_path / "x_{split}_*.bin"), "windows", seq_len=16)
  batches = _take(iter(_loader(config)), 3)
  spec = text.WindowSpec(dataset="x", split="train", tokenizer="ids", num_tokens=500,
                         seq_len=16, global_batch_size=4, seed=3, shuffle=True, num_epochs=None)
  in_memory = _take(iter(text.TextLoader(tokens.astype(np.int32), spec, 0, 4)), 3)
  for a, b in zip(batches, in_memory, strict=True):
    assert a.keys() == {"tokens"} and a["tokens"].dtype == np.int32
    np.testing.assert_array_equal(a["tokens"], b["tokens"])


def test_documents_pack_whole_documents_or_prefixes_from_bos(shards):
  pattern, documents = shards
  config = _config(pattern, "documents")
  # 36 documents of 2-20 tokens, 9-token rows: more than one pass over the shards.
  rows = np.concatenate([b["tokens"] for b in _take(iter(_loader(config)), 12)])
  segments = np.concatenate([b["segment_ids"] for b in _take(iter(_loader(config)), 12)])
  assert rows.shape == segments.shape == (48, 9) and segments.dtype == np.int32
  stream = [d for shard in documents for d in shard]   # the documents in file order
  next_doc = 0
  for row, ids in zip(rows, segments, strict=True):
    assert row[0] == BOS                                # every row starts a document
    np.testing.assert_array_equal(ids, np.cumsum(row == BOS))
    pieces = np.split(row, np.flatnonzero(row == BOS)[1:])
    for k, piece in enumerate(pieces):
      document = stream[next_doc % len(stream)]
      next_doc += 1
      if k < len(pieces) - 1:
        np.testing.assert_array_equal(piece, document)            # whole ...
      else:
        np.testing.assert_array_equal(piece, document[:len(piece)])   # ... or cut at the end
  assert next_doc > len(stream)   # wrapped around to the first document


def test_documents_resume_exactly_and_rows_split_over_processes(shards):
  pattern, _ = shards
  config = _config(pattern, "documents")
  uninterrupted = _take(iter(_loader(config)), 6)
  first = iter(_loader(config))
  _take(first, 4)
  state = first.get_state()
  resumed = iter(_loader(config))
  resumed.set_state(state)
  for a, b in zip(uninterrupted[4:], _take(resumed, 2), strict=True):
    for key in ("tokens", "segment_ids"):
      np.testing.assert_array_equal(a[key], b[key])
  # Two processes' halves of each global batch, and their states, are the single process's.
  halves = [shard_loader.ShardLoader(loader.shards, loader.spec, first_row, 2)
            for loader in [_loader(config)] for first_row in (0, 2)]
  iterators = [iter(h) for h in halves]
  for batch in uninterrupted[:3]:
    parts = [next(i)["tokens"] for i in iterators]
    np.testing.assert_array_equal(np.concatenate(parts), batch["tokens"])
  assert iterators[0].get_state() == iterators[1].get_state()
  with pytest.raises(ValueError, match="global_batch_size: saved 4, here 8"):
    iter(_loader(config, global_batch_size=8)).set_state(state)


def test_windows_resume_from_the_position(shards):
  pattern, _ = shards
  config = _config(pattern, "windows")
  uninterrupted = _take(iter(_loader(config)), 5)
  first = iter(_loader(config))
  _take(first, 3)
  resumed = iter(_loader(config))
  resumed.set_state(first.get_state())
  for a, b in zip(uninterrupted[3:], _take(resumed, 2), strict=True):
    np.testing.assert_array_equal(a["tokens"], b["tokens"])


def test_evaluation_reads_consecutive_windows_with_segments_at_bos(shards):
  pattern, _ = shards
  config = _config(pattern, "documents")
  val = shard_file.read_token_shard(pattern.replace("{split}_*", "val_000000"))
  batches = list(_loader(config, split="val", global_batch_size=2, shuffle=False, num_epochs=1))
  L = 8
  assert len(batches) == ((len(val) - 1) // L) // 2
  for b, batch in enumerate(batches):
    for r in range(2):
      j = 2 * b + r
      np.testing.assert_array_equal(batch["tokens"][r], val[j * L:j * L + L + 1])
    np.testing.assert_array_equal(batch["segment_ids"], np.cumsum(batch["tokens"] == BOS, 1))


def test_bad_data_and_config_are_clear_errors(shards, tmp_path):
  pattern, _ = shards
  with pytest.raises(DatasetTooSmallError, match="no document starts .token 3."):
    next(iter(_loader(_config(pattern, "documents", bos_id=3))))
  with pytest.raises(ValueError, match="data.batching='rows'"):
    _loader(_config(pattern, "rows"))
  config = _config(pattern, "windows")
  config.vocab_size = 20    # the shards hold ids up to 49
  with pytest.raises(DamagedDatasetError, match="outside this run's vocabulary of 20"):
    next(iter(_loader(config)))
  config = _config(pattern, "documents", bos_id=-1)   # no sidecar, 'ids' knows no BOS
  with pytest.raises(ValueError, match="set data.bos_id"):
    _loader(config)


def test_the_token_shards_variant_and_its_example_batch():
  config = load_config("gpt", "smoke,dataset=token_shards")
  data = config.data
  assert (data.dataset, data.tokenizer, data.eval_split, data.batching, data.bos_id) == (
      "token_shards", "bpe", "val", "windows", -1)
  # Without the data: a run's batch shapes come from the config (--mode=summary needs no files).
  ids = _config("", "documents")
  assert spec.describe(ids).example_batch().keys() == {"tokens", "segment_ids"}
  ids.batching = "windows"
  assert spec.describe(ids).example_batch().keys() == {"tokens"}
  ids.batching = "rows"
  with pytest.raises(ConfigError, match="data.batching='rows'"):
    spec.describe(ids)
