"""Writes the EDM and flow-matching parity fixtures, so tests/methods/test_edm.py and
tests/methods/test_flow.py can check gen_jax against the authors' released code without
PyTorch.

  /work/torchvenv/bin/python tools/make_diffusion_parity.py \
      --edm=/path/to/NVlabs/edm --sit=/path/to/willisma/SiT \
      --torchcfm=/path/to/atong01/conditional-flow-matching

Each path is a git checkout (or bare clone) of the repository; the used files of its HEAD
(`SOURCES`) are exported into a temporary directory and the reference code imported from
there, unchanged. Needs torch and numpy only: the third-party imports the used code never
calls (requests in EDM's dnnlib; POT in torchcfm's optimal_transport.py; torchdiffeq and
tqdm in SiT's integrators.py) are replaced by stand-ins, and `edm_sampler` is taken from
generate.py by itself (the script's click/PIL command line is not imported).

tests/fixtures/diffusion_parity/edm.npz (NVlabs/edm):
- a tiny fixed network F(x_in, c_noise) = tanh(x_in W + b + a c_noise) per pixel (W mixes
  channels; W, b, a stored), wrapped by `EDMPrecond` (training/networks.py);
- `EDMPrecond` on images at noise levels from 0.003 to 60;
- `EDMLoss` (training/loss.py) with its random draws (rnd_normal and the unit noise) stored;
- `edm_sampler` (generate.py) from fixed latents: the deterministic 18-step sampler, and a
  6-step one with S_churn = 40 inside [S_min, S_max] = [0.05, 30] and S_noise = 1.003, with
  the per-step draws of `randn_like` stored.
Images are stored NHWC (gen_jax's layout); the reference runs NCHW.

tests/fixtures/diffusion_parity/flow.npz (willisma/SiT and torchcfm), at fixed data x1,
noise x0, times t (in each code's own direction: data at t = 1):
- SiT's `ICPlan` and `GVPCPlan`: alpha_t, sigma_t and derivatives, `plan` (x_t, u_t),
  `compute_drift`, `get_score_from_velocity`, `get_noise_from_velocity`,
  `get_velocity_from_score` on a fixed model output, `Transport.training_losses` for every
  prediction x weight (its t and x0 draws fixed), and the ODE drift of `get_drift`;
- torchcfm's `ConditionalFlowMatcher` (sigma = 0), `TargetConditionalFlowMatcher` (Lipman
  et al., sigma = 0.1) and `VariancePreservingConditionalFlowMatcher`: `sample_xt` and
  `compute_conditional_flow` with the epsilon stored.
"""
from __future__ import annotations

import argparse
import ast
import importlib
import os
import subprocess
import sys
import tempfile
import types

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "tests", "fixtures", "diffusion_parity")


# The reference files each repository's used code needs (a clone may lack large assets).
SOURCES = {"edm": ("generate.py", "training", "torch_utils", "dnnlib"),
           "sit": ("transport",), "torchcfm": ("torchcfm",)}


def export_head(repo: str, dest: str, paths: tuple[str, ...]) -> str:
  """Exports `paths` of the HEAD tree of git repository `repo` into `dest`; returns the
  commit id."""
  os.makedirs(dest, exist_ok=True)
  archive = subprocess.run(["git", "-C", repo, "archive", "HEAD", "--", *paths], check=True,
                           capture_output=True).stdout
  subprocess.run(["tar", "-x", "-C", dest], input=archive, check=True)
  return subprocess.run(["git", "-C", repo, "rev-parse", "HEAD"], check=True,
                        capture_output=True, text=True).stdout.strip()


def stub_modules(*names: str) -> None:
  """Stand-ins for modules whose functions the used reference code imports but never calls:
  every attribute is a function that raises."""
  def missing(module_name: str, attr: str):
    def call(*args, **kwargs):
      raise NotImplementedError(f"{module_name}.{attr} is not available here")
    return call

  for name in names:
    module = types.ModuleType(name)
    module.__getattr__ = lambda attr, _name=name: missing(_name, attr)
    sys.modules[name] = module


def function_from_source(path: str, name: str, namespace: dict):
  """Defines the top-level function `name` of the file at `path` in `namespace`."""
  with open(path) as f:
    tree = ast.parse(f.read())
  node = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == name)
  exec(compile(ast.Module(body=[node], type_ignores=[]), path, "exec"), namespace)
  return namespace[name]


def nhwc(t: torch.Tensor) -> np.ndarray:
  return t.detach().to(torch.float64).permute(0, 2, 3, 1).numpy()


# ---------------------------------------------------------------------------------- EDM


