"""--mode=report on synthetic run directories: known metrics give a known table, and the
figures are written."""
import csv
import json

import numpy as np
from PIL import Image

from gen_jax.engine import report


def make_run(path, lr, target, eval_losses, fid, status, grid_value):
  path.mkdir(parents=True)
  config = {"method": "diffusion", "seed": 0, "train": {"lr": lr, "num_steps": 300},
            "diffusion": {"target": target}, "mesh": {"data": -1},
            "data": {"data_dir": str(path)}}   # layout fields never count as varied
  (path / "config.json").write_text(json.dumps(config))
  rows = [{"step": s, "train/loss": 1.0 / s} for s in (100, 200, 300)]
  rows += [{"step": s, "eval/ema/loss": v}
           for s, v in zip((100, 200, 300), eval_losses, strict=True)]
  rows += [{"step": 300, "eval/ema/fid_mnist5kclf_1k_test": fid,
            "eval/ema/precision_mnist5kclf_1k_test": 0.5 + fid / 100,
            "eval/ref/clf_accuracy_mnist5kclf_test": 0.97}]   # the same for every run
  (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
  (path / "run_status.json").write_text(json.dumps({"status": status, "step": 300,
                                                    "wall_seconds": 125.0}))
  (path / "samples").mkdir()
  for step, value in ((100, 0), (300, grid_value)):
    Image.fromarray(np.full((8, 8), value, np.uint8)).save(path / "samples" / f"step_{step}.png")


def test_report_table_values_and_figures(tmp_path):
  make_run(tmp_path / "lr=0.001,target=eps", 1e-3, "eps", [0.5, 0.3, 0.4], 20.0, "done", 50)
  make_run(tmp_path / "lr=0.001,target=v", 1e-3, "v", [0.9, 0.8, 0.7], 10.0, "failed", 200)
  text = report.write_report(tmp_path)
  assert "target" in text.splitlines()[0]

  with open(tmp_path / "report.csv") as f:
    rows = list(csv.DictReader(f))
  assert [r["run"] for r in rows] == ["lr=0.001,target=eps", "lr=0.001,target=v"]
  assert "lr" not in rows[0] and "data_dir" not in rows[0]   # not varied / layout only
  eps, v = rows
  assert eps["target"] == "eps" and eps["status"] == "done" and eps["steps"] == "300"
  assert eps["wall"] == "2m05s"
  assert eps["ema/loss final"] == "0.4" and eps["ema/loss best (step)"] == "0.3 (200)"
  assert v["ema/loss best (step)"] == "0.7 (300)" and v["status"] == "failed"
  # Logged once: one column; the same value in every run: no column.
  assert v["ema/fid_mnist5kclf_1k_test"] == "10" and "ema/fid_mnist5kclf_1k_test final" not in v
  assert not any("clf_accuracy" in k for k in v)
  # Precision is better when larger, FID when smaller.
  assert report.higher_is_better("eval/ema/precision_mnist5kclf_1k_test")
  assert not report.higher_is_better("eval/ema/fid_mnist5kclf_1k_test")

  md = (tmp_path / "report.md").read_text()
  assert "| lr=0.001,target=eps | eps | done |" in md
  for name in ("curve_train_loss.png", "curve_eval_ema_loss.png",
               "curve_eval_ema_fid_mnist5kclf_1k_test.png", "samples.png"):
    assert (tmp_path / name).exists(), name
    assert f"]({name})" in md
  assert Image.open(tmp_path / "samples.png").size[0] > 100
  # The sheet shows each run's newest grid (step 300), not the first one.
  run = report.load_run(tmp_path / "lr=0.001,target=v", tmp_path)
  assert report.last_sample_grid(run).name == "step_300.png"


def test_the_sample_sheet_takes_a_family_s_samples_grid_beside_its_extra_grids(tmp_path):
  """A GAN or VAE writes step_<N>_samples.png beside its other grids; the sheet shows the
  newest samples grid, never an interpolation or reconstruction grid."""
  (tmp_path / "samples").mkdir()
  for name in ("step_100_samples.png", "step_200_samples.png", "step_200_interpolation.png",
               "step_300_reconstructions.png"):
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "samples" / name)
  run = report.RunRecord(name="gan", path=report.epath.Path(tmp_path), config={}, rows=[],
                         status="done", steps=300, wall_seconds=None, error=None)
  assert report.last_sample_grid(run).name == "step_200_samples.png"


def test_a_damaged_run_status_marks_that_run_and_the_report_goes_on(tmp_path):
  make_run(tmp_path / "lr=0.001,target=eps", 1e-3, "eps", [0.5, 0.3, 0.4], 20.0, "done", 50)
  make_run(tmp_path / "lr=0.001,target=v", 1e-3, "v", [0.9, 0.8, 0.7], 10.0, "done", 200)
  (tmp_path / "lr=0.001,target=v" / "run_status.json").write_text("{garbage")
  report.write_report(tmp_path)
  with open(tmp_path / "report.csv") as f:
    status = {row["target"]: row["status"] for row in csv.DictReader(f)}
  assert status == {"eps": "done", "v": "damaged"}
