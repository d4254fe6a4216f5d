"""The smoke configs the end-to-end tests run (importable from subprocess tests too)."""
import importlib.util
import os
import sys

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(REPO_ROOT, "tests", "fixtures")   # small committed parity files
if REPO_ROOT not in sys.path:   # gen_jax (and its configs) from this checkout
  sys.path.insert(0, REPO_ROOT)


def load_config(name: str, arg: str = "smoke", **overrides):
  """configs/<name>.py:get_config(arg) with dotted-key overrides, e.g. {'train.num_steps': 6}."""
  config_path = os.path.join(REPO_ROOT, "configs", f"{name}.py")
  spec = importlib.util.spec_from_file_location(name, config_path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config(arg)
  for key, value in overrides.items():
    *parents, leaf = key.split(".")
    node = config
    for p in parents:
      node = node[p]
    node[leaf] = value
  return config


def train_losses(workdir) -> dict[int, float]:
  from gen_jax.engine.outputs import read_metrics
  return {row["step"]: row["train/loss"] for row in read_metrics(workdir) if "train/loss" in row}


_FAKE_DEVICES_PREAMBLE = """
import json, sys
sys.path.insert(0, {tests!r}); sys.path.insert(0, {root!r})
import jax
jax.config.update("jax_compilation_cache_dir", {cache!r})
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
assert jax.device_count() == {devices}, jax.devices()
from smoke import load_config, train_losses
from gen_jax.engine import train
from gen_jax.engine.outputs import read_metrics
"""


def run_on_fake_devices(body: str, devices: int = 8, timeout: int = 600):
  """Runs the Python source `body` in a fresh interpreter with `devices` fake CPU devices
  and returns the JSON it printed after "RESULT".

  `body` runs after a preamble that shares the tests' XLA compilation cache and imports
  `json`, `jax`, `load_config`, `train_losses`, `train` and `read_metrics`.
  """
  import json
  import subprocess
  script = _FAKE_DEVICES_PREAMBLE.format(
      tests=os.path.dirname(os.path.abspath(__file__)), root=REPO_ROOT, devices=devices,
      cache=os.environ.get("GEN_JAX_TEST_XLA_CACHE", "")) + body
  env = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}",
         "JAX_PLATFORMS": "cpu"}
  out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                       text=True, timeout=timeout)
  assert out.returncode == 0, out.stderr[-3000:]
  return json.loads(out.stdout.split("RESULT", 1)[1])
