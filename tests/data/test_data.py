"""Tests for gen_jax.data: TF-free builders, sources and the grain pipeline.

Offline and fast: MNIST and CIFAR-10 are tested on small synthetic raw files
(the expected record counts are shrunk with monkeypatch), mnist_5k on the real
copy inside gen_jax (gen_jax/data/assets), and downloads are monkeypatched to fail, never attempted.
"""
import gzip
import os
import socket
import struct
import tarfile

import grain
import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
import pytest
import tensorflow_datasets as tfds

from gen_jax import data
from gen_jax.data.builders import cifar10 as cifar10_builder
from gen_jax.data.builders import mnist as mnist_builder

N_TRAIN, N_TEST = 12, 5  # synthetic MNIST sizes
CIFAR_RECORDS_PER_FILE = 4


# ---------------------------------------------------------------- helpers

def write_idx(path, array, magic, *, truncate_by=0):
  header = struct.pack(">I", magic) + b"".join(struct.pack(">I", d) for d in array.shape)
  raw = header + array.astype(np.uint8).tobytes()
  with gzip.open(path, "wb") as f:
    f.write(raw[:len(raw) - truncate_by])


@pytest.fixture
def mnist_raw(tmp_path, monkeypatch):
  """A manual_dir with synthetic MNIST idx files; returns (dir, arrays by split)."""
  monkeypatch.setattr(mnist_builder, "SPLIT_FILES", {
      "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", N_TRAIN),
      "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz", N_TEST),
  })
  rng = np.random.default_rng(0)
  manual_dir = tmp_path / "raw"
  manual_dir.mkdir()
  arrays = {}
  for split, (images_file, labels_file, n) in mnist_builder.SPLIT_FILES.items():
    images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, n, dtype=np.uint8)
    write_idx(manual_dir / images_file, images, 2051)
    write_idx(manual_dir / labels_file, labels, 2049)
    arrays[split] = (images, labels)
  return manual_dir, arrays


def cifar_records(rng, n):
  labels = rng.integers(0, 10, n, dtype=np.uint8)
  images_NxCxHxW = rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8)
  raw = np.concatenate([labels[:, None], images_NxCxHxW.reshape(n, -1)], axis=1).tobytes()
  return raw, images_NxCxHxW.transpose(0, 2, 3, 1), labels


def data_config(data_dir, **overrides):
  fields = dict(dataset="mnist_5k", data_dir=data_dir, manual_dir="", random_flip=False,
                num_workers=0)
  return ml_collections.ConfigDict({**fields, **overrides})


def take(iterator, n):
  return [next(iterator) for _ in range(n)]


def assert_batches_equal(a, b):
  assert len(a) == len(b)
  for x, y in zip(a, b, strict=True):
    np.testing.assert_array_equal(x["image"], y["image"])
    np.testing.assert_array_equal(x["label"], y["label"])


# ---------------------------------------------------------------- MNIST builder

def test_mnist_parses_idx_files_exactly_and_never_downloads(mnist_raw, tmp_path, no_downloads):
  manual_dir, arrays = mnist_raw
  for split, (images, labels) in arrays.items():
    source = data.load_split("mnist", split, data_dir=str(tmp_path / "tfds"),
                             manual_dir=str(manual_dir))
    assert len(source) == len(labels)
    for i in range(len(labels)):  # original order, every pixel and label
      assert source[i]["image"].shape == (28, 28, 1) and source[i]["image"].dtype == np.uint8
      np.testing.assert_array_equal(source[i]["image"][..., 0], images[i])
      assert source[i]["label"] == labels[i]
  assert no_downloads == []
  assert (tmp_path / "tfds" / "mnist" / "1.0.0").is_dir()  # our version, not TFDS's 3.0.1


