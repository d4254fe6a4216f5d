"""FSDP (`--config.mesh.fsdp=4`): the train state is really split over the devices, it is
created split, and training gives the replicated run's numbers — for the diffusion U-Net
(GroupNorm vectors, attention), the GAN pair (two optimizers, BatchNorm state), the GPT and
the LSTM (two updates per call). The VAE's dense layers go through the same sharding rule
and engine step; its 8-device run is pinned against one device by test_vae_e2e.py.

One subprocess with 8 fake CPU devices builds each family's smoke experiment twice, on
mesh data=8 x fsdp=1 (replicated) and data=2 x fsdp=4, creates the state with its
shardings, measures the bytes device 0 holds, and runs the engine's compiled update on
the same batches.
"""
import os

import jax
import numpy as np
import pytest
from jax.sharding import AbstractMesh
from jax.sharding import PartitionSpec as P
from smoke import run_on_fake_devices

from gen_jax.engine import sharding

FAMILIES = ("ddpm", "dcgan", "gpt", "lstm")
TEXT_FAMILIES = ("gpt", "lstm")
STATE_PARTS = ("params", "ema_params", "opt_state", "model_state")
FSDP = 4
MESHES = {"replicated": (8, 1), "fsdp": (2, FSDP)}   # (data, fsdp) on 8 devices
NUM_CALLS = 3   # of the compiled step: 3 updates, 6 for the LMs (2 updates per call)
# A one-level U-Net (still convs, GroupNorm, attention in the middle block and the time
# embedding) compiles in half the time of the two-level smoke U-Net.
OVERRIDES = {"ddpm": {"model.ch_mult": (1,), "model.attn_resolutions": ()}}


# ------------------------------------------------------------------ the rule, no devices

def test_rule_splits_matrices_along_their_largest_divisible_dim():
  rule = sharding.fsdp_spec
  assert rule((3, 3, 8, 16), 4) == P(None, None, None, "fsdp")   # conv kernel: Cout
  assert rule((3, 3, 24, 8), 4) == P(None, None, "fsdp", None)   # conv kernel: Cin
  assert rule((65, 16), 4) == P(None, "fsdp")                     # odd vocabulary: D
  assert rule((784, 32), 4) == P("fsdp", None)
  assert rule((16, 16), 4) == P("fsdp", None)                     # a tie: the first
  assert rule((6, 10), 4) == P()                                  # nothing divisible
  assert rule((256,), 4) == P() and rule((), 4) == P()            # vectors, scalars
  assert rule((64, 64), 1) == P()                                 # fsdp=1: replicated


def test_state_shardings_and_per_device_bytes_on_an_abstract_mesh():
  mesh = AbstractMesh((2, FSDP), ("data", "fsdp"))
  f32 = jax.numpy.float32
  state = {"embedding": jax.ShapeDtypeStruct((65, 16), f32),   # 4160 B, split 4 ways
           "bias": jax.ShapeDtypeStruct((16,), f32),           # 64 B, replicated
           "step": jax.ShapeDtypeStruct((), jax.numpy.int32)}  # 4 B, replicated
  shardings = sharding.state_shardings(state, mesh)
  assert {k: s.spec for k, s in shardings.items()} == {
      "embedding": P(None, "fsdp"), "bias": P(), "step": P()}
  assert sharding.per_device_bytes(state) == 4160 + 64 + 4
  assert sharding.per_device_bytes(state, shardings) == 4160 // FSDP + 64 + 4


def test_an_fsdp_size_that_divides_no_matrix_is_an_error():
  state = {"kernel": jax.ShapeDtypeStruct((3, 5), jax.numpy.float32),
           "bias": jax.ShapeDtypeStruct((8,), jax.numpy.float32)}
  with pytest.raises(ValueError, match=r"mesh.fsdp=4 divides no dimension .*\['kernel'\] \(3, 5\)"):
    sharding.state_shardings(state, AbstractMesh((2, FSDP), ("data", "fsdp")))


# ------------------------------------------------------- every family on 8 fake devices

BODY = """
import numpy as np
from gen_jax import data
from gen_jax.engine import sharding
from gen_jax.engine.experiment import build_experiment

def held_bytes(tree):   # what device 0 really stores
  return sum(x.addressable_shards[0].data.nbytes for x in jax.tree.leaves(tree))

def flat(tree):
  return {{jax.tree_util.keystr(p): np.asarray(x)
          for p, x in jax.tree_util.tree_flatten_with_path(jax.device_get(tree))[0]}}

result = {{}}
for family, overrides in {overrides!r}.items():
  for name, (d, f) in {meshes!r}.items():
    config = load_config(family, "smoke", **overrides, **{{"mesh.data": d, "mesh.fsdp": f}})
    exp = build_experiment(config)
    init = exp.compiled_init()   # what exp.init_state() runs
    state = init(*exp.init_args())
    row = {{"held": {{k: held_bytes(getattr(state, k)) for k in {parts!r}}},
           "logged": {{k: sharding.per_device_bytes(getattr(exp.abstract_state, k),
                                                   getattr(exp.state_sharding, k))
                      for k in {parts!r}}},
           "init_output_bytes": init.memory_analysis().output_size_in_bytes,
           "leaves": {{jax.tree_util.keystr(p): [list(x.shape), int(x.size * x.dtype.itemsize),
                                               str(s.spec)]
                      for (p, x), s in zip(
                          jax.tree_util.tree_flatten_with_path(exp.abstract_state)[0],
                          jax.tree.leaves(exp.state_sharding))}},
           "metrics": []}}
    init_params = flat(state.params)
    # The engine's own update: K = train.steps_per_call updates per call, on the same
    # batches under both meshes.
    K = config.train.steps_per_call
    loader = iter(data.make_loader(config.data, split=config.data.train_split,
                                   global_batch_size=config.train.batch_size, seed=config.seed))
    stacked = sharding.stacked_batch_sharding(exp.mesh)
    step = None
    for _ in range({num_calls}):
      batches = sharding.global_batch(
          jax.tree.map(lambda *xs: np.stack(xs), *[next(loader) for _ in range(K)]), stacked)
      if step is None:
        step, _ = train.compile_train_step(exp, state, batches)
      state, metrics = step(state, batches, exp.base_rng)
      metrics = jax.device_get(metrics)
      row["metrics"] += [{{k: float(v[i]) for k, v in metrics.items()}} for i in range(K)]
    np.savez(f"{out}/{{family}}_{{name}}.npz",
             **{{"init" + k: v for k, v in init_params.items()}},
             **{{"final" + k: v for k, v in flat(state.params).items()}})
    result.setdefault(family, {{}})[name] = row
print("RESULT" + json.dumps(result))
"""


