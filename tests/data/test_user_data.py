"""The user's own data: `image_folder` (a folder of PNG/JPEG files) and `text_files` (a .txt
file or a folder of them), on images and text each test writes itself into tmp_path.

Pins: labels from sorted subfolder names, the resize + centre-crop rule, the hash-ranked
1-in-10 hold-out (and train/ + test/ folders), one prepared copy per folder, settings and
contents, the clear errors, Tiny Shakespeare's split rule for text, and one VAE trained
end to end on an image folder (its input layer follows data.image_size and data.channels).
"""
import hashlib
import logging
import os

import jax
import ml_collections
import numpy as np
import pytest
from PIL import Image
from smoke import load_config

from gen_jax import data
from gen_jax.data import sources
from gen_jax.data.builders import image_folder, tiny_shakespeare
from gen_jax.data.errors import DatasetUnavailableError, UserDataError
from gen_jax.engine.outputs import read_metrics


def write_image(path, array, mode=None):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  Image.fromarray(np.asarray(array), mode).save(path)


def image_config(data_dir, folder, **overrides):
  fields = dict(dataset="image_folder", data_dir=str(data_dir), manual_dir="",
                image_folder=str(folder), image_size=6, channels=1)
  return ml_collections.ConfigDict({**fields, **overrides})


def read_split(config, split):
  source = data.load_split("image_folder", split, data_dir=config.data_dir,
                           options=sources.builder_options(config))
  return [source[i] for i in range(len(source))]


def hash_rank(relpath):
  return hashlib.sha256(relpath.encode()).hexdigest()


@pytest.fixture(scope="module")
def classes_folder(tmp_path_factory):
  """Classes 'zebra' (25 images), 'ant' (13) and 'mole' (10, one nested a level deeper),
  made in that order; image k is a constant 6x6 grey of value k, so its pixels say which
  file it was. Returns (folder, {value: (relative path, class name)})."""
  root = tmp_path_factory.mktemp("photos") / "my photos"
  files, value = {}, 0
  for name, count in (("zebra", 25), ("ant", 13), ("mole", 10)):
    for i in range(count):
      relpath = f"{name}/{'deeper/' if name == 'mole' and i == 0 else ''}img{i:02d}.png"
      write_image(root / relpath, np.full((6, 6), value, np.uint8))
      files[value] = (relpath, name)
      value += 1
  (root / "notes.txt").write_text("not an image")   # other files are ignored
  return root, files


# ---------------------------------------------------------------- labels and splits

def test_labels_are_the_sorted_subfolder_names(classes_folder, tmp_path):
  folder, files = classes_folder
  config = image_config(tmp_path, folder)
  rows = read_split(config, "train") + read_split(config, "test")
  assert len(rows) == len(files) == 48
  names = ["ant", "mole", "zebra"]   # sorted, not in the order they were made
  for row in rows:
    value = int(row["image"][0, 0, 0])
    assert names[int(row["label"])] == files[value][1]
  source = data.load_split("image_folder", "train", data_dir=str(tmp_path),
                           options=sources.builder_options(config))
  assert source.dataset_info.features["label"].names == names


def test_a_folder_without_subfolders_is_one_class(tmp_path):
  for i in range(20):
    write_image(tmp_path / "flat" / f"{i}.jpg", np.full((6, 6, 3), 10 * i, np.uint8))
  config = image_config(tmp_path / "tfds", tmp_path / "flat", channels=3)
  train, test = read_split(config, "train"), read_split(config, "test")
  assert (len(train), len(test)) == (18, 2)
  assert {int(r["label"]) for r in train + test} == {0}


