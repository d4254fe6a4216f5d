"""`--mode=report`: one table, learning curves and a sample sheet over a directory of runs.

For every run below the directory (a folder with a `config.json`), one row: the config
fields that differ between the runs, status (done, running, stopped, failed), steps done,
wall time, and for each eval metric that differs between the runs its final value and,
when it was logged more than once, its best value with its step.
Writes `report.md` (the table and the pictures), `report.csv`, `curve_<metric>.png` (one
figure per metric, one line per run, labelled by its varied fields) and `samples.png`
(each run's last sample grid side by side).
"""
from __future__ import annotations

import csv
import dataclasses
import io
import math
import re
from typing import Any

import matplotlib
import numpy as np
from etils import epath
from PIL import Image

matplotlib.use("Agg")   # files only, no display
from matplotlib import pyplot as plt  # noqa: E402  (after choosing the backend)

from gen_jax.core.errors import UserError
from gen_jax.engine import workdir as workdir_lib
from gen_jax.engine.outputs import read_metrics

# Metrics where larger is better; all others (losses, FID, KID, bits/dim, NLL) are minimized.
HIGHER_IS_BETTER = ("accuracy", "precision", "recall", "elbo", "psnr", "ssim", "confidence",
                    "coverage", "inception_score", "agreement")


class NoRunsError(UserError, FileNotFoundError):
  """The directory given to `--mode=report` holds no run."""


@dataclasses.dataclass
class RunRecord:
  name: str                      # path relative to the report directory
  path: epath.Path
  config: dict[str, Any]         # flattened saved config
  rows: list[dict]               # metrics.jsonl
  status: str
  steps: int
  wall_seconds: float | None
  error: str | None


def find_runs(directory: str | epath.Path, max_depth: int = 3) -> list[epath.Path]:
  """Run directories (holding `config.json`) at or below `directory`, sorted."""
  root = epath.Path(directory)
  if (root / workdir_lib.CONFIG).exists():
    return [root]
  found, frontier = [], [root]
  for _ in range(max_depth):
    nxt = []
    for d in frontier:
      for child in sorted(p for p in d.iterdir() if p.is_dir()):
        (found if (child / workdir_lib.CONFIG).exists() else nxt).append(child)
    frontier = nxt
  return sorted(found)


def load_run(path: epath.Path, root: epath.Path) -> RunRecord:
  config = workdir_lib.flatten(workdir_lib.load_saved_config(path))
  rows = read_metrics(path)
  try:
    status: dict[str, Any] = workdir_lib.read_status(path) or {}
  except workdir_lib.DamagedStatusError as e:   # that run is listed as such; the others go on
    status = {"status": "damaged", "error": str(e)}
  steps = max([r["step"] for r in rows] + [int(status.get("step", 0))])
  name = str(path.relative_to(root)) if path != root else path.name
  return RunRecord(name=name, path=path, config=config, rows=rows,
                   status=status.get("status", "unknown"), steps=steps,
                   wall_seconds=status.get("wall_seconds"), error=status.get("error"))


def varied_fields(runs: list[RunRecord]) -> list[str]:
  """Config fields whose values differ between the runs (not the hardware layout)."""
  fields = sorted(set().union(*(r.config for r in runs)))
  return [f for f in fields if not workdir_lib.matches(f, workdir_lib.LAYOUT)
          and len({repr(r.config.get(f)) for r in runs}) > 1]


def higher_is_better(metric: str) -> bool:
  name = metric.rsplit("/", 1)[-1]
  return any(name.startswith(p) or f"_{p}" in f"_{name}" for p in HIGHER_IS_BETTER)


def metric_names(runs: list[RunRecord]) -> list[str]:
  """'train/loss' and every eval metric logged by any run, sorted."""
  names = {k for r in runs for row in r.rows for k, v in row.items()
           if k.startswith("eval/") and isinstance(v, (int, float))}
  return ["train/loss"] + sorted(names)


def series(run: RunRecord, metric: str) -> tuple[np.ndarray, np.ndarray]:
  pts = [(row["step"], row[metric]) for row in run.rows
         if metric in row and isinstance(row[metric], (int, float)) and math.isfinite(row[metric])]
  steps, values = zip(*pts, strict=True) if pts else ((), ())
  return np.asarray(steps), np.asarray(values, np.float64)


def final_and_best(run: RunRecord, metric: str) -> dict[str, Any]:
  steps, values = series(run, metric)
  if not len(values):
    return {}
  best = int(np.argmax(values) if higher_is_better(metric) else np.argmin(values))
  return {"final": float(values[-1]), "final_step": int(steps[-1]),
          "best": float(values[best]), "best_step": int(steps[best])}


def _fmt(v: Any) -> str:
  if isinstance(v, float):
    return f"{v:.4g}"
  if isinstance(v, (list, tuple)):
    return "(" + ",".join(_fmt(x) for x in v) + ")"
  return "" if v is None else str(v)


def _duration(seconds: float | None) -> str:
  if seconds is None:
    return ""
  m, s = divmod(int(seconds), 60)
  h, m = divmod(m, 60)
  return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"


def table_metrics(runs: list[RunRecord], metrics: list[str]) -> list[str]:
  """The metrics worth a column: with several runs, those whose final values differ
  (e.g. not the reference set's own scores, the same for every run)."""
  if len(runs) < 2:
    return metrics
  return [m for m in metrics
          if len({_fmt(final_and_best(r, m).get("final")) for r in runs}) > 1]


