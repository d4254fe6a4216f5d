"""Every GPU figure of gen_jax from one command: GPT-2 124M throughput and MFU, nanoGPT's
shakespeare_char to completion, the CIFAR-10 DDPM U-Net step, FID Inception features/s.

  python benchmarks/gpu_suite.py --tiny_shakespeare=.gpu_data --out=$OUT     # ~8 min, H100
  python benchmarks/gpu_suite.py --tiny                                      # CPU, ~1 min

Writes gpu_results.json and gpu_results.md into --out (default: $OUT when set, else .),
after every part, so a run cut short keeps what it finished. They hold the device (kind,
count, the bf16 peak MFU divides by), JAX/jaxlib/CUDA/cuDNN versions, the date, and per
part its status, figures, the goal beside them and whether it was met.

Parts (a registry, `PARTS`: a part not built yet is a name with `measure=None`):
  gpt2_124m         experiments/radford2019_gpt2/openwebtext.py, dtype=bfloat16, synthetic
                    tokens: tokens/s and MFU (6N + 12 L H Q T FLOPs per token, PaLM App. B)
                    at the largest per-device batch of --gpt2_batches that fits (each tried
                    from large to small, out-of-memory caught). Attention as the model has
                    it: `jax.nn.dot_product_attention` with implementation=None, which JAX
                    0.10 runs as its XLA path (no fused kernel); the report says whether the
                    compiled step holds cuDNN's fused attention (its custom call).
  shakespeare_char  configs/gpt.py:shakespeare_char (dtype=bfloat16, as nanoGPT's autocast;
                    no periodic samples) trained to its 5000 steps by
                    `gen_jax.engine.train.train_and_evaluate` on Tiny Shakespeare: wall time
                    and final validation loss (nanoGPT: 1.4697 in about 3 min on an A100).
  ddpm_cifar10      experiments/ho2020_ddpm/cifar10.py (35.7M params) at batch 128 of
                    synthetic 32x32 images, --ddpm_dtype: steps/s (the paper's TPU v3-8: 21)
                    and MFU by XLA's FLOP count of one update.
  inception         gen_jax/evaluate/inception.py with random weights, batch 200 of 32x32
                    images (resized to 299 inside): features/s at precision 'highest' (what
                    the evaluator uses) and 'default' (TF32).
  gpt2_124m_cudnn   gpt2_124m with the model's attention_impl='cudnn' (cuDNN flash
                    attention; GPU only), at the same candidate batches.
  dit_b2, dit_xl2, edm_heun35   not built yet in gen_jax: listed as skipped.
Train steps are gen_jax's own: `compile_train_step` of `build_experiment(config)`, as the
launcher runs them. Each is compiled first (compile seconds reported apart), warmed up, then
timed in steady state: rounds of back-to-back calls, the last waited for
(`block_until_ready`), the median round reported.

Time: each part has a cap (`budget_s`, on a GPU; --cap_scale multiplies them); the suite
starts no part after --time_limit (default 460 s), and one that would get less than
--min_part_s is skipped, saying so. Within a part the cap is checked where work can stop:
GPT-2 tries no further batch size, Inception no further precision, and shakespeare_char is
stopped through the engine's preemption path (SIGTERM: it saves and returns) and reports
the step it reached; a single compile and measurement (DDPM) runs to its end. A part that
fails (say, out of memory at every batch) is recorded and the next one runs.

Running it on the lent H100/H200 (nothing can be downloaded there, and the machine gets
only the repository's tracked and untracked-not-ignored files plus the carried folders):
  1. Here, once: the data and the wheels the device image lacks, into ignored folders:
       mkdir -p .gpu_data && cp /work/shared/data/tiny_shakespeare/input.txt .gpu_data/
       sh benchmarks/gpu_wheels.sh          # -> .gpu_wheels/ (~11 MB, CPython 3.12)
  2. One device call, carry [".gpu_data", ".gpu_wheels"], timeout_s 600:
       python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site \\
         .gpu_wheels/*.whl && export PYTHONPATH=/tmp/site:$PWD && \\
       python3 benchmarks/gpu_suite.py --tiny_shakespeare=.gpu_data --out=$OUT
     gpu_results.json and gpu_results.md come back in $OUT. The device image brings its
     own jax (with the CUDA plugin; 0.11.2 in 2026-11, not constraints.txt's 0.10.2),
     flax, optax and orbax-checkpoint: the report records the versions that ran.

--tiny: every part with tiny models, float32 (XLA:CPU compiles bfloat16 slowly) and a few
steps, about a minute on a CPU, compiles included (what tests/benchmarks/test_gpu_suite.py runs);
shakespeare_char then trains on --tiny_shakespeare's input.txt as `text_files` (any
text) or, without it, on a generated text.
The launcher's XLA options (gen_jax/engine/cpu_flags.py) are applied first and printed.
"""
from __future__ import annotations