class TinyNet(torch.nn.Module):
  """F(x_in, c_noise)[b, c] = tanh(sum_k x_in[b, k] W[k, c] + b[c] + a[c] c_noise[b])."""

  def __init__(self, img_resolution, in_channels, out_channels, label_dim=0, *, W, b, a):
    super().__init__()
    del img_resolution, in_channels, out_channels, label_dim
    self.W, self.b, self.a = W, b, a

  def forward(self, x, noise_labels, class_labels=None, augment_labels=None):
    del class_labels, augment_labels
    y = torch.einsum("bkhw,kc->bchw", x, self.W)
    y = y + self.b[None, :, None, None] + self.a[None, :, None, None] * noise_labels[:, None,
                                                                                     None, None]
    return torch.tanh(y)


def edm_fixture(edm_dir: str) -> dict[str, np.ndarray]:
  stub_modules("requests")   # dnnlib/util.py's downloads
  sys.path.insert(0, edm_dir)
  networks = importlib.import_module("training.networks")
  loss_lib = importlib.import_module("training.loss")
  edm_sampler = function_from_source(os.path.join(edm_dir, "generate.py"), "edm_sampler",
                                     {"torch": torch, "np": np})
  gen = torch.Generator().manual_seed(0)
  B, C, R = 3, 3, 4
  W = torch.randn(C, C, generator=gen) * 0.8
  b = torch.randn(C, generator=gen) * 0.2
  a = torch.randn(C, generator=gen) * 0.5
  networks.TinyNet = TinyNet
  net = networks.EDMPrecond(img_resolution=R, img_channels=C, model_type="TinyNet",
                            W=W, b=b, a=a).eval()
  out = {"net_W": W.numpy(), "net_b": b.numpy(), "net_a": a.numpy()}

  # EDMPrecond at sigma across the sampler's range.
  x = torch.randn(B, C, R, R, generator=gen) * 3.0
  sigma = torch.tensor([0.003, 0.9, 60.0])
  with torch.no_grad():
    out.update(precond_x=nhwc(x), precond_sigma=sigma.numpy(), precond_D=nhwc(net(x, sigma)))

  # EDMLoss: draw its rnd_normal and noise from a seed, then rerun it with the same seed.
  y = torch.rand(B, C, R, R, generator=gen) * 2 - 1
  torch.manual_seed(1)
  rnd_normal = torch.randn([B, 1, 1, 1])
  noise = torch.randn_like(y)
  torch.manual_seed(1)
  with torch.no_grad():
    loss = loss_lib.EDMLoss()(net, y)
  out.update(loss_images=nhwc(y), loss_rnd_normal=rnd_normal.reshape(B).numpy(),
             loss_noise=nhwc(noise), loss_value=nhwc(loss))

  # edm_sampler: deterministic (Alg. 1 with the defaults) and with churn.
  latents = torch.randn(B, C, R, R, generator=gen)
  with torch.no_grad():
    x_det = edm_sampler(net, latents)
  steps = 6
  churn_noise = torch.randn(steps, B, C, R, R, generator=gen, dtype=torch.float64)
  draws = iter(churn_noise)
  with torch.no_grad():
    x_churn = edm_sampler(net, latents, randn_like=lambda _: next(draws), num_steps=steps,
                          S_churn=40.0, S_min=0.05, S_max=30.0, S_noise=1.003)
  out.update(sampler_latents=nhwc(latents), sampler_deterministic=nhwc(x_det),
             churn_num_steps=np.int64(steps), churn_noise=churn_noise.permute(0, 1, 3, 4, 2)
             .numpy(), sampler_churn=nhwc(x_churn))
  sys.path.remove(edm_dir)
  return out


# --------------------------------------------------------------------------------- flows