@pytest.mark.parametrize("defect, message", [
    ("bad_magic", "magic number"),
    ("truncated", "truncated"),
    ("wrong_count", "expected"),
    ("label_out_of_range", "0..9"),
    ("not_gzip", "gzip"),
])
def test_mnist_rejects_corrupted_files(mnist_raw, tmp_path, defect, message):
  manual_dir, arrays = mnist_raw
  images, labels = arrays["train"]
  bad_file = manual_dir / "train-labels-idx1-ubyte.gz"
  if defect == "bad_magic":
    write_idx(bad_file, labels, 2051)
  elif defect == "truncated":
    bad_file = manual_dir / "train-images-idx3-ubyte.gz"
    write_idx(bad_file, images, 2051, truncate_by=100)
  elif defect == "wrong_count":
    write_idx(bad_file, labels[:-1], 2049)
  elif defect == "label_out_of_range":
    write_idx(bad_file, np.full_like(labels, 10), 2049)
  else:
    bad_file.write_bytes(b"not a gzip file")
  with pytest.raises(data.DatasetUnavailableError, match=message) as error:
    data.load_split("mnist", "train", data_dir=str(tmp_path / "tfds"), manual_dir=str(manual_dir))
  assert bad_file.name in str(error.value)
  assert error.value.__cause__ is None  # no TFDS stack trace chained in
  assert not data.BUILDERS["mnist"](data_dir=str(tmp_path / "tfds")).is_prepared()


def test_mnist_manual_dir_missing_a_file(mnist_raw, tmp_path, no_downloads):
  manual_dir, _ = mnist_raw
  (manual_dir / "t10k-labels-idx1-ubyte.gz").unlink()
  with pytest.raises(data.DatasetUnavailableError, match="manual_dir") as error:
    data.load_split("mnist", "train", data_dir=str(tmp_path / "tfds"), manual_dir=str(manual_dir))
  assert "lacks t10k-labels-idx1-ubyte.gz" in str(error.value)
  assert no_downloads == []


@pytest.mark.parametrize("make_dir", [False, True], ids=["missing", "empty"])
def test_manual_dir_missing_or_empty_is_not_a_reason_to_download(tmp_path, no_downloads, make_dir):
  manual_dir = tmp_path / "raw"
  if make_dir:
    manual_dir.mkdir()
  with pytest.raises(data.DatasetUnavailableError, match="manual_dir=.*does not exist or is empty"):
    data.load_split("mnist", "train", data_dir=str(tmp_path / "tfds"), manual_dir=str(manual_dir))
  assert no_downloads == []


def test_mnist_download_failure_without_manual_dir(tmp_path, no_downloads):
  with pytest.raises(data.DatasetUnavailableError, match="manual_dir") as error:
    data.load_split("mnist", "train", data_dir=str(tmp_path / "tfds"), manual_dir=None)
  assert "could not download" in str(error.value) and "connection refused" in str(error.value)
  assert error.value.__cause__ is None
  tried = [next(iter(urls.values())) for urls in no_downloads]
  assert [url.rsplit("/", 1)[0] + "/" for url in tried] == list(mnist_builder.MIRRORS)


def test_offline_fails_fast_without_calling_the_downloader(tmp_path, no_downloads, monkeypatch):
  """Offline (no DNS), TFDS's downloader would retry for minutes; we never call it."""
  def no_dns(host, port, *args, **kwargs):
    raise socket.gaierror(-2, "Name or service not known")

  monkeypatch.setattr(socket, "getaddrinfo", no_dns)
  for variable in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
    monkeypatch.delenv(variable, raising=False)
  with pytest.raises(data.DatasetUnavailableError, match="cannot resolve.*manual_dir"):
    data.load_split("cifar10", "train", data_dir=str(tmp_path / "tfds"), manual_dir="")
  assert no_downloads == []


