"""Writes the SiT SDE-sampler fixture, so tests/methods/test_diffusion_samplers.py can check
gen_jax's 'euler_maruyama' with SiT's settings against the authors' sampler without PyTorch.

  /work/torchvenv/bin/pip install torchdiffeq       # transport/integrators.py imports it
  /work/torchvenv/bin/python tools/make_sit_sde_fixture.py --sit=<willisma/SiT checkout
      or git directory> [--out=tests/fixtures/sit/sde_parity.npz]

Needs torch and torchdiffeq (not gen_jax dependencies) and a copy of willisma/SiT (its
`transport` package is read from there, not committed here). The model is closed-form: the
exact velocity of Gaussian data x ~ N(M, S^2) on SiT's own path (its `compute_alpha_t`,
`compute_sigma_t`), so the only thing under test is the sampler. For the linear and GVP
paths it runs `Sampler(create_transport(path, 'velocity')).sample_sde(...)` with the
defaults of SiT's sample scripts (Euler, diffusion form 'sigma', norm 1, last step 'Mean'
of 0.04, 250 steps) from fixed x_init, with torch.randn replaced by fixed noise, and saves
per path: SiT's time grid, the noise of its 249 Euler-Maruyama steps and the sample.
"""
from __future__ import annotations

import argparse
import importlib
import os
import subprocess
import sys
import tempfile

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "tests", "fixtures", "sit", "sde_parity.npz")
M, S = 0.3, 0.5       # the data's mean and standard deviation (as the test's)
BATCH, STEPS, LAST_STEP = 8, 250, 0.04
PATHS = ("Linear", "GVP")


def import_transport(sit: str):
  """SiT's `transport` package from a checkout, or from HEAD of its git directory."""
  if os.path.isdir(os.path.join(sit, "transport")):
    sys.path.insert(0, sit)
  else:
    tmp = tempfile.mkdtemp()
    os.makedirs(os.path.join(tmp, "transport"))
    for name in ("__init__.py", "integrators.py", "path.py", "transport.py", "utils.py"):
      text = subprocess.run(["git", "--git-dir", sit, "show", f"HEAD:transport/{name}"],
                            check=True, capture_output=True, text=True).stdout
      with open(os.path.join(tmp, "transport", name), "w") as f:
        f.write(text)
    sys.path.insert(0, tmp)
  return importlib.import_module("transport")


def gaussian_velocity(plan):
  """SiT's model(x, t): E[dx_t/dt | x_t] for data N(M, S^2) on `plan` (x_t = alpha_t x_1 +
  sigma_t x_0 with x_1 the data, x_0 the noise, t = 1 the data)."""
  def model(x, t, **kwargs):
    t = t.view(-1, *([1] * (x.dim() - 1)))
    alpha, d_alpha = plan.compute_alpha_t(t)
    sigma, d_sigma = plan.compute_sigma_t(t)
    var = alpha ** 2 * S ** 2 + sigma ** 2
    data = M + alpha * S ** 2 / var * (x - alpha * M)
    noise = sigma / var * (x - alpha * M)
    return d_alpha * data + d_sigma * noise
  return model


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--sit", required=True, help="willisma/SiT checkout or git dir")
  parser.add_argument("--out", default=OUT)
  args = parser.parse_args()
  transport = import_transport(args.sit)

  rng = np.random.default_rng(0)
  out = {"m": np.float32(M), "s": np.float32(S), "last_step": np.float32(LAST_STEP)}
  randn = torch.randn
  for path in PATHS:
    x_init = rng.standard_normal((BATCH, 1, 1, 1)).astype(np.float32)
    noise = rng.standard_normal((STEPS - 1, BATCH, 1, 1, 1)).astype(np.float32)
    draws = iter(torch.from_numpy(n) for n in noise)
    sampler = transport.Sampler(transport.create_transport(path, "velocity"))
    sample_fn = sampler.sample_sde(sampling_method="Euler", diffusion_form="sigma",
                                   diffusion_norm=1.0, last_step="Mean",
                                   last_step_size=LAST_STEP, num_steps=STEPS)
    torch.randn = lambda *a, draws=draws, **k: next(draws)
    try:
      model = gaussian_velocity(sampler.transport.path_sampler)
      xs = sample_fn(torch.from_numpy(x_init), model)
    finally:
      torch.randn = randn
    assert next(draws, None) is None, "SiT drew a different number of noises"
    t0, t1 = sampler.transport.check_interval(0, 0, diffusion_form="sigma", sde=True, eval=True,
                                              last_step_size=LAST_STEP)
    key = path.lower()
    out[f"{key}/sit_times"] = np.append(torch.linspace(t0, t1, STEPS).numpy(), 1.0)
    out[f"{key}/x_init"] = x_init
    out[f"{key}/noise"] = noise
    out[f"{key}/sample"] = xs[-1].numpy()
    print(f"{path}: t from {t0} to {t1}, then 1; sample mean {xs[-1].mean():.4f} "
          f"std {xs[-1].std():.4f}")
  os.makedirs(os.path.dirname(args.out), exist_ok=True)
  np.savez(args.out, **out)
  print("wrote", args.out)


if __name__ == "__main__":
  main()
