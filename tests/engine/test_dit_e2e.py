"""configs/dit.py through launch.py: `--mode=summary` counts the DiT's parameters from shapes
(nothing compiled). Its training and sampling: tests/methods/test_dit_diffusion.py."""
import os
import subprocess
import sys

from smoke import REPO_ROOT


def test_launcher_summary_prints_the_dits_parameter_count(data_dir):
  out = subprocess.run([sys.executable, os.path.join(REPO_ROOT, "launch.py"),
                        "--config=configs/dit.py", f"--config.data.data_dir={data_dir}",
                        "--mode=summary"], capture_output=True, text=True, timeout=300,
                       cwd=REPO_ROOT, env={**os.environ, "JAX_PLATFORMS": "cpu"})
  assert out.returncode == 0, out.stderr[-2000:]
  lines = out.stdout.strip().splitlines()
  assert lines[-1] == "params: 1277472"
  # 4 blocks of adaLN-Zero (6D modulation), the 11-row label table (10 digits + null).
  assert any(line.split()[:2] == ["y_embedder/embedding", "(11,"] for line in lines)
  assert sum(line.startswith("blocks_") and "adaLN_modulation/kernel" in line
             for line in lines) == 4