def test_prepared_dataset_is_reused_not_rebuilt(mnist_raw, tmp_path, no_downloads):
  manual_dir, arrays = mnist_raw
  data_dir = str(tmp_path / "tfds")
  data.load_split("mnist", "train", data_dir=data_dir, manual_dir=str(manual_dir))
  version_dir = tmp_path / "tfds" / "mnist" / "1.0.0"
  mtimes = {p.name: p.stat().st_mtime_ns for p in version_dir.iterdir()}
  for path in manual_dir.iterdir():  # a rebuild would now fail: no raw files, no network
    path.unlink()
  source = data.load_split("mnist", "test", data_dir=data_dir, manual_dir=None)
  assert len(source) == N_TEST and source[0]["label"] == arrays["test"][1][0]
  assert {p.name: p.stat().st_mtime_ns for p in version_dir.iterdir()} == mtimes
  assert no_downloads == []


# ---------------------------------------------------------------- CIFAR-10 builder

@pytest.mark.parametrize("layout", ["tarball", "folder"])
def test_cifar10_parses_binary_records_exactly(tmp_path, monkeypatch, no_downloads, layout):
  monkeypatch.setattr(cifar10_builder, "RECORDS_PER_FILE", CIFAR_RECORDS_PER_FILE)
  rng = np.random.default_rng(1)
  folder = tmp_path / "extracted" / "cifar-10-batches-bin"
  folder.mkdir(parents=True)
  expected = {"train": ([], []), "test": ([], [])}
  for split, files in cifar10_builder.SPLIT_FILES.items():
    for name in files:
      raw, images, labels = cifar_records(rng, CIFAR_RECORDS_PER_FILE)
      (folder / name).write_bytes(raw)
      expected[split][0].append(images)
      expected[split][1].append(labels)
  if layout == "tarball":
    manual_dir = tmp_path / "raw"
    manual_dir.mkdir()
    with tarfile.open(manual_dir / "cifar-10-binary.tar.gz", "w:gz") as archive:
      archive.add(folder, arcname="cifar-10-batches-bin")
  else:
    manual_dir = tmp_path / "extracted"
  for split, (images, labels) in expected.items():
    images, labels = np.concatenate(images), np.concatenate(labels)
    source = data.load_split("cifar10", split, data_dir=str(tmp_path / "tfds"),
                             manual_dir=str(manual_dir))
    assert len(source) == len(labels) == CIFAR_RECORDS_PER_FILE * (5 if split == "train" else 1)
    for i in range(len(labels)):
      np.testing.assert_array_equal(source[i]["image"], images[i])  # HWC, files' order
      assert source[i]["label"] == labels[i]
  assert no_downloads == []


def test_cifar10_rejects_a_truncated_file(tmp_path, monkeypatch):
  monkeypatch.setattr(cifar10_builder, "RECORDS_PER_FILE", CIFAR_RECORDS_PER_FILE)
  rng = np.random.default_rng(2)
  for name in [n for files in cifar10_builder.SPLIT_FILES.values() for n in files]:
    (tmp_path / name).write_bytes(cifar_records(rng, CIFAR_RECORDS_PER_FILE)[0])
  (tmp_path / "data_batch_3.bin").write_bytes(cifar_records(rng, CIFAR_RECORDS_PER_FILE)[0][:-1])
  with pytest.raises(data.DatasetUnavailableError, match="data_batch_3.bin.*truncated"):
    data.load_split("cifar10", "train", data_dir=str(tmp_path / "tfds"), manual_dir=str(tmp_path))


# ---------------------------------------------------------------- mnist_5k, other datasets

def test_mnist_5k_splits_are_class_balanced_real_digits(data_dir):
  train = data.load_split("mnist_5k", "train", data_dir=data_dir, manual_dir=None)
  test = data.load_split("mnist_5k", "test", data_dir=data_dir, manual_dir=None)
  assert (len(train), len(test)) == (4500, 500)
  for source, per_class in [(train, 450), (test, 50)]:
    labels = np.array([source[i]["label"] for i in range(len(source))])
    np.testing.assert_array_equal(np.bincount(labels, minlength=10), [per_class] * 10)
    np.testing.assert_array_equal(labels[:20], list(range(10)) * 2)  # interleaved classes
  train_images = np.stack([train[i]["image"] for i in range(len(train))])
  test_images = np.stack([test[i]["image"] for i in range(len(test))])
  assert train_images.shape == (4500, 28, 28, 1) and train_images.dtype == np.uint8
  ink = train_images.reshape(4500, -1).sum(1) / 255.0  # MNIST digits: ~100 "full" pixels
  assert 60 < ink.mean() < 150 and ink.min() > 10
  assert not {im.tobytes() for im in test_images} & {im.tobytes() for im in train_images}


