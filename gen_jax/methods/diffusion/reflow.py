"""Reflow: Liu, Gong, Liu 2023, "Flow Straight and Fast" (arXiv:2209.03003), §2.3 and
Algorithm 1: straighten a trained flow by training a new one on its own couplings.

  1. Train the 1-rectified flow on independent (noise, image) pairs (flow.py, 'linear').
  2. Draw Z_0 ~ N(0, I) and integrate the flow's ODE dx/dt = v(x, t) from t = 1 (noise) to
     t = 0 (data): Z_1 = ODE(Z_0). `--mode=reflow` of the trained run writes the pairs
     (Z_0, Z_1) to `<workdir>/reflow/pairs_step<N>_seed<S>.npz`:

       python launch.py --workdir=runs/rf_cifar10 --mode=reflow \
           --config=experiments/liu2023_rectified_flow/cifar10.py

  3. Train the 2-rectified flow on those pairs: `data.train_split='pairs'` with
     `data.pairs` naming the file or the folder (gen_jax/data/couplings.py); each batch
     carries its "noise", which the train step uses in place of fresh draws
     (`DiffusionMethod.couplings`), so x_t = (1 - t) Z_1 + t Z_0.
  4. Sample it with few Euler steps, down to one: x_0 = x_1 - v(x_1, 1)
     (`sample.sampler='euler'`, `sample.steps=1`).

The ODE is integrated with Dormand-Prince 5(4) at rtol = atol = 1e-5 ('rk45': rk45.py, the
step control of the authors' `scipy.integrate.solve_ivp(method='RK45')` for reflow data) or
with N Euler steps ('euler').
"""
from __future__ import annotations

import functools
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from gen_jax.core.errors import ConfigError
from gen_jax.methods.base import MethodMode, ModeContext
from gen_jax.methods.diffusion import flow, rk45

SOLVERS = ("rk45", "euler")

# v(x_t, t_B) of a trained flow, in flow.py's time direction (t = 1 is noise).
VelocityFn = Callable[[jax.Array, jax.Array], jax.Array]


def ode_endpoints(velocity_fn: VelocityFn, noise: jax.Array, *, solver: str = "rk45",
                  steps: int = 100, rtol: float = 1e-5, atol: float = 1e-5,
                  t_start: float = 1.0, t_end: float = 0.0) -> tuple[jax.Array, jax.Array]:
  """Z_1 = ODE(Z_0): integrates dx/dt = v(x, t) from `noise` at t_start to t_end.

  Args:
    velocity_fn: v(x_t, t_B) (flow.py's direction: dx/dt, t = 1 is noise).
    noise: Z_0 [B, ...].
    solver: 'rk45' (adaptive Dormand-Prince, `rtol`/`atol`: rk45.py) or 'euler' (`steps`
      equal steps, `flow.euler_sample`).
    steps: Euler's number of steps.
    rtol, atol: the adaptive solver's tolerances (the authors' 1e-5).
    t_start, t_end: the interval.

  Returns:
    (the images Z_1, float32, shaped like noise; the number of network evaluations).

  Raises:
    ValueError: an unknown solver.
  """
  if solver == "euler":
    return flow.euler_sample(velocity_fn, noise, steps, t_start, t_end), jnp.int32(steps)
  if solver != "rk45":
    raise ValueError(f"solver={solver!r}; expected one of {SOLVERS}.")
  return rk45.sample(velocity_fn, noise, t_start=t_start, t_end=t_end, rtol=rtol, atol=atol)


def validate(cfg) -> None:
  """Checks the `reflow` config group before anything is read or compiled.

  Raises:
    ConfigError: a bad solver, count or tolerance.
  """
  if cfg.solver not in SOLVERS:
    raise ConfigError(f"reflow.solver={cfg.solver!r}; expected one of {SOLVERS}.")
  if cfg.batch_size < 1 or cfg.num_pairs < cfg.batch_size or cfg.num_pairs % cfg.batch_size:
    raise ConfigError(f"reflow.num_pairs={cfg.num_pairs} must be a positive multiple of "
                      f"reflow.batch_size={cfg.batch_size}.")
  if cfg.solver == "euler" and cfg.steps < 1:
    raise ConfigError(f"reflow.steps={cfg.steps}; the Euler solver needs at least 1 step.")
  if cfg.solver == "rk45" and not (cfg.rtol > 0 and cfg.atol > 0):
    raise ConfigError(f"reflow.rtol={cfg.rtol}, reflow.atol={cfg.atol}; both must be > 0.")


