"""`--mode=inpaint`: repair masked eval images with a trained diffusion model (no retraining).

  python launch.py --workdir=runs/ddpm --mode=inpaint                       # RePaint, centre box
  python launch.py --workdir=runs/ddpm --mode=inpaint --config.inpaint.sampler=replacement \
      --config.inpaint.mask=left
  python launch.py --workdir=runs/edm --mode=inpaint                        # replacement, edm_heun

Every process offers it (`DiffusionMethod.modes`, `inpaint_mode`); the engine hands it the
trained run and writes its files (`gen_jax.methods.base.ModeContext`). The first
`inpaint.num_images` images of the eval split (in order) get the mask of `config.inpaint`
and are repaired in one compiled call by the process's chain (`Chain`): DDPM's replacement
or RePaint (`ddpm_chain`, gen_jax/methods/diffusion/inpainting.py), or a continuous
process's replacement method with `sample.sampler` (`continuous_chain`). Writes
`<workdir>/inpaint/<name>.png` (rows: masked input, repaired, original) and `<name>.json`
with PSNR and SSIM on the filled pixels (gen_jax/evaluate/masked_metrics.py), next to the
same metrics for filling with the mean of each image's known pixels, and the chain's
sampler and NFE.
"""
from __future__ import annotations

import dataclasses
import functools
import os
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from gen_jax.evaluate.masked_metrics import masked_psnr, masked_ssim
from gen_jax.methods.base import MethodMode, ModeContext
from gen_jax.methods.diffusion import inpainting, samplers
from gen_jax.methods.diffusion.core import Schedule
from gen_jax.methods.diffusion.ddpm import NetworkFn
from gen_jax.methods.diffusion.inpainting import (
  MASKS,
  InpaintConfigError,
  chain_times,
  make_masks,
  validate_masks,
  validate_options,
)

# (params, x0 [B, H, W, C], known [B, H, W, 1], rng) -> repaired images in [-1, 1].
RepairFn = Callable[[Any, jax.Array, jax.Array, jax.Array], jax.Array]


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


# ------------------------------------------------------------------------------ chains


@dataclasses.dataclass(frozen=True)
class Chain:
  """The inpainting chain of one `config.inpaint` on one trained model, checked before
  anything is compiled: what `run_inpaint_mode` asks of the process.

  Attributes:
    repair: (params, x0 [B, H, W, C], known [B, H, W, 1], rng) -> the repaired images,
      clipped to [-1, 1].
    tag: the chain in the files' names, e.g. 'repaint_j10r10_steps250', 'replacement_heun5_nfe9'.
    record: what the JSON says of the chain: `process`, `sampler` (the inpainting method),
      `step_sampler` (what takes each reverse step), `steps`, `nfe` (network evaluations
      per image), and RePaint's jump fields.
  """
  repair: RepairFn
  tag: str
  record: dict[str, Any]


def ddpm_chain(cfg, *, network_of: Callable[[Any], NetworkFn], schedule: Schedule, target: str,
               variance: str, clip_x0: bool) -> Chain:
  """DDPM's chain (`inpainting.repair`): replacement or RePaint over all T steps or
  `inpaint.steps` strided ones, each step down Ho et al.'s Alg. 2 with the model's target,
  reverse variance and `sample.clip_x0`.

  Args:
    cfg: the `inpaint` config group.
    network_of: params -> the network in eval mode (unconditional).

  Raises:
    InpaintConfigError: a bad inpaint.sampler, jump field or inpaint.steps.
  """
  T = schedule.num_timesteps
  validate_options(cfg.sampler, cfg.jump_length, cfg.jump_n_sample, cfg.steps, T)
  S = cfg.steps or T
  options = dict(sampler=cfg.sampler, jump_length=cfg.jump_length,
                 jump_n_sample=cfg.jump_n_sample, steps=cfg.steps)
  times = chain_times(cfg.sampler, S, cfg.jump_length, cfg.jump_n_sample)

  def repair(params, x0, known, rng):
    return inpainting.repair(network_of(params), schedule, x0, known, rng, target=target,
                             variance=variance, clip_x0=clip_x0, **options)

  record = {"process": "ddpm", "sampler": cfg.sampler, "step_sampler": "ddpm", "steps": S,
            "nfe": int(np.sum(times[1:] < times[:-1])), "transitions": len(times) - 1}
  tag = f"{cfg.sampler}_steps{S}"
  if cfg.sampler == "repaint":
    record.update(jump_length=cfg.jump_length, jump_n_sample=cfg.jump_n_sample)
    tag = f"repaint_j{cfg.jump_length}r{cfg.jump_n_sample}_steps{S}"
  return Chain(repair, tag, record)


