"""Tests for the text pipeline: the tiny_shakespeare builder, tokenizers, window loaders.

Offline and fast: the builder prepares a generated `input.txt` from a tmp manual_dir
(the canonical sha256 is replaced by the generated file's with monkeypatch, so the
real check runs on it), and downloads are monkeypatched, never attempted.
"""
import hashlib
import inspect
import json
import socket
import time

import jax
import ml_collections
import numpy as np
import pytest
import tensorflow_datasets as tfds

from gen_jax import data
from gen_jax.data.builders import tiny_shakespeare

SEQ_LEN = 16


def generated_text(num_chars=6000, seed=0):
  """Pseudo-Shakespeare: words, punctuation and newlines, one 'é' early, and a '~' that
  only the validation part (the last 10%) holds."""
  rng = np.random.default_rng(seed)
  words = ["thou", "art", "KING", "Henry", "é", "speak", "me,", "hear.", "First", "Citizen:"]
  text = ""
  while len(text) < num_chars:
    text += " ".join(rng.choice(words, size=rng.integers(2, 9))) + rng.choice(["\n", "\n\n", " "])
  text = text[:num_chars - 10]
  return text + "~end ~of~\n"


def write_input(manual_dir, text):
  manual_dir.mkdir(parents=True, exist_ok=True)
  (manual_dir / "input.txt").write_bytes(text.encode("utf-8"))
  return hashlib.sha256(text.encode("utf-8")).hexdigest()


def text_config(data_dir, **overrides):
  fields = dict(dataset="tiny_shakespeare", data_dir=str(data_dir), manual_dir="",
                train_split="train", eval_split="validation", tokenizer="char", seq_len=SEQ_LEN)
  return ml_collections.ConfigDict({**fields, **overrides})


@pytest.fixture(scope="module")
def shakespeare(tmp_path_factory):
  """(config, full text): tiny_shakespeare prepared once from a generated input.txt."""
  root = tmp_path_factory.mktemp("shakespeare")
  text = generated_text()
  with pytest.MonkeyPatch.context() as patch:
    patch.setattr(tiny_shakespeare, "SHA256", write_input(root / "raw", text))
    data.prepare_builder("tiny_shakespeare", data_dir=str(root / "tfds"),
                         manual_dir=str(root / "raw"))
  return text_config(root / "tfds"), text


def take(iterator, n):
  return [next(iterator)["tokens"] for _ in range(n)]


def as_processes(monkeypatch, index, count):
  monkeypatch.setattr(jax, "process_count", lambda: count)
  monkeypatch.setattr(jax, "process_index", lambda: index)


# ---------------------------------------------------------------- builder

def test_canonical_split_sizes_follow_nanogpt():
  cut = tiny_shakespeare.split_point(tiny_shakespeare.NUM_CHARS)
  assert (cut, tiny_shakespeare.NUM_CHARS - cut) == (1_003_854, 111_540)


def test_builder_splits_the_text_90_10_into_one_example_each(shakespeare):
  config, text = shakespeare
  cut = int(0.9 * len(text))
  for split, expected in [("train", text[:cut]), ("validation", text[cut:])]:
    source = data.load_split("tiny_shakespeare", split, data_dir=config.data_dir)
    assert len(source) == 1
    assert source[0]["text"].decode("utf-8") == expected
  builder = data.BUILDERS["tiny_shakespeare"]
  assert builder.TEXT_FEATURE == "text" and not hasattr(builder, "IMAGE_SHAPE")


def test_text_datasets_have_no_image_shape(shakespeare):
  config, _ = shakespeare
  with pytest.raises(ValueError, match="is text"):
    data.image_shape(config)
  source = data.load_split("tiny_shakespeare", "train", data_dir=config.data_dir)
  with pytest.raises(ValueError, match="no 'image' feature"):
    data.dataset_image_shape(source)


def test_builder_rejects_a_file_that_is_not_the_canonical_one(tmp_path, no_downloads):
  write_input(tmp_path / "raw", generated_text())  # SHA256 left at the canonical value
  with pytest.raises(data.DatasetUnavailableError, match="sha256") as error:
    data.load_split("tiny_shakespeare", "train", data_dir=str(tmp_path / "tfds"),
                    manual_dir=str(tmp_path / "raw"))
  assert tiny_shakespeare.SHA256 in str(error.value) and "input.txt" in str(error.value)
  assert error.value.__cause__ is None
  assert not data.BUILDERS["tiny_shakespeare"](data_dir=str(tmp_path / "tfds")).is_prepared()
  assert no_downloads == []


