"""Samples of a run: the compiled sample function and the grids / text files it writes.

The default key is fixed, so the grids written during training start from the same noise,
latents or random draws and show how one set of samples changes.
"""
from __future__ import annotations

import jax
import numpy as np
from etils import epath

from gen_jax import data
from gen_jax.core.state import TrainState
from gen_jax.data.errors import DatasetTooSmallError
from gen_jax.engine import sharding
from gen_jax.engine.experiment import Experiment
from gen_jax.engine.outputs import is_main_process, save_image_grid
from gen_jax.methods.base import Samples

TEXT_SEPARATOR = "-" * 40


def fixed_sample_batch(exp: Experiment, num: int | None = None) -> dict[str, jax.Array]:
  """The first `num` (default `sample.num`) images of the eval split (unshuffled), as a
  global batch."""
  cfg = exp.config
  num = int(cfg.sample.num) if num is None else num
  sharding.validate_global_batch(num, exp.mesh, "sample.num")
  loader = data.make_loader(cfg.data, split=cfg.data.eval_split,
                            global_batch_size=num, seed=cfg.seed,
                            shuffle=False, num_epochs=1)
  local = next(iter(loader), None)
  if local is None:
    raise DatasetTooSmallError(
        f"eval split {cfg.data.eval_split!r} of {cfg.data.dataset} has fewer than the "
        f"{num} images this family samples from (sample.num, or eval.sample_batch_size for "
        "sample metrics); lower it, or use a larger eval split (data.eval_split).")
  return sharding.global_batch(local, exp.batch_sharding)


def make_sample_fn(exp: Experiment, num: int | None = None):
  """`method.sample` jitted once: (state, rng) -> `Samples`, `num` (default `sample.num`)
  of them, replicated over the mesh.

  A method with `sample_uses_batch` (e.g. the VAE, for reconstructions) gets `batch=` the
  same `fixed_sample_batch` on every call; the others `batch=None`.
  """
  if not exp.method.can_sample:
    raise ValueError(f"config.method={exp.config.method!r} cannot sample.")
  cfg = exp.config.sample
  num = int(cfg.num) if num is None else num
  batch = fixed_sample_batch(exp, num) if exp.method.sample_uses_batch else None
  sample = jax.jit(lambda state, rng, batch: exp.method.sample(state, rng, num, cfg.use_ema,
                                                               batch=batch),
                   out_shardings=exp.replicated)
  return lambda state, rng: sample(state, rng, batch)


def format_text_samples(tokenizer, tokens_NxT: np.ndarray | jax.Array) -> str:
  """Decoded samples, one after another, each followed by a separator line."""
  return "".join(f"{tokenizer.decode(row)}\n{TEXT_SEPARATOR}\n" for row in np.asarray(tokens_NxT))


def write_samples(exp: Experiment, state: TrainState, path: epath.Path, sample_fn=None,
                  rng: jax.Array | None = None) -> tuple[list[epath.Path], Samples]:
  """Samples from `state` (EMA weights unless `sample.use_ema=False`) and writes them.

  Images: a PNG grid at `path`; with extra grids (`Samples.grids`) one grid each, the
  samples' `<stem>_samples.png` first, then `<stem>_<name>.png`. Text: the decoded token
  sequences in `<stem>.txt`, separated by a line of dashes.

  Returns:
    (the paths written, the `Samples` on the host).
  """
  sample_fn = sample_fn or make_sample_fn(exp)
  rng = jax.random.fold_in(exp.base_rng, 0x5A3) if rng is None else rng
  samples = jax.device_get(sample_fn(state, rng))
  if samples.tokens is not None:
    out = path.with_suffix(".txt")
    if is_main_process():
      out.parent.mkdir(parents=True, exist_ok=True)
      out.write_text(format_text_samples(exp.spec.tokenizer, samples.tokens))
    return [out], samples
  grids = samples.image_grids() if samples.grids else {"": samples.images}
  paths = [path.with_name(f"{path.stem}_{name}{path.suffix}") if name else path
           for name in grids]
  if is_main_process():
    for out, batch in zip(paths, grids.values(), strict=True):
      save_image_grid(np.asarray(batch), out)
  return paths, samples
