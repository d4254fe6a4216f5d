"""Named device mesh, parameter and batch shardings, global batch assembly.

The same code runs on 1 CPU, 8 fake CPU devices
(`XLA_FLAGS=--xla_force_host_platform_device_count=8`) and a multi-host pod:
the batch is split over the `data` and `fsdp` axes, parameters are replicated
or (when `mesh.fsdp > 1`) split over `fsdp` along their largest divisible dim.
"""
from __future__ import annotations

from typing import Any

import jax
import ml_collections
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

MESH_AXES = ("data", "fsdp")
BATCH_AXES = ("data", "fsdp")  # the batch dimension is split over both


def make_mesh(mesh_cfg: ml_collections.ConfigDict, devices=None) -> Mesh:
  """Builds the (data, fsdp) mesh; `-1` on one axis means "all remaining devices".

  Raises:
    ValueError: when the axis sizes do not multiply to the number of devices.
  """
  devices = jax.devices() if devices is None else devices
  n = len(devices)
  sizes = {"data": int(mesh_cfg.data), "fsdp": int(mesh_cfg.fsdp)}
  unknown = [k for k, v in sizes.items() if v == -1]
  if len(unknown) > 1:
    raise ValueError(f"mesh: at most one axis may be -1, got {sizes}.")
  known = int(np.prod([v for v in sizes.values() if v != -1]))
  if unknown:
    if known <= 0 or n % known:
      raise ValueError(f"mesh {sizes}: {n} devices are not divisible by {known}.")
    sizes[unknown[0]] = n // known
  if sizes["data"] * sizes["fsdp"] != n:
    raise ValueError(
        f"mesh data={sizes['data']} x fsdp={sizes['fsdp']} needs "
        f"{sizes['data'] * sizes['fsdp']} devices, but {n} are available. "
        "Set --config.mesh.data=-1 to use all of them on the data axis.")
  # Auto axes: jit's in/out shardings pin the state and batch, and XLA's sharding
  # propagation places the intermediates (explicit axes would make every model op,
  # e.g. an embedding gather, spell out its output sharding).
  return jax.make_mesh((sizes["data"], sizes["fsdp"]), MESH_AXES, devices=devices,
                       axis_types=(jax.sharding.AxisType.Auto,) * len(MESH_AXES))


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Leading (batch) dimension split over data x fsdp; other dims replicated."""
  return NamedSharding(mesh, P(BATCH_AXES))


def stacked_batch_sharding(mesh: Mesh) -> NamedSharding:
  """For [K, B, ...] stacks of K batches (one per fused step): B split, K not."""
  return NamedSharding(mesh, P(None, BATCH_AXES))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def validate_global_batch(global_batch_size: int, mesh: Mesh, name: str = "train.batch_size") -> None:
  """Clear error, before any compile, when the batch cannot be split evenly."""
  shards = mesh.shape["data"] * mesh.shape["fsdp"]
  if global_batch_size % shards:
    raise ValueError(
        f"{name}={global_batch_size} is the global batch and must be divisible by the "
        f"number of batch shards (mesh data x fsdp = {shards} devices). Use a multiple "
        f"of {shards}, e.g. --config.{name}={shards * max(1, global_batch_size // shards)}.")
  if global_batch_size % jax.process_count():
    raise ValueError(f"{name}={global_batch_size} must be divisible by the number of "
                     f"processes ({jax.process_count()}).")


def _fsdp_spec(shape: tuple[int, ...], fsdp: int) -> P:
  """Shard the largest dimension divisible by `fsdp`; replicate small/odd leaves."""
  if fsdp == 1 or not shape:
    return P()
  for dim in sorted(range(len(shape)), key=lambda d: -shape[d]):
    if shape[dim] % fsdp == 0 and shape[dim] >= fsdp:
      spec = [None] * len(shape)
      spec[dim] = "fsdp"
      return P(*spec)
  return P()


def state_shardings(abstract_state: Any, mesh: Mesh) -> Any:
  """Shardings for a pytree of ShapeDtypeStructs (from `jax.eval_shape(init)`)."""
  fsdp = mesh.shape["fsdp"]
  return jax.tree.map(lambda x: NamedSharding(mesh, _fsdp_spec(tuple(x.shape), fsdp)),
                      abstract_state)


def global_batch(local_batch: dict[str, np.ndarray], sharding: NamedSharding) -> dict[str, jax.Array]:
  """Assembles this process's slice of the batch into global arrays on the mesh."""
  return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, x), local_batch)