def test_builder_downloads_the_canonical_url_and_checks_it(tmp_path, monkeypatch):
  text = generated_text(seed=1)
  monkeypatch.setattr(tiny_shakespeare, "SHA256", write_input(tmp_path / "web", text))
  monkeypatch.setattr(socket, "getaddrinfo", lambda host, port, *a, **k: [("resolved (test)",)])
  requested = []

  def fake_download(self, urls):
    requested.extend(urls.values())
    return {name: tmp_path / "web" / name for name in urls}

  monkeypatch.setattr(tfds.download.DownloadManager, "download", fake_download)
  source = data.load_split("tiny_shakespeare", "validation", data_dir=str(tmp_path / "tfds"))
  assert requested == [
      "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"]
  assert source[0]["text"].decode() == text[int(0.9 * len(text)):]


def test_download_failure_says_to_use_manual_dir(tmp_path, no_downloads):
  with pytest.raises(data.DatasetUnavailableError, match="could not download.*manual_dir"):
    data.load_split("tiny_shakespeare", "train", data_dir=str(tmp_path / "tfds"))
  assert len(no_downloads) == 1


# ---------------------------------------------------------------- tokenizers

def test_char_tokenizer_round_trips_and_sorts_its_vocabulary():
  source_code = inspect.getsource(json.decoder)  # text that ships with Python
  tokenizer = data.CharTokenizer(source_code)
  assert tokenizer.vocab_size == len(set(source_code))
  assert list(tokenizer.chars) == sorted(set(source_code))
  ids = tokenizer.encode(source_code)
  assert ids.dtype == np.int32 and ids.shape == (len(source_code),)
  assert ids.min() == 0 and ids.max() == tokenizer.vocab_size - 1
  assert [tokenizer.chars[i] for i in ids[:50]] == list(source_code[:50])
  assert tokenizer.decode(ids) == source_code
  assert data.CharTokenizer("ba\n").encode("ab\nb").tolist() == [1, 2, 0, 2]


def test_char_tokenizer_names_unknown_characters():
  tokenizer = data.CharTokenizer("abc ")
  with pytest.raises(ValueError, match=r"'xé'.*position 2.*4 characters"):
    tokenizer.encode("a xbéa")
  with pytest.raises(ValueError, match=r"in \[0, 4\)"):
    tokenizer.decode([0, 4])


def test_byte_tokenizer_round_trips_unicode():
  tokenizer = data.ByteTokenizer()
  text = "Thou art — héllo, 日本語 🙂\n"
  ids = tokenizer.encode(text)
  assert tokenizer.vocab_size == 256 and ids.dtype == np.int32
  assert ids.tolist() == list(text.encode("utf-8"))
  assert tokenizer.decode(ids) == text
  assert tokenizer.decode(ids[:-3]) == text[:-2] + "\ufffd"  # cut inside 🙂
  with pytest.raises(ValueError, match="256"):
    tokenizer.decode([256])


def test_char_vocabulary_spans_all_splits_and_is_cached(shakespeare):
  config, text = shakespeare
  tokenizer = data.text_tokenizer(config)
  assert "~" not in text[:int(0.9 * len(text))]  # '~' is only in validation
  assert tokenizer == data.CharTokenizer(text) and "~" in tokenizer.chars
  assert data.text_tokenizer(config) is tokenizer
  validation = data.load_tokens(config, "validation")
  assert tokenizer.decode(validation) == text[int(0.9 * len(text)):]


def test_byte_tokenizer_needs_no_data(tmp_path):
  config = text_config(tmp_path / "empty", tokenizer="byte")
  assert data.text_tokenizer(config) == data.ByteTokenizer()
  with pytest.raises(ValueError, match="'wordpiece'"):
    data.text_tokenizer(text_config(tmp_path, tokenizer="wordpiece"))


def test_load_tokens_is_the_encoded_split(shakespeare):
  config, text = shakespeare
  cut = int(0.9 * len(text))
  for tokenizer in ("char", "byte"):
    cfg = text_config(config.data_dir, tokenizer=tokenizer)
    tokens = data.load_tokens(cfg, "train")
    assert tokens.dtype == np.int32 and not tokens.flags.writeable
    np.testing.assert_array_equal(tokens, data.text_tokenizer(cfg).encode(text[:cut]))
  assert len(data.load_tokens(text_config(config.data_dir, tokenizer="byte"), "train")) == (
      len(text[:cut].encode("utf-8")))  # 'é' is 2 bytes


