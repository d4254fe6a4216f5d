"""DiT train step: gen_jax against the authors' PyTorch DiT (eager), alternating rounds.

  python benchmarks/dit.py --dit_dir=/path/to/DiT           # DiT-S/2, batch 8, 20 rounds
  python benchmarks/dit.py --dit_dir=... --size=DiT-B/2 --batch=4 --rounds=10
  taskset -c 0 python benchmarks/dit.py --dit_dir=... --torch_threads=1   # one core

Environment: torch and jax in one virtual environment, gen_jax installed editable (a
benchmark-only setup; torch, timm and the authors' code are no gen_jax dependency):

  python3 -m venv .venv-bench
  .venv-bench/bin/pip install torch timm numpy   # timm imports torchvision: its build
                                                 # must match torch's (both CPU or both CUDA)
  .venv-bench/bin/pip install -c constraints.txt -e .
  git clone https://github.com/facebookresearch/DiT /path/to/DiT     # models.py, diffusion/

What is timed, per update, on the same 32x32x4 latents (random, a fixed batch) and labels:
- gen_jax: the engine's compiled train step (`gen_jax.engine.train.compile_train_step`, as
  the launcher runs it, with launch.py's XLA:CPU options unless --nolauncher_xla_flags) of
  experiments/peebles2023_dit/imagenet256.py at --size and --batch: DDPM (T = 1000) with
  learned sigma and the hybrid loss L_simple + L_t (the config's, which is the authors'),
  labels dropped to the null class with p = 0.1, AdamW (1e-4, no weight decay, no
  clipping), EMA 0.9999, float32;
- the authors': their train.py's inner loop in eager PyTorch: `DiT_models[size]` from
  --dit_dir's models.py (timm's Attention: fused scaled_dot_product_attention),
  `create_diffusion(timestep_respacing="").training_losses` (MSE + the learned-range KL
  term), `torch.optim.AdamW(lr=1e-4, weight_decay=0)`, and their `update_ema` (a per-tensor
  mul_/add_ loop, written out here: train.py itself imports diffusers and needs a process
  group), model in train mode (label dropout 0.1).
Both start from gen_jax's initial parameters, loaded into the authors' module. First the
two networks are checked: our parameters with noise added (the zero-initialized adaLN and
output layers would hide everything), the same input, timesteps and labels, eval mode; the
max abs difference of the outputs is printed and must be small.

Timing: each round measures the large-matmul rate (best of 2 float32 --peak_size^2
matmuls, the faster of jax's and torch's: benchmarks/unet.py's method), then one update of
each framework in alternating order, and records the 1-minute load average (the VM is
shared). Printed: every round, the median steps/s of each, the median of the per-round
ratios, and MFU = XLA's FLOP count of one gen_jax update x steps/s / that round's matmul
rate (the same FLOP count for both: the same arithmetic).
"""
from __future__ import annotations

import copy
import os
import sys
import tempfile
import time

from absl import app, flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tools"))

from machine import (  # noqa: E402
    alternating_rounds,
    jax_and_torch_machine,
    launcher_xla_flags,
    matmul_peak,
    print_side_by_side,
    waited,
)

flags.DEFINE_string("dit_dir", None, "A checkout of facebookresearch/DiT (models.py, "
                    "diffusion/).", required=True)
flags.DEFINE_string("size", "DiT-S/2", "Model of the paper's Table 1 (gen_jax/models/dit.py "
                    "DIT_SIZES).")
flags.DEFINE_integer("batch", 8, "Latents per update.")
flags.DEFINE_integer("latent_size", 32, "h = w of the latents (ImageNet 256: 32).")
flags.DEFINE_integer("rounds", 20, "Alternating rounds (each: peak, one update of each).")
flags.DEFINE_integer("peak_size", 2048, "n of the n x n matmul that measures the peak.")
flags.DEFINE_integer("torch_threads", 0, "torch.set_num_threads (0: torch's default).")
flags.DEFINE_bool("launcher_xla_flags", True, "Add the XLA:CPU options launch.py sets "
                  "(gen_jax/engine/cpu_flags.py); --nolauncher_xla_flags: XLA's defaults.")
FLAGS = flags.FLAGS

