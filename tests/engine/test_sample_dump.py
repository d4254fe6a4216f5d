"""Sample dumps (gen_jax/engine/sample_dump.py): resumable after SIGTERM or a kill, identical
to an uninterrupted dump, bounded to one shard in memory, and never mixing two setups."""
import os
import signal

import jax
import ml_collections
import numpy as np
import pytest
from etils import epath
from PIL import Image

from gen_jax.engine import sample_dump
from gen_jax.engine.preemption import StopRequest

SHAPE = (5, 4, 3)


def fake_draw(calls: list, signal_at: int | None = None):
  """A sampler of 2 images per call whose pixels come from the key (like a real sampler);
  it sends this process SIGTERM on call number `signal_at`."""

  def draw(rng):
    calls.append(1)
    if signal_at is not None and len(calls) == signal_at:
      os.kill(os.getpid(), signal.SIGTERM)
    return {"images": np.asarray(jax.random.uniform(rng, (2, *SHAPE), minval=-1, maxval=1))}

  return draw


def plan(**overrides):
  cfg = ml_collections.ConfigDict(dict(num=9, batch_size=2, shard_size=4, use_ema=True, seed=3))
  cfg.update(overrides)
  return sample_dump.plan_dump(cfg, step=7, sampler="ddim5", image_shape=SHAPE, default_batch=250)


def run(folder, draw, formats=("npz", "png"), **overrides):
  stop = StopRequest()
  with stop.installed():
    return sample_dump.dump_samples(epath.Path(folder), plan(**overrides), formats, draw, stop)


def test_sigterm_keeps_finished_shards_and_the_rerun_completes_them_identically(tmp_path):
  straight_calls, calls = [], []
  assert run(tmp_path / "straight", fake_draw(straight_calls)) is not None
  # 9 images in shards of 4, 2 per call: 2 + 2 + 1 calls. SIGTERM during call 3 (shard 1).
  assert run(tmp_path / "dump", fake_draw(calls, signal_at=3)) is None
  assert sorted(os.listdir(tmp_path / "dump" / "shards")) == ["00000.npz", "00001.npz"]
  assert not (tmp_path / "dump" / "samples.npz").exists()
  calls.clear()
  assert run(tmp_path / "dump", fake_draw(calls)) is not None
  assert len(calls) == 1     # only the missing shard was drawn
  with np.load(tmp_path / "dump" / "samples.npz") as got, \
       np.load(tmp_path / "straight" / "samples.npz") as want:
    assert got["arr_0"].dtype == np.uint8 and got["arr_0"].shape == (9, *SHAPE)
    np.testing.assert_array_equal(got["arr_0"], want["arr_0"])
    # The merged file is the shards in order, each image from its own key.
    shards = [np.load(tmp_path / "dump" / "shards" / f"{i:05d}.npz")["images"] for i in range(3)]
    np.testing.assert_array_equal(got["arr_0"], np.concatenate(shards))
  pngs = sorted(os.listdir(tmp_path / "dump" / "png"))
  assert pngs == [f"{i:06d}.png" for i in range(9)]
  np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "dump" / "png" / pngs[5])),
                                shards[1][1])


def test_a_dump_is_bounded_by_the_number_asked_and_rounds_pixels_like_the_grids(tmp_path):
  folder = run(tmp_path / "d", fake_draw([]), formats=("npz",))
  first = sample_dump.read_shard(epath.Path(folder) / "shards" / "00000.npz")["images"]
  rng = jax.random.fold_in(jax.random.fold_in(jax.random.key(3), 0), 0)
  expected = np.asarray(jax.random.uniform(rng, (2, *SHAPE), minval=-1, maxval=1))
  np.testing.assert_array_equal(first[:2], np.round((expected + 1) * 127.5).astype(np.uint8))
  assert not (tmp_path / "d" / "png").exists()


def test_a_rerun_with_other_settings_refuses_to_mix_sample_sets(tmp_path):
  run(tmp_path / "d", fake_draw([]), formats=("npz",))
  with pytest.raises(sample_dump.SampleDumpMismatchError, match=r"seed: 3 in the folder, 4 now"):
    run(tmp_path / "d", fake_draw([]), formats=("npz",), seed=4)


@pytest.mark.parametrize("value", ["jpg", "grid,npz", ""])
def test_bad_format_is_one_clear_error(value):
  with pytest.raises(ValueError, match="sample.format"):
    sample_dump.parse_formats(value)


def test_shard_size_must_be_a_multiple_of_the_batch():
  with pytest.raises(ValueError, match="multiple of batch_size"):
    plan(shard_size=5)


def test_a_conditional_dump_keeps_each_images_label(tmp_path):
  def draw(rng):
    return {"images": np.zeros((2, *SHAPE), np.float32), "labels": np.array([3, 7], np.int32)}
  run(tmp_path / "d", draw, formats=("npz",))
  with np.load(tmp_path / "d" / "samples.npz") as dump:
    assert dump["arr_0"].shape == (9, *SHAPE)
    np.testing.assert_array_equal(dump["labels"], [3, 7, 3, 7, 3, 7, 3, 7, 3])
