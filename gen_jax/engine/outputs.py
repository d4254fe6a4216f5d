"""What a run writes besides checkpoints: config.json, metrics.jsonl, eval JSON files,
TensorBoard events (tensorboardX, no TensorFlow), PNG sample grids, and the terminal
progress line with steps/s and ETA.

Only process 0 writes; other processes get no-op writers.
"""
from __future__ import annotations

import json
import logging as std_logging
import math
import os
import sys
import time
from collections.abc import Mapping

import jax
import numpy as np
from absl import logging as absl_logging
from etils import epath
from PIL import Image


def is_main_process() -> bool:
  return jax.process_index() == 0


def save_json(path: epath.Path, payload: dict) -> None:
  """Writes `payload` as indented JSON (process 0 only)."""
  if is_main_process():
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")


class MetricWriter:
  """Appends `{"step": N, name: value, ...}` lines to metrics.jsonl and TB scalars.

  The file is only ever appended to (the workdir's lease makes this process its one writer),
  except once at a resume (`resume_step`), which drops the rows of steps after the restored
  checkpoint that the run before wrote and died without saving; see `drop_rows_after`.
  """

  def __init__(self, workdir: str | epath.Path, tensorboard: bool = True,
               resume_step: int | None = None):
    """`resume_step`: the step training restarts from (0 on a fresh start)."""
    self._enabled = is_main_process()
    self._jsonl = None
    self._tb = None
    if not self._enabled:
      return
    workdir = epath.Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / METRICS
    finish_drop(path)   # a drop that a crash interrupted
    if resume_step is not None:
      drop_rows_after(path, resume_step)
    self._jsonl = open(path, "a")
    if tensorboard:
      from tensorboardX import SummaryWriter  # imported lazily: slow import
      self._tb = SummaryWriter(str(workdir / "tensorboard"))

  def write(self, step: int, metrics: Mapping[str, float]) -> None:
    if self._jsonl is None:   # not the main process
      return
    row = {"step": int(step), **{k: float(v) for k, v in metrics.items()}}
    self._jsonl.write(json.dumps(row) + "\n")
    self._jsonl.flush()
    if self._tb is not None:
      for name, value in metrics.items():
        self._tb.add_scalar(name, float(value), int(step))
      self._tb.flush()

  def write_images(self, step: int, images: Mapping[str, np.ndarray | jax.Array]) -> None:
    """Each named batch of images in [-1, 1] [N, H, W, C] as one grid image in TensorBoard
    (`samples/<name>`); the PNG files are written by the caller."""
    if self._tb is None:
      return
    for name, batch in images.items():
      self._tb.add_image(f"samples/{name}", image_grid(batch), int(step), dataformats="HWC")
    self._tb.flush()

  def write_text(self, step: int, name: str, text: str) -> None:
    """Text (e.g. a language model's samples) in TensorBoard's text tab, verbatim."""
    if self._tb is None:
      return
    self._tb.add_text(name, "    " + text.replace("\n", "\n    "), int(step))   # code block
    self._tb.flush()

  def write_config(self, flat_config: Mapping[str, object]) -> None:
    """The run's config as TensorBoard hyperparameters (HPARAMS tab), so runs compare."""
    if self._tb is None:
      return
    from tensorboardX.summary import hparams  # with SummaryWriter: imported lazily
    # Numbers as numbers, the rest (tuples, None) and non-finite floats (defaults such as
    # sample.s_tmax=inf, which TensorBoard's hparams reject with a warning) as text.
    values = {k: v if isinstance(v, (bool, int, str)) or (isinstance(v, float)
                                                          and math.isfinite(v)) else str(v)
              for k, v in flat_config.items()}
    file_writer = self._tb.file_writer
    assert file_writer is not None   # SummaryWriter opens it; only close() drops it
    for summary in hparams(values, {}):
      file_writer.add_summary(summary)
    self._tb.flush()

  def close(self) -> None:
    if self._jsonl is not None:
      self._jsonl.close()
    if self._tb is not None:
      self._tb.close()


METRICS = "metrics.jsonl"
DROP_JOURNAL = "metrics.jsonl.drop"   # {"size": bytes to keep, "rows": rows to append again}


def drop_rows_after(path: epath.Path, step: int) -> int:
  """Removes the rows of `path` (metrics.jsonl) with a step after `step`, and a line cut
  short by a kill, crash-safely; returns how many rows were dropped.

  Rows are appended in step order, so the rows to drop form the file's tail from the first
  such row; rows of steps <= `step` inside that tail (an evaluation of an older checkpoint)
  are kept. The drop is journalled: the size to cut at and the rows to keep are written
  (and fsynced) to `DROP_JOURNAL` first, then the file is truncated, the rows appended and
  the journal removed; `finish_drop` redoes an interrupted drop, which is idempotent.
  """
  if not path.exists():
    return 0
  data = open(path, "rb").read()
  offset, cut, keep, dropped = 0, None, [], 0
  for line in data.splitlines(keepends=True):
    try:
      row = json.loads(line) if line.endswith(b"\n") else None
    except (json.JSONDecodeError, UnicodeDecodeError):
      row = None
    late = not isinstance(row, dict) or not isinstance(row.get("step"), int) or row["step"] > step
    if late and cut is None:
      cut = offset
    if cut is not None:
      if late:
        dropped += 1
      else:
        keep.append(line.decode())
    offset += len(line)
  if cut is None:
    return 0
  journal = path.parent / DROP_JOURNAL
  with open(journal, "w") as f:
    f.write(json.dumps({"size": cut, "rows": keep}))
    f.flush()
    os.fsync(f.fileno())
  finish_drop(path)
  return dropped