import dataclasses
import functools
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags, logging

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

# JAX starts no backend on import: main() applies the XLA options first.
from benchmarks import gpu_report  # noqa: E402
from benchmarks.machine import cpu_description, launcher_xla_flags  # noqa: E402
from gen_jax import data  # noqa: E402
from gen_jax.core.state import count_params  # noqa: E402
from gen_jax.engine import checkpoint, train  # noqa: E402
from gen_jax.engine.config_files import load_config  # noqa: E402
from gen_jax.engine.experiment import build_experiment  # noqa: E402
from gen_jax.engine.outputs import quiet_library_logs, read_metrics  # noqa: E402
from gen_jax.evaluate import inception, inception_weights  # noqa: E402

flags.DEFINE_string("out", os.environ.get("OUT", "."), "Folder for gpu_results.json/.md.")
flags.DEFINE_bool("tiny", False, "Tiny models and a few steps, for a CPU.")
flags.DEFINE_string("tiny_shakespeare", "", "Folder holding Tiny Shakespeare's input.txt.")
flags.DEFINE_list("parts", [], "Parts to run (default: all), e.g. gpt2_124m,inception.")
flags.DEFINE_float("time_limit", 460.0, "Seconds after which no part starts or goes on.")
flags.DEFINE_float("min_part_s", 20.0, "A part starts only with this many seconds left.")
flags.DEFINE_float("cap_scale", 1.0, "Multiplies every part's cap (a slow or loaded CPU).")
flags.DEFINE_float("peak_tflops", 0.0, "Peak TFLOP/s per device for MFU (0: the table "
                   "in benchmarks/gpu_report.py, by device kind).")
flags.DEFINE_list("gpt2_batches", ["32", "16", "8"], "Per-device GPT-2 batches, largest first.")
flags.DEFINE_string("ddpm_dtype", "bfloat16", "Compute dtype of the DDPM U-Net step.")
flags.DEFINE_integer("inception_batch", 200, "Images per Inception call.")
FLAGS = flags.FLAGS


class Skip(Exception):
  """A part that cannot run here; the message says why."""


@dataclasses.dataclass
class Context:
  """What a part gets: the run's mode, its own deadline, the device and a scratch folder."""
  tiny: bool
  deadline: float            # time.monotonic() at which the part's cap is reached
  peak_tflops: float | None  # per device; None: unknown (MFU not computed)
  num_devices: int
  platform: str
  tiny_shakespeare: str
  scratch: str

  @property
  def dtype(self) -> str:
    """bfloat16 compute (f32 params), as on accelerators; a tiny run's float32 compiles
    faster on XLA:CPU."""
    return "float32" if self.tiny else "bfloat16"

  @property
  def timing_seconds(self) -> float:
    """How long each steady-state measurement lasts."""
    return 0.3 if self.tiny else 3.0

  def mfu(self, flops_per_step: float, steps_per_s: float) -> float | None:
    return gpu_report.mfu(flops_per_step, steps_per_s, self.peak_tflops, self.num_devices)


