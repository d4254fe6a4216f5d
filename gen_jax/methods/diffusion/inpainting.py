"""Inpainting with a trained unconditional DDPM, no retraining: masks, chains, samplers.

Replacement (Song et al. 2021, "Score-Based Generative Modeling through SDEs", App. I.2;
Sohl-Dickstein et al. 2015, §5): before each reverse step the known pixels of x_t are drawn
from the forward process, q(x_t | x_0) = N(sqrt(abar_t) x_0, (1 - abar_t) I) (Ho et al.
Eq. 4), and the model then steps the whole image, p_theta(x_{t-1} | x_t) (Ho et al. 2020,
Alg. 2). The output is the model's last step, as RePaint's code returns it.

RePaint (Lugmayr et al. 2022, arXiv:2201.09865, Alg. 1 and §4.2's jump schedule): the same
step, but the chain goes back up now and then, x_t ~ q(x_t | x_{t-1}) =
N(sqrt(1 - beta_t) x_{t-1}, beta_t I) (Ho et al. Eq. 2) on the whole image, and down again,
so the model can harmonize the unknown pixels with the re-noised known ones. The schedule
(`repaint_times`) is the authors' `get_schedule_jump` (guided_diffusion/scheduler.py) with
one resample per step: every `jump_length` timesteps the chain jumps back `jump_length`
steps, `jump_n_sample - 1` times. jump_n_sample = 1 is the replacement method.

A mask is True where a pixel is known (kept) and False where it is to be filled, as
RePaint's `gt_keep_mask`. Timesteps are 0-based: index t in [0, T) is the paper's t+1;
level -1 is x_0. `--mode=inpaint` is in gen_jax/methods/diffusion/inpainting_mode.py; a
continuous process's replacement method is `samplers.known_pixels_replaced`.
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from gen_jax.core.errors import ConfigError
from gen_jax.methods.diffusion.core import Schedule, make_schedule
from gen_jax.methods.diffusion.ddim import ddim_timesteps
from gen_jax.methods.diffusion.ddpm import NetworkFn, ddpm_step, x0_and_eps
from gen_jax.methods.diffusion.variances import split_output

# The region to fill: a centred box of `fraction` of the area, the left or right half,
# `fraction` of the pixels at random, or random brush strokes covering about `fraction`.
MASKS = ("center", "left", "right", "random_pixels", "strokes")
SAMPLERS = ("replacement", "repaint")


class InpaintConfigError(ConfigError):
  """A bad `config.inpaint`: an unknown sampler or mask, or a mask that cannot be used."""


# --------------------------------------------------------------------------------- masks


def _stroke_hole(rng: np.random.Generator, H: int, W: int, fraction: float) -> np.ndarray:
  """Random brush strokes (polylines of 2-5 segments, width ~H/7) until `fraction` of the
  pixels are covered (at most 100 strokes)."""
  yy, xx = np.mgrid[0:H, 0:W]
  radius = max(1.0, min(H, W) / 14.0)
  hole = np.zeros((H, W), bool)
  for _ in range(100):
    if hole.mean() >= fraction:
      break
    y, x = rng.uniform(0, H), rng.uniform(0, W)
    for _ in range(rng.integers(2, 6)):
      angle, length = rng.uniform(0, 2 * np.pi), rng.uniform(0.15, 0.4) * max(H, W)
      y2 = float(np.clip(y + length * np.sin(angle), 0, H - 1))
      x2 = float(np.clip(x + length * np.cos(angle), 0, W - 1))
      for s in np.linspace(0.0, 1.0, int(math.ceil(length)) + 1):
        cy, cx = y + (y2 - y) * s, x + (x2 - x) * s
        hole |= (yy - cy) ** 2 + (xx - cx) ** 2 <= radius ** 2
      y, x = y2, x2
  return hole


def make_masks(kind: str, num: int, height: int, width: int, *, fraction: float = 0.25,
               seed: int = 0) -> np.ndarray:
  """Known-pixel masks of one of `MASKS`.

  Args:
    kind: 'center' (a centred box of about `fraction` of the area: sides sqrt(fraction) H
      and sqrt(fraction) W), 'left' / 'right' (that half of the columns), 'random_pixels'
      (round(fraction H W) pixels, uniformly without replacement), 'strokes' (random brush
      strokes covering at least `fraction`).
    num: masks, one per image; the random kinds draw image i's from (seed, i).
    height, width: the image size.

  Returns:
    bool [num, height, width, 1], True where a pixel is known.
  """
  H, W = height, width
  if kind not in MASKS:
    raise InpaintConfigError(f"inpaint.mask={kind!r}; expected one of {MASKS} or the path of "
                             "a mask image.")
  if kind in ("center", "random_pixels", "strokes") and not 0.0 < fraction < 1.0:
    raise InpaintConfigError(f"inpaint.fraction={fraction} must be in (0, 1) for "
                             f"inpaint.mask={kind!r}: the fraction of the pixels to fill.")
  holes = np.zeros((num, H, W), bool)
  if kind == "center":
    h, w = max(1, round(H * math.sqrt(fraction))), max(1, round(W * math.sqrt(fraction)))
    top, left = (H - h) // 2, (W - w) // 2
    holes[:, top:top + h, left:left + w] = True
  elif kind in ("left", "right"):
    holes[:, :, :W // 2] = True
    if kind == "right":
      holes = holes[:, :, ::-1]
  else:
    for i in range(num):
      rng = np.random.default_rng([seed, i])
      if kind == "random_pixels":
        flat = np.zeros(H * W, bool)
        flat[rng.choice(H * W, size=round(fraction * H * W), replace=False)] = True
        holes[i] = flat.reshape(H, W)
      else:
        holes[i] = _stroke_hole(rng, H, W, fraction)
  return ~holes[..., None]


def validate_masks(known_NxHxWx1: np.ndarray, num: int, height: int, width: int) -> np.ndarray:
  """Checks masks before anything is compiled; returns them as bool [num, H, W, 1].

  Raises:
    InpaintConfigError: a shape other than [num or 1, H, W, 1 or absent], or an image whose
      mask has no pixel to fill (nothing to repair; its metrics would be empty) or no known
      pixel (that is unconditional sampling, not inpainting).
  """
  known = np.asarray(known_NxHxWx1)
  if known.ndim == 3:
    known = known[..., None]
  if known.ndim != 4 or known.shape[1:] != (height, width, 1) or known.shape[0] not in (1, num):
    raise InpaintConfigError(f"The inpainting mask has shape {known.shape}; the eval images are "
                             f"{height}x{width}: give a {height}x{width} mask.")
  known = np.broadcast_to(known.astype(bool), (num, height, width, 1))
  for what, bad in (("no pixel to fill (all known)", known.all(axis=(1, 2, 3))),
                    ("no known pixel (all to fill)", ~known.any(axis=(1, 2, 3)))):
    if bad.any():
      raise InpaintConfigError(
          f"The inpainting mask of image(s) {np.flatnonzero(bad)[:5].tolist()} has {what}; a "
          "mask must keep some pixels and fill others (check inpaint.mask, inpaint.fraction).")
  return known


# ----------------------------------------------------------------------------- schedules


def replacement_times(num_steps: int) -> np.ndarray:
  """The replacement chain's levels: T-1, T-2, ..., 0, -1 (one reverse step each)."""
  return np.arange(num_steps - 1, -2, -1, dtype=np.int32)


