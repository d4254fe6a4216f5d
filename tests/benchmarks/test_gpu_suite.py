"""benchmarks/gpu_suite.py: its `--tiny` run on the CPU writes a complete report (every part
present, statuses and figures that make sense), its helpers pick the peak, catch running
out of memory and compute MFU, and the GPT's attention option leaves the outputs as they are."""
import json
import os
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from smoke import REPO_ROOT

from benchmarks import gpu_report
from benchmarks.gpu_suite import PARTS
from gen_jax.engine.preemption import StopRequest
from gen_jax.models.gpt import GPT


@pytest.fixture(scope="module")
def tiny_report(tmp_path_factory):
  out = tmp_path_factory.mktemp("gpu_suite")
  env = {**os.environ, "PYTHONPATH": REPO_ROOT,
         "JAX_COMPILATION_CACHE_DIR": os.environ.get("GEN_JAX_TEST_XLA_CACHE", ""),
         "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0"}
  env.pop("OUT", None)
  proc = subprocess.run([sys.executable, os.path.join(REPO_ROOT, "benchmarks", "gpu_suite.py"),
                         "--tiny", f"--out={out}", "--time_limit=3600", "--cap_scale=20"],
                        cwd=REPO_ROOT, env=env,
                        capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
  with open(out / "gpu_results.json") as f:
    report = json.load(f)
  return report, (out / "gpu_results.md").read_text(), proc.stdout


def test_tiny_run_reports_every_part_with_sane_figures(tiny_report):
  report, markdown, stdout = tiny_report
  env = report["environment"]
  assert report["tiny"] is True
  assert env["platform"] == "cpu" and env["device_count"] >= 1 and env["jax"] == jax.__version__
  assert env["peak_bf16_tflops_per_device"] is None   # a CPU is not in the peak table
  assert "--xla_cpu_experimental_ynn_fusion_type" in env["xla_flags"]   # launch.py's options
  assert "XLA_FLAGS:" in stdout
  parts = {p["name"]: p for p in report["parts"]}
  assert list(parts) == [p.name for p in PARTS]
  for name in ("gpt2_124m", "shakespeare_char", "ddpm_cifar10", "inception"):
    assert parts[name]["status"] == "ok", parts[name]
    assert parts[name]["goal_met"] is None   # goals are GPU goals: not judged on a tiny run
  gpt2 = parts["gpt2_124m"]["figures"]
  assert gpt2["tokens_per_s"] > 0 and gpt2["steps_per_s"] > 0 and gpt2["compile_s"] > 0
  assert gpt2["tokens_per_s"] == pytest.approx(gpt2["steps_per_s"] * gpt2["tokens_per_step"])
  assert gpt2["mfu"] is None                       # no peak known for a CPU
  assert gpt2["model_flops_per_step"] > 0 and np.isfinite(gpt2["loss"])
  assert gpt2["batches_tried"] == [{"batch": gpt2["per_device_batch"], "result": "ran"}]
  assert "implementation=None" in gpt2["attention"] and gpt2["cudnn_fused_attention"] is False
  text = parts["shakespeare_char"]["figures"]
  assert text["steps"] == text["num_steps"] and text["final_val_step"] == text["num_steps"]
  assert 0 < text["final_val_loss"] < 10 and text["wall_s"] > 0
  ddpm = parts["ddpm_cifar10"]["figures"]
  assert ddpm["steps_per_s"] > 0 and ddpm["xla_flops_per_step"] > 0 and ddpm["mfu"] is None
  assert parts["inception"]["figures"]["highest"]["features_per_s"] > 0
  # A cuDNN kernel needs a GPU; DiT and EDM do not exist yet: skipped, saying why.
  assert parts["gpt2_124m_cudnn"]["status"] == "skipped"
  assert "GPU" in parts["gpt2_124m_cudnn"]["reason"]
  for name in ("dit_b2", "dit_xl2", "edm_heun35"):
    assert (parts[name]["status"], parts[name]["reason"]) == ("skipped", "not built yet")
  for part in report["parts"]:
    assert f"| {part['title']} | {part['status']}" in markdown


def test_peak_table_and_mfu():
  assert gpu_report.peak_tflops("NVIDIA H100 80GB HBM3") == 989.0
  assert gpu_report.peak_tflops("NVIDIA H100 PCIe") == 756.0
  assert gpu_report.peak_tflops("NVIDIA H200") == 989.0
  assert gpu_report.peak_tflops("cpu") is None
  # 494.5 TFLOP per step at one step/s on one 989 TFLOP/s device: half the peak.
  assert gpu_report.mfu(494.5e12, 1.0, 989.0, 1) == pytest.approx(0.5)
  assert gpu_report.mfu(494.5e12, 1.0, 989.0, 2) == pytest.approx(0.25)
  assert gpu_report.mfu(1e12, 1.0, None, 1) is None


def test_largest_fitting_batch_steps_down_past_out_of_memory():
  def attempt(batch):
    if batch > 8:
      raise RuntimeError("RESOURCE_EXHAUSTED: Out of memory while trying to allocate 9.1GiB")
    return {"batch_seen": batch}

  far = float("inf")
  batch, figures, tried = gpu_report.largest_fitting_batch([32, 16, 8, 4], attempt, far)
  assert (batch, figures) == (8, {"batch_seen": 8})
  assert [t["result"] for t in tried] == ["out of memory", "out of memory", "ran"]
  with pytest.raises(gpu_report.NoBatchFits, match="32: out of memory"):
    gpu_report.largest_fitting_batch([32, 16], attempt, far)
  with pytest.raises(ValueError):   # only running out of memory moves on to a smaller batch
    gpu_report.largest_fitting_batch([4], lambda b: (_ for _ in ()).throw(ValueError("bug")),
                                     far)


def test_gpt_attention_impl_xla_matches_the_default():
  """The model option the suite's cuDNN part uses: 'xla' is what None runs today, equal in
  outputs and gradients (the 'cudnn' kernel itself needs a GPU)."""
  tokens = jax.random.randint(jax.random.key(0), (2, 16), 0, 50)
  default = GPT(vocab_size=50, block_size=16, n_layer=1, n_head=2, n_embd=16)
  xla = default.clone(attention_impl="xla")
  params = default.init(jax.random.key(1), tokens)

  def loss(model, p):
    return jnp.mean(model.apply(p, tokens) ** 2)

  np.testing.assert_array_equal(default.apply(params, tokens), xla.apply(params, tokens))
  g_default, g_xla = jax.grad(lambda p: loss(default, p))(params), jax.grad(
      lambda p: loss(xla, p))(params)
  jax.tree.map(np.testing.assert_array_equal, g_default, g_xla)
  with pytest.raises(ValueError, match="attention_impl"):
    default.clone(attention_impl="flash").init(jax.random.key(1), tokens)
  if jax.devices()[0].platform == "cpu":   # the option reaches jax: no cuDNN on a CPU
    with pytest.raises(RuntimeError, match="cuDNN"):
      default.clone(attention_impl="cudnn", dtype=jnp.bfloat16).apply(params, tokens)


def test_stopped_at_reaches_the_training_loops_stop_request():
  """shakespeare_char's cap: SIGTERM at the deadline, ignored until the loop's handler is
  installed (the process lives through compilation), then the loop's stop request."""
  stop = StopRequest()
  with gpu_report.stopped_at(time.monotonic() + 0.05):
    time.sleep(0.3)   # the first signal lands here, before the loop's handler
    with stop.installed():
      give_up = time.monotonic() + 20
      while not stop.requested and time.monotonic() < give_up:
        time.sleep(0.05)
  assert stop.requested