def sit_fixture(sit_dir: str, x1, x0, t, model_out) -> dict[str, np.ndarray]:
  stub_modules("torchdiffeq", "tqdm")
  sys.path.insert(0, sit_dir)
  transport = importlib.import_module("transport")
  path = importlib.import_module("transport.path")
  out = {}
  for name, plan in (("linear", path.ICPlan()), ("gvp", path.GVPCPlan())):
    tx = path.expand_t_like_x(t, x1)
    alpha, d_alpha = plan.compute_alpha_t(tx)
    sigma, d_sigma = plan.compute_sigma_t(tx)
    _, xt, ut = plan.plan(t, x0, x1)
    minus_drift, diffusion = plan.compute_drift(xt, t)
    out.update({
        f"sit_{name}_alpha": torch.as_tensor(alpha).expand_as(tx).numpy(),
        f"sit_{name}_d_alpha": torch.as_tensor(d_alpha, dtype=torch.float32).expand_as(tx)
        .numpy(),
        f"sit_{name}_sigma": torch.as_tensor(sigma).expand_as(tx).numpy(),
        f"sit_{name}_d_sigma": torch.as_tensor(d_sigma, dtype=torch.float32).expand_as(tx)
        .numpy(),
        f"sit_{name}_xt": xt.numpy(), f"sit_{name}_ut": ut.numpy(),
        f"sit_{name}_minus_drift": minus_drift.numpy(),
        f"sit_{name}_diffusion": torch.as_tensor(diffusion).expand_as(tx).numpy(),
        f"sit_{name}_score_from_velocity": plan.get_score_from_velocity(model_out, xt, t)
        .numpy(),
        f"sit_{name}_noise_from_velocity": plan.get_noise_from_velocity(model_out, xt, t)
        .numpy(),
        f"sit_{name}_velocity_from_score": plan.get_velocity_from_score(model_out, xt, t)
        .numpy(),
    })
    for prediction in ("velocity", "score", "noise"):
      model = lambda x, t_, **kw: model_out
      for weight in (None, "velocity", "likelihood"):
        tr = transport.create_transport(path_type={"linear": "Linear", "gvp": "GVP"}[name],
                                        prediction=prediction, loss_weight=weight)
        tr.sample = lambda x1_: (t, x0, x1_)
        loss = tr.training_losses(model, x1)["loss"]
        out[f"sit_{name}_{prediction}_{weight or 'none'}_loss"] = loss.numpy()
      drift = transport.create_transport(
          path_type={"linear": "Linear", "gvp": "GVP"}[name], prediction=prediction
      ).get_drift()
      out[f"sit_{name}_{prediction}_ode_drift"] = drift(xt, t, model).numpy()
  sys.path.remove(sit_dir)
  return out


def torchcfm_fixture(cfm_dir: str, x1, x0, t, eps) -> dict[str, np.ndarray]:
  stub_modules("ot")
  sys.path.insert(0, cfm_dir)
  cfm = importlib.import_module("torchcfm.conditional_flow_matching")
  out = {}
  for name, matcher in (("cfm", cfm.ConditionalFlowMatcher(sigma=0.0)),
                        ("lipman", cfm.TargetConditionalFlowMatcher(sigma=0.1)),
                        ("vp", cfm.VariancePreservingConditionalFlowMatcher(sigma=0.0))):
    xt = matcher.sample_xt(x0, x1, t, eps)
    out[f"cfm_{name}_xt"] = xt.numpy()
    out[f"cfm_{name}_ut"] = matcher.compute_conditional_flow(x0, x1, t, xt).numpy()
  sys.path.remove(cfm_dir)
  return out


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--edm", required=True, help="git repository of NVlabs/edm")
  parser.add_argument("--sit", required=True, help="git repository of willisma/SiT")
  parser.add_argument("--torchcfm", required=True,
                      help="git repository of atong01/conditional-flow-matching")
  args = parser.parse_args()
  torch.set_default_dtype(torch.float32)
  os.makedirs(OUT, exist_ok=True)
  with tempfile.TemporaryDirectory() as tmp:
    commits = {name: export_head(repo, os.path.join(tmp, name), SOURCES[name])
               for name, repo in (("edm", args.edm), ("sit", args.sit),
                                  ("torchcfm", args.torchcfm))}
    edm = edm_fixture(os.path.join(tmp, "edm"))
    edm["commit"] = np.array(commits["edm"])
    np.savez_compressed(os.path.join(OUT, "edm.npz"), **edm)

    gen = torch.Generator().manual_seed(2)
    B, R, C = 4, 2, 3   # elementwise maps: any layout; NHWC as gen_jax's images
    x1 = torch.rand(B, R, R, C, generator=gen) * 2 - 1       # data (t = 1 in these codes)
    x0 = torch.randn(B, R, R, C, generator=gen)              # noise (t = 0)
    eps = torch.randn(B, R, R, C, generator=gen)             # torchcfm's epsilon
    t = torch.tensor([0.05, 0.3, 0.62, 0.97])
    model_out = torch.randn(B, R, R, C, generator=gen)
    flow = {"x1": x1.numpy(), "x0": x0.numpy(), "eps": eps.numpy(), "t": t.numpy(),
            "model_out": model_out.numpy(), "sit_commit": np.array(commits["sit"]),
            "torchcfm_commit": np.array(commits["torchcfm"])}
    flow.update(sit_fixture(os.path.join(tmp, "sit"), x1, x0, t, model_out))
    flow.update(torchcfm_fixture(os.path.join(tmp, "torchcfm"), x1, x0, t, eps))
    np.savez_compressed(os.path.join(OUT, "flow.npz"), **flow)
  for name in ("edm.npz", "flow.npz"):
    print(name, os.path.getsize(os.path.join(OUT, name)), "bytes")


if __name__ == "__main__":
  main()
