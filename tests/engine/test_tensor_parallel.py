"""Tensor parallelism (`mesh.model`): Megatron's column/row split of the GPT's matmuls
(gen_jax/models/gpt.py `tensor_parallel_dims`), composed with FSDP and data parallelism, on
8 fake CPU devices, trains exactly as one device does (modern blocks and Muon on)."""
import jax
import numpy as np
import pytest
from jax.sharding import AbstractMesh
from jax.sharding import PartitionSpec as P
from smoke import run_on_fake_devices

from gen_jax.engine import sharding
from gen_jax.models.gpt import GPT, tensor_parallel_dims

AXES = ("data", "fsdp", "model")


def test_megatron_split_of_a_block_composed_with_fsdp():
  """Columns of c_attn / c_fc and rows of both c_proj over `model`, the other dimension over
  `fsdp`; column biases split with their kernels; vectors and a vocabulary the axis does
  not divide stay replicated."""
  model = GPT(vocab_size=65, block_size=8, n_layer=1, n_head=2, n_embd=16, tie_head=False)
  params = jax.eval_shape(model.init, jax.random.key(0),
                          jax.ShapeDtypeStruct((1, 8), jax.numpy.int32))["params"]
  dims = tensor_parallel_dims(params)
  shardings = sharding.state_shardings(params, AbstractMesh((2, 2, 2), AXES), dims)
  specs = {jax.tree_util.keystr(p): s.spec
           for (p, _), s in zip(jax.tree_util.tree_flatten_with_path(params)[0],
                                jax.tree.leaves(shardings), strict=True)}
  assert specs["['h_0']['attn']['c_attn']['kernel']"] == P("fsdp", "model")   # [16, 48]
  assert specs["['h_0']['attn']['c_attn']['bias']"] == P("model")
  assert specs["['h_0']['attn']['c_proj']['kernel']"] == P("model", "fsdp")   # [16, 16]
  assert specs["['h_0']['attn']['c_proj']['bias']"] == P()
  assert specs["['h_0']['mlp']['c_fc']['kernel']"] == P("fsdp", "model")      # [16, 64]
  assert specs["['h_0']['mlp']['c_proj']['kernel']"] == P("model", "fsdp")    # [64, 16]
  assert specs["['wte']['embedding']"] == P(None, "fsdp")     # 65 rows: not over model
  assert specs["['lm_head']['kernel']"] == P("fsdp", None)    # 65 columns: likewise
  with pytest.raises(ValueError, match="mesh.model=2 splits no parameter"):
    sharding.state_shardings(params, AbstractMesh((2, 2, 2), AXES), {})


BODY = """
import numpy as np
from gen_jax import data
from gen_jax.engine import sharding
from gen_jax.engine.experiment import build_experiment

config = load_config("gpt", "smoke", **{overrides!r})
exp = build_experiment(config)
state = exp.init_state()
specs = {{jax.tree_util.keystr(p): str(x.sharding.spec)
         for p, x in jax.tree_util.tree_flatten_with_path(state.params)[0]}}
# One device: the method's own step, jitted without a mesh, from the same initial state.
one = jax.device_put(jax.device_get(state), jax.devices()[0])
one_step = jax.jit(lambda s, b, r: exp.method.train_step(s, b, jax.random.fold_in(r, s.step)))
K = config.train.steps_per_call
loader = iter(data.make_loader(config.data, split=config.data.train_split,
                               global_batch_size=config.train.batch_size, seed=config.seed))
stacked = sharding.stacked_batch_sharding(exp.mesh)
step, losses, one_losses = None, [], []
for _ in range(2):
  host = [next(loader) for _ in range(K)]
  batches = sharding.global_batch(jax.tree.map(lambda *xs: np.stack(xs), *host), stacked)
  if step is None:
    step, _ = train.compile_train_step(exp, state, batches)
  state, metrics = step(state, batches, exp.base_rng)
  losses += [float(v) for v in jax.device_get(metrics["loss"])]
  for batch in host:
    one, m = one_step(one, jax.device_put(batch, jax.devices()[0]), exp.base_rng)
    one_losses.append(float(m["loss"]))
flat = lambda t: [np.asarray(x) for x in jax.tree.leaves(jax.device_get(t))]
err = max(float(np.abs(a - b).max()) for a, b in zip(flat(state.params), flat(one.params)))
print("RESULT" + json.dumps({{"specs": specs, "losses": losses, "one_losses": one_losses,
                             "param_err": err, "mesh": dict(exp.mesh.shape)}}))
"""


def test_tp2_fsdp2_data2_trains_as_one_device(text_data_dir):
  overrides = {"data.data_dir": text_data_dir, "mesh.data": 2, "mesh.fsdp": 2, "mesh.model": 2,
               "model.position": "rope", "model.norm": "rmsnorm", "model.qk_norm": True,
               "model.mlp_activation": "relu2", "model.tie_head": False,
               "model.logit_softcap": 30.0, "train.optimizer": "muon", "train.lr": 0.02,
               "train.warmup_steps": 0, "train.b1": 0.8, "train.b2": 0.95}
  result = run_on_fake_devices(BODY.format(overrides=overrides))
  assert result["mesh"] == {"data": 2, "fsdp": 2, "model": 2}
  assert result["specs"]["['h_0']['attn']['c_attn']['kernel']"] == str(P("fsdp", "model"))
  assert result["specs"]["['h_0']['mlp']['c_proj']['kernel']"] == str(P("model", "fsdp"))
  losses, one = result["losses"], result["one_losses"]
  assert len(losses) == 4 and losses[-1] < losses[0]
  np.testing.assert_allclose(losses, one, rtol=1e-5)
  assert result["param_err"] < 1e-5