def test_other_text_datasets_load_by_name_documents_concatenated(tmp_path):
  documents = ["First doc.", "Second — doc.\n", "third"]

  class TinyCorpus(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    name = "tiny_corpus"
    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
      return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
          "content": tfds.features.Text(), "id": np.int32}), disable_shuffling=True)

    def _split_generators(self, dl_manager):
      return {"train": self._generate_examples(documents), "test": self._generate_examples(["Z"])}

    def _generate_examples(self, docs):
      for i, doc in enumerate(docs):
        yield i, {"content": doc, "id": i}

  TinyCorpus(data_dir=str(tmp_path), file_format="array_record").download_and_prepare()
  config = text_config(tmp_path, dataset="tiny_corpus", text_feature="content",
                       eval_split="test", seq_len=4)
  assert data.is_text_dataset(config)
  tokenizer = data.text_tokenizer(config)
  assert "Z" in tokenizer.chars  # the vocabulary reads every split, "test" too
  assert tokenizer.decode(data.load_tokens(config, "train")) == "".join(documents)
  with pytest.raises(ValueError, match="no text feature 'text'.*content"):
    data.load_tokens(text_config(tmp_path, dataset="tiny_corpus", tokenizer="byte"), "train")


def test_is_text_dataset():
  assert data.is_text_dataset(ml_collections.ConfigDict({"dataset": "tiny_shakespeare"}))
  assert not data.is_text_dataset(ml_collections.ConfigDict({"dataset": "mnist",
                                                             "tokenizer": "char"}))
  assert data.is_text_dataset(ml_collections.ConfigDict({"dataset": "lm1b", "tokenizer": "byte"}))
  assert not data.is_text_dataset(ml_collections.ConfigDict({"dataset": "fashion_mnist"}))


# ---------------------------------------------------------------- random windows

def test_random_windows_are_contiguous_slices_of_the_split(shakespeare):
  config, _ = shakespeare
  tokens = data.load_tokens(config, "train")
  windows = np.lib.stride_tricks.sliding_window_view(tokens, SEQ_LEN + 1)
  loader = data.make_text_loader(config, split="train", global_batch_size=8, seed=0)
  batches = take(iter(loader), 20)
  starts = []
  for batch in batches:
    assert batch.shape == (8, SEQ_LEN + 1) and batch.dtype == np.int32
    for row in batch:
      matches = np.flatnonzero((windows == row).all(axis=1))
      assert matches.size, "a window that is not a slice of the split"
      starts.append(matches[0])
  assert len(set(starts)) > 120  # 160 draws over ~5,000 offsets: nearly all distinct
  assert min(starts) < len(windows) // 4 and max(starts) > 3 * len(windows) // 4


def test_random_windows_are_seeded(shakespeare):
  config, _ = shakespeare

  def first(seed, n=3):
    return take(iter(data.make_text_loader(config, split="train", global_batch_size=4,
                                           seed=seed)), n)

  np.testing.assert_array_equal(first(1), first(1))
  assert not np.array_equal(first(1)[0], first(2)[0])


def test_state_is_the_position_and_fits_only_its_own_spec(shakespeare):
  """The state is the position and the spec (resuming from it, also through orbax, is
  tests/data/test_data.py::test_iterator_state_resumes_exactly[text])."""
  config, _ = shakespeare

  def new_iterator(seed=7):
    return iter(data.make_text_loader(config, split="train", global_batch_size=4, seed=seed))

  iterator = new_iterator()
  take(iterator, 5)
  state = iterator.get_state()
  assert json.loads(state)["position"] == 5
  expected = take(iterator, 3)
  resumed = new_iterator()
  resumed.set_state(state)
  np.testing.assert_array_equal(take(resumed, 3), expected)

  with pytest.raises(ValueError, match="seed: saved 7, here 8"):
    new_iterator(seed=8).set_state(state)
  with pytest.raises(ValueError, match="not the state of a gen_jax text iterator"):
    new_iterator().set_state(json.dumps({"last_seen_indices": {}}).encode())