def run_reflow_mode(ctx: ModeContext, cfg, *, velocity_of: Callable[[Any], VelocityFn],
                    image_shape: tuple[int, int, int], use_ema: bool,
                    time_range: tuple[float, float] = (0.0, 1.0)) -> dict[str, Any]:
  """`--mode=reflow`: writes `reflow.num_pairs` pairs (Z_0, ODE(Z_0)) of the trained flow.

  Z_0 of batch i is N(0, I) drawn from fold_in(key(reflow.seed), i), so a run with another
  seed adds new pairs (the authors generate one folder per seed). Writes
  `<workdir>/reflow/pairs_step<N>_seed<S>.npz` (noise, image: float32 [N, H, W, C];
  label: int32 zeros [N]), a grid of the first 64 images and a JSON of the settings.

  Args:
    ctx: the trained run and the engine's services.
    cfg: the `reflow` group: num_pairs, batch_size, seed, solver, steps, rtol, atol.
    velocity_of: params -> v(x_t, t_B) of the trained flow (the method's probability-flow
      velocity, whatever its prediction).
    image_shape: (H, W, C).
    use_ema: integrate with the EMA params (`sample.use_ema`), else the raw ones.
    time_range: (t_min, t_max) of the flow: the ODE runs from t_max (where Z_0 is drawn)
      down to t_min (`core.time_range`: 1 - 1e-3 for a score or noise prediction).

  Returns:
    The JSON's contents: the file, the counts and settings, the mean network evaluations
    per batch (`nfe_mean`), `seconds`.

  Raises:
    ConfigError: a bad `reflow` group.
  """
  validate(cfg)
  state, step = ctx.restore()
  params = state.ema_params if use_ema else state.params
  endpoints = ctx.jit(lambda p, z: ode_endpoints(
      velocity_of(p), z, solver=cfg.solver, steps=cfg.steps, rtol=cfg.rtol, atol=cfg.atol,
      t_start=time_range[1], t_end=time_range[0]))
  key = jax.random.key(cfg.seed)
  noises, images, nfes = [], [], []
  t0 = time.perf_counter()
  for i in range(cfg.num_pairs // cfg.batch_size):
    z = jax.random.normal(jax.random.fold_in(key, i), (cfg.batch_size, *image_shape),
                          jnp.float32)
    x, nfe = jax.device_get(endpoints(params, z))
    noises.append(np.asarray(jax.device_get(z)))
    images.append(np.asarray(x))
    nfes.append(int(nfe))
    logging.info("reflow: %d / %d pairs (%d network evaluations)", (i + 1) * cfg.batch_size,
                 cfg.num_pairs, nfes[-1])
  seconds = time.perf_counter() - t0
  name = f"pairs_step{step}_seed{cfg.seed}"
  image = np.concatenate(images)
  pairs = ctx.write_arrays(name, {"noise": np.concatenate(noises), "image": image,
                                  "label": np.zeros(len(image), np.int32)})
  grid = ctx.write_image_grid(name, np.clip(image[:64], -1.0, 1.0), ncols=8)
  result = {"step": step, "pairs": pairs, "num_pairs": int(len(image)), "seed": cfg.seed,
            "solver": cfg.solver, "steps": cfg.steps if cfg.solver == "euler" else None,
            "rtol": cfg.rtol, "atol": cfg.atol, "nfe_mean": float(np.mean(nfes)),
            "seconds": round(seconds, 2), "grid": grid}
  logging.info("Wrote %s and %s", pairs, ctx.write_json(name, result))
  return result


def format_report(result: dict[str, Any]) -> str:
  """The lines `launch.py --mode=reflow` prints."""
  solver = (f"{result['steps']} Euler steps" if result["solver"] == "euler"
            else f"RK45 at rtol {result['rtol']:g}, atol {result['atol']:g}")
  return "\n".join([
      f"reflow: {result['num_pairs']} (noise, image) pairs of step {result['step']} "
      f"(seed {result['seed']}, {solver}, {result['nfe_mean']:.1f} network evaluations per "
      f"batch) in {result['seconds']:.1f}s",
      f"pairs: {result['pairs']} (train on them: --config.data.train_split=pairs "
      "--config.data.pairs=<this file or its folder>)",
      f"grid: {result['grid']}",
  ])


def reflow_mode(velocity_of: Callable[[Any], VelocityFn], image_shape: tuple[int, int, int],
                use_ema: bool, time_range: tuple[float, float] = (0.0, 1.0)) -> MethodMode:
  """The `--mode=reflow` a flow's method offers (`Method.modes`; Args as
  `run_reflow_mode`)."""
  return MethodMode(
      help="write (noise, ODE(noise)) pairs of this flow for a reflowed run (data.pairs)",
      config_group="reflow",
      run=functools.partial(run_reflow_mode, velocity_of=velocity_of, image_shape=image_shape,
                            use_ema=use_ema, time_range=time_range),
      report=format_report)