def test_mnist_5k_asset_is_checked_by_its_checksum(tmp_path, monkeypatch):
  from gen_jax.data.builders import mnist_5k
  images, labels = mnist_5k.read_mnist_5k()
  with np.load(mnist_5k.asset_path()) as arrays:   # the first 500 training digits per class
    index = arrays["mnist_train_index"]
  assert np.all(np.diff(labels.astype(int)) >= 0) and np.all(np.bincount(labels) == 500)
  assert all(np.all(np.diff(index[labels == c]) > 0) for c in range(10))
  damaged = tmp_path / "mnist_5k.npz"
  damaged.write_bytes(mnist_5k.asset_path().read_bytes()[:-10])
  monkeypatch.setattr(mnist_5k, "asset_path", lambda: damaged)
  with pytest.raises(data.DatasetUnavailableError, match="sha256"):
    mnist_5k.read_mnist_5k()


def test_unknown_dataset_names_the_data_dir(tmp_path):
  with pytest.raises(data.DatasetUnavailableError, match="array_record") as error:
    data.load_split("no_such_dataset", "train", data_dir=str(tmp_path), manual_dir=None)
  assert str(tmp_path) in str(error.value) and "no_such_dataset" in str(error.value)


def test_other_prepared_dataset_loads_by_name(tmp_path):
  class TinyDigits(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    name = "tiny_digits"
    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
      return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
          "image": tfds.features.Tensor(shape=(4, 4, 1), dtype=np.uint8),
          "label": tfds.features.ClassLabel(num_classes=10)}), disable_shuffling=True)

    def _split_generators(self, dl_manager):
      return {"train": self._generate_examples()}

    def _generate_examples(self):
      for i in range(6):
        yield i, {"image": np.full((4, 4, 1), i, np.uint8), "label": i}

  TinyDigits(data_dir=str(tmp_path), file_format="array_record").download_and_prepare()
  source = data.load_split("tiny_digits", "train", data_dir=str(tmp_path), manual_dir=None)
  assert len(source) == 6 and source[4]["label"] == 4 and source[4]["image"][0, 0, 0] == 4
  assert data.image_shape(data_config(str(tmp_path), dataset="tiny_digits")) == (4, 4, 1)


# ---------------------------------------------------------------- pipeline

def test_batches_are_scaled_images_in_source_order(data_dir):
  config = data_config(data_dir)
  assert data.image_shape(config) == (28, 28, 1)
  assert data.num_examples(config, "train") == 4500
  loader = data.make_image_loader(config, split="train", global_batch_size=16, seed=0,
                                  shuffle=False, num_epochs=1)
  batch = next(iter(loader))
  assert batch["image"].shape == (16, 28, 28, 1) and batch["image"].dtype == np.float32
  assert batch["label"].shape == (16,) and batch["label"].dtype == np.int32
  assert batch["image"].min() == -1.0 and batch["image"].max() == 1.0
  source = data.load_split("mnist_5k", "train", data_dir=data_dir, manual_dir=None)
  expected = np.stack([source[i]["image"] for i in range(16)]).astype(np.float32) / 127.5 - 1
  np.testing.assert_allclose(batch["image"], expected, atol=1e-6)
  np.testing.assert_array_equal(batch["label"], [source[i]["label"] for i in range(16)])


def test_finite_epoch_drops_the_remainder(data_dir):
  loader = data.make_image_loader(data_config(data_dir), split="test", global_batch_size=64,
                                  seed=0, num_epochs=1)
  assert len(list(loader)) == 500 // 64