def finish_drop(path: epath.Path) -> None:
  """Completes a drop of `drop_rows_after` whose journal exists (see there)."""
  journal = path.parent / DROP_JOURNAL
  if not journal.exists():
    return
  try:
    plan = json.loads(journal.read_text())
  except json.JSONDecodeError:   # the journal itself was cut short: nothing was truncated
    journal.unlink()
    return
  with open(path, "r+b") as f:
    if os.path.getsize(path) < plan["size"]:   # cannot happen unless edited by hand
      raise OSError(f"{path} is shorter than {journal} expects; remove {journal} and resume.")
    f.truncate(plan["size"])
    f.seek(plan["size"])
    f.write("".join(plan["rows"]).encode())
    f.flush()
    os.fsync(f.fileno())
  journal.unlink()


def read_metrics(workdir: str | epath.Path) -> list[dict]:
  """All rows of workdir/metrics.jsonl (for tests and notebooks); a line that is not JSON
  (cut short when a process was killed mid-write, or the disk was full) is skipped (a
  resumed run drops it from the file)."""
  path = epath.Path(workdir) / METRICS
  if not path.exists():
    return []
  rows = []
  for line in path.read_text().splitlines():
    try:
      rows.append(json.loads(line))
    except json.JSONDecodeError:   # a line cut short by a kill or a full disk
      continue
  return rows


def _format_seconds(seconds: float) -> str:
  if not math.isfinite(seconds):
    return "?"
  seconds = int(seconds)
  h, rem = divmod(seconds, 3600)
  m, s = divmod(rem, 60)
  return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"


class Progress:
  """One status line per `every` steps: step/total, loss, steps/s, ETA.

  Steps/s is measured over the last window (compile time of the first step is
  excluded from the rate once a second window exists).
  """

  def __init__(self, start_step: int, total_steps: int, every: int, stream=None):
    self._total = total_steps
    self._every = max(1, every)
    self._stream = stream or sys.stderr
    self._last_step = start_step
    self._last_time = time.perf_counter()
    self.steps_per_sec = float("nan")

  def update(self, step: int, metrics: Mapping[str, float]) -> None:
    if step % self._every and step != self._total:
      return
    now = time.perf_counter()
    if step > self._last_step:
      self.steps_per_sec = (step - self._last_step) / max(now - self._last_time, 1e-9)
    self._last_step, self._last_time = step, now
    eta = (self._total - step) / self.steps_per_sec if self.steps_per_sec > 0 else float("nan")
    shown = " ".join(f"{k}={v:.4g}" for k, v in metrics.items() if k in ("loss", "grad_norm"))
    if is_main_process():
      print(f"[{step:>7d}/{self._total}] {shown} | {self.steps_per_sec:.2f} steps/s | "
            f"ETA {_format_seconds(eta)}", file=self._stream, flush=True)

  def report(self, step: int, metrics: Mapping[str, float]) -> None:
    """One line of evaluation results, e.g. `[   250/2000] eval/raw/loss=2.479 ...`."""
    if is_main_process():
      shown = " ".join(f"{k}={v:.4g}" for k, v in sorted(metrics.items()))
      print(f"[{step:>7d}/{self._total}] {shown}", file=self._stream, flush=True)

  def show_text(self, step: int, text: str) -> None:
    """A text sample under a header line (the language models' samples)."""
    if is_main_process():
      print(f"[{step:>7d}/{self._total}] sample:\n{text}", file=self._stream, flush=True)


def image_grid(images_NxHxWxC: np.ndarray | jax.Array, ncols: int | None = None,
               pad: int = 2) -> np.ndarray:
  """Tiles images in [-1, 1] into one uint8 HxWxC grid (gray images stay 1 channel)."""
  images = np.asarray(images_NxHxWxC, dtype=np.float32)
  n, h, w, c = images.shape
  ncols = ncols or int(math.ceil(math.sqrt(n)))
  nrows = int(math.ceil(n / ncols))
  grid = np.ones((nrows * (h + pad) + pad, ncols * (w + pad) + pad, c), np.float32)
  for i, img in enumerate(images):
    r, col = divmod(i, ncols)
    grid[pad + r * (h + pad):pad + r * (h + pad) + h,
         pad + col * (w + pad):pad + col * (w + pad) + w] = img
  return to_uint8(grid)


def to_uint8(images: np.ndarray | jax.Array) -> np.ndarray:
  """Images in [-1, 1] -> uint8 in [0, 255]: round((clip(x) + 1) * 127.5)."""
  clipped = np.clip(np.asarray(images, np.float32), -1.0, 1.0)
  return np.round((clipped + 1.0) * 127.5).astype(np.uint8)


def save_image_grid(images_NxHxWxC: np.ndarray, path: str | epath.Path,
                    ncols: int | None = None) -> epath.Path:
  """Writes a PNG grid of images in [-1, 1]; returns the path."""
  path = epath.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  grid = image_grid(images_NxHxWxC, ncols)
  Image.fromarray(grid[..., 0] if grid.shape[-1] == 1 else grid).save(str(path))
  return path


class _HideLibraryInfo(std_logging.Filter):
  """Drops INFO chatter from orbax, grain, TFDS and XLA backend probing (warnings stay)."""

  NOISY = ("/orbax/", "/grain/", "/tensorflow_datasets/", "/jax/_src/xla_bridge")

  def filter(self, record: std_logging.LogRecord) -> bool:
    return (record.levelno >= std_logging.WARNING
            or not any(p in record.pathname for p in self.NOISY))


def quiet_library_logs() -> None:
  """Keeps the terminal readable: our INFO lines, libraries' warnings and errors."""
  absl_logging.get_absl_handler().addFilter(_HideLibraryInfo())
