"""Plots sample quality against network evaluations (NFE) from a sampler-only sweep.

  python tools/plot_nfe_fid.py runs/nfe_mnist5k_eval docs/images/nfe_fid_mnist5k.png

Reads every run below the directory (the sweeps of experiments/nfe_comparison/mnist_5k.py:
nfe=<model>), takes each run's process, sampler and steps from its config.json and its final
FID from metrics.jsonl (the metric whose name starts with `eval/ema/fid_`), counts its NFE with
`samplers.num_evaluations` on the sampler's time grid (the discrete DDPM's DDIM: one per
step), writes one line per (process, sampler) into a log-x PNG and prints a markdown table
of FID by NFE.
"""
from __future__ import annotations

import argparse
import collections
import math

import matplotlib

matplotlib.use("Agg")   # files only, no display
from matplotlib import pyplot as plt  # noqa: E402  (after choosing the backend)

from gen_jax.engine import report  # noqa: E402
from gen_jax.experiments.nfe_comparison import mnist_5k  # noqa: E402
from gen_jax.methods.diffusion import samplers  # noqa: E402

LABELS = {
    ("ddpm", "ddim"): "DDPM, DDIM (eta = 0)",
    ("edm", "edm_heun"): "EDM, Heun (Karras et al. Alg. 1)",
    ("linear", "euler"): "rectified flow, Euler",
    ("linear", "heun"): "rectified flow, Heun",
}


def evaluations(process: str, prediction: str, sampler: str, steps: int) -> int:
  """Network evaluations per sample of one sweep member (the discrete DDPM: one per step)."""
  if process == "ddpm":
    return steps
  times = samplers.time_grid(process, steps, prediction, sampler)
  return samplers.num_evaluations(sampler, times)


def final_fid(run: report.RunRecord) -> float:
  """The last logged `eval/ema/fid_*` of a run (nan when it has none)."""
  for row in reversed(run.rows):
    for name, value in row.items():
      if name.startswith("eval/ema/fid_") and isinstance(value, (int, float)):
        return float(value)
  return math.nan


def main() -> None:
  parser = argparse.ArgumentParser(description="FID against NFE of a sampler-only sweep.")
  parser.add_argument("sweep_dir")
  parser.add_argument("out_png")
  args = parser.parse_args()

  curves: dict[tuple[str, str], list[tuple[int, float]]] = collections.defaultdict(list)
  for path in report.find_runs(args.sweep_dir):
    run = report.load_run(path, path.parent)
    c = run.config
    key = (c["diffusion.process"], c["sample.sampler"])
    nfe = evaluations(key[0], c["diffusion.prediction"], key[1], int(c["sample.steps"]))
    fid = final_fid(run)
    if math.isfinite(fid):   # a run not evaluated yet has none
      curves[key].append((nfe, fid))

  fig, ax = plt.subplots(figsize=(5.2, 3.6), dpi=100)
  for key in LABELS:
    if key not in curves:
      continue
    points = sorted(curves[key])
    ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", markersize=3,
            label=LABELS[key])
  ax.set_xscale("log")
  ax.set_yscale("log")
  ax.set_xlabel("network evaluations per sample (NFE)")
  ax.set_ylabel("FID, MNIST-classifier features")
  ax.grid(True, which="both", alpha=0.3)
  ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(args.out_png)

  # One column per grid point: the one-step samplers' NFE / Heun's.
  heun_nfe = [2 * s - 1 for s in mnist_5k.HEUN_STEPS]
  header = [f"{a} / {b}" if a != b else str(a) for a, b in zip(mnist_5k.STEPS, heun_nfe,
                                                               strict=True)]
  print("| FID at NFE (DDIM, Euler / Heun) | " + " | ".join(header) + " |")
  print("|---" * (len(header) + 1) + "|")
  for key in LABELS:
    if key in curves:
      fids = dict(curves[key])
      nfes = heun_nfe if key[1] in ("heun", "edm_heun") else mnist_5k.STEPS
      cells = [f"{fids[n]:.1f}" if n in fids else "" for n in nfes]
      print(f"| {LABELS[key]} | " + " | ".join(cells) + " |")

if __name__ == "__main__":
  main()