def test_shuffle_is_seeded(data_dir):
  def first_batches(seed):
    loader = data.make_image_loader(data_config(data_dir), split="train",
                                    global_batch_size=32, seed=seed)
    return take(iter(loader), 2)

  assert_batches_equal(first_batches(3), first_batches(3))
  a, b = first_batches(3), first_batches(4)
  assert not np.array_equal(a[0]["label"], b[0]["label"])


@pytest.mark.parametrize("modality", ["image", "text"])
def test_iterator_state_resumes_exactly(modality, request, tmp_path):
  """Both loaders (through `data.make_loader`) resume the exact next batches from
  `get_state()` / `set_state()` and from an orbax checkpoint of the iterator."""
  if modality == "image":
    config = data_config(request.getfixturevalue("data_dir"), random_flip=True)
    batch_size = 32
  else:
    config = ml_collections.ConfigDict(dict(
        dataset="tiny_shakespeare", data_dir=request.getfixturevalue("text_data_dir"),
        manual_dir="", train_split="train", eval_split="validation", tokenizer="char",
        seq_len=16))
    batch_size = 4

  def new_iterator():
    return iter(data.make_loader(config, split="train", global_batch_size=batch_size, seed=7))

  def assert_same(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
      assert x.keys() == y.keys()
      for key in x:
        np.testing.assert_array_equal(x[key], y[key])

  iterator = new_iterator()
  take(iterator, 3)
  state = iterator.get_state()
  manager = ocp.CheckpointManager(tmp_path / "ckpt")
  manager.save(3, args=ocp.args.Composite(data=grain.checkpoint.CheckpointSave(iterator)))
  manager.wait_until_finished()
  expected = take(iterator, 2)

  resumed = new_iterator()
  resumed.set_state(state)
  assert_same(take(resumed, 2), expected)

  restored = new_iterator()
  manager.restore(3, args=ocp.args.Composite(data=grain.checkpoint.CheckpointRestore(restored)))
  assert_same(take(restored, 2), expected)
  manager.close()
  fresh = take(new_iterator(), 2)
  assert any(not np.array_equal(x[key], y[key])  # the position mattered
             for x, y in zip(fresh, expected, strict=True) for key in x)


def test_random_flip_flips_some_images_deterministically(data_dir):
  def first_batch(random_flip):   # a training stream: flips apply to shuffled reads only
    config = data_config(data_dir, random_flip=random_flip)
    loader = data.make_image_loader(config, split="train", global_batch_size=64, seed=5)
    return next(iter(loader))["image"]

  plain, flipped = first_batch(False), first_batch(True)
  mirrored = np.array([np.array_equal(f, p[:, ::-1]) and not np.array_equal(f, p)
                       for f, p in zip(flipped, plain, strict=True)])
  unchanged = np.array([np.array_equal(f, p) for f, p in zip(flipped, plain, strict=True)])
  assert np.all(mirrored | unchanged)
  assert 10 < mirrored.sum() < 54  # about half of 64
  np.testing.assert_array_equal(first_batch(True), flipped)


def test_processes_read_their_rows_of_the_single_process_batch(data_dir, monkeypatch):
  """Process p of P reads rows [p B/P, (p+1) B/P) of each global batch, so the assembled
  global batch equals the single-process one row for row (shuffled, flipped, any epoch),
  and the iterator state is the same on every process."""
  def batches(process_index, process_count, state=None):
    monkeypatch.setattr(jax, "process_count", lambda: process_count)
    monkeypatch.setattr(jax, "process_index", lambda: process_index)
    iterator = iter(data.make_image_loader(data_config(data_dir, random_flip=True),
                                           split="test", global_batch_size=50, seed=3))
    if state is not None:
      iterator.set_state(state)
    return take(iterator, 12), iterator.get_state()   # 12 x 50 > 500: crosses an epoch

  single, single_state = batches(0, 1)
  (first, state0), (second, state1) = batches(0, 2), batches(1, 2)
  assert all(b["image"].shape[0] == 25 for b in first + second)  # the local batch
  assembled = [{k: np.concatenate([a[k], b[k]]) for k in a}
               for a, b in zip(first, second, strict=True)]
  assert_batches_equal(assembled, single)
  assert state0 == state1 == single_state
  # A position saved by 2 processes resumes a single process (and vice versa).
  resumed, _ = batches(0, 1, state=state0)
  continued, _ = batches(0, 2, state=single_state)
  monkeypatch.setattr(jax, "process_count", lambda: 1)
  reference = take(iter(data.make_image_loader(data_config(data_dir, random_flip=True),
                                               split="test", global_batch_size=50, seed=3)), 24)
  assert_batches_equal(resumed, reference[12:])
  assert_batches_equal(continued, [{k: v[:25] for k, v in b.items()} for b in reference[12:]])


def test_finite_stream_covers_each_example_once_across_processes(data_dir, monkeypatch):
  monkeypatch.setattr(jax, "process_count", lambda: 2)
  seen = []
  for process_index in range(2):
    monkeypatch.setattr(jax, "process_index", lambda i=process_index: i)
    loader = data.make_image_loader(data_config(data_dir), split="test", global_batch_size=50,
                                    seed=0, num_epochs=1)
    seen.append({im.tobytes() for b in loader for im in b["image"]})
  assert not seen[0] & seen[1]
  assert len(seen[0] | seen[1]) == 500


def test_global_batch_must_divide_over_processes(data_dir, monkeypatch):
  monkeypatch.setattr(jax, "process_count", lambda: 3)
  with pytest.raises(ValueError, match="multiple of jax.process_count"):
    data.make_image_loader(data_config(data_dir), split="train", global_batch_size=64, seed=0)


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="needs a core for the worker")
def test_worker_processes_yield_the_same_batches(data_dir):
  def first_batches(num_workers):
    config = data_config(data_dir, num_workers=num_workers, random_flip=True)
    loader = data.make_image_loader(config, split="train", global_batch_size=16, seed=1)
    iterator = iter(loader)
    return take(iterator, 3)

  assert_batches_equal(first_batches(1), first_batches(0))


