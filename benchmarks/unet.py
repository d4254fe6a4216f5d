"""DDPM U-Net train step: gen_jax against the same network in PyTorch (eager), alternating.

  python benchmarks/unet.py                       # both models, 20 rounds each
  python benchmarks/unet.py --models=ddpm --rounds=40

Needs PyTorch in the same environment (`pip install torch==2.13.0`; CPU wheel). It is a
benchmark-only requirement, not a gen_jax dependency.

Models:
  ddpm     `configs/ddpm.py`'s default U-Net (280,177 params), batch 64 of 28x28x1.
  cifar10  the paper's CIFAR-10 U-Net (`experiments/ho2020_ddpm/cifar10.py`: ch 128, ch_mult
           (1, 2, 2, 2), attention at 16x16, dropout 0.1; 35,746,307 params), batch
           --cifar_batch of 32x32x3.
For each: gen_jax's compiled train step (`gen_jax.engine.train.compile_train_step`, with
launch.py's XLA:CPU options unless --nolauncher_xla_flags, as the launcher runs it:
L_simple with uniform t, Adam, clipping, EMA) against
`benchmarks/torch_unet.py`'s port started from the same parameters. The port is checked
first: our parameters loaded into it, both networks' outputs on the same input (perturbed
parameters, so that no layer is ~0) must agree; the max abs difference is printed.

Timing: this VM is shared and its speed drifts, so each round measures the large-matmul rate
(best of 2 float32 --peak_size^2 matmuls, the faster of jax's and torch's), then one update
of each framework, in alternating order. Printed: the median steps/s over rounds, the median
of the per-round ratios, and MFU = XLA's FLOP count of one update x steps/s / that round's
matmul rate (the same FLOP count for both: the same arithmetic).
"""
from __future__ import annotations

import os
import sys
import time

from absl import app, flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from machine import (  # noqa: E402
    alternating_rounds,
    jax_and_torch_machine,
    launcher_xla_flags,
    matmul_peak,
    print_side_by_side,
    waited,
)

flags.DEFINE_list("models", ["ddpm", "cifar10"], "Which U-Nets: ddpm, cifar10.")
flags.DEFINE_integer("rounds", 20, "Alternating rounds per model (each: peak, one update "
                     "of each framework).")
flags.DEFINE_integer("cifar_batch", 8, "Batch size of the CIFAR-10 U-Net.")
flags.DEFINE_integer("peak_size", 2048, "n of the n x n matmul that measures the peak.")
flags.DEFINE_bool("launcher_xla_flags", True, "Add the XLA:CPU options launch.py sets "
                  "(gen_jax/engine/cpu_flags.py); --nolauncher_xla_flags: XLA's defaults.")
FLAGS = flags.FLAGS

CONFIGS = {"ddpm": ("configs/ddpm.py", {}),
           "cifar10": ("experiments/ho2020_ddpm/cifar10.py", {})}