@dataclasses.dataclass(frozen=True)
class Part:
  name: str
  title: str
  budget_s: float      # the part's cap on a GPU
  goal: str            # printed beside the figures
  measure: Callable[[Context], dict] | None   # None: not built yet


# ------------------------------------------------------------------------- GPT-2 124M


def gpt2_experiment(ctx: Context, per_device_batch: int, attention_impl: str | None):
  batch = per_device_batch * ctx.num_devices
  overrides = {"dtype": ctx.dtype, "train.batch_size": batch, "train.grad_accum_steps": 1,
               "train.steps_per_call": 1, "eval.batch_size": batch}
  if ctx.tiny:
    overrides.update({"model.n_layer": 1, "model.n_head": 2, "model.n_embd": 32,
                      "model.block_size": 32, "data.vocab_size": 256, "sample.prompt": "0"})
  exp = build_experiment(load_config("experiments/radford2019_gpt2/openwebtext.py", overrides))
  if attention_impl is None:
    return exp
  # The model option is not a config field: the method gets a clone of its model.
  model = exp.method.model.clone(attention_impl=attention_impl)
  return dataclasses.replace(exp, method=dataclasses.replace(exp.method, model=model))


def gpt2_flops_per_token(exp) -> float:
  """nanoGPT's estimate_mfu: 6N + 12 L H Q T (PaLM, App. B), N = parameters without the
  position embeddings (the tied token embedding counts: it is the logits' matmul)."""
  m = exp.config.model
  params = exp.abstract_state.params
  N = count_params(params) - params["wpe"]["embedding"].size
  return 6 * N + 12 * m.n_layer * m.n_head * (m.n_embd // m.n_head) * exp.config.data.seq_len


def measure_gpt2(ctx: Context, attention_impl: str | None) -> dict:
  candidates = [2, 1] if ctx.tiny else [int(b) for b in FLAGS.gpt2_batches]

  def attempt(per_device_batch: int) -> dict:
    exp = gpt2_experiment(ctx, per_device_batch, attention_impl)
    try:
      figures = gpu_report.train_step_rate(exp, ctx.timing_seconds)
    finally:
      gpu_report.released()
    tokens_per_step = exp.config.train.batch_size * exp.config.data.seq_len
    flops_per_step = gpt2_flops_per_token(exp) * tokens_per_step
    figures.update(tokens_per_step=tokens_per_step, model_flops_per_step=flops_per_step,
                   tokens_per_s=figures["steps_per_s"] * tokens_per_step,
                   mfu=ctx.mfu(flops_per_step, figures["steps_per_s"]),
                   seq_len=exp.config.data.seq_len, global_batch=exp.config.train.batch_size)
    return figures

  batch, figures, tried = gpu_report.largest_fitting_batch(candidates, attempt, ctx.deadline)
  attention = ("jax.nn.dot_product_attention, implementation="
               + (repr(attention_impl) if attention_impl else "None (JAX's default)")
               + ("; cuDNN fused attention in the compiled step" if figures["cudnn_fused_attention"]
                  else "; no cuDNN fused attention in the compiled step (XLA's attention)"))
  figures.update(per_device_batch=batch, batches_tried=tried, dtype=ctx.dtype,
                 attention=attention)
  mfu = figures["mfu"]
  return {"figures": figures,
          "summary": (f"{figures['tokens_per_s']:,.0f} tokens/s, MFU "
                      f"{'n/a' if mfu is None else f'{100 * mfu:.1f}%'} at batch {batch}/device "
                      f"x {figures['seq_len']}; compile {figures['compile_s']:.0f} s; "
                      f"attention: {'cuDNN fused' if figures['cudnn_fused_attention'] else 'XLA'}"),
          "goal_met": None if ctx.tiny or mfu is None else mfu >= 0.5}


def gpt2_default(ctx: Context) -> dict:
  return measure_gpt2(ctx, None)


def gpt2_cudnn(ctx: Context) -> dict:
  if ctx.platform != "gpu":
    raise Skip(f"cuDNN attention needs a GPU (platform {ctx.platform})")
  return measure_gpt2(ctx, "cudnn")


# -------------------------------------------------------------------- shakespeare_char


def generated_text(num_chars: int = 60_000) -> str:
  """Text for a tiny run without Tiny Shakespeare: Python's own library sources."""
  import inspect
  import json.decoder
  import textwrap
  return "".join(inspect.getsource(m) for m in (textwrap, json.decoder, inspect))[:num_chars]


def shakespeare_char(ctx: Context) -> dict:
  overrides = {"dtype": ctx.dtype, "train.sample_every": 0,
               "data.data_dir": os.path.join(ctx.scratch, "tfds")}
  if ctx.tiny:
    text = os.path.join(ctx.tiny_shakespeare, "input.txt") if ctx.tiny_shakespeare else ""
    if not text:
      text = os.path.join(ctx.scratch, "text", "input.txt")
      os.makedirs(os.path.dirname(text), exist_ok=True)
      with open(text, "w") as f:
        f.write(generated_text())
    overrides.update({"data.dataset": "text_files", "data.text_path": text,
                      "model.n_layer": 1, "model.n_head": 2, "model.n_embd": 16,
                      "model.block_size": 16, "train.batch_size": 4, "train.num_steps": 20,
                      "train.log_every": 10, "train.checkpoint_every": 20,
                      "eval.every": 20, "eval.batch_size": 4, "eval.num_batches": 2})
  elif ctx.tiny_shakespeare:
    overrides["data.manual_dir"] = os.path.abspath(ctx.tiny_shakespeare)
  else:
    raise Skip("no --tiny_shakespeare folder given (see the module docstring)")
  config = load_config("configs/gpt.py:shakespeare_char", overrides)
  start = time.perf_counter()
  data.prepare_builder(config.data.dataset, data_dir=config.data.data_dir,
                       manual_dir=config.data.manual_dir,
                       options={"text_path": config.data.text_path}
                       if config.data.dataset == "text_files" else None)
  prepare_s = time.perf_counter() - start
  workdir = os.path.join(ctx.scratch, "shakespeare_char")
  start = time.perf_counter()
  with gpu_report.stopped_at(ctx.deadline):
    train.train_and_evaluate(config, workdir)
  wall_s = time.perf_counter() - start
  rows = read_metrics(workdir)
  evals = [(r["step"], r["eval/raw/loss"]) for r in rows if "eval/raw/loss" in r]
  rates = [r["train/steps_per_sec"] for r in rows if "train/steps_per_sec" in r]
  last_step = checkpoint.latest_step(workdir) or 0   # saved at the end, or where it stopped
  finished = last_step == config.train.num_steps
  step, loss = evals[-1] if evals else (None, None)
  figures = {"wall_s": wall_s, "prepare_s": prepare_s, "steps": last_step,
             "num_steps": config.train.num_steps, "final_val_loss": loss,
             "final_val_step": step, "evals": evals, "steps_per_s": rates[-1] if rates else None,
             "dtype": config.dtype, "dataset": config.data.dataset,
             "reference": "nanoGPT: 1.4697 in about 3 min on one A100"}
  result = {"figures": figures,
            "summary": ((f"val loss {loss:.4f} at step {step}; " if evals else "no evaluation; ")
                        + f"{wall_s:.0f} s from the call (compile and evals included)"
                        + (f"; {rates[-1]:.1f} steps/s" if rates else "")),
            "goal_met": (None if ctx.tiny or not evals
                         else finished and wall_s <= 180 and loss <= 1.47)}
  if not finished:
    result.update(status="stopped", reason=f"the cap stopped it at step {last_step} of "
                  f"{config.train.num_steps}")
  elif not evals:
    raise RuntimeError(f"no evaluation was logged in {last_step} steps")
  return result


# ------------------------------------------------------------------------ DDPM CIFAR-10


def ddpm_cifar10(ctx: Context) -> dict:
  overrides = {"dtype": FLAGS.ddpm_dtype, "train.batch_size": 128, "eval.batch_size": 128}
  if ctx.tiny:
    overrides.update({"dtype": ctx.dtype, "model.ch": 8, "model.ch_mult": (1,),
                      "model.attn_resolutions": (), "model.num_res_blocks": 1,
                      "model.num_groups": 4,
                      "train.batch_size": 2, "eval.batch_size": 2})
  exp = build_experiment(load_config("experiments/ho2020_ddpm/cifar10.py", overrides))
  try:
    figures = gpu_report.train_step_rate(exp, ctx.timing_seconds)
  finally:
    gpu_report.released()
  mfu = ctx.mfu(figures["xla_flops_per_step"], figures["steps_per_s"])
  figures.update(mfu=mfu, batch=exp.config.train.batch_size, dtype=exp.config.dtype,
                 reference="the paper's TPU v3-8: 21 steps/s")
  return {"figures": figures,
          "summary": (f"{figures['steps_per_s']:.1f} steps/s at batch {figures['batch']} "
                      f"({figures['dtype']}), MFU {'n/a' if mfu is None else f'{100 * mfu:.1f}%'}"
                      f" (XLA's FLOPs); compile {figures['compile_s']:.0f} s"),
          "goal_met": None if ctx.tiny else figures["steps_per_s"] >= 84}


# --------------------------------------------------------------------------- Inception


def inception_features(ctx: Context) -> dict:
  batch = 2 if ctx.tiny else FLAGS.inception_batch
  variables = inception.variables_from_state_dict(
      inception_weights.random_state_dict(inception.torch_shapes(), seed=0))
  images = jnp.asarray(np.random.default_rng(0).uniform(-1, 1, (batch, 32, 32, 3)), jnp.float32)
  figures = {"batch": batch, "input": "32x32x3, resized to 299x299"}
  # A tiny run measures one precision: on a CPU both are float32.
  for precision in ("highest",) if ctx.tiny else ("highest", "default"):
    if time.monotonic() > ctx.deadline:
      figures[precision] = "not run: time cap"
      continue
    apply = inception.make_apply(variables, precision=precision)
    start = time.perf_counter()
    jax.block_until_ready(apply(images))
    first_s = time.perf_counter() - start
    rate = gpu_report.steady_rate(functools.partial(apply, images), ctx.timing_seconds)
    figures[precision] = {"first_call_s": first_s, "features_per_s": rate["per_s"] * batch}
    del apply
    gpu_report.released()
  rates = [f"{p}: {figures[p]['features_per_s']:,.0f} features/s" if isinstance(figures[p], dict)
           else f"{p}: {figures[p]}" for p in ("highest", "default") if p in figures]
  return {"figures": figures, "summary": "; ".join(rates) + f" (batch {batch})",
          "goal_met": None}


# ------------------------------------------------------------------------------ suite

PARTS = (
    Part("gpt2_124m", "GPT-2 124M (OpenWebText recipe, bf16)", 120,
         ">= 50% MFU on H100", gpt2_default),
    Part("shakespeare_char", "nanoGPT shakespeare_char, trained", 210,
         "<= 3 min to val loss <= 1.47", shakespeare_char),
    Part("ddpm_cifar10", "DDPM CIFAR-10 U-Net, batch 128", 60, ">= 84 steps/s", ddpm_cifar10),
    Part("inception", "FID Inception-v3 features/s", 45, "", inception_features),
    Part("gpt2_124m_cudnn", "GPT-2 124M, cuDNN attention", 70, ">= 50% MFU on H100",
         gpt2_cudnn),
    Part("dit_b2", "DiT-B/2", 0, "", None),
    Part("dit_xl2", "DiT-XL/2", 0, "", None),
    Part("edm_heun35", "EDM Heun sampler, 35 NFE, images/s", 0, "", None),
)


def run_part(part: Part, ctx: Context, suite_deadline: float) -> dict:
  """One row of the report: the part run (or skipped), its failure recorded, not raised."""
  budget_s = part.budget_s * FLAGS.cap_scale
  row = {"name": part.name, "title": part.title, "goal": part.goal, "budget_s": budget_s,
         "status": "ok", "reason": "", "summary": "", "figures": {}, "goal_met": None,
         "seconds": 0.0}
  left = suite_deadline - time.monotonic()
  if part.measure is None:
    return {**row, "status": "skipped", "reason": "not built yet"}
  if left < FLAGS.min_part_s:
    return {**row, "status": "skipped", "reason": f"would not finish: {left:.0f} s left of "
            f"--time_limit"}
  start = time.monotonic()
  ctx = dataclasses.replace(ctx, deadline=min(suite_deadline, start + budget_s))
  try:
    row.update(part.measure(ctx))
  except Skip as e:
    row.update(status="skipped", reason=str(e))
  except Exception as e:   # pylint: disable=broad-except  # recorded; the next part runs
    oom = gpu_report.is_out_of_memory(e) or isinstance(e, gpu_report.NoBatchFits)
    row.update(status="failed", reason=("out of memory: " if oom else "")
               + f"{type(e).__name__}: {str(e).strip()[:400]}")
  finally:
    gpu_report.released()
  row["seconds"] = time.monotonic() - start
  return row


def main(argv):
  del argv
  suite_start = time.monotonic()
  xla_flags = launcher_xla_flags()   # before JAX starts a backend, as launch.py does
  print(f"XLA_FLAGS: {xla_flags!r} (launch.py's options, gen_jax/engine/cpu_flags.py)")
  quiet_library_logs()
  logging.set_verbosity(logging.WARNING)
  unknown = set(FLAGS.parts) - {p.name for p in PARTS}
  if unknown:
    raise app.UsageError(f"--parts: unknown {sorted(unknown)}; known: "
                         f"{[p.name for p in PARTS]}")
  env = gpu_report.environment(FLAGS.peak_tflops)
  env["cpu"] = cpu_description()
  print(env["environment_info"])
  print(f"device: {env['device_count']} x {env['device_kind']}; peak bf16 "
        f"{env['peak_bf16_tflops_per_device']} TFLOP/s per device ({env['peak_source']})")
  print("peak table (TFLOP/s bf16 dense, by device kind): "
        + ", ".join(f"{name} {tflops:g}" for name, tflops in gpu_report.PEAK_BF16_TFLOPS))
  scratch = tempfile.mkdtemp(prefix="gen_jax_gpu_suite_")
  ctx = Context(tiny=FLAGS.tiny, deadline=0.0, peak_tflops=env["peak_bf16_tflops_per_device"],
                num_devices=env["device_count"], platform=env["platform"],
                tiny_shakespeare=FLAGS.tiny_shakespeare, scratch=scratch)
  suite_deadline = suite_start + FLAGS.time_limit
  report = {"tiny": FLAGS.tiny, "time_limit_s": FLAGS.time_limit, "environment": env,
            "parts": [], "wall_s": 0.0}
  try:
    for part in PARTS:
      if FLAGS.parts and part.name not in FLAGS.parts:
        continue
      print(f"\n== {part.name} (cap {part.budget_s * FLAGS.cap_scale:.0f} s)", flush=True)
      row = run_part(part, ctx, suite_deadline)
      report["parts"].append(row)
      report["wall_s"] = time.monotonic() - suite_start
      print(f"   {row['status']}{': ' + row['reason'] if row['reason'] else ''}; "
            f"{row['summary']} [{row['seconds']:.0f} s]", flush=True)
      gpu_report.write_report(FLAGS.out, report)
  finally:
    shutil.rmtree(scratch, ignore_errors=True)
  json_path, md_path = gpu_report.write_report(FLAGS.out, report)
  print("\n" + gpu_report.markdown(report))
  print(f"wrote {json_path} and {md_path}")


if __name__ == "__main__":
  app.run(main)
