"""Engine pieces that need no model: EMA, LR schedule, mesh and sharding rules, grids."""
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from gen_jax.core import optimizer, state
from gen_jax.engine import sharding
from gen_jax.engine.outputs import image_grid


def test_ema_update_and_warmup():
  ema = state.ema_update({"w": jnp.zeros(3)}, {"w": jnp.ones(3)}, 0.9)
  np.testing.assert_allclose(ema["w"], 0.1)
  assert float(state.ema_decay_at(jnp.array(0), 0.999, True)) == pytest.approx(0.1)
  assert float(state.ema_decay_at(jnp.array(90), 0.999, True)) == pytest.approx(0.91)
  assert float(state.ema_decay_at(jnp.array(10**6), 0.999, True)) == pytest.approx(0.999)
  assert float(state.ema_decay_at(jnp.array(0), 0.999, False)) == pytest.approx(0.999)


def test_apply_gradients_steps_and_reports_norms():
  tx = optax.sgd(0.5)
  s = state.TrainState.create({"w": jnp.array([1.0, 1.0])}, tx)
  s2, m = state.apply_gradients(s, {"w": jnp.array([3.0, 4.0])}, tx, ema_decay=0.0)
  np.testing.assert_allclose(s2.params["w"], [-0.5, -1.0])
  np.testing.assert_allclose(s2.ema_params["w"], s2.params["w"])   # decay 0 tracks params
  assert int(s2.step) == 1
  assert float(m["grad_norm"]) == pytest.approx(5.0)
  assert float(m["update_norm"]) == pytest.approx(2.5)


def _train_cfg(**kw):
  cfg = ml_collections.ConfigDict(dict(
      optimizer="adam", lr=1e-3, lr_decay="cosine", min_lr_ratio=0.1, warmup_steps=10,
      num_steps=110, b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.0, grad_clip=1.0, decay_steps=0))
  cfg.update(kw)
  return cfg


def test_lr_schedule_warmup_then_cosine():
  lr = optimizer.learning_rate_schedule(_train_cfg())
  assert float(lr(0)) == 0.0
  assert float(lr(5)) == pytest.approx(5e-4)
  assert float(lr(10)) == pytest.approx(1e-3)
  assert float(lr(110)) == pytest.approx(1e-4)
  const = optimizer.learning_rate_schedule(_train_cfg(lr_decay="constant"))
  assert float(const(1000)) == pytest.approx(1e-3)
  with pytest.raises(ValueError, match="lr_decay"):
    optimizer.learning_rate_schedule(_train_cfg(lr_decay="step"))


def test_adamw_decays_matrices_only():
  tx = optimizer.make_optimizer(_train_cfg(optimizer="adamw", weight_decay=0.5, lr_decay="constant",
                                           warmup_steps=0, grad_clip=0.0))
  params = {"kernel": jnp.ones((2, 2)), "bias": jnp.ones(2)}
  zeros = jax.tree.map(jnp.zeros_like, params)
  updates, _ = tx.update(zeros, tx.init(params), params)
  assert float(jnp.abs(updates["kernel"]).max()) > 0     # decayed with zero gradient
  assert float(jnp.abs(updates["bias"]).max()) == 0.0


def test_mesh_from_config_and_errors():
  mesh = sharding.make_mesh(ml_collections.ConfigDict({"data": -1, "fsdp": 1}))
  assert mesh.shape == {"data": jax.device_count(), "fsdp": 1, "model": 1}
  with pytest.raises(ValueError, match="devices"):
    sharding.make_mesh(ml_collections.ConfigDict({"data": 3, "fsdp": 1}))


def test_image_grid_layout_and_range():
  imgs = np.stack([np.full((2, 2, 1), -1.0), np.full((2, 2, 1), 1.0), np.zeros((2, 2, 1))])
  grid = image_grid(imgs, ncols=2, pad=1)
  assert grid.shape == (2 * 3 + 1, 2 * 3 + 1, 1) and grid.dtype == np.uint8
  assert grid[1, 1, 0] == 0 and grid[1, 4, 0] == 255 and grid[4, 1, 0] == 128


