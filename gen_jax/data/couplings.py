"""(noise, image) couplings as a dataset: what a reflowed model trains on.

Liu et al. 2023 ("Flow Straight and Fast", arXiv:2209.03003, §2.3, Alg. 1 "Reflow"):
the (k+1)-rectified flow is trained on the pairs (Z_0, Z_1 = ODE_k(Z_0)) that the k-th
flow's ODE produced, instead of independent noise and data. `--mode=reflow` of a trained
flow run writes such pairs (gen_jax/methods/diffusion/reflow.py) as `.npz` files with
arrays `noise` and `image` (float32 [N, H, W, C]) and `label` (int32 [N]); `data.pairs`
names one such file or a folder of them (all read, in name order, as the authors' code
reads its folder of per-seed `z0.npy` / `z1.npy`), and `data.train_split='pairs'` trains on
them; the other splits (evaluation, the FID reference) stay `data.dataset`'s, whose image
shape the pairs must have.

Batches are {"image": float32 [B, H, W, C], "label": int32 [B], "noise": float32 [B, H, W,
C]}: the image is the ODE's endpoint, as written (not clipped or quantized), and "noise"
its own starting point. The stream is the image pipeline's (gen_jax/data/pipeline.py): a
seeded global shuffle, a new order every epoch, each process reading its rows of every
global batch, checkpointable as a grain dataset.
"""
from __future__ import annotations

import dataclasses
import functools
import os
import sys

import grain
import ml_collections
import numpy as np

from gen_jax.data import pipeline, stream
from gen_jax.data.errors import UserDataError

# The arrays of a pairs file.
PAIR_ARRAYS = ("noise", "image", "label")
# The split name that reads the pairs of `data.pairs`.
PAIRS_SPLIT = "pairs"


def pair_files(path: str) -> list[str]:
  """The `.npz` files `data.pairs` names: the file itself, or a folder's, sorted by name.

  Raises:
    UserDataError: no such file or folder, or a folder without `.npz` files.
  """
  if os.path.isfile(path):
    return [path]
  if not os.path.isdir(path):
    raise UserDataError(f"data.pairs={path!r} is neither a pairs file nor a folder; write "
                        "pairs with --mode=reflow on a trained flow run.")
  files = sorted(os.path.join(path, f) for f in os.listdir(path) if f.endswith(".npz"))
  if not files:
    raise UserDataError(f"data.pairs={path!r} holds no .npz pairs files; write them with "
                        "--mode=reflow on a trained flow run.")
  return files


@functools.lru_cache(maxsize=2)
def load_pairs(path: str) -> dict[str, np.ndarray]:
  """All pairs under `data.pairs`, concatenated: noise, image [N, H, W, C], label [N].

  Raises:
    UserDataError: a file lacks an array, or the shapes disagree.
  """
  parts = []
  for file in pair_files(path):
    with np.load(file) as f:
      missing = [k for k in PAIR_ARRAYS if k not in f]
      if missing:
        raise UserDataError(f"{file} lacks the arrays {missing}; a pairs file holds "
                            f"{PAIR_ARRAYS} (--mode=reflow writes them).")
      part = {"noise": f["noise"].astype(np.float32), "image": f["image"].astype(np.float32),
              "label": f["label"].astype(np.int32)}
    if part["noise"].shape != part["image"].shape or part["image"].ndim != 4 or (
        part["label"].shape != part["image"].shape[:1]):
      raise UserDataError(f"{file}: noise {part['noise'].shape}, image "
                          f"{part['image'].shape} and label {part['label'].shape} must be "
                          "[N, H, W, C], [N, H, W, C] and [N].")
    parts.append(part)
  shapes = {p["image"].shape[1:] for p in parts}
  if len(shapes) > 1:
    raise UserDataError(f"data.pairs={path!r} mixes image shapes {sorted(shapes)}.")
  return {k: np.concatenate([p[k] for p in parts]) for k in PAIR_ARRAYS}


@dataclasses.dataclass
class _PairBatches:
  """Global batch k -> this process's rows of it, as a function of k alone."""

  path: str
  order: stream.ShuffledOrder | None   # None: the pairs in order
  num_pairs: int
  global_batch_size: int
  first_row: int
  rows: int

  def __call__(self, k: int) -> dict[str, np.ndarray]:
    first = int(k) * self.global_batch_size + self.first_row
    positions = np.arange(first, first + self.rows, dtype=np.int64)
    indices = self.order(positions) if self.order is not None else positions % self.num_pairs
    pairs = load_pairs(self.path)
    return {k: pairs[k][indices] for k in ("image", "label", "noise")}


def make_pairs_loader(data_config: ml_collections.ConfigDict, **kwargs) -> grain.IterDataset:
  """The loader of the couplings under `data_config.pairs` (split 'pairs').

  Args:
    data_config: `config.data` with `pairs` (a pairs file or folder) and the `dataset`
      whose image shape the pairs have.
    **kwargs: the `pipeline.LoaderArgs` fields (split, global_batch_size, seed, shuffle,
      num_epochs); `seed` seeds the shuffle order.

  Returns:
    A checkpointable `grain.IterDataset` of {"image", "label", "noise"} batches.

  Raises:
    UserDataError: no `data.pairs`, unreadable pairs (see `load_pairs`), or pairs of
      another image shape than the dataset's.
    ValueError: a global batch size not divisible by the process count.
  """
  args = pipeline.LoaderArgs(**kwargs)
  first_row, rows = args.process_rows()
  if not data_config.get("pairs"):
    raise UserDataError("data.train_split='pairs' reads the (noise, image) pairs that "
                        "data.pairs names; set it to a pairs file or folder (--mode=reflow).")
  images = load_pairs(data_config.pairs)["image"]
  expected = pipeline.image_shape(data_config)
  if images.shape[1:] != expected:
    raise UserDataError(f"data.pairs={data_config.pairs!r} holds {images.shape[1:]} images; "
                        f"data.dataset={data_config.dataset!r} has {expected}.")
  n = len(images)
  B = args.global_batch_size
  num_batches = sys.maxsize // B if args.num_epochs is None else args.num_epochs * n // B
  make_batch = _PairBatches(
      path=data_config.pairs, order=stream.ShuffledOrder(n, args.seed) if args.shuffle else None,
      num_pairs=n, global_batch_size=B, first_row=first_row, rows=rows)
  return grain.MapDataset.range(num_batches).map(make_batch).to_iter_dataset(
      grain.ReadOptions(num_threads=1, prefetch_buffer_size=2))