# ---------------------------------------------------------------- whole-batch pipeline

def test_stream_order_is_grains_seeded_shuffle():
  """The vectorized shuffle equals grain's index_shuffle (C++) and grain's
  `source.seed(s).shuffle().repeat()` stream, a new permutation every epoch."""
  from grain._src.python.experimental.index_shuffle.python import index_shuffle_module

  from gen_jax.data import stream
  for n, seed in [(1, 0), (2, 5), (500, 3), (4500, 2**32 - 1), (70_000, 11)]:
    probe = np.unique(np.random.default_rng(n).integers(0, n, 200))
    expected = [index_shuffle_module.index_shuffle(int(i), max_index=n - 1, seed=seed, rounds=4)
                for i in probe]
    np.testing.assert_array_equal(stream.index_shuffle(probe, n - 1, seed), expected)
    # The whole-epoch permutation (walks through a table of the cipher) is the same map.
    np.testing.assert_array_equal(stream.shuffled_range(n, seed),
                                  stream.index_shuffle(np.arange(n), n - 1, seed))
  for n, seed in [(7, 0), (500, 3)]:
    grain_stream = grain.MapDataset.range(n).seed(seed).shuffle().repeat()
    positions = np.arange(3 * n + 4)
    order = stream.ShuffledOrder(n, seed)(positions)
    np.testing.assert_array_equal(order, [grain_stream[int(s)] for s in positions])
    epochs = order[:3 * n].reshape(3, n)
    assert all(sorted(e) == list(range(n)) for e in epochs) and len({tuple(e) for e in epochs}) == 3