def repaint_times(num_steps: int, jump_length: int, jump_n_sample: int) -> np.ndarray:
  """Lugmayr et al. 2022, §4.2: the levels RePaint's chain visits, from T-1 down to -1.

  At every jump point t (the multiples of `jump_length` below T - jump_length), reached on
  the way down, the chain goes up `jump_length` levels one at a time and down again,
  `jump_n_sample - 1` times. Consecutive levels differ by one: down is a model step, up a
  forward-process step. Equals the authors' `get_schedule_jump(t_T=T, n_sample=1,
  jump_length, jump_n_sample)` (tests/methods/test_inpaint.py pins it).

  Returns:
    int32 [L] levels; T + 2 (jump_n_sample - 1) jump_length (number of jump points) + 1 of them.
  """
  J, T = jump_length, num_steps
  times = []
  for t in range(T - 1, -1, -1):
    times.append(t)
    if t % J == 0 and t < T - J:
      for _ in range(jump_n_sample - 1):
        times.extend(range(t + 1, t + J + 1))        # up: t+1 .. t+J
        times.extend(range(t + J - 1, t - 1, -1))    # down again: t+J-1 .. t
  times.append(-1)
  return np.asarray(times, np.int32)


def chain_times(sampler: str, num_steps: int, jump_length: int = 10,
                jump_n_sample: int = 10) -> np.ndarray:
  """`replacement_times` or `repaint_times` for `sampler` (one of `SAMPLERS`)."""
  if sampler == "replacement":
    return replacement_times(num_steps)
  return repaint_times(num_steps, jump_length, jump_n_sample)


