"""`--mode=inpaint`: repair masked eval images with a trained DDPM (no retraining).

  python launch.py --workdir=runs/ddpm --mode=inpaint                       # RePaint, centre box
  python launch.py --workdir=runs/ddpm --mode=inpaint --config.inpaint.sampler=replacement \
      --config.inpaint.mask=left

The first `inpaint.num_images` images of the eval split (in order) get the mask of
`config.inpaint` and are repaired in one compiled call (gen_jax/methods/inpainting.py).
Writes `<workdir>/inpaint/<name>.png` (rows: masked input, repaired, original) and
`<name>.json` with PSNR and SSIM on the filled pixels (gen_jax/evaluate/masked_metrics.py),
next to the same metrics for filling with the mean of each image's known pixels.
"""
from __future__ import annotations

import functools
import os
import time

import jax
import ml_collections
import numpy as np
from absl import logging
from etils import epath
from PIL import Image

from gen_jax.engine import checkpoint as ckpt_lib
from gen_jax.engine.experiment import build_experiment
from gen_jax.engine.modes import trained_workdir
from gen_jax.engine.outputs import image_grid, is_main_process, save_json
from gen_jax.engine.samples import fixed_sample_batch
from gen_jax.evaluate.masked_metrics import masked_psnr, masked_ssim
from gen_jax.methods import inpainting
from gen_jax.methods.inpainting import InpaintConfigError


def read_mask_image(path: str, height: int, width: int) -> np.ndarray:
  """A mask image (white, >= 128 in grayscale: known; black: to fill) as bool [1, H, W, 1].

  Raises:
    InpaintConfigError: the file cannot be read as an image, or is not `height` x `width`.
  """
  try:
    with Image.open(path) as image:
      gray = np.asarray(image.convert("L"))
  except (OSError, ValueError) as e:
    raise InpaintConfigError(f"inpaint.mask={path!r} is not a mask name {inpainting.MASKS} and "
                             f"cannot be read as an image: {e}") from None
  if gray.shape != (height, width):
    raise InpaintConfigError(f"The mask image {path} is {gray.shape[1]}x{gray.shape[0]} (WxH); "
                             f"the eval images are {width}x{height}.")
  return (gray >= 128)[None, :, :, None]


def masks_from_config(cfg: ml_collections.ConfigDict, height: int, width: int) -> np.ndarray:
  """The validated known-pixel masks of `config.inpaint`, bool [num_images, H, W, 1]."""
  if cfg.mask in inpainting.MASKS:
    known = inpainting.make_masks(cfg.mask, cfg.num_images, height, width,
                                  fraction=cfg.fraction, seed=cfg.mask_seed)
  elif os.path.splitext(cfg.mask)[1] or os.sep in cfg.mask:   # looks like a path
    known = read_mask_image(cfg.mask, height, width)
  else:
    raise InpaintConfigError(f"inpaint.mask={cfg.mask!r}; expected one of {inpainting.MASKS} "
                             "or the path of a mask image (white: known, black: fill).")
  return inpainting.validate_masks(known, cfg.num_images, height, width)


def mask_name(cfg: ml_collections.ConfigDict) -> str:
  """'center0.25', 'left', 'strokes0.3', or a mask file's stem."""
  if cfg.mask in ("center", "random_pixels", "strokes"):
    return f"{cfg.mask}{cfg.fraction:g}"
  return cfg.mask if cfg.mask in inpainting.MASKS else epath.Path(cfg.mask).stem


def _summary(values: np.ndarray) -> float | None:
  finite = values[np.isfinite(values)]
  return float(finite.mean()) if finite.size else None


