"""Named device mesh, parameter and batch shardings, global batch assembly.

The same code runs on 1 CPU, 8 fake CPU devices
(`XLA_FLAGS=--xla_force_host_platform_device_count=8`) and a multi-host pod:
the batch is split over the `data` and `fsdp` axes, parameters are replicated
or (when `mesh.fsdp > 1`) split over `fsdp` by the rule of `fsdp_spec`.

FSDP (fully sharded data parallel): every device stores only 1/fsdp of each weight
matrix, of its EMA and of its optimizer moments (vectors are replicated). The train step
(`gen_jax/engine/train.py`, `compile_train_step`) all-gathers the weights at its start,
computes on the batch shards, and the optimizer update works on the sharded gradients
(reduce-scattered), so the state stays sharded between steps. Results equal the replicated
run up to float reduction order, and `per_device_bytes` is what each device stores
(tests/engine/test_fsdp.py).

Tensor parallelism (`mesh.model > 1`): the method names, per parameter path, the dimension
split over the `model` axis (`Method.tensor_parallel_dims`: Megatron's column and row
splits for a Transformer); that leaf's EMA and optimizer moments are split alike, FSDP then
splits another dimension of the same leaf over `fsdp`, and the batch is replicated over
`model`. Inside the step only the `fsdp` split is gathered; XLA's sharding propagation
places the activations and the all-reduces the split matmuls need. Losses equal one
device's up to float reduction order (tests/engine/test_tensor_parallel.py).
"""
from __future__ import annotations

from typing import Any

import jax
import ml_collections
import numpy as np
from absl import logging
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from gen_jax.core.errors import ConfigError

MESH_AXES = ("data", "fsdp", "model")
BATCH_AXES = ("data", "fsdp")  # the batch dimension is split over both (replicated on model)
TensorParallelDims = dict[tuple[str, ...], int]   # parameter path -> dim split over `model`