def validate_options(sampler: str, jump_length: int, jump_n_sample: int, steps: int,
                     num_timesteps: int) -> None:
  """Clear errors for the chain's settings (`config.inpaint`) before anything is compiled."""
  if sampler not in SAMPLERS:
    raise InpaintConfigError(f"inpaint.sampler={sampler!r}; expected one of {SAMPLERS}.")
  if not 0 <= steps <= num_timesteps:
    raise InpaintConfigError(f"inpaint.steps={steps} must be in [1, T={num_timesteps}] "
                             "(0 means all T).")
  if sampler == "repaint" and (jump_length < 1 or jump_n_sample < 1):
    raise InpaintConfigError(f"inpaint.jump_length={jump_length} and inpaint.jump_n_sample="
                             f"{jump_n_sample} must be >= 1 (jump_n_sample=1: no resampling).")


def respaced(network: NetworkFn, sched: Schedule, num_steps: int, target: str,
             variance: str) -> tuple[NetworkFn, Schedule]:
  """A T-step model as a chain over `num_steps` evenly spaced timesteps s_0 < ... < s_{S-1}
  (`ddim_timesteps` 'linspace', improved-diffusion's `space_timesteps(T, "S")`), as RePaint
  runs its 1000-step models on 250 (`timestep_respacing: '250'` in its confs; Nichol &
  Dhariwal 2021, §4: beta_i = 1 - abar_{s_i} / abar_{s_{i-1}}).

  Returns:
    (the network on the strided index i, whose output is x0_hat, converted from `target` at
    s_i, followed by the variance channels of a learned variance; the strided Schedule). Run
    it with target='x0'. A 'learned' log variance is taken as it is (`strided_log_variance`).
  """
  seq = ddim_timesteps(sched.num_timesteps, num_steps, "linspace")
  abar = np.asarray(sched.alphas_cumprod, np.float64)[seq]
  strided = make_schedule(1.0 - abar / np.append(1.0, abar[:-1]))
  seq_S = jnp.asarray(seq)

  def network_on_strided_index(x, i_B):
    t_B = seq_S[i_B]
    mean_out, var_out = split_output(network(x, t_B).astype(jnp.float32), variance)
    x0, _ = x0_and_eps(sched, mean_out, x, t_B, target)
    return x0 if var_out is None else jnp.concatenate([x0, var_out], axis=-1)

  return network_on_strided_index, strided


# -------------------------------------------------------------------------------- chain