@pytest.fixture(scope="module")
def runs(data_dir, text_data_dir, tmp_path_factory):
  out = str(tmp_path_factory.mktemp("fsdp"))
  overrides = {f: {"data.data_dir": text_data_dir if f in TEXT_FAMILIES else data_dir,
                   **OVERRIDES.get(f, {})} for f in FAMILIES}
  result = run_on_fake_devices(BODY.format(overrides=overrides, meshes=MESHES,
                                           parts=STATE_PARTS, num_calls=NUM_CALLS, out=out))
  params = {(f, m): dict(np.load(os.path.join(out, f"{f}_{m}.npz")))
            for f in FAMILIES for m in MESHES}
  return result, params


@pytest.mark.parametrize("family", FAMILIES)
def test_every_matrix_is_split_over_fsdp_and_vectors_are_replicated(runs, family):
  leaves = runs[0][family]["fsdp"]["leaves"]
  for name, (shape, _, spec) in leaves.items():
    if len(shape) >= 2:   # smoke widths are multiples of 4: every matrix is split
      assert spec.count("'fsdp'") == 1, (name, shape, spec)
    else:
      assert spec == str(P()), (name, shape, spec)
  assert all(spec == str(P())
             for _, _, spec in runs[0][family]["replicated"]["leaves"].values())


@pytest.mark.parametrize("family", FAMILIES)
def test_per_device_bytes_shrink_by_the_fsdp_factor(runs, family):
  """Device 0 holds exactly 1/4 of every matrix and all of every vector, of the params,
  the EMA params, the optimizer state and the BatchNorm statistics."""
  rows = runs[0][family]
  for part in STATE_PARTS:
    leaves = {n: v for n, v in rows["fsdp"]["leaves"].items() if n.startswith(f".{part}")}
    whole = sum(nbytes for _, nbytes, _ in leaves.values())
    split = sum(nbytes // FSDP if len(shape) >= 2 else nbytes
                for shape, nbytes, _ in leaves.values())
    assert rows["replicated"]["held"][part] == whole, part
    assert rows["fsdp"]["held"][part] == split, part
    assert rows["fsdp"]["logged"][part] == split, part   # the number train.py logs
  # Vectors are a small share: the params shrink at least 3x (of the ideal 4x).
  assert rows["fsdp"]["held"]["params"] * 3 <= rows["replicated"]["held"]["params"]


@pytest.mark.parametrize("family", FAMILIES)
def test_init_outputs_only_the_shards(runs, family):
  """`jit(init, out_shardings=...)` makes each device output its own shards, not the
  whole state: the compiled init's output buffers are the per-device state bytes plus
  XLA's tuple of buffer pointers (8 bytes per leaf)."""
  row = runs[0][family]["fsdp"]
  shards = sum(row["held"].values()) + 4   # + the int32 step
  assert shards <= row["init_output_bytes"] <= shards + 8 * len(row["leaves"])


@pytest.mark.parametrize("family", FAMILIES)
def test_fsdp_training_equals_replicated_training(runs, family):
  metrics, params = runs[0][family], runs[1]
  replicated, fsdp = params[(family, "replicated")], params[(family, "fsdp")]
  # The same initial weights: the partitionable RNG draws each shard's own values.
  for k in (k for k in replicated if k.startswith("init")):
    np.testing.assert_array_equal(fsdp[k], replicated[k], err_msg=k)
  # The same losses and health metrics at every step, up to float reduction order.
  steps = NUM_CALLS * (2 if family in TEXT_FAMILIES else 1)
  assert len(metrics["fsdp"]["metrics"]) == len(metrics["replicated"]["metrics"]) == steps
  for step, (a, b) in enumerate(zip(metrics["fsdp"]["metrics"], metrics["replicated"]["metrics"],
                                    strict=True)):
    assert a.keys() == b.keys()
    for k in a:
      assert a[k] == pytest.approx(b[k], rel=1e-5, abs=1e-6), (step, k)
  # The same updates: after 3 (LMs: 6) Adam steps the weights moved by the same amounts.
  names = [k[len("final"):] for k in replicated if k.startswith("final")]
  delta = lambda p, n: p["final" + n] - p["init" + n]
  diff = np.sqrt(sum(np.sum((delta(fsdp, n) - delta(replicated, n)) ** 2) for n in names))
  moved = np.sqrt(sum(np.sum(delta(replicated, n) ** 2) for n in names))
  assert moved > 0 and diff <= 1e-5 * moved, (diff, moved)