def test_checkpoint_round_trip_with_relative_path(tmp_path, monkeypatch):
  from gen_jax.engine.checkpoint import Checkpointer
  monkeypatch.chdir(tmp_path)                    # `--workdir=runs/x` is relative
  tree = {"w": jnp.arange(6.0).reshape(2, 3), "step": jnp.array(3, jnp.int32)}
  ckpt = Checkpointer("runs/x/checkpoints", async_save=True)
  ckpt.save(3, tree, None)
  ckpt.wait()
  assert ckpt.latest_step() == 3 and (tmp_path / "runs/x/checkpoints/3").is_dir()
  abstract = jax.eval_shape(lambda: tree)
  shard = jax.tree.map(lambda _: jax.sharding.SingleDeviceSharding(jax.devices()[0]), tree)
  restored = ckpt.restore(3, abstract, shard)
  ckpt.close()
  np.testing.assert_array_equal(restored["w"], tree["w"])
  assert int(restored["step"]) == 3


def test_metric_writer_drops_rows_past_the_resumed_step(tmp_path):
  from gen_jax.engine.outputs import MetricWriter, read_metrics
  w = MetricWriter(tmp_path, tensorboard=False)
  for step in (1, 2, 3, 4):
    w.write(step, {"train/loss": float(step)})
  w.close()
  w = MetricWriter(tmp_path, tensorboard=False, resume_step=2)   # crashed after step 4, ckpt at 2
  w.write(3, {"train/loss": 30.0})
  w.close()
  assert ([(r["step"], r["train/loss"]) for r in read_metrics(tmp_path)]
          == [(1, 1.0), (2, 2.0), (3, 30.0)])


def test_metric_writer_puts_sample_grids_text_and_config_in_tensorboard(tmp_path, caplog):
  import struct

  from tensorboardX.proto import event_pb2

  from gen_jax.engine.outputs import MetricWriter, image_grid
  w = MetricWriter(tmp_path)
  w.write_config({"train.lr": 1e-3, "model.ch_mult": [1, 2], "method": "diffusion",
                  "sample.s_tmax": float("inf")})   # EDM's default: written as text
  images = np.linspace(-1, 1, 4 * 8 * 8).reshape(4, 8, 8, 1)
  w.write_images(10, {"samples": images})
  w.write_text(10, "samples", "ROMEO:\nto be")
  w.close()
  values = {}
  for path in (tmp_path / "tensorboard").iterdir():
    data, i = path.read_bytes(), 0
    while i < len(data):   # TFRecord framing: length, crc, event, crc
      (n,) = struct.unpack("<Q", data[i:i + 8])
      event = event_pb2.Event.FromString(data[i + 12:i + 12 + n])
      i += 12 + n + 4
      for v in event.summary.value:
        values[v.tag] = (event.step, v)
  step, image = values["samples/samples"]
  assert step == 10 and (image.image.height, image.image.width) == image_grid(images).shape[:2]
  assert "to be" in values["samples/text_summary"][1].tensor.string_val[0].decode()
  assert "_hparams_/experiment" in values   # the config as hyperparameters
  assert "NaN or Inf" not in caplog.text


def test_a_metrics_line_cut_short_is_dropped_on_resume(tmp_path):
  from gen_jax.engine.outputs import MetricWriter, read_metrics
  (tmp_path / "metrics.jsonl").write_text('{"step": 1, "train/loss": 1.0}\n{"step": 2, "tra')
  assert read_metrics(tmp_path) == [{"step": 1, "train/loss": 1.0}]
  w = MetricWriter(tmp_path, tensorboard=False, resume_step=1)
  w.write(2, {"train/loss": 0.5})
  w.close()
  assert [r["step"] for r in read_metrics(tmp_path)] == [1, 2]
  assert len((tmp_path / "metrics.jsonl").read_text().splitlines()) == 2


def test_an_eval_split_smaller_than_one_batch_is_one_clear_error(data_dir):
  # mnist_5k's test split holds 500 images: nothing is compiled before the error.
  from smoke import load_config

  from gen_jax.data.errors import DatasetTooSmallError
  from gen_jax.engine.evaluation import evaluate_state
  from gen_jax.engine.experiment import build_experiment
  exp = build_experiment(load_config("vae", **{"data.data_dir": data_dir,
                                               "eval.batch_size": 1000}))
  with pytest.raises(DatasetTooSmallError, match="lower it, e.g. --config.eval.batch_size=16"):
    evaluate_state(exp, exp.abstract_state)
