"""`--mode=inpaint`: repair masked eval images with a trained DDPM (no retraining).

  python launch.py --workdir=runs/ddpm --mode=inpaint                       # RePaint, centre box
  python launch.py --workdir=runs/ddpm --mode=inpaint --config.inpaint.sampler=replacement \
      --config.inpaint.mask=left

The diffusion family offers it (`DiffusionMethod.modes`); the engine hands it the trained
run and writes its files (`gen_jax.methods.base.ModeContext`). The first
`inpaint.num_images` images of the eval split (in order) get the mask of `config.inpaint`
and are repaired in one compiled call (gen_jax/methods/diffusion/inpainting.py). Writes
`<workdir>/inpaint/<name>.png` (rows: masked input, repaired, original) and `<name>.json`
with PSNR and SSIM on the filled pixels (gen_jax/evaluate/masked_metrics.py), next to the
same metrics for filling with the mean of each image's known pixels.
"""
from __future__ import annotations

import functools
import os
import time
from collections.abc import Callable

import jax
import numpy as np
from absl import logging

from gen_jax.evaluate.masked_metrics import masked_psnr, masked_ssim
from gen_jax.methods.base import ModeContext
from gen_jax.methods.diffusion.inpainting import (
  MASKS,
  InpaintConfigError,
  chain_times,
  make_masks,
  validate_masks,
  validate_options,
)

# (params, x0 [B, H, W, C], known [B, H, W, 1], rng, **chain options) -> repaired images.
RepairFn = Callable[..., jax.Array]


def mask_from_image(gray_HxW: np.ndarray, path: str, height: int, width: int) -> np.ndarray:
  """A mask image (white, >= 128 in grayscale: known; black: to fill) as bool [1, H, W, 1].

  Raises:
    InpaintConfigError: the image is not `height` x `width`.
  """
  if gray_HxW.shape != (height, width):
    raise InpaintConfigError(f"The mask image {path} is {gray_HxW.shape[1]}x{gray_HxW.shape[0]} "
                             f"(WxH); the eval images are {width}x{height}.")
  return (gray_HxW >= 128)[None, :, :, None]


def masks_from_config(cfg, height: int, width: int,
                      read_grayscale_image: Callable[[str], np.ndarray]) -> np.ndarray:
  """The validated known-pixel masks of `config.inpaint`, bool [num_images, H, W, 1].

  Args:
    cfg: the `inpaint` config group.
    read_grayscale_image: path -> uint8 [H, W] (the engine's `ModeContext` reads files),
      for an `inpaint.mask` that names an image file.

  Raises:
    InpaintConfigError: an unknown mask name, an unreadable or mis-sized mask image, or a
      mask that keeps every pixel or none.
  """
  if cfg.mask in MASKS:
    known = make_masks(cfg.mask, cfg.num_images, height, width, fraction=cfg.fraction,
                       seed=cfg.mask_seed)
  elif os.path.splitext(cfg.mask)[1] or os.sep in cfg.mask:   # looks like a path
    try:
      gray = read_grayscale_image(cfg.mask)
    except (OSError, ValueError) as e:
      raise InpaintConfigError(f"inpaint.mask={cfg.mask!r} is not a mask name {MASKS} and "
                               f"cannot be read as an image: {e}") from None
    known = mask_from_image(gray, cfg.mask, height, width)
  else:
    raise InpaintConfigError(f"inpaint.mask={cfg.mask!r}; expected one of {MASKS} "
                             "or the path of a mask image (white: known, black: fill).")
  return validate_masks(known, cfg.num_images, height, width)


def mask_name(cfg) -> str:
  """'center0.25', 'left', 'strokes0.3', or a mask file's stem."""
  if cfg.mask in ("center", "random_pixels", "strokes"):
    return f"{cfg.mask}{cfg.fraction:g}"
  return cfg.mask if cfg.mask in MASKS else os.path.splitext(os.path.basename(cfg.mask))[0]


def _summary(values: np.ndarray) -> float | None:
  finite = values[np.isfinite(values)]
  return float(finite.mean()) if finite.size else None


def run_inpaint_mode(ctx: ModeContext, cfg, *, repair_fn: RepairFn, num_timesteps: int,
                     image_shape: tuple[int, int, int], use_ema: bool) -> dict:
  """`--mode=inpaint`: repairs the first `inpaint.num_images` eval images; writes the grid
  (rows: masked input, repaired, original) and the metrics JSON through `ctx`.

  Every check of `cfg` (sampler, jump fields, the masks) runs before the checkpoint is read
  or anything compiled. PSNR and SSIM are on the filled pixels
  (gen_jax/evaluate/masked_metrics.py), next to the same metrics for filling with the mean
  of each image's known pixels.

  Args:
    ctx: the trained run and the engine's services.
    cfg: the `inpaint` config group.
    repair_fn: `DiffusionMethod.inpaint`; num_timesteps: its T; image_shape: (H, W, C).
    use_ema: repair with the EMA params (`sample.use_ema`), else the raw ones.

  Returns:
    The JSON's contents: `psnr`, `ssim` (means over images, on the filled pixels), their
    per-image values, the mean-fill baseline, `seconds` (the chain's call, its compile
    included), `grid`.

  Raises:
    InpaintConfigError: a bad `config.inpaint`.
  """
  H, W, _ = image_shape
  T = num_timesteps
  validate_options(cfg.sampler, cfg.jump_length, cfg.jump_n_sample, cfg.steps, T)
  known = masks_from_config(cfg, H, W, ctx.read_grayscale_image)
  times = chain_times(cfg.sampler, cfg.steps or T, cfg.jump_length, cfg.jump_n_sample)
  model_calls = int(np.sum(times[1:] < times[:-1]))

  state, step = ctx.restore()
  x0 = ctx.eval_images(cfg.num_images)["image"]
  params = state.ema_params if use_ema else state.params
  run = ctx.jit(functools.partial(repair_fn, sampler=cfg.sampler, jump_length=cfg.jump_length,
                                  jump_n_sample=cfg.jump_n_sample, steps=cfg.steps))
  logging.info("Inpainting %d images (%s, mask %s): %d transitions, %d model calls",
               cfg.num_images, cfg.sampler, mask_name(cfg), len(times) - 1, model_calls)
  t0 = time.perf_counter()
  repaired = np.asarray(jax.device_get(run(params, x0, known, jax.random.key(cfg.seed))))
  seconds = time.perf_counter() - t0
  original = np.asarray(jax.device_get(x0))

  fill = ~known
  known_mean = (original * known).sum(axis=(1, 2), keepdims=True) / known.sum(axis=(1, 2),
                                                                              keepdims=True)
  baseline = np.where(known, original, known_mean)
  scores = {name: (masked_psnr(images, original, fill), masked_ssim(images, original, fill))
            for name, images in (("model", repaired), ("mean_fill", baseline))}
  parts = [f"step_{step}", cfg.sampler]
  if cfg.sampler == "repaint":
    parts.append(f"j{cfg.jump_length}r{cfg.jump_n_sample}")
  parts += [f"steps{cfg.steps or T}", mask_name(cfg), f"seed{cfg.seed}"]
  name = "_".join(parts)
  masked_input = np.where(known, original, 0.0)   # the holes in mid-gray
  grid = ctx.write_image_grid(name, np.concatenate([masked_input, repaired, original]),
                              ncols=cfg.num_images)
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
      "grid": grid, "rows": ["masked input", "repaired", "original"],
  }
  logging.info("Wrote %s and %s", grid, ctx.write_json(name, result))
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