def make_mesh(mesh_cfg: ml_collections.ConfigDict, devices=None) -> Mesh:
  """Builds the (data, fsdp, model) mesh; `-1` on one axis means "all remaining devices".

  Raises:
    ConfigError (a ValueError): when the axis sizes do not multiply to the number of devices.
  """
  devices = jax.devices() if devices is None else devices
  n = len(devices)
  # A mesh group written before tensor parallelism has no `model` axis: 1.
  sizes = {"data": int(mesh_cfg.data), "fsdp": int(mesh_cfg.fsdp),
           "model": int(mesh_cfg.get("model", 1))}
  unknown = [k for k, v in sizes.items() if v == -1]
  if len(unknown) > 1:
    raise ConfigError(f"mesh: at most one axis may be -1, got {sizes}.")
  known = int(np.prod([v for v in sizes.values() if v != -1]))
  if unknown:
    if known <= 0 or n % known:
      raise ConfigError(f"mesh {sizes}: {n} devices are not divisible by {known}.")
    sizes[unknown[0]] = n // known
  if sizes["data"] * sizes["fsdp"] * sizes["model"] != n:
    raise ConfigError(
        f"mesh data={sizes['data']} x fsdp={sizes['fsdp']} x model={sizes['model']} needs "
        f"{sizes['data'] * sizes['fsdp'] * sizes['model']} devices, but {n} are available. "
        "Set --config.mesh.data=-1 to use all of them on the data axis.")
  # Auto axes: jit's in/out shardings pin the state and batch, and XLA's sharding
  # propagation places the intermediates (explicit axes would make every model op,
  # e.g. an embedding gather, spell out its output sharding).
  return jax.make_mesh(tuple(sizes[a] for a in MESH_AXES), MESH_AXES, devices=devices,
                       axis_types=(jax.sharding.AxisType.Auto,) * len(MESH_AXES))


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Leading (batch) dimension split over data x fsdp; other dims replicated."""
  return NamedSharding(mesh, P(BATCH_AXES))


def stacked_batch_sharding(mesh: Mesh) -> NamedSharding:
  """For [K, B, ...] stacks of K batches (one per fused step): B split, K not."""
  return NamedSharding(mesh, P(None, BATCH_AXES))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def validate_global_batch(global_batch_size: int, mesh: Mesh,
                          name: str = "train.batch_size") -> None:
  """Clear error, before any compile, when the batch cannot be split evenly."""
  shards = mesh.shape["data"] * mesh.shape["fsdp"]
  if global_batch_size % shards:
    raise ConfigError(
        f"{name}={global_batch_size} is the global batch and must be divisible by the "
        f"number of batch shards (mesh data x fsdp = {shards} devices). Use a multiple "
        f"of {shards}, e.g. --config.{name}={shards * max(1, global_batch_size // shards)}.")
  if global_batch_size % jax.process_count():
    raise ConfigError(f"{name}={global_batch_size} must be divisible by the number of "
                      f"processes ({jax.process_count()}).")


def fsdp_spec(shape: tuple[int, ...], fsdp: int, tensor_dim: int | None = None) -> P:
  """The FSDP rule: where one leaf of the train state lives on the `fsdp` axis.

  A leaf with at least 2 dims (dense and conv kernels, embeddings, their EMA and Adam
  moments) is split along its largest dimension divisible by `fsdp`: a conv kernel
  [3, 3, Cin, Cout] along max(Cin, Cout), an embedding [V, D] with an odd vocabulary
  V = 65 along D. Vectors (biases, norm scales, BatchNorm statistics) and scalars stay
  replicated: they are O(D) bytes next to the O(D^2) matrices, and splitting them would
  only add collectives. A matrix with no divisible dimension stays replicated too
  (`state_shardings` reports it). `tensor_dim`, a dimension already split over `model`
  (`leaf_spec`), is not split again.
  """
  if fsdp == 1 or len(shape) < 2:
    return P()
  for dim in sorted(range(len(shape)), key=lambda d: -shape[d]):   # largest first, stable
    if dim != tensor_dim and shape[dim] % fsdp == 0:
      spec: list[str | None] = [None] * len(shape)
      spec[dim] = "fsdp"
      return P(*spec)
  return P()


def leaf_spec(shape: tuple[int, ...], fsdp: int, model: int, tensor_dim: int | None) -> P:
  """Where one leaf lives: `tensor_dim` (when given and divisible) over `model`, then the
  FSDP rule over another dimension."""
  if model == 1 or tensor_dim is None or shape[tensor_dim] % model:
    return fsdp_spec(shape, fsdp)
  spec = list(fsdp_spec(shape, fsdp, tensor_dim)) or [None] * len(shape)
  spec += [None] * (len(shape) - len(spec))
  spec[tensor_dim] = "model"
  return P(*spec)


def _tensor_dim_of(path, tensor_dims: TensorParallelDims) -> int | None:
  """The model-axis dimension of a state leaf: that of the parameter whose path ends its
  own (params, EMA params and optimizer moments all end in the parameter's path)."""
  names = tuple(str(k.key) for k in path if isinstance(k, jax.tree_util.DictKey))
  for length in {len(p) for p in tensor_dims}:
    if len(names) >= length and names[-length:] in tensor_dims:
      return tensor_dims[names[-length:]]
  return None


def tensor_parallel_shardings(abstract_params: Any, mesh: Mesh,
                              tensor_dims: TensorParallelDims) -> Any:
  """The params split over `model` only (the FSDP split gathered): what the train step
  computes with."""
  model = mesh.shape.get("model", 1)
  return jax.tree_util.tree_map_with_path(
      lambda path, x: NamedSharding(mesh, leaf_spec(tuple(x.shape), 1, model,
                                                    _tensor_dim_of(path, tensor_dims))),
      abstract_params)


def state_shardings(abstract_state: Any, mesh: Mesh,
                    tensor_dims: TensorParallelDims | None = None) -> Any:
  """Shardings for a pytree of ShapeDtypeStructs (from `jax.eval_shape(init)`).

  Args:
    abstract_state: the train state's shapes.
    mesh: the (data, fsdp, model) mesh.
    tensor_dims: the method's `tensor_parallel_dims` (used when mesh.model > 1).

  Raises:
    ConfigError (a ValueError): when `mesh.fsdp > 1` divides no dimension of any matrix (FSDP would
      silently replicate everything), or `mesh.model > 1` splits no parameter. Matrices
      FSDP cannot split are logged as a warning.
  """
  fsdp, model = mesh.shape["fsdp"], mesh.shape.get("model", 1)   # (data, fsdp) meshes too
  tensor_dims = tensor_dims or {}
  if model > 1:
    params = getattr(abstract_state, "params", abstract_state)
    split = [path for path, x in jax.tree_util.tree_flatten_with_path(params)[0]
             if "model" in leaf_spec(tuple(x.shape), 1, model, _tensor_dim_of(path, tensor_dims))]
    if not split:
      raise ConfigError(
          f"mesh.model={model} splits no parameter: this method declares no tensor-parallel "
          "layout that this size divides. Set --config.mesh.model=1.")
  specs = jax.tree_util.tree_map_with_path(
      lambda path, x: leaf_spec(tuple(x.shape), fsdp, model, _tensor_dim_of(path, tensor_dims)),
      abstract_state)
  if fsdp > 1:   # checked on the params (EMA and optimizer moments follow their shapes)
    params = getattr(abstract_state, "params", abstract_state)
    named = jax.tree_util.tree_flatten_with_path(params)[0]
    matrices = [(jax.tree_util.keystr(path), tuple(x.shape)) for path, x in named if x.ndim >= 2]
    unsplit = [f"{name} {shape}" for name, shape in matrices if fsdp_spec(shape, fsdp) == P()]
    if matrices and len(unsplit) == len(matrices):
      raise ConfigError(
          f"mesh.fsdp={fsdp} divides no dimension of any parameter, so nothing would be "
          f"sharded (e.g. {unsplit[0]}). Choose an fsdp size that divides the model's "
          "widths, or --config.mesh.fsdp=1.")
    if unsplit:
      logging.warning("mesh.fsdp=%d divides no dimension of %d of the %d parameter matrices; "
                      "they stay replicated: %s", fsdp, len(unsplit), len(matrices),
                      ", ".join(unsplit[:5]) + (", ..." if len(unsplit) > 5 else ""))
  return jax.tree.map(lambda spec: NamedSharding(mesh, spec), specs,
                      is_leaf=lambda x: isinstance(x, P))


def per_device_bytes(tree: Any, shardings: Any = None) -> int:
  """Bytes of `tree` that one device stores: each leaf's shard shape x its item size.

  Args:
    tree: a pytree of jax.Arrays (their own shardings are used) or ShapeDtypeStructs.
    shardings: a matching pytree of shardings for ShapeDtypeStructs; leaves with neither
      count whole (unsharded), so `per_device_bytes(abstract_state)` is the replicated size.

  Our shardings split evenly, so every device stores the same number of bytes.
  """
  def leaf_bytes(x, s):
    s = getattr(x, "sharding", None) if s is None else s
    shape = tuple(x.shape) if s is None else s.shard_shape(tuple(x.shape))
    return int(np.prod(shape, dtype=np.int64)) * np.dtype(x.dtype).itemsize

  if shardings is None:
    return sum(leaf_bytes(x, None) for x in jax.tree.leaves(tree))
  return sum(jax.tree.leaves(jax.tree.map(leaf_bytes, tree, shardings)))


def global_batch(local_batch: dict[str, np.ndarray],
                 sharding: NamedSharding) -> dict[str, jax.Array]:
  """Assembles this process's slice of the batch into global arrays on the mesh."""
  return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, x), local_batch)