def inpaint(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Repairs `inpaint.num_images` eval images; writes the grid and the metrics JSON.

  Every check of `config.inpaint` (sampler, jump fields, the masks) runs before the
  checkpoint is read or anything compiled.

  Returns:
    The JSON's contents: `psnr`, `ssim` (means over images, on the filled pixels), their
    per-image values, the mean-fill baseline, `seconds` (the chain's call, its compile
    included), `grid`.

  Raises:
    InpaintConfigError: a bad `config.inpaint` (or a run that is not a diffusion model).
  """
  cfg = config.get("inpaint")
  if config.method != "diffusion" or cfg is None:
    raise InpaintConfigError(f"--mode=inpaint repairs images with a trained diffusion model; "
                             f"the run in {workdir} is method={config.method!r}.")
  exp = build_experiment(config)
  H, W, _ = exp.spec.image_shape
  T = exp.method.schedule.num_timesteps
  inpainting.validate_options(cfg.sampler, cfg.jump_length, cfg.jump_n_sample, cfg.steps, T)
  known = masks_from_config(cfg, H, W)
  times = inpainting.chain_times(cfg.sampler, cfg.steps or T, cfg.jump_length, cfg.jump_n_sample)
  model_calls = int(np.sum(times[1:] < times[:-1]))

  state, step = ckpt_lib.load_checkpoint(exp, trained_workdir(config, workdir), config.eval.step)
  x0 = fixed_sample_batch(exp, cfg.num_images)["image"]
  params = state.ema_params if config.sample.use_ema else state.params
  repair = jax.jit(functools.partial(
      inpainting.method_inpaint, exp.method, sampler=cfg.sampler, jump_length=cfg.jump_length,
      jump_n_sample=cfg.jump_n_sample, steps=cfg.steps), out_shardings=exp.replicated)
  logging.info("Inpainting %d images (%s, mask %s): %d transitions, %d model calls", cfg.num_images,
               cfg.sampler, mask_name(cfg), len(times) - 1, model_calls)
  t0 = time.perf_counter()
  repaired = np.asarray(jax.device_get(repair(params, x0, known, jax.random.key(cfg.seed))))
  seconds = time.perf_counter() - t0
  original = np.asarray(jax.device_get(x0))

  fill = ~known
  known_mean = (original * known).sum(axis=(1, 2), keepdims=True) / known.sum(axis=(1, 2), keepdims=True)
  baseline = np.where(known, original, known_mean)
  scores = {name: (masked_psnr(images, original, fill), masked_ssim(images, original, fill))
            for name, images in (("model", repaired), ("mean_fill", baseline))}
  parts = [f"step_{step}", cfg.sampler]
  if cfg.sampler == "repaint":
    parts.append(f"j{cfg.jump_length}r{cfg.jump_n_sample}")
  parts += [f"steps{cfg.steps or T}", mask_name(cfg), f"seed{cfg.seed}"]
  out = epath.Path(workdir) / "inpaint" / "_".join(parts)
  masked_input = np.where(known, original, 0.0)   # the holes in mid-gray
  if is_main_process():
    out.parent.mkdir(parents=True, exist_ok=True)
    grid = image_grid(np.concatenate([masked_input, repaired, original]), ncols=cfg.num_images)
    Image.fromarray(grid[..., 0] if grid.shape[-1] == 1 else grid).save(f"{out}.png")
  result = {
      "step": step, "sampler": cfg.sampler, "mask": mask_name(cfg), "num_images": cfg.num_images,
      "jump_length": cfg.jump_length, "jump_n_sample": cfg.jump_n_sample, "steps": cfg.steps or T,
      "transitions": len(times) - 1, "model_calls": model_calls, "seconds": round(seconds, 2),
      "fill_fraction": float(fill.mean()),
      "psnr": _summary(scores["model"][0]), "ssim": _summary(scores["model"][1]),
      "psnr_mean_fill": _summary(scores["mean_fill"][0]),
      "ssim_mean_fill": _summary(scores["mean_fill"][1]),
      "psnr_per_image": [_summary(v[None]) for v in scores["model"][0]],
      "ssim_per_image": [_summary(v[None]) for v in scores["model"][1]],
      "grid": f"{out}.png", "rows": ["masked input", "repaired", "original"],
  }
  save_json(epath.Path(f"{out}.json"), result)
  logging.info("Wrote %s.png and .json", out)
  return result


def format_report(result: dict) -> str:
  """The lines `launch.py --mode=inpaint` prints."""
  fmt = lambda v, spec: "n/a" if v is None else format(v, spec)
  return "\n".join([
      f"inpaint {result['sampler']} mask={result['mask']} ({result['fill_fraction']:.1%} filled), "
      f"{result['num_images']} eval images, step {result['step']}: {result['model_calls']} model "
      f"calls in {result['seconds']:.1f}s (compile included)",
      f"filled pixels: PSNR {fmt(result['psnr'], '.2f')} dB, SSIM {fmt(result['ssim'], '.4f')} "
      f"(mean-of-known fill: {fmt(result['psnr_mean_fill'], '.2f')} dB, "
      f"{fmt(result['ssim_mean_fill'], '.4f')})",
      f"grid (masked input | repaired | original): {result['grid']}",
  ])