def test_holdout_is_the_hash_ranked_tenth_of_each_class_in_hash_order(classes_folder, tmp_path):
  folder, files = classes_folder
  by_class = {}
  for value, (relpath, name) in files.items():
    by_class.setdefault(name, []).append((hash_rank(relpath), value))
  expected_test = sorted(v for members in by_class.values()
                         for _, v in sorted(members)[:len(members) // 10])
  config = image_config(tmp_path / "a", folder)
  test = [int(r["image"][0, 0, 0]) for r in read_split(config, "test")]
  train = [int(r["image"][0, 0, 0]) for r in read_split(config, "train")]
  assert sorted(test) == expected_test and len(test) == 2 + 1 + 1   # 25 // 10, 13 // 10, 10 // 10
  assert sorted(train + test) == sorted(files)
  # Each split is written in the order of its files' hashes (classes mixed), and a second
  # preparation (another data dir) writes the same records.
  assert train == sorted(train, key=lambda v: hash_rank(files[v][0]))
  again = image_config(tmp_path / "b", folder)
  assert [int(r["image"][0, 0, 0]) for r in read_split(again, "train")] == train


def test_train_and_test_subfolders_are_the_splits(tmp_path):
  for split, name, count in (("train", "cat", 3), ("train", "dog", 2), ("test", "dog", 1)):
    for i in range(count):
      write_image(tmp_path / "pets" / split / name / f"{i}.png", np.zeros((6, 6), np.uint8))
  config = image_config(tmp_path / "tfds", tmp_path / "pets")
  assert len(read_split(config, "train")) == 5
  assert [int(r["label"]) for r in read_split(config, "test")] == [1]   # train's id of 'dog'


# ---------------------------------------------------------------- one image

def test_no_resize_when_the_shorter_side_fits_then_the_centre_is_cropped(tmp_path):
  wide = np.arange(8 * 12, dtype=np.uint8).reshape(8, 12)          # H=8, W=12
  write_image(tmp_path / "wide.png", wide)
  out = image_folder.load_image(str(tmp_path / "wide.png"), 8, 1)
  np.testing.assert_array_equal(out[..., 0], wide[:, 2:10])         # (12 - 8) // 2 = 2
  tall = np.arange(11 * 4, dtype=np.uint8).reshape(11, 4)          # H=11, W=4
  write_image(tmp_path / "tall.png", tall)
  out = image_folder.load_image(str(tmp_path / "tall.png"), 4, 1)
  np.testing.assert_array_equal(out[..., 0], tall[3:7])             # (11 - 4) // 2 = 3


def test_resize_keeps_colours_and_channels_convert(tmp_path):
  write_image(tmp_path / "red.png", np.tile(np.uint8([200, 30, 90]), (20, 30, 1)))
  rgb = image_folder.load_image(str(tmp_path / "red.png"), 10, 3)   # 20x30 -> 10x15 -> 10x10
  assert rgb.shape == (10, 10, 3) and rgb.dtype == np.uint8
  np.testing.assert_array_equal(rgb, np.tile(np.uint8([200, 30, 90]), (10, 10, 1)))
  grey = image_folder.load_image(str(tmp_path / "red.png"), 10, 1)
  np.testing.assert_array_equal(grey, 88)   # ITU-R 601 luma: .299*200 + .587*30 + .114*90 = 87.7
  write_image(tmp_path / "deep.png", np.uint16([[65535, 32896], [0, 257]]))   # 16-bit PNG
  np.testing.assert_array_equal(image_folder.load_image(str(tmp_path / "deep.png"), 2, 1)[..., 0],
                                [[255, 128], [0, 1]])               # 16-bit greys scaled by 1/257
  write_image(tmp_path / "g.png", np.full((5, 5), 77, np.uint8))
  np.testing.assert_array_equal(image_folder.load_image(str(tmp_path / "g.png"), 5, 3), 77)


# -------------------------------------------------------- one copy per folder, size, contents

def test_copies_are_keyed_by_folder_size_and_contents(tmp_path, caplog):
  for parent in ("one", "two"):
    for i in range(10):
      write_image(tmp_path / parent / "imgs" / "a" / f"{i}.png", np.zeros((6, 6), np.uint8))
  name = lambda folder, size=6: image_folder.scan_folder(str(folder), size, 1).name
  one, two = tmp_path / "one" / "imgs", tmp_path / "two" / "imgs"
  assert name(one) == name(one) != name(two)           # same contents, another folder
  assert name(one) != name(one, size=5)
  config = image_config(tmp_path / "tfds", one)
  assert int(read_split(config, "test")[0]["image"].max()) == 0
  before = name(one)
  write_image(one / "a" / "0.png", np.full((6, 6), 9, np.uint8))   # a changed file ...
  os.utime(one / "a" / "0.png", ns=(1, 1))   # (an mtime surely unlike the first write's)
  assert name(one) != before
  with caplog.at_level(logging.WARNING):
    rows = read_split(config, "train") + read_split(config, "test")   # ... is prepared again
  assert sorted(int(r["image"].max()) for r in rows) == [0] * 9 + [9]
  assert before in caplog.text and "changed since they were prepared" in caplog.text


# ---------------------------------------------------------------- clear errors

def test_errors_name_the_file_or_folder(tmp_path):
  (tmp_path / "empty").mkdir()
  with pytest.raises(UserDataError, match=f"{tmp_path / 'empty'} holds no PNG or JPEG"):
    read_split(image_config(tmp_path / "tfds", tmp_path / "empty"), "train")
  for i in range(10):
    write_image(tmp_path / "c" / "full" / f"{i}.png", np.zeros((6, 6), np.uint8))
  (tmp_path / "c" / "hollow").mkdir()
  with pytest.raises(UserDataError, match="class folder .*hollow holds no PNG"):
    read_split(image_config(tmp_path / "tfds", tmp_path / "c"), "train")
  raw = (tmp_path / "c" / "full" / "3.png").read_bytes()
  (tmp_path / "c" / "hollow" / "cut.png").write_bytes(raw[:len(raw) // 2])   # truncated
  for i in range(9):
    write_image(tmp_path / "c" / "hollow" / f"{i}.png", np.zeros((6, 6), np.uint8))
  with pytest.raises(UserDataError, match=r"cannot read the image .*hollow/cut.png"):
    read_split(image_config(tmp_path / "tfds", tmp_path / "c"), "train")
  assert issubclass(UserDataError, DatasetUnavailableError)   # launch.py: one line


def test_a_symlink_loop_is_not_followed_and_each_image_is_read_once(tmp_path):
  """train/ + test/ of 2 classes x 10 images with a link from a class folder back to the
  root: prepared, each image is once in one split with its class's label."""
  root = tmp_path / "images"
  value = 0
  for split, per_class in (("train", 8), ("test", 2)):
    for name in ("a", "b"):
      for i in range(per_class):
        write_image(root / split / name / f"{i}.png", np.full((6, 6), value, np.uint8))
        value += 1
  os.symlink("../../..", root / "train" / "a" / "loop")      # -> images/
  os.symlink("..", root / "test" / "b" / "up")                # -> test/
  os.symlink("0.png", root / "train" / "b" / "same.png")      # the same file, same class
  config = image_config(tmp_path / "tfds", root)
  rows = {split: read_split(config, split) for split in ("train", "test")}
  assert (len(rows["train"]), len(rows["test"])) == (16, 4)
  values = {split: sorted(int(r["image"][0, 0, 0]) for r in rs) for split, rs in rows.items()}
  assert sorted(values["train"] + values["test"]) == list(range(20))
  assert not set(values["train"]) & set(values["test"])
  labels = {int(r["image"][0, 0, 0]): int(r["label"]) for rs in rows.values() for r in rs}
  assert labels == {v: (v // 8 if v < 16 else (v - 16) // 2) for v in range(20)}


@pytest.mark.parametrize("link, target", [
    ("train/b/stolen.png", "../a/0.png"),   # one image in two classes
    ("test/a/leak.png", "../../train/a/1.png"),   # one image in two splits
    ("train/b/more", "../a"),               # a whole class folder inside another
])
def test_one_file_in_two_places_is_an_error_naming_both(tmp_path, link, target):
  root = tmp_path / "images"
  for split, count in (("train", 3), ("test", 1)):
    for name in ("a", "b"):
      for i in range(count):
        write_image(root / split / name / f"{i}.png", np.zeros((6, 6), np.uint8))
  os.symlink(target, root / link)
  first = os.path.normpath(os.path.join(root, os.path.dirname(link), target))
  with pytest.raises(UserDataError, match="same") as info:
    image_folder.scan_folder(str(root), 6, 1)
  assert str(root / link) in str(info.value) and first in str(info.value)


def test_mixed_channels_fail_unless_channels_is_set(tmp_path):
  for i in range(10):
    write_image(tmp_path / "mix" / f"{i}.png", np.full((6, 6), 40, np.uint8))
  write_image(tmp_path / "mix" / "colour.png", np.full((6, 6, 3), 40, np.uint8))
  with pytest.raises(UserDataError, match=r"mix/0.png has 1 \(L\), .*mix/colour.png has 3 "
                                          r"\(RGB\)\. Set --config.data.channels"):
    data.describe(image_config(tmp_path / "tfds", tmp_path / "mix", channels=0))
  config = image_config(tmp_path / "tfds", tmp_path / "mix", channels=3)
  assert data.describe(config).image_shape == (6, 6, 3)
  rows = read_split(config, "train") + read_split(config, "test")
  assert len(rows) == 11 and all((r["image"] == 40).all() for r in rows)


# ---------------------------------------------------------------- text files

def text_config(data_dir, **fields):
  return ml_collections.ConfigDict({
      "dataset": "text_files", "data_dir": str(data_dir), "manual_dir": "", "tokenizer": "char",
      "seq_len": 8, "train_split": "train", "eval_split": "validation", **fields})


def test_text_files_split_like_tiny_shakespeare(tmp_path, monkeypatch):
  text = "".join(f"Line {i}: thou art é {'~' if i > 180 else ''}\n" for i in range(200))
  (tmp_path / "raw").mkdir()
  (tmp_path / "raw" / "input.txt").write_text(text, encoding="utf-8")
  monkeypatch.setattr(tiny_shakespeare, "SHA256",
                      hashlib.sha256(text.encode("utf-8")).hexdigest())
  shakespeare = text_config(tmp_path / "ts", dataset="tiny_shakespeare",
                            manual_dir=str(tmp_path / "raw"))
  mine = text_config(tmp_path / "tf", text_path=str(tmp_path / "raw" / "input.txt"))
  assert data.text_tokenizer(mine) == data.text_tokenizer(shakespeare)   # same characters
  for split in ("train", "validation"):
    np.testing.assert_array_equal(data.load_tokens(mine, split),
                                  data.load_tokens(shakespeare, split))
  cut = int(0.9 * len(text))
  assert data.text_tokenizer(mine).decode(data.load_tokens(mine, "validation")) == text[cut:]


def test_a_folder_is_its_txt_files_in_path_order(tmp_path):
  (tmp_path / "books" / "b").mkdir(parents=True)
  (tmp_path / "books" / "b" / "two.txt").write_text("second " * 20)
  (tmp_path / "books" / "a.txt").write_text("first " * 30)
  (tmp_path / "books" / "skip.md").write_text("not text data")
  os.symlink("..", tmp_path / "books" / "b" / "loop")          # a loop: not followed
  os.symlink("b/two.txt", tmp_path / "books" / "z.txt")         # the same file: read once
  config = text_config(tmp_path / "tfds", text_path=str(tmp_path / "books"), tokenizer="byte")
  tokens = np.concatenate([data.load_tokens(config, s) for s in ("train", "validation")])
  assert bytes(tokens.astype(np.uint8)) == b"first " * 30 + b"second " * 20
  batch = next(iter(data.make_loader(config, split="train", global_batch_size=4, seed=0)))
  assert batch["tokens"].shape == (4, 9)


def test_text_errors_name_the_file_or_folder(tmp_path):
  (tmp_path / "none").mkdir()
  with pytest.raises(UserDataError, match=f"{tmp_path / 'none'} holds no .txt file"):
    data.load_tokens(text_config(tmp_path / "tfds", text_path=str(tmp_path / "none")), "train")
  (tmp_path / "e").mkdir()
  (tmp_path / "e" / "full.txt").write_text("some text " * 10)
  (tmp_path / "e" / "void.txt").write_text("")
  with pytest.raises(UserDataError, match=r"e/void.txt is empty"):
    data.load_tokens(text_config(tmp_path / "tfds", text_path=str(tmp_path / "e")), "train")
  latin1 = "caf\xe9 na\xefve ".encode("latin-1") * 20
  (tmp_path / "l").mkdir()
  (tmp_path / "l" / "latin.txt").write_bytes(latin1)
  with pytest.raises(UserDataError, match=r"l/latin.txt is not UTF-8 .*tokenizer=byte"):
    data.text_tokenizer(text_config(tmp_path / "tfds", text_path=str(tmp_path / "l")))
  as_bytes = text_config(tmp_path / "tfds", text_path=str(tmp_path / "l"), tokenizer="byte")
  cut = int(0.9 * len(latin1))   # no characters to count: the cut is in bytes
  assert bytes(data.load_tokens(as_bytes, "train").astype(np.uint8)) == latin1[:cut]
  # A device (or a pipe): not "does not exist", and nothing read from it.
  with pytest.raises(UserDataError, match="text_path=/dev/zero is neither a regular file "
                     "nor a folder"):
    data.text_tokenizer(text_config(tmp_path / "tfds", text_path="/dev/zero"))


# ---------------------------------------------------------------- end to end

def test_config_defaults_fit_the_families_models():
  config = load_config("ddpm", "smoke")
  assert (config.data.image_size, config.data.channels) == (28, 3)   # MNIST-sized models
  assert (config.data.image_folder, config.data.text_path) == ("", "")


def test_vae_trains_on_an_image_folder(tmp_path):
  """What `launch.py --config=configs/vae.py:smoke --config.data.dataset=image_folder ...`
  runs: the encoder's input layer is 12 * 12 * 3 wide, from the data config."""
  rng = np.random.default_rng(0)
  for name in ("circles", "squares"):
    for i in range(90):   # 81 train + 9 test per class
      write_image(tmp_path / "shapes" / name / f"{i}.png",
                  rng.integers(0, 256, (14, 18, 3), dtype=np.uint8))
  from gen_jax import load_run
  from gen_jax.engine import train
  config = load_config("vae", "smoke", **{
      "data.dataset": "image_folder", "data.image_folder": str(tmp_path / "shapes"),
      "data.image_size": 12, "data.data_dir": str(tmp_path / "tfds"),
      "train.num_steps": 2, "eval.every": 0, "train.sample_every": 0})   # no evals, no grids
  metrics = train.train_and_evaluate(config, str(tmp_path / "run"))
  assert np.isfinite(metrics["train/loss"])
  assert [r["step"] for r in read_metrics(str(tmp_path / "run")) if "train/loss" in r] == [1, 2]
  params = load_run(str(tmp_path / "run")).params
  kernels = [leaf.shape for path, leaf in jax.tree_util.tree_leaves_with_path(params)
             if "kernel" in jax.tree_util.keystr(path) and leaf.shape[0] == 12 * 12 * 3]
  assert kernels, "no layer takes the 12x12x3 images flattened"