def continuous_chain(cfg, *, x0_eps_of: Callable[[Any], samplers.X0EpsFn], process: str,
                     prediction: str, sample_cfg) -> Chain:
  """A continuous process's chain: the replacement method (Song et al. 2021, App. I.2;
  `samplers.known_pixels_replaced`) with `sample.sampler` over `inpaint.steps` steps (0:
  `sample.steps`). Before each step the known pixels are a fresh draw of
  N(alpha(t) x_0, sigma(t)^2 I) at the step's time (for 'edm_heun', Karras et al. Alg. 2,
  before its churn), and the sampler then steps the whole image; the output is its last
  step, as DDPM's chain returns it.

  Args:
    cfg: the `inpaint` config group.
    x0_eps_of: params -> the network in eval mode (unconditional) as (x0_hat, eps_hat).
    process, prediction: the trained run's.
    sample_cfg: `config.sample` (sampler, steps, eta, edm_heun's churn fields).

  Raises:
    InpaintConfigError: inpaint.sampler other than 'replacement' (RePaint is DDPM's), the
      adaptive sampler 'rk45', or too few steps.
  """
  sampler = sample_cfg.sampler
  if cfg.sampler != "replacement":
    raise InpaintConfigError(
        f"inpaint.sampler={cfg.sampler!r} with diffusion.process={process!r}: a continuous "
        "process inpaints by replacement; set --config.inpaint.sampler=replacement (and "
        f"--config.inpaint.steps=0 for sample.steps={sample_cfg.steps} steps of "
        f"sample.sampler={sampler!r}). RePaint's resampling (inpaint.sampler='repaint', "
        "inpaint.jump_length, inpaint.jump_n_sample) is DDPM's (diffusion.process='ddpm').")
  if sampler not in samplers.REPLACING_SAMPLERS:
    raise InpaintConfigError(
        f"sample.sampler={sampler!r} picks its steps adaptively, so there is no step before "
        "which to re-noise the known pixels; inpaint with a fixed-step sampler, e.g. "
        f"--config.sample.sampler=heun (one of {samplers.REPLACING_SAMPLERS}), and "
        "--config.inpaint.steps=<N>.")
  steps = cfg.steps or sample_cfg.steps
  least = 2 if sampler == "edm_heun" else 1
  if steps < least:
    raise InpaintConfigError(f"inpaint.steps={cfg.steps} (0: sample.steps={sample_cfg.steps})"
                             f" gives {steps} steps; sample.sampler={sampler!r} needs at least "
                             f"{least}.")
  sde = samplers.SDEOptions.from_config(sample_cfg)
  nfe = samplers.num_evaluations(sampler, samplers.time_grid(process, steps, prediction,
                                                             sampler, sde))
  eta = float(sample_cfg.eta)
  edm_options = dict(s_churn=sample_cfg.s_churn, s_tmin=sample_cfg.s_tmin,
                     s_tmax=sample_cfg.s_tmax, s_noise=sample_cfg.s_noise)

  def repair(params, x0, known, rng):
    x = samplers.sample(x0_eps_of(params), process, rng, x0.shape, sampler=sampler,
                        steps=steps, prediction=prediction, eta=eta, edm_options=edm_options,
                        sde=sde,
                        replace=samplers.known_pixels_replaced(process, x0, known))
    return jnp.clip(x, -1.0, 1.0)

  record = {"process": process, "sampler": "replacement", "step_sampler": sampler,
            "steps": steps, "nfe": nfe}
  tag = f"replacement_{sampler}{steps}" + (f"_nfe{nfe}" if nfe != steps else "")
  return Chain(repair, tag, record)


# ---------------------------------------------------------------------------- the mode


