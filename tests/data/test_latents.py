"""The latents dataset (gen_jax/data/latents.py) on a folder written here: records read back
exactly, z = s (mean + std eps) has the right statistics, draws are deterministic in (seed,
position) and fresh every epoch, the loader resumes exactly, and a missing or damaged folder
is a clear error."""
import os

import ml_collections
import numpy as np
import pytest

from gen_jax import data
from gen_jax.core.errors import ConfigError
from gen_jax.data import latents
from gen_jax.data.errors import DamagedDatasetError, DatasetUnavailableError

SHAPE = (2, 2, 3)
N = 64
SCALE = 0.5


def write_folder(folder, mean, std, labels, shard_size=24):
  """A latents folder holding one split 'train' (placeholder decoder files: the data layer
  only checks they exist)."""
  os.makedirs(folder, exist_ok=True)
  count = -(-len(mean) // shard_size)
  shards = []
  for i in range(count):
    rows = slice(i * shard_size, (i + 1) * shard_size)
    name = latents.shard_name("train", i, count)
    latents.write_shard(os.path.join(folder, name), mean[rows], std[rows], labels[rows])
    shards.append([name, len(labels[rows])])
  for name in (latents.DECODER_CONFIG, latents.DECODER_WEIGHTS):
    open(os.path.join(folder, name), "w").close()
  latents.write_json_atomic(os.path.join(folder, latents.METADATA), latents.metadata(
      latent_shape=SHAPE, scaling_factor=SCALE,
      source={"dataset": "mnist_5k", "image_shape": [8, 8, 1]},
      splits={"train": {"num_examples": len(mean), "shards": shards}}))


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
  rng = np.random.default_rng(0)
  mean = rng.normal(size=(N, *SHAPE)).astype(np.float32)
  std = rng.uniform(0.2, 2.0, size=(N, *SHAPE)).astype(np.float32)
  labels = rng.integers(0, 10, size=N).astype(np.int32)
  path = str(tmp_path_factory.mktemp("latents"))
  write_folder(path, mean, std, labels)
  return {"path": path, "mean": mean, "std": std, "labels": labels}


def config(path):
  return ml_collections.ConfigDict({"dataset": "latents", "latents_dir": path})


def loader(path, **kwargs):
  args = dict(split="train", global_batch_size=N, seed=3, shuffle=False, num_epochs=None)
  return data.make_loader(config(path), **{**args, **kwargs})


def test_records_round_trip_exactly(folder):
  info = latents.open_latents(folder["path"])
  store = latents.LatentStore(info, "train")
  mean, std, labels = store.read(np.arange(N))
  np.testing.assert_array_equal(mean, folder["mean"])
  np.testing.assert_array_equal(std, folder["std"])
  np.testing.assert_array_equal(labels, folder["labels"])
  assert data.describe(config(folder["path"])).image_shape == SHAPE
  assert data.describe(config(folder["path"])).sample_shape == (8, 8, 1)
  # Sample metrics compare decoded samples with the source images.
  assert data.sample_reference(config(folder["path"])).dataset == "mnist_5k"
  pixels = ml_collections.ConfigDict({"dataset": "mnist_5k"})
  assert data.sample_reference(pixels) is pixels


def test_z_has_the_posterior_statistics(folder):
  # The split in order, 200 epochs: each example's 200 draws of z.
  it = iter(loader(folder["path"]))
  z = np.stack([next(it)["image"] for _ in range(200)])        # [200, N, *SHAPE]
  eps = (z / SCALE - folder["mean"]) / folder["std"]
  assert abs(eps.mean()) < 0.02 and abs(eps.std() - 1.0) < 0.02   # 153,600 draws
  # Each example's mean of 200 draws, in standard errors: within 5 of s * mean.
  errors = (z.mean(0) - SCALE * folder["mean"]) / (SCALE * folder["std"] / np.sqrt(200))
  assert np.abs(errors).max() < 5.0
  np.testing.assert_allclose(z.std(0), SCALE * folder["std"], rtol=0.25)
  # eps is N(0, 1) in its tails too: P(|eps| > 2) = 0.0455.
  assert abs(np.mean(np.abs(eps) > 2.0) - 0.0455) < 0.005


def test_draws_are_deterministic_and_fresh_each_epoch(folder):
  a, b = iter(loader(folder["path"])), iter(loader(folder["path"]))
  first, second = next(a), next(a)
  np.testing.assert_array_equal(first["image"], next(b)["image"])     # same seed, same z
  np.testing.assert_array_equal(first["label"], second["label"])     # same examples ...
  assert not np.allclose(first["image"], second["image"])            # ... a new draw
  other = next(iter(loader(folder["path"], seed=4)))
  assert not np.allclose(first["image"], other["image"])


def test_shuffled_stream_resumes_exactly(folder):
  make = lambda: iter(loader(folder["path"], global_batch_size=16, shuffle=True))
  whole = make()
  batches = [next(whole) for _ in range(7)]
  first = make()
  for _ in range(3):
    next(first)
  resumed = make()
  resumed.set_state(first.get_state())
  for want in batches[3:]:
    got = next(resumed)
    np.testing.assert_array_equal(got["image"], want["image"])
    np.testing.assert_array_equal(got["label"], want["label"])


def test_missing_or_damaged_folders_are_clear_errors(folder, tmp_path):
  with pytest.raises(ConfigError, match="latents_dir"):
    data.describe(config(""))
  with pytest.raises(DatasetUnavailableError, match="no latents.json"):
    data.describe(config(str(tmp_path / "nowhere")))
  with pytest.raises(DatasetUnavailableError, match="not 'test'"):
    next(iter(loader(folder["path"], split="test")))
  damaged = str(tmp_path / "damaged")
  write_folder(damaged, folder["mean"], folder["std"], folder["labels"])
  shard = os.path.join(damaged, latents.shard_name("train", 1, 3))
  with open(shard, "r+b") as f:
    f.truncate(os.path.getsize(shard) // 2)
  with pytest.raises(DamagedDatasetError, match="damaged"):
    data.describe(config(damaged))
  os.remove(os.path.join(damaged, latents.DECODER_WEIGHTS))
  with pytest.raises(DamagedDatasetError, match="decoder"):
    data.describe(config(damaged))
