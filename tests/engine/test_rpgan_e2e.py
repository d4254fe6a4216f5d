"""RpGAN + R1 + R2 through `train_and_evaluate`, the function `launch.py` calls: a run
resumed from its step-2 checkpoint to 4 is bit-identical to one trained to 4 straight.

The run exercises all of RpGAN's state: class-conditional with paired labels, G's own slice
of real images (alternate_minibatches), gamma decaying and the EMA half-life rising over
the 4 steps (both read the step from the restored state), and a spectrally normalized D
(`gan.d_spectral_norm`, its class table too), whose power-iteration vectors u are
checkpointed beside the weights.
"""
import os
import shutil

import chex
import jax
import numpy as np
import pytest
from smoke import load_config

from gen_jax.engine import checkpoint as ckpt_lib
from gen_jax.engine import train
from gen_jax.engine.experiment import build_experiment
from gen_jax.engine.outputs import read_metrics
from gen_jax.methods.gan import D_SN, D

ARG = "smoke,loss=rpgan,conditional"
OVERRIDES = {"train.num_steps": 4, "gan.alternate_minibatches": True, "gan.gamma": 0.5,
             "gan.gamma_final_ratio": 0.1, "gan.ema_halflife_steps": 2.0,
             "train.decay_steps": 4, "train.sample_every": 0, "eval.every": 0,
             "gan.d_spectral_norm": True}


@pytest.fixture(scope="module")
def runs(tmp_path_factory, data_dir):
  """b: 4 steps uninterrupted (checkpoints at 2 and 4). a: b's workdir as it was at step 2
  (checkpoint 4 removed), resumed to 4. One compile serves both (the persistent cache)."""
  root = tmp_path_factory.mktemp("rpgan_runs")
  a, b = str(root / "a"), str(root / "b")
  config = load_config("dcgan", ARG, **{"data.data_dir": data_dir, **OVERRIDES})
  train.train_and_evaluate(config, b)
  shutil.copytree(b, a)
  shutil.rmtree(os.path.join(ckpt_lib.checkpoint_dir(a), "4"))
  train.train_and_evaluate(config, a)
  return {"a": a, "b": b, "config": config}


def test_resumed_rpgan_run_is_bit_identical(runs):
  # a's steps 3 and 4 are its own rows (the later row of a step wins); its checkpoint 4,
  # restored below, exists only because a trained again.
  rows = {run: {r["step"]: r for r in read_metrics(runs[run]) if "train/loss" in r}
          for run in ("a", "b")}
  assert sorted(rows["a"]) == sorted(rows["b"]) == [1, 2, 3, 4]
  for step in (3, 4):
    for key in ("train/d_loss", "train/g_loss", "train/r1", "train/r2", "train/gamma"):
      assert rows["a"][step][key] == rows["b"][step][key], (step, key)
  # The penalties are live and gamma follows its cosine from 0.5 towards 0.05.
  assert all(rows["b"][s]["train/r1"] > 0 and rows["b"][s]["train/r2"] > 0 for s in (1, 4))
  np.testing.assert_allclose([rows["b"][s]["train/gamma"] for s in (1, 3)], [0.5, 0.275],
                             rtol=1e-6)
  # Every leaf of the final state: both Adam states, the EMA, the step.
  exp = build_experiment(runs["config"])
  states = []
  for run in ("a", "b"):
    ckpt = ckpt_lib.Checkpointer(ckpt_lib.checkpoint_dir(runs[run]), read_only=True)
    states.append(ckpt.restore(4, exp.abstract_state, exp.state_sharding))
    ckpt.close()
  chex.assert_trees_all_equal(states[0], states[1])
  assert int(states[0].step) == 4
  # Spectral norm's u vectors (one per D layer and the label table) are in the restored state,
  # and b's step-2 checkpoint holds other u's than its step-4 one: each step's power
  # iteration moves them, and what a resumed run starts from is the checkpoint's.
  assert states[0].model_state[D] == {}   # a critic without BatchNorm: an empty subtree
  u = states[0].model_state[D_SN]
  assert sorted(u) == ["conv0_sn", "conv1_sn", "embed_sn", "logit_sn"]
  ckpt = ckpt_lib.Checkpointer(ckpt_lib.checkpoint_dir(runs["b"]), read_only=True)
  u_at_2 = ckpt.restore(2, exp.abstract_state, exp.state_sharding).model_state[D_SN]
  ckpt.close()
  for name in ("conv0_sn", "conv1_sn", "embed_sn"):   # the read-out's u has one entry: ±1
    assert not np.allclose(u[name]["u"], u_at_2[name]["u"]), name
  # The EMA is not the raw weights (half-life > 0 after step 0) and moved off the init.
  ema, raw = states[1].ema_params["generator"], states[1].params["generator"]
  assert any(np.abs(np.asarray(e) - np.asarray(r)).max() > 0
             for e, r in zip(jax.tree.leaves(ema), jax.tree.leaves(raw), strict=True))