def table(runs: list[RunRecord], fields: list[str],
          metrics: list[str]) -> tuple[list[str], list[list[str]]]:
  """Header and rows of the report table (strings). A metric gets a final-value column,
  and a best-value one (with its step) when some run logged it more than once."""
  header = ["run", *workdir_lib.short_names(fields), "status", "steps", "wall"]
  with_best = [any(len(series(r, m)[1]) > 1 for r in runs) for m in metrics]
  for m, best in zip(metrics, with_best, strict=True):
    name = m.removeprefix("eval/")
    header += [f"{name} final", f"{name} best (step)"] if best else [name]
  rows = []
  for r in runs:
    row = [r.name, *(_fmt(r.config.get(f)) for f in fields), r.status, str(r.steps),
           _duration(r.wall_seconds)]
    for m, best in zip(metrics, with_best, strict=True):
      fb = final_and_best(r, m)
      row.append(_fmt(fb.get("final")))
      if best:
        row.append(f"{_fmt(fb['best'])} ({fb['best_step']})" if fb else "")
    rows.append(row)
  return header, rows


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
  return "\n".join(lines)


def plain_table(header: list[str], rows: list[list[str]]) -> str:
  widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(header)]
  fmt = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()
  return "\n".join([fmt(header)] + [fmt(row) for row in rows])


def label(run: RunRecord, fields: list[str]) -> str:
  shorts = workdir_lib.short_names(fields)
  return ",".join(f"{short}={_fmt(run.config.get(f))}"
                  for f, short in zip(fields, shorts, strict=True)) or run.name


def plot_curves(runs: list[RunRecord], fields: list[str], metrics: list[str],
                out_dir: epath.Path) -> list[epath.Path]:
  """One PNG per metric: its value over steps, one line per run."""
  paths = []
  for metric in metrics:
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    drawn = 0
    for r in runs:
      steps, values = series(r, metric)
      if len(values):
        ax.plot(steps, values, marker="o" if len(values) < 20 else None, markersize=3,
                label=label(r, fields))
        drawn += 1
    if not drawn:
      plt.close(fig)
      continue
    ax.set_xlabel("step")
    ax.set_ylabel(metric)
    ax.set_title(metric)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    path = out_dir / f"curve_{re.sub(r'[^A-Za-z0-9]+', '_', metric).strip('_')}.png"
    fig.savefig(str(path), dpi=110)
    plt.close(fig)
    paths.append(path)
  return paths


def last_sample_grid(run: RunRecord) -> epath.Path | None:
  """The newest sample grid of a run (N largest): `samples/step_<N>.png`, or
  `samples/step_<N>_samples.png` where a family writes extra grids beside its samples."""
  grids = [(int(m.group(1)), p) for p in (run.path / "samples").glob("step_*.png")
           if (m := re.fullmatch(r"step_(\d+)(?:_samples)?\.png", p.name))]
  return max(grids)[1] if grids else None


def sample_sheet(runs: list[RunRecord], fields: list[str],
                 out_dir: epath.Path) -> epath.Path | None:
  """The runs' last sample grids side by side, each titled by its run and step."""
  grids = [(r, g) for r in runs if (g := last_sample_grid(r)) is not None]
  if not grids:
    return None
  cols = min(len(grids), 4)
  rows = math.ceil(len(grids) / cols)
  fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3.5 * rows), squeeze=False)
  for ax in axes.ravel():
    ax.axis("off")
  for ax, (r, g) in zip(axes.ravel(), grids, strict=False):
    image = np.asarray(Image.open(str(g)))
    ax.imshow(image, cmap="gray" if image.ndim == 2 else None, vmin=0, vmax=255)
    ax.set_title(f"{label(r, fields)}\n{g.stem}", fontsize=7)
  fig.tight_layout()
  path = out_dir / "samples.png"
  fig.savefig(str(path), dpi=110)
  plt.close(fig)
  return path


def write_report(directory: str | epath.Path, out_dir: str | epath.Path | None = None) -> str:
  """Writes report.md, report.csv and the figures into `out_dir` (default `directory`);
  returns the table as plain text.

  Raises:
    NoRunsError (a FileNotFoundError): no run (no config.json) below `directory`.
  """
  root = epath.Path(directory)
  paths = find_runs(root)
  if not paths:
    raise NoRunsError(f"No runs (folders with a config.json) in {root}.")
  out = epath.Path(out_dir) if out_dir else root
  out.mkdir(parents=True, exist_ok=True)
  runs = [load_run(p, root) for p in paths]
  fields, metrics = varied_fields(runs), metric_names(runs)
  header, rows = table(runs, fields, table_metrics(runs, metrics))
  buf = io.StringIO()
  csv.writer(buf).writerows([header, *rows])
  (out / "report.csv").write_text(buf.getvalue())
  curves = plot_curves(runs, fields, metrics, out)
  sheet = sample_sheet(runs, fields, out)
  md = [f"# Report: {root}", "", f"{len(runs)} run(s); varied fields: "
        f"{', '.join(f'`{f}`' for f in fields) or 'none'}.", "", markdown_table(header, rows), ""]
  failed = [r for r in runs if r.error]
  if failed:
    md += ["## Errors", ""] + [f"- {r.name}: `{r.error}`" for r in failed] + [""]
  if curves:
    md += ["## Learning curves", ""] + [f"![{p.stem}]({p.name})" for p in curves] + [""]
  if sheet:
    md += ["## Last samples", "", f"![samples]({sheet.name})", ""]
  (out / "report.md").write_text("\n".join(md))
  return plain_table(header, rows)