def setup(name: str, cifar_batch: int):
  """(gen_jax step fn, torch step fn, description dict) for one model."""
  import jax
  import numpy as np
  import torch
  import torch_unet

  from gen_jax.core.state import count_params
  from gen_jax.engine import sharding
  from gen_jax.engine.config_files import load_config
  from gen_jax.engine.experiment import build_experiment
  from gen_jax.engine.train import compile_train_step

  path, overrides = CONFIGS[name]
  if name == "cifar10":
    overrides = {**overrides, "train.batch_size": cifar_batch, "eval.batch_size": cifar_batch}
  config = load_config(path, overrides)
  exp = build_experiment(config)
  m, tc = config.model, config.train
  B, (H, W, C) = tc.batch_size, exp.spec.example_batch()["image"].shape[1:]
  state = exp.init_state()
  x0 = np.random.default_rng(0).uniform(-1, 1, (1, B, H, W, C)).astype(np.float32)
  batches = sharding.global_batch({"image": x0}, sharding.stacked_batch_sharding(exp.mesh))
  t0 = time.perf_counter()
  compiled, xla_flops = compile_train_step(exp, state, batches)
  compile_s = time.perf_counter() - t0

  # The port, checked: perturbed parameters (the zero-initialized output layers would hide
  # everything), the same images and timesteps, eval mode.
  net = torch_unet.UNet(C, H, m.ch, m.ch_mult, m.num_res_blocks, m.attn_resolutions,
                        m.dropout, m.num_groups)
  rng = np.random.default_rng(1)
  noisy = jax.tree.map(lambda p: np.asarray(p) + 0.05 * rng.standard_normal(p.shape).astype(
      np.float32), state.params)
  t_B = np.arange(B) * (999 // max(B - 1, 1))
  ours = np.asarray(jax.jit(lambda p: exp.method.model.apply(
      {"params": p}, x0[0], t_B, train=False))(noisy))
  torch_unet.load_flax_params(net, noisy)
  with torch.no_grad():
    theirs = net.eval()(torch.from_numpy(x0[0]).permute(0, 3, 1, 2),
                        torch.from_numpy(t_B)).permute(0, 2, 3, 1).numpy()
  max_diff = float(np.abs(ours - theirs).max())
  if not max_diff <= 1e-4 * max(1.0, float(np.abs(ours).max())):
    raise AssertionError(f"{name}: the PyTorch port disagrees with gen_jax's U-Net "
                         f"(max abs diff {max_diff:.3g}); fix benchmarks/torch_unet.py.")

  torch_unet.load_flax_params(net, state.params)
  torch_step = torch_unet.TrainStep(
      net, lr=tc.lr, b1=tc.b1, b2=tc.b2, eps=tc.eps, grad_clip=tc.grad_clip,
      ema_decay=tc.ema_decay, num_timesteps=config.diffusion.num_timesteps,
      beta_start=config.diffusion.beta_start, beta_end=config.diffusion.beta_end)
  x_torch = torch.from_numpy(x0[0]).permute(0, 3, 1, 2).contiguous()
  holder = {"state": state}

  def jax_step():
    holder["state"], metrics = compiled(holder["state"], batches, exp.base_rng)
    return metrics

  for _ in range(2):   # warm-up: first calls, allocator, torch's kernels
    waited(jax_step)
    torch_step(x_torch)
  desc = {"params": count_params(state.params), "batch": f"{B}x{H}x{W}x{C}", "xla_flops": xla_flops,
          "compile_s": compile_s, "max_diff": max_diff, "max_out": float(np.abs(ours).max())}
  return jax_step, lambda: torch_step(x_torch), desc


def run(name: str, rounds: int, peak) -> None:
  jax_step, torch_step, d = setup(name, FLAGS.cifar_batch)
  print(f"\n{name}: {d['params']:,} params, batch {d['batch']}; XLA counts "
        f"{d['xla_flops'] / 1e9:.2f} GFLOP/update; gen_jax compile {d['compile_s']:.0f} s")
  print(f"  port check: max |gen_jax - torch| = {d['max_diff']:.2g} on outputs up to "
        f"{d['max_out']:.2f} (same perturbed params and inputs, eval mode)")
  print_side_by_side(*alternating_rounds(jax_step, torch_step, peak, rounds), d["xla_flops"])


def main(argv):
  del argv
  if FLAGS.launcher_xla_flags:   # before JAX starts its backend, as launch.py does
    launcher_xla_flags()
  from absl import logging

  from gen_jax.engine.outputs import quiet_library_logs
  quiet_library_logs()
  logging.set_verbosity(logging.WARNING)
  unknown = set(FLAGS.models) - set(CONFIGS)
  if unknown:
    raise app.UsageError(f"--models: unknown {sorted(unknown)}; choose from {sorted(CONFIGS)}.")
  print(f"machine: {jax_and_torch_machine()}")
  print(f"load average at start: {os.getloadavg()[0]:.2f}")
  peak = matmul_peak(FLAGS.peak_size)
  for name in FLAGS.models:
    run(name, FLAGS.rounds, peak)
  print(f"\nload average at end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
  app.run(main)