CONFIG = "experiments/peebles2023_dit/imagenet256.py"
NUM_CLASSES = 1000


def torch_state_dict(params) -> dict:
  """gen_jax DiT params -> the authors' state dict names and layouts (torch tensors), the
  inverse of gen_jax/interop/dit.py: Dense kernels [in, out] -> Linear weights [out, in],
  the NHWC patch kernel [p, p, C, D] -> Conv2d [D, C, p, p], flax names -> module paths."""
  import jax
  import numpy as np
  import torch
  out = {}
  for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
    keys = [str(getattr(k, "key", k)) for k in path]
    value = np.asarray(leaf, np.float32)
    *module, name = keys
    if module == ["y_embedder"]:
      out["y_embedder.embedding_table.weight"] = value
      continue
    if module == ["x_embedder"]:
      out[f"x_embedder.proj.{'weight' if name == 'kernel' else 'bias'}"] = (
          value.transpose(3, 2, 0, 1) if name == "kernel" else value)
      continue
    parts = []
    for m in module:
      if m.startswith("blocks_"):
        parts += ["blocks", m.split("_")[1]]
      elif m in ("mlp_0", "mlp_2"):
        parts += ["mlp", m[-1]]
      elif m == "adaLN_modulation":
        parts += [m, "1"]
      else:
        parts.append(m)
    out[".".join(parts) + (".weight" if name == "kernel" else ".bias")] = (
        value.T if name == "kernel" else value)
  return {k: torch.from_numpy(np.array(v, np.float32)) for k, v in out.items()}


def setup():
  """(gen_jax step fn, torch step fn, description dict)."""
  import jax
  import numpy as np
  import torch
  from placeholder_latents import (  # pyright: ignore[reportMissingImports]  (tools/)
      write_placeholder_latents,
  )

  from gen_jax.core.state import count_params
  from gen_jax.engine import sharding
  from gen_jax.engine.config_files import load_config
  from gen_jax.engine.experiment import build_experiment
  from gen_jax.engine.train import compile_train_step
  from gen_jax.methods.diffusion.method import DiffusionMethod
  from gen_jax.methods.latents import LatentImages

  sys.path.insert(0, os.path.abspath(FLAGS.dit_dir))   # the authors' models.py, diffusion/
  from diffusion import create_diffusion  # pyright: ignore[reportMissingImports]
  from models import DiT_models  # pyright: ignore[reportMissingImports]

  B, h = FLAGS.batch, FLAGS.latent_size
  folder = write_placeholder_latents(tempfile.mkdtemp(prefix="dit_bench_"),
                                     latent_shape=(h, h, 4), image_shape=(8 * h, 8 * h, 3))
  config = load_config(CONFIG, {"model.dit_size": FLAGS.size, "train.batch_size": B,
                                "eval.batch_size": B, "data.latents_dir": folder})
  exp = build_experiment(config)
  method = exp.method.inner if isinstance(exp.method, LatentImages) else exp.method
  assert isinstance(method, DiffusionMethod)
  state = exp.init_state()
  rng = np.random.default_rng(0)
  x0 = rng.standard_normal((1, B, h, h, 4)).astype(np.float32)
  labels = rng.integers(0, NUM_CLASSES, (1, B)).astype(np.int32)
  batches = sharding.global_batch({"image": x0, "label": labels},
                                  sharding.stacked_batch_sharding(exp.mesh))
  t0 = time.perf_counter()
  compiled, xla_flops = compile_train_step(exp, state, batches)
  compile_s = time.perf_counter() - t0

  net = DiT_models[FLAGS.size](input_size=h, num_classes=NUM_CLASSES)   # learn_sigma=True
  noisy = jax.tree.map(lambda p: np.asarray(p) + 0.02 * rng.standard_normal(p.shape).astype(
      np.float32), state.params)
  t_B = np.linspace(0, 999, B).round().astype(np.int32)
  ours = np.asarray(jax.jit(lambda p: method.model.apply(
      {"params": p}, x0[0], t_B, labels[0], train=False))(noisy))
  missing, unexpected = net.load_state_dict(torch_state_dict(noisy), strict=False)
  if unexpected or set(missing) != {"pos_embed"}:
    raise AssertionError(f"parameter names differ: missing {missing}, unexpected {unexpected}")
  with torch.no_grad():
    theirs = net.eval()(torch.from_numpy(x0[0]).permute(0, 3, 1, 2), torch.from_numpy(t_B),
                        torch.from_numpy(labels[0])).permute(0, 2, 3, 1).numpy()
  max_diff = float(np.abs(ours - theirs).max())
  max_out = float(np.abs(ours).max())
  if not max_diff <= 1e-4 * max(1.0, max_out):
    raise AssertionError(f"the authors' DiT disagrees with gen_jax's (max abs diff "
                         f"{max_diff:.3g} on outputs up to {max_out:.3g}).")

  # Their train.py's update, from our initial parameters.
  net.load_state_dict(torch_state_dict(state.params), strict=False)
  net.train()
  ema = copy.deepcopy(net).requires_grad_(False)
  diffusion = create_diffusion(timestep_respacing="")
  opt = torch.optim.AdamW(net.parameters(), lr=config.train.lr, weight_decay=0)
  x_torch = torch.from_numpy(x0[0]).permute(0, 3, 1, 2).contiguous()
  y_torch = torch.from_numpy(labels[0]).long()
  ema_params = dict(ema.named_parameters())
  model_params = dict(net.named_parameters())

  def torch_step():
    t = torch.randint(0, diffusion.num_timesteps, (B,))
    loss = diffusion.training_losses(net, x_torch, t, dict(y=y_torch))["loss"].mean()
    opt.zero_grad()
    loss.backward()
    opt.step()
    with torch.no_grad():   # train.py's update_ema(ema, model), decay 0.9999
      for name, param in model_params.items():
        ema_params[name].mul_(config.train.ema_decay).add_(
            param.data, alpha=1 - config.train.ema_decay)
    return loss.item()

  holder = {"state": state}

  def jax_step():
    holder["state"], metrics = compiled(holder["state"], batches, exp.base_rng)
    return metrics

  for _ in range(2):   # warm-up: first calls, allocators, torch's kernels
    waited(jax_step)
    torch_step()
  desc = {"params": count_params(state.params), "batch": f"{B}x{h}x{h}x4",
          "xla_flops": xla_flops, "compile_s": compile_s, "max_diff": max_diff,
          "max_out": max_out, "torch_params": sum(p.numel() for p in net.parameters())}
  return jax_step, torch_step, desc


