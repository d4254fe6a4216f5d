"""Large sample sets for external tools: uint8 images in shards, resumable after a kill.

  python launch.py --workdir=runs/ddpm --mode=sample --config.sample.num=50000 \
      --config.sample.format=npz,png

writes, into `<workdir>/samples/<name>/` (the name carries the step, sampler, weights and
seed, as the grids' names do):

  manifest.json             what the dump is: step, sampler, weights, seed, num, shard size
  shards/00000.npz ...      `images` uint8 [n, H, W, C] (and `labels` when the model takes
                            labels), written whole or not at all (tmp file + rename)
  samples.npz               all of them as `arr_0` (the array name pytorch-fid, torch-fidelity
                            and OpenAI's evaluator suite read), once every shard is there
  png/000000.png ...        one file per image (format `png`)

Shard i is drawn with `fold_in(key(seed), i)`, so a dump that is killed (SIGKILL, or SIGTERM
and SIGINT, which stop it cleanly between shards) and rerun with the same command continues
at the first missing shard and ends with exactly the images of an uninterrupted run. A rerun
with other settings into the same folder stops with an error instead of mixing two sample
sets. Host memory is bounded by one shard: `samples.npz` is streamed shard by shard.
"""
from __future__ import annotations

import dataclasses
import json
import math
import zipfile
from collections.abc import Callable
from typing import Any

import jax
import numpy as np
from absl import logging
from etils import epath
from jax.experimental import multihost_utils
from PIL import Image

from gen_jax.core.errors import UserError
from gen_jax.engine.outputs import is_main_process, to_uint8
from gen_jax.engine.preemption import StopRequest

FORMATS = ("grid", "npz", "png")
MERGED = "samples.npz"


class SampleDumpMismatchError(UserError, ValueError):
  """A sample folder holds shards of another sampling setup."""


@dataclasses.dataclass(frozen=True)
class DumpPlan:
  """What one dump draws; saved as manifest.json and compared on every rerun."""
  step: int
  sampler: str            # method.sample_tag, e.g. 'ddim50' ('' when the family has one)
  weights: str            # 'ema' | 'raw'
  seed: int
  num: int
  shard_size: int
  batch_size: int         # images per compiled sample call (shard_size is a multiple)
  image_shape: tuple[int, int, int]

  @property
  def num_shards(self) -> int:
    return math.ceil(self.num / self.shard_size)

  def shard_count(self, index: int) -> int:
    return min(self.shard_size, self.num - index * self.shard_size)

  def as_json(self) -> dict[str, Any]:
    return {**dataclasses.asdict(self), "image_shape": list(self.image_shape)}


def parse_formats(value: str) -> tuple[str, ...]:
  """'npz,png' -> ('npz', 'png'); raises ValueError naming the field for anything else."""
  formats = tuple(f.strip() for f in str(value).split(",") if f.strip())
  bad = [f for f in formats if f not in FORMATS]
  if not formats or bad or ("grid" in formats and len(formats) > 1):
    raise ValueError(f"sample.format={value!r}: use 'grid' (one PNG grid), or 'npz', 'png' "
                     "or 'npz,png' (uint8 images in resumable shards for external tools).")
  return formats


def plan_dump(sample_cfg, *, step: int, sampler: str, image_shape, default_batch: int) -> DumpPlan:
  """The plan of `--mode=sample` with a dump format, checked before anything is compiled."""
  height, width, channels = image_shape
  num = int(sample_cfg.num)
  batch = int(sample_cfg.batch_size or min(num, default_batch))
  shard = int(sample_cfg.shard_size or max(batch, 1000 - 1000 % batch))
  if num < 1 or batch < 1 or shard < batch or shard % batch:
    raise ValueError(
        f"sample.num={num}, sample.batch_size={batch} and sample.shard_size={shard} must be "
        "positive, with shard_size a multiple of batch_size.")
  return DumpPlan(step=step, sampler=sampler, weights="ema" if sample_cfg.use_ema else "raw",
                  seed=int(sample_cfg.seed), num=num, shard_size=shard, batch_size=batch,
                  image_shape=(int(height), int(width), int(channels)))


def _check_manifest(folder: epath.Path, plan: DumpPlan) -> None:
  """Writes the manifest of a new dump, or checks a rerun's plan against the saved one."""
  manifest = folder / "manifest.json"
  if not manifest.exists():
    if is_main_process():
      folder.mkdir(parents=True, exist_ok=True)
      tmp = folder / "manifest.json.tmp"
      tmp.write_text(json.dumps(plan.as_json(), indent=2) + "\n")
      tmp.rename(manifest)
    return
  saved = json.loads(manifest.read_text())
  differ = {k: (saved.get(k), v) for k, v in plan.as_json().items() if saved.get(k) != v}
  if differ:
    what = ", ".join(f"{k}: {a} in the folder, {b} now" for k, (a, b) in differ.items())
    raise SampleDumpMismatchError(
        f"{folder} holds samples drawn with other settings ({what}). Use another "
        "--config.sample.seed / step / sampler, or move that folder away to start over.")


def _shard_path(folder: epath.Path, index: int) -> epath.Path:
  return folder / "shards" / f"{index:05d}.npz"


def _write_atomic_npz(path: epath.Path, **arrays: np.ndarray) -> None:
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = path.with_name(path.name + ".tmp")
  with tmp.open("wb") as f:
    # numpy's stub reads the ** arrays as its allow_pickle keyword.
    np.savez(f, **arrays)  # pyright: ignore[reportArgumentType]
  tmp.rename(path)


