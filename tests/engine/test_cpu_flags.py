"""The XLA:CPU options launch.py sets (gen_jax/engine/cpu_flags.py)."""
import os
import subprocess
import sys

from gen_jax.engine.cpu_flags import YNN_FUSION_FLAG, cpu_xla_flags


def test_flag_added_once_and_user_flags_kept():
  assert cpu_xla_flags("", (0, 10)) == YNN_FUSION_FLAG
  ours = cpu_xla_flags("--xla_force_host_platform_device_count=8", (0, 10))
  assert ours.split() == ["--xla_force_host_platform_device_count=8", YNN_FUSION_FLAG]
  assert cpu_xla_flags(ours, (0, 10)) == ours
  # A user's own choice of YNNPACK fusions wins; releases it was not measured on (older
  # ones may not know the option, newer ones may have renamed it) get nothing.
  mine = "--xla_cpu_experimental_ynn_fusion_type="
  assert cpu_xla_flags(mine, (0, 10)) == mine
  assert cpu_xla_flags("", (0, 9)) == "" and cpu_xla_flags("", (0, 11)) == ""


def test_installed_xla_accepts_the_flag():
  """XLA aborts on an option it does not know: a computation with a convolution and a dot
  runs and is right under the launcher's XLA_FLAGS."""
  script = (
      "import jax, jax.numpy as jnp, numpy as np\n"
      "x = jnp.ones((2, 6, 6, 3)); k = jnp.ones((3, 3, 3, 4))\n"
      "f = lambda x, k: jax.lax.conv_general_dilated(x, k, (1, 1), 'VALID', "
      "dimension_numbers=('NHWC', 'HWIO', 'NHWC')) @ jnp.ones((4, 2))\n"
      "np.testing.assert_allclose(jax.jit(f)(x, k), np.full((2, 4, 4, 2), 108.0))\n"
      "print('ok')\n")
  from gen_jax.engine.cpu_flags import _jaxlib_version
  env = {**os.environ, "JAX_PLATFORMS": "cpu",
         "XLA_FLAGS": cpu_xla_flags(os.environ.get("XLA_FLAGS", ""), _jaxlib_version())}
  out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True,
                       timeout=300)
  assert out.returncode == 0 and "ok" in out.stdout, out.stderr[-2000:]