def inpaint(network: NetworkFn, sched: Schedule, rng: jax.Array, x0: jax.Array,
            known: jax.Array, times: np.ndarray, *, target: str = "eps",
            variance: str = "beta", clip_x0: bool = True) -> jax.Array:
  """Fills the unknown pixels of `x0` by running the chain through `times` (module doc).

  Down, t -> t-1 (Lugmayr et al. Alg. 1, lines 4-8), as the authors' `p_sample` does it:
  the known pixels of x_t are replaced by a fresh draw of q(x_t | x_0) (Eq. 4; on every
  down step but the chain's first, which starts from pure noise), then the whole image
  takes the model's step,
    x_{t-1} = ddpm_step(known ? sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps : x_t, t).
  Up, t-1 -> t (Alg. 1, line 10): x_t = sqrt(1 - beta_t) x_{t-1} + sqrt(beta_t) z.
  The result is the model's last step on the whole image, as the authors' sampler returns
  it: its known pixels are the model's reconstruction of them, not x_0 pasted back.
  One `lax.scan` over the transitions (a `lax.cond` picks down or up when the schedule
  goes up at all), so the whole chain is one compiled loop.

  Args:
    network, sched, target, variance, clip_x0: the model, as for `ddpm_step`.
    rng: the chain's noise: x_T, then one key per transition.
    x0: [B, H, W, C] images in [-1, 1]; only their known pixels are read.
    known: bool [B, H, W, 1] (or broadcastable), True where the pixel is kept.
    times: int [L] levels from T-1 down to -1, consecutive ones differing by 1
      (`chain_times`).

  Returns:
    [B, H, W, C] samples (not clipped).
  """
  times = np.asarray(times, np.int32)
  t_from, t_to = times[:-1], times[1:]
  if times[0] != sched.num_timesteps - 1 or times[-1] != -1 or np.any(np.abs(t_to - t_from) != 1):
    raise ValueError("times must go from T-1 to -1 in steps of +-1 (chain_times).")
  goes_up = bool(np.any(t_to > t_from))
  init_rng, steps_rng = jax.random.split(rng)
  x_T = jax.random.normal(init_rng, x0.shape, jnp.float32)
  keys = jax.random.split(steps_rng, len(t_from))
  first = np.arange(len(t_from)) == 0

  def down(x, t, key, is_first):
    step_key, known_key = jax.random.split(key)
    abar = sched.alphas_cumprod[t]
    noised = (jnp.sqrt(abar) * x0
              + jnp.sqrt(1.0 - abar) * jax.random.normal(known_key, x0.shape, jnp.float32))
    x = jnp.where(known & ~is_first, noised, x)
    return ddpm_step(network, sched, x, t, step_key, target=target, variance=variance,
                     clip_x0=clip_x0)

  def up(x, t, key):
    beta = sched.betas[t]
    return jnp.sqrt(1.0 - beta) * x + jnp.sqrt(beta) * jax.random.normal(key, x.shape, jnp.float32)

  def transition(x, inp):
    t, t_next, key, is_first = inp
    if not goes_up:
      return down(x, t, key, is_first), None
    return jax.lax.cond(t_next < t, lambda x: down(x, t, key, is_first),
                        lambda x: up(x, t_next, key), x), None

  x, _ = jax.lax.scan(transition, x_T, (t_from, t_to, keys, first))
  return x


def repair(network: NetworkFn, sched: Schedule, x0: jax.Array, known: jax.Array,
           rng: jax.Array, *, target: str, variance: str, clip_x0: bool,
           sampler: str = "repaint", jump_length: int = 10, jump_n_sample: int = 10,
           steps: int = 0) -> jax.Array:
  """`inpaint` with a T-step model run over all T steps or, with `steps` < T, on a strided
  schedule (`respaced`; RePaint's 250 of 1000 is `config.inpaint.steps`' default);
  `DiffusionMethod.inpaint` calls it with its network.

  Args:
    network, sched, target, variance, clip_x0: the model, as for `ddpm_step`.
    x0, known, rng: as for `inpaint`.
    sampler, jump_length, jump_n_sample: `chain_times`.
    steps: reverse steps, 0 = all T.

  Returns:
    [B, H, W, C] repaired images clipped to [-1, 1].
  """
  T = sched.num_timesteps
  validate_options(sampler, jump_length, jump_n_sample, steps, T)
  S = steps or T
  if S != T:
    network, sched = respaced(network, sched, S, target, variance)
    target = "x0"
  out = inpaint(network, sched, rng, x0, known, chain_times(sampler, S, jump_length, jump_n_sample),
                target=target, variance=variance, clip_x0=clip_x0)
  return jnp.clip(out, -1.0, 1.0)