def read_shard(path: epath.Path) -> dict[str, np.ndarray]:
  """The arrays of one written shard (`images`, and `labels` for a conditional family)."""
  with path.open("rb") as f:
    with np.load(f) as shard:
      return {k: shard[k] for k in shard.files}


def _write_pngs(folder: epath.Path, first_index: int, images_NxHxWxC: np.ndarray) -> None:
  folder.mkdir(parents=True, exist_ok=True)
  for i, image in enumerate(images_NxHxWxC):
    Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image).save(
        str(folder / f"{first_index + i:06d}.png"))


def _stream_merged(folder: epath.Path, plan: DumpPlan) -> epath.Path:
  """`samples.npz` with `arr_0` (and `labels`), written one shard at a time."""
  out = folder / MERGED
  tmp = folder / (MERGED + ".tmp")
  with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as archive:
    first = read_shard(_shard_path(folder, 0))
    for key, name in (("images", "arr_0"), ("labels", "labels")):
      if key not in first:
        continue
      sample = first[key]
      with archive.open(f"{name}.npy", "w", force_zip64=True) as member:
        header = {"descr": np.lib.format.dtype_to_descr(sample.dtype), "fortran_order": False,
                  "shape": (plan.num, *sample.shape[1:])}
        np.lib.format.write_array_header_1_0(member, header)
        for index in range(plan.num_shards):
          member.write(np.ascontiguousarray(read_shard(_shard_path(folder, index))[key]).tobytes())
  tmp.rename(out)
  return out


def dump_samples(folder: epath.Path, plan: DumpPlan, formats: tuple[str, ...],
                 draw: Callable[[jax.Array], dict[str, np.ndarray]],
                 stop: StopRequest | None = None) -> epath.Path | None:
  """Draws the plan's shards that are not in `folder` yet, then writes `samples.npz`.

  Args:
    folder: the dump's folder (created; its manifest must match `plan` if it exists).
    plan: what to draw (`plan_dump`).
    formats: from `parse_formats`, without 'grid'.
    draw: key -> {'images': float [batch_size, H, W, C] in [-1, 1], optionally 'labels'},
      one compiled sample call.
    stop: a SIGTERM/SIGINT flag, checked between shards.

  Returns:
    The folder when every shard is written; None when a stop request ended it early (the
    shards written so far are kept; rerun to continue).
  """
  _check_manifest(folder, plan)
  rng = jax.random.key(plan.seed)
  present = np.array([_shard_path(folder, i).exists() for i in range(plan.num_shards)])
  if jax.process_count() > 1:   # every process must make the same sample calls
    present = multihost_utils.broadcast_one_to_all(present)
  done = 0
  for index in range(plan.num_shards):
    path = _shard_path(folder, index)
    if present[index]:
      done += 1
      continue
    if stop is not None and stop.requested:
      logging.warning("Stopped after %d of %d shards in %s; rerun the same command to "
                      "continue.", done, plan.num_shards, folder)
      return None
    count = plan.shard_count(index)
    shard_rng = jax.random.fold_in(rng, index)
    parts = [draw(jax.random.fold_in(shard_rng, b))
             for b in range(math.ceil(count / plan.batch_size))]
    arrays = {k: np.concatenate([p[k] for p in parts])[:count] for k in parts[0]}
    arrays["images"] = to_uint8(arrays["images"])
    if is_main_process():
      if "png" in formats:
        _write_pngs(folder / "png", index * plan.shard_size, arrays["images"])
      _write_atomic_npz(path, **arrays)   # last: a shard file means its PNGs are there too
    done += 1
    logging.info("Sample shard %d/%d: %d images -> %s", index + 1, plan.num_shards, count, path)
  if "npz" in formats and is_main_process() and not (folder / MERGED).exists():
    _stream_merged(folder, plan)
  return folder


class BatchCache:
  """Finished batches of a long evaluation (e.g. the features of 50,000 samples), one
  `batch_<i>.npz` each, so that a run stopped by SIGTERM or a kill and rerun computes only
  the missing ones. `key` (what the batches depend on: checkpoint step, sampler, extractor,
  batch size, ...) is saved in `key.json`; a folder holding another key is emptied first."""

  def __init__(self, folder: epath.Path, key: dict[str, Any]):
    self.folder = epath.Path(folder)
    saved = self.folder / "key.json"
    if saved.exists() and json.loads(saved.read_text()) != key and is_main_process():
      logging.warning("%s holds batches of another evaluation; starting over.", self.folder)
      self.clear()
    if is_main_process() and not saved.exists():
      self.folder.mkdir(parents=True, exist_ok=True)
      tmp = self.folder / "key.json.tmp"
      tmp.write_text(json.dumps(key, indent=2) + "\n")
      tmp.rename(saved)

  def _path(self, index: int) -> epath.Path:
    return self.folder / f"batch_{index:05d}.npz"

  def get(self, index: int) -> dict[str, np.ndarray] | None:
    """The arrays of batch `index`, or None when it has not been finished."""
    path = self._path(index)
    return read_shard(path) if path.exists() else None

  def put(self, index: int, **arrays: np.ndarray) -> None:
    if is_main_process():
      _write_atomic_npz(self._path(index), **arrays)

  def clear(self) -> None:
    """Deletes the folder (once the evaluation's result is written)."""
    if is_main_process() and self.folder.exists():
      self.folder.rmtree()