def run_inpaint_mode(ctx: ModeContext, cfg, *, chain_of: Callable[[Any], Chain],
                     image_shape: tuple[int, int, int], use_ema: bool) -> dict:
  """`--mode=inpaint`: repairs the first `inpaint.num_images` eval images; writes the grid
  (rows: masked input, repaired, original) and the metrics JSON through `ctx`.

  Every check of `cfg` (the chain's, the masks) runs before the checkpoint is read or
  anything compiled. PSNR and SSIM are on the filled pixels
  (gen_jax/evaluate/masked_metrics.py), next to the same metrics for filling with the mean
  of each image's known pixels.

  Args:
    ctx: the trained run and the engine's services.
    cfg: the `inpaint` config group.
    chain_of: cfg -> the process's checked `Chain` (`DiffusionMethod.inpaint_chain`).
    image_shape: (H, W, C).
    use_ema: repair with the EMA params (`sample.use_ema`), else the raw ones.

  Returns:
    The JSON's contents: the chain's `record` (sampler, step_sampler, steps, nfe, ...),
    `psnr`, `ssim` (means over images, on the filled pixels), their per-image values, the
    mean-fill baseline, `seconds` (the chain's call, its compile included), `grid`.

  Raises:
    InpaintConfigError: a bad `config.inpaint`.
  """
  H, W, _ = image_shape
  chain = chain_of(cfg)
  known = masks_from_config(cfg, H, W, ctx.read_grayscale_image)

  state, step = ctx.restore()
  x0 = ctx.eval_images(cfg.num_images)["image"]
  params = state.ema_params if use_ema else state.params
  run = ctx.jit(chain.repair)
  logging.info("Inpainting %d images (%s, mask %s): %d network evaluations each",
               cfg.num_images, chain.tag, mask_name(cfg), chain.record["nfe"])
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
  name = "_".join([f"step_{step}", chain.tag, mask_name(cfg), f"seed{cfg.seed}"])
  masked_input = np.where(known, original, 0.0)   # the holes in mid-gray
  grid = ctx.write_image_grid(name, np.concatenate([masked_input, repaired, original]),
                              ncols=cfg.num_images)
  result = {
      "step": step, **chain.record, "mask": mask_name(cfg), "num_images": cfg.num_images,
      "seconds": round(seconds, 2), "fill_fraction": float(fill.mean()),
      "psnr": _summary(scores["model"][0]), "ssim": _summary(scores["model"][1]),
      "psnr_mean_fill": _summary(scores["mean_fill"][0]),
      "ssim_mean_fill": _summary(scores["mean_fill"][1]),
      "psnr_per_image": [_summary(v[None]) for v in scores["model"][0]],
      "ssim_per_image": [_summary(v[None]) for v in scores["model"][1]],
      "grid": grid, "rows": ["masked input", "repaired", "original"],
  }
  logging.info("Wrote %s and %s", grid, ctx.write_json(name, result))
  return result


def inpaint_mode(chain_of: Callable[[Any], Chain], image_shape: tuple[int, int, int],
                 use_ema: bool) -> MethodMode:
  """The `--mode=inpaint` a diffusion method offers (`Method.modes`; Args as
  `run_inpaint_mode`)."""
  return MethodMode(
      help="repair masked eval images (config.inpaint: replacement, or RePaint for DDPM); "
           "grids and PSNR/SSIM of the filled pixels in <workdir>/inpaint/",
      config_group="inpaint",
      run=functools.partial(run_inpaint_mode, chain_of=chain_of, image_shape=image_shape,
                            use_ema=use_ema),
      report=format_report)


def format_report(result: dict) -> str:
  """The lines `launch.py --mode=inpaint` prints."""
  fmt = lambda v, spec: "n/a" if v is None else format(v, spec)
  return "\n".join([
      f"inpaint {result['sampler']} ({result['process']}, {result['step_sampler']} steps) "
      f"mask={result['mask']} ({result['fill_fraction']:.1%} filled), {result['num_images']} "
      f"eval images, step {result['step']}: {result['nfe']} network evaluations each in "
      f"{result['seconds']:.1f}s (compile included)",
      f"filled pixels: PSNR {fmt(result['psnr'], '.2f')} dB, SSIM {fmt(result['ssim'], '.4f')} "
      f"(mean-of-known fill: {fmt(result['psnr_mean_fill'], '.2f')} dB, "
      f"{fmt(result['ssim_mean_fill'], '.4f')})",
      f"grid (masked input | repaired | original): {result['grid']}",
  ])