def main(argv):
  del argv
  if FLAGS.launcher_xla_flags:   # before JAX starts its backend, as launch.py does
    launcher_xla_flags()
  import torch
  from absl import logging

  from gen_jax.engine.outputs import quiet_library_logs
  quiet_library_logs()
  logging.set_verbosity(logging.WARNING)
  if FLAGS.torch_threads:
    torch.set_num_threads(FLAGS.torch_threads)
  print(f"machine: {jax_and_torch_machine()}")
  print(f"load average at start: {os.getloadavg()[0]:.2f}")
  peak = matmul_peak(FLAGS.peak_size)
  jax_step, torch_step, d = setup()
  print(f"\n{FLAGS.size}: {d['params']:,} trained params ({d['torch_params']:,} in the "
        f"authors' count, with the fixed position table), batch {d['batch']}; XLA counts "
        f"{d['xla_flops'] / 1e9:.2f} GFLOP/update; gen_jax compile {d['compile_s']:.0f} s")
  print(f"  check: max |gen_jax - authors'| = {d['max_diff']:.2g} on outputs up to "
        f"{d['max_out']:.2f} (same perturbed params and inputs, eval mode)")
  loads = []

  def report_round(r, peak_rate, jax_seconds, torch_seconds):
    loads.append(os.getloadavg()[0])
    print(f"  {r:5d}  {peak_rate:12.1f}  {jax_seconds:9.3f}  {torch_seconds:7.3f}  "
          f"{loads[-1]:.2f}")

  print("  round  peak GFLOP/s  gen_jax s  torch s  load")
  print_side_by_side(*alternating_rounds(jax_step, torch_step, peak, FLAGS.rounds,
                                         report_round), d["xla_flops"])
  print(f"  load average over the rounds: {min(loads):.2f}-{max(loads):.2f}")


if __name__ == "__main__":
  app.run(main)
