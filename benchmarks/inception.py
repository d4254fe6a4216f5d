"""FID Inception-v3 throughput on this machine: features (pool3 + logits) per second.

  python benchmarks/inception.py                         # batch 50, 3 timed calls
  python benchmarks/inception.py --batch=200 --precision=default --size=32

Runs gen_jax's FID Inception (gen_jax/evaluate/inception.py) with random weights (the
throughput does not depend on the values) on `--batch` images of `--size`x`--size` (resized
to 299x299 inside, as for CIFAR-10 samples), through the same jitted entry point the
evaluator uses (`make_apply`, `--chunk` images per pass). Prints the machine (CPU model and
the JAX devices), the compile time, and images/s over `--calls` timed calls after one
warm-up, plus the projected time to embed 50,000 images (one 50k-sample FID, excluding the
sampling). On a machine shared with other jobs, the numbers are lower bounds. The launcher's
XLA options (gen_jax/engine/cpu_flags.py) are applied first and printed, as launch.py runs.
"""
from __future__ import annotations

import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from machine import cpu_description, launcher_xla_flags  # noqa: E402  (benchmarks/machine.py)

from gen_jax.evaluate import inception, inception_weights  # noqa: E402

flags.DEFINE_integer("batch", 50, "images per call")
flags.DEFINE_integer("chunk", 0, "images per network pass inside a call (0 = the batch)")
flags.DEFINE_integer("size", 32, "input height and width before the resize to 299")
flags.DEFINE_integer("calls", 3, "timed calls after the warm-up")
flags.DEFINE_string("precision", "highest", "'highest' (float32) or 'default'")


def main(_):
  f = flags.FLAGS
  xla_flags = launcher_xla_flags()   # before JAX starts a backend (jax.devices() below)
  print(f"machine: {cpu_description()}; JAX {jax.__version__} devices {jax.devices()}; "
        f"XLA_FLAGS={xla_flags!r}")
  state = inception_weights.random_state_dict(inception.torch_shapes(), seed=0)
  apply = inception.make_apply(inception.variables_from_state_dict(state),
                               precision=f.precision, chunk=f.chunk)
  images = jnp.asarray(np.random.default_rng(0).uniform(-1, 1, (f.batch, f.size, f.size, 3)),
                       jnp.float32)
  start = time.perf_counter()
  jax.block_until_ready(apply(images))
  first = time.perf_counter() - start
  times = []
  for _ in range(f.calls):
    start = time.perf_counter()
    jax.block_until_ready(apply(images))
    times.append(time.perf_counter() - start)
  best, median = min(times), float(np.median(times))
  print(f"batch {f.batch} ({f.size}x{f.size} -> 299x299), chunk {f.chunk or f.batch}, "
        f"precision {f.precision}: first call (compile + run) {first:.1f} s; per call median "
        f"{median:.2f} s, best {best:.2f} s")
  print(f"features/s: {f.batch / median:.1f} (median), {f.batch / best:.1f} (best); "
        f"50,000 images: {50_000 / (f.batch / median) / 60:.1f} min")


if __name__ == "__main__":
  app.run(main)