def test_processes_read_their_rows_of_the_single_process_batch(shakespeare, monkeypatch):
  """Process p of P yields rows [p B/P, (p+1) B/P) of each global batch: the assembled
  batch equals the single-process one, and the saved position resumes any process count."""
  config, _ = shakespeare

  def iterator(index, count):
    as_processes(monkeypatch, index, count)
    return iter(data.make_text_loader(config, split="train", global_batch_size=8, seed=0))

  single = take(iterator(0, 1), 3)
  first, second = iterator(0, 2), iterator(1, 2)
  local = [take(first, 3), take(second, 3)]
  assert local[0][0].shape == (4, SEQ_LEN + 1)
  np.testing.assert_array_equal(np.concatenate(local, axis=1), single)
  assert first.get_state() == second.get_state()
  resumed = iterator(0, 1)
  resumed.set_state(first.get_state())        # 2 processes -> 1
  np.testing.assert_array_equal(take(resumed, 1)[0], take(iterator(0, 1), 4)[3])


def test_producing_a_batch_takes_microseconds(shakespeare):
  config, _ = shakespeare
  iterator = iter(data.make_text_loader(config, split="train", global_batch_size=64, seed=0))
  next(iterator)
  start = time.perf_counter()
  take(iterator, 200)
  assert (time.perf_counter() - start) / 200 < 2e-3  # ~50 us on a 2-core CPU


# ---------------------------------------------------------------- sequential windows

def test_sequential_windows_cover_the_split_once_per_epoch(shakespeare):
  config, _ = shakespeare
  tokens = data.load_tokens(config, "validation")
  batch_size = 4
  num_batches = (len(tokens) - 1) // SEQ_LEN // batch_size
  loader = data.make_text_loader(config, split="validation", global_batch_size=batch_size,
                                 seed=0, shuffle=False, num_epochs=1)
  batches = take(iter(loader), num_batches)
  assert num_batches >= 3 and len(list(loader)) == num_batches  # then StopIteration
  rows = np.concatenate(batches)
  np.testing.assert_array_equal(rows[:, :-1].reshape(-1), tokens[:len(rows) * SEQ_LEN])
  np.testing.assert_array_equal(rows[:-1, -1], rows[1:, 0])  # targets run on
  forever = iter(data.make_text_loader(config, split="validation", global_batch_size=batch_size,
                                       seed=0, shuffle=False))
  np.testing.assert_array_equal(take(forever, num_batches + 1)[-1], batches[0])


def test_sequential_processes_read_disjoint_windows(shakespeare, monkeypatch):
  config, _ = shakespeare
  tokens = data.load_tokens(config, "validation")
  # Window j starts at j * SEQ_LEN; one epoch uses whole global batches of 4 windows.
  windows = np.lib.stride_tricks.sliding_window_view(tokens, SEQ_LEN + 1)[::SEQ_LEN]
  used = windows[:(len(tokens) - 1) // SEQ_LEN // 4 * 4]
  rows = []
  for index in range(2):
    as_processes(monkeypatch, index, 2)
    loader = data.make_text_loader(config, split="validation", global_batch_size=4, seed=0,
                                   shuffle=False, num_epochs=1)
    rows.append(np.stack([batch["tokens"] for batch in loader]))   # [batches, 2, L + 1]
    assert rows[-1].shape == (len(used) // 4, 2, SEQ_LEN + 1)
  # Process 0 holds windows 4b, 4b + 1 of global batch b; process 1 holds 4b + 2, 4b + 3.
  np.testing.assert_array_equal(np.concatenate(rows, axis=1).reshape(used.shape), used)


# ---------------------------------------------------------------- errors

def test_clear_errors_for_bad_loader_settings(shakespeare):
  config, _ = shakespeare
  num_tokens = len(data.load_tokens(config, "validation"))
  cases = [
      (text_config(config.data_dir, seq_len=None), {}, "seq_len"),
      (text_config(config.data_dir, seq_len=num_tokens), {}, "fewer than seq_len \\+ 1"),
      (config, dict(shuffle=False, global_batch_size=num_tokens), "fewer than one global batch"),
      (config, dict(num_epochs=1), "random windows are infinite"),
      (config, dict(seed=-1), "seed"),
  ]
  for cfg, kwargs, message in cases:
    with pytest.raises(ValueError, match=message):
      data.make_text_loader(cfg, **{"split": "validation", "global_batch_size": 4, "seed": 0,
                                    **kwargs})