def test_loader_reads_grains_order_and_saves_the_old_state_format(data_dir):
  """Shuffled batches hold the records of grain's stream positions; the iterator state is
  {"next_index": global batches read}, the format checkpoints of the per-record pipeline
  hold, so they restore."""
  from gen_jax.data import stream
  source = data.load_split("mnist_5k", "train", data_dir=data_dir, manual_dir=None)
  iterator = iter(data.make_image_loader(data_config(data_dir), split="train",
                                         global_batch_size=100, seed=9))
  batches = take(iterator, 46)   # 4600 > 4500: crosses into the second epoch
  assert iterator.get_state() == {"next_index": 46}
  indices = stream.ShuffledOrder(4500, 9)(np.arange(4500, 4600))
  np.testing.assert_array_equal(batches[45]["label"], [source[int(i)]["label"] for i in indices])
  expected = np.stack([source[int(i)]["image"] for i in indices]) / np.float32(127.5) - 1
  np.testing.assert_array_equal(batches[45]["image"], expected.astype(np.float32))
  resumed = iter(data.make_image_loader(data_config(data_dir), split="train",
                                        global_batch_size=100, seed=9))
  resumed.set_state({"next_index": 45})
  assert_batches_equal(take(resumed, 1), batches[45:])


def test_random_bits_belong_to_stream_positions(data_dir):
  """Flips and dynamic binarization depend on (seed, stream position) only: the same
  positions read with global batch 30 or 20 get the same images."""
  config = data_config(data_dir, random_flip=True, binarize="dynamic")
  read = lambda batch: np.concatenate([b["image"] for b in take(iter(data.make_image_loader(
      config, split="train", global_batch_size=batch, seed=2)), 60 // batch)])
  np.testing.assert_array_equal(read(30), read(20))


def test_fixed_binarization_draws_as_before(data_dir):
  """Image i's sample uses np.random.default_rng([binarize_seed, i]), as the per-record
  pipeline did: the same {0, 1} images as runs before the whole-batch pipeline."""
  config = data_config(data_dir, binarize="fixed", binarize_seed=4)
  batch = next(iter(data.make_image_loader(config, split="test", global_batch_size=8, seed=0,
                                           shuffle=False)))["image"]
  source = data.load_split("mnist_5k", "test", data_dir=data_dir, manual_dir=None)
  for i in range(8):
    uniform = np.random.default_rng([4, i]).random((28, 28, 1), dtype=np.float32)
    np.testing.assert_array_equal(batch[i], uniform * np.float32(255) < source[i]["image"])


def test_split_is_decoded_once_and_reloaded_from_disk(data_dir, monkeypatch):
  """A split is decoded once per process; the next process loads the saved arrays instead
  of decoding, unless its shards changed (prepared again); a split too large for memory
  is read per record, with the same batches."""
  from gen_jax.data import in_memory
  decodes = []
  decode = in_memory._decode
  monkeypatch.setattr(in_memory, "_decode", lambda *a: decodes.append(1) or decode(*a))

  def batches():
    return take(iter(data.make_image_loader(data_config(data_dir, random_flip=True),
                                            split="test", global_batch_size=50, seed=1)), 3)

  reference = batches()
  folder = os.path.join(data_dir, "mnist_5k", "1.0.0", in_memory.CACHE_FOLDER)
  assert [f for f in os.listdir(folder) if f.startswith("test-")] == ["test-9f86d081.npz"]
  decoded = len(decodes)   # 1, or 0 when an earlier test of this session decoded it
  monkeypatch.setattr(in_memory, "_ARRAYS", {})   # a new process: only the file is left
  assert_batches_equal(batches(), reference)
  assert len(decodes) == decoded
  shard = next(f for f in os.listdir(os.path.dirname(folder)) if "test.array_record" in f)
  os.utime(os.path.join(os.path.dirname(folder), shard), ns=(1, 1))  # as if prepared again
  monkeypatch.setattr(in_memory, "_ARRAYS", {})
  assert_batches_equal(batches(), reference)
  assert len(decodes) == decoded + 1
  monkeypatch.setattr(in_memory, "MAX_IN_MEMORY_BYTES", 0)   # per-record reads
  assert_batches_equal(batches(), reference)
