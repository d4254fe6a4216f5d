"""What every mode needs before it runs: validated config, mesh, data shape, method,
and the state's shapes and shardings — all derived without allocating the model.

Shapes first, then shardings: `jax.eval_shape(method.init)` gives the abstract state,
`state_shardings` places every leaf on the mesh, and `jax.jit(init, out_shardings=...)`
creates it already sharded, so a large model never exists unsharded on one device.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import jax
import ml_collections
from jax.sharding import Mesh, NamedSharding

from gen_jax import data
from gen_jax.core.errors import ConfigError
from gen_jax.core.state import TrainState
from gen_jax.engine import sharding
from gen_jax.interop import FORMATS, init_from_format
from gen_jax.methods import Method, build_method


@dataclasses.dataclass(frozen=True)
class Experiment:
  config: ml_collections.ConfigDict
  mesh: Mesh
  method: Method
  spec: data.DataSpec         # modality and batch shapes of config.data
  abstract_state: Any         # TrainState of ShapeDtypeStructs
  state_sharding: Any         # TrainState of NamedShardings
  batch_sharding: NamedSharding
  replicated: NamedSharding
  compute_param_sharding: Any   # params inside the step: split over `model` only

  @property
  def base_rng(self) -> jax.Array:
    return jax.random.key(self.config.seed)

  def compiled_init(self):
    """`method.init` compiled to create the state directly with its shardings: call it
    as `compiled_init()(*init_args())`."""
    return jax.jit(self.method.init, out_shardings=self.state_sharding).lower(
        *self.init_args()).compile()

  def init_args(self) -> tuple[jax.Array, dict]:
    return jax.random.fold_in(self.base_rng, 0x1417), self.spec.example_batch()

  def init_state(self) -> TrainState:
    """A fresh state, created directly with its shardings."""
    return self.compiled_init()(*self.init_args())


def validate_config(config: ml_collections.ConfigDict) -> None:
  """Checks that cost nothing, before any data is read or anything compiled."""
  t = config.train
  for name in ("batch_size", "num_steps", "log_every", "checkpoint_every"):
    if t[name] <= 0:
      raise ConfigError(f"train.{name}={t[name]} must be positive.")
  K = t.steps_per_call
  if K < 1:
    raise ConfigError(f"train.steps_per_call={K} must be >= 1.")
  intervals = {"train.num_steps": t.num_steps, "train.log_every": t.log_every,
               "train.checkpoint_every": t.checkpoint_every,
               "train.sample_every": t.sample_every, "eval.every": config.eval.every,
               "eval.sample_metrics_every": config.eval.sample_metrics_every}
  misaligned = {k: v for k, v in intervals.items() if v % K}
  if misaligned:
    raise ConfigError(f"With train.steps_per_call={K}, these must be multiples of {K}: "
                      f"{misaligned} (0 disables sampling/eval).")
  if not 0.0 <= t.ema_decay < 1.0:
    raise ConfigError(f"train.ema_decay={t.ema_decay} must be in [0, 1).")
  if config.dtype not in ("float32", "bfloat16"):
    raise ConfigError(f"dtype={config.dtype!r}; expected 'float32' or 'bfloat16'.")
  if config.resume_from and config.init_from:
    raise ConfigError("Set at most one of resume_from (full state) and init_from (params only).")
  export_format = config.export.format
  if export_format != "gen_jax" and export_format not in FORMATS:
    raise ConfigError(f"export.format={export_format!r}: {_export_choices()}.")
  if "sample" in config and config.sample.num < 1:
    raise ConfigError(f"sample.num={config.sample.num} must be >= 1 (the number of samples).")


def _export_choices() -> str:
  return " or ".join(["'gen_jax' (any run)"]
                     + [f"{name!r} ({f.needs})" for name, f in FORMATS.items()])


def validate_foreign_formats(config: ml_collections.ConfigDict, method: Method) -> None:
  """`init_from='<format>:<path>'` and `export.format` against the formats (gen_jax/interop)
  the run's method declares (`init_from_formats`, `export_formats`)."""
  if (name := init_from_format(config.init_from)) and name not in method.init_from_formats():
    raise ConfigError(f"init_from={config.init_from} holds {FORMATS[name].weights} weights; "
                      f"it needs {FORMATS[name].needs}.")
  export_format = config.export.format
  if export_format != "gen_jax" and export_format not in method.export_formats():
    raise ConfigError(f"export.format={export_format!r}: {_export_choices()}.")


def build_experiment(config: ml_collections.ConfigDict) -> Experiment:
  """Validates the config, builds the mesh and method, derives shapes and shardings.

  Raises:
    ConfigError (a ValueError): for an invalid config, e.g. a global batch the mesh cannot
      split, or a field the method rejects.
    gen_jax.data.DatasetUnavailableError: when the dataset cannot be found or fetched.
  """
  validate_config(config)
  mesh = sharding.make_mesh(config.mesh)
  sharding.validate_global_batch(config.train.batch_size, mesh, "train.batch_size")
  sharding.validate_global_batch(config.eval.batch_size, mesh, "eval.batch_size")
  spec = data.describe(config.data)
  method = build_method(config, spec)
  validate_foreign_formats(config, method)
  if not method.can_sample and (config.train.sample_every or config.eval.sample_metrics
                                or config.eval.sample_metrics_every):
    raise ConfigError(f"config.method={config.method!r} cannot sample: set train.sample_every=0 "
                      "and turn the sample-quality metrics off (eval.sample_metrics=False).")
  abstract_state = jax.eval_shape(method.init, jax.random.key(0), spec.example_batch())
  tensor_dims = method.tensor_parallel_dims(abstract_state.params)
  return Experiment(
      config=config, mesh=mesh, method=method, spec=spec,
      abstract_state=abstract_state,
      state_sharding=sharding.state_shardings(abstract_state, mesh, tensor_dims),
      batch_sharding=sharding.batch_sharding(mesh), replicated=sharding.replicated(mesh),
      compute_param_sharding=sharding.tensor_parallel_shardings(abstract_state.params, mesh,
                                                                tensor_dims))
