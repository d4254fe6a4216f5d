"""Inpainting with a trained diffusion model (gen_jax/methods/diffusion/inpainting.py,
inpainting_mode.py): RePaint's schedule against the authors' code, the chain's exactness on
the known pixels and on a closed-form model, one compiled loop, masks and their errors, and
the masked PSNR/SSIM in closed form; end-to-end `--mode=inpaint` on an untrained smoke DDPM
and on an untrained smoke EDM (replacement with its own sampler).
"""
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image
from smoke import load_config

from gen_jax.engine import checkpoint as ckpt_lib
from gen_jax.engine import method_modes
from gen_jax.engine.experiment import build_experiment
from gen_jax.evaluate.masked_metrics import masked_psnr, masked_ssim
from gen_jax.methods.diffusion import inpainting, inpainting_mode
from gen_jax.methods.diffusion.core import linear_betas, make_schedule
from gen_jax.methods.diffusion.inpainting import InpaintConfigError

# The config group's defaults (configs/ddpm.py: inpaint_group), pinned here.
INPAINT_DEFAULTS = dict(mask="center", fraction=0.25, mask_seed=0, sampler="repaint",
                        jump_length=10, jump_n_sample=10, steps=250, num_images=8, seed=0)


def test_inpaint_config_defaults():
  # RePaint's confs run the 1000-step models on 250 respaced steps (timestep_respacing:
  # '250', schedule_jump_params t_T: 250, jump_length: 10, jump_n_sample: 10).
  config = load_config("ddpm", None)
  assert config.inpaint.to_dict() == INPAINT_DEFAULTS


# ------------------------------------------------------------------------- the schedule

# Lugmayr et al.'s get_schedule_jump(t_T=T, n_sample=1, jump_length=J, jump_n_sample=r)
# (andreas128/RePaint, guided_diffusion/scheduler.py), run on the authors' code:
# (length, sum of i * t_i) of its output.
AUTHORS_SCHEDULES = {(20, 10, 10): (201, 99040), (20, 2, 3): (93, 25168),
                     (250, 10, 10): (4571, 837394030), (50, 1, 4): (345, 960644),
                     (30, 7, 1): (31, 4030), (12, 20, 3): (13, 208), (7, 3, 5): (56, 3220),
                     (1000, 10, 10): (18821, 58466446280)}


def test_repaint_schedule_equals_the_authors():
  assert inpainting.repaint_times(10, 3, 2).tolist() == [
      9, 8, 7, 6, 7, 8, 9, 8, 7, 6, 5, 4, 3, 4, 5, 6, 5, 4, 3, 2, 1, 0, 1, 2, 3, 2, 1, 0, -1]
  for (T, J, r), (length, checksum) in AUTHORS_SCHEDULES.items():
    times = inpainting.repaint_times(T, J, r)
    assert (len(times), int(np.sum(np.arange(len(times)) * times))) == (length, checksum)
    assert np.all(np.abs(np.diff(times)) == 1) and times[0] == T - 1 and times[-1] == -1
  # The paper's setting: 250 steps, j = r = 10 -> 24 jump points, 250 + 9*24*10 model calls.
  times = inpainting.repaint_times(250, 10, 10)
  assert np.sum(np.diff(times) < 0) == 250 + 9 * 24 * 10
  assert inpainting.repaint_times(30, 7, 1).tolist() == inpainting.replacement_times(30).tolist()


# ---------------------------------------------------------------------------- the chain


def point_mass_denoiser(sched, x_star):
  """The exact eps-prediction of a model whose data is the single image x_star."""
  abar = sched.alphas_cumprod

  def denoise(x, t_B):
    a = abar[t_B][:, None, None, None]
    return (x - jnp.sqrt(a) * x_star) / jnp.sqrt(1.0 - a)
  return denoise


@pytest.mark.parametrize("sampler,steps", [("replacement", 0), ("repaint", 0), ("repaint", 7)])
def test_chain_on_a_point_mass_model_returns_the_models_last_step(sampler, steps):
  """With a model that knows the data is x_star, every chain ends at x_star (x0_hat =
  x_star at each step; the last step adds no noise), in the known pixels too: as RePaint's
  p_sample_loop, the output is the model's last step on the whole image (the known pixels
  of x_t are replaced before each step), not x_0 pasted over it."""
  T = 20
  sched = make_schedule(linear_betas(T, 1e-3, 0.2))
  x_star = jnp.linspace(-0.8, 0.8, 2 * 6 * 6).reshape(2, 6, 6, 1)
  x0 = -x_star   # the known pixels differ from what the model would draw
  known = inpainting.make_masks("random_pixels", 2, 6, 6, fraction=0.5, seed=1)
  network, run_sched, target = point_mass_denoiser(sched, x_star), sched, "eps"
  if steps:
    network, run_sched = inpainting.respaced(network, sched, steps, "eps", "beta")
    target = "x0"
  times = inpainting.chain_times(sampler, steps or T, jump_length=3, jump_n_sample=3)
  out = np.asarray(inpainting.inpaint(network, run_sched, jax.random.key(0), x0, known, times,
                                      target=target, variance="beta", clip_x0=True))
  np.testing.assert_allclose(out, np.asarray(x_star), atol=2e-5)


def test_known_pixels_are_fresh_forward_draws_before_each_step():
  """Lugmayr et al.'s p_sample: before the step from level t, the known pixels are
  sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps. A network that returns its input as x0_hat
  (target 'x0') makes the step from t = 0 return its input, so a 1-step chain from the
  second level shows what the model was given: x_0 + sqrt(1 - abar_0) eps in the known
  pixels (not x_0 itself, not the chain's x)."""
  sched = make_schedule(linear_betas(2, 0.1, 0.2))
  x0 = jnp.full((1, 4, 4, 1), 0.5)
  known = inpainting.make_masks("left", 1, 4, 4)
  identity = lambda x, t_B: x
  out = np.asarray(inpainting.inpaint(identity, sched, jax.random.key(1), x0, known,
                                      np.array([1, 0, -1]), target="x0", clip_x0=False))
  kb = np.broadcast_to(known, out.shape)
  abar0 = float(sched.alphas_cumprod[0])
  residual = (out[kb] - np.sqrt(abar0) * 0.5) / np.sqrt(1.0 - abar0)
  assert 0.2 < residual.std() < 3.0 and not np.allclose(out[kb], 0.5)


def smoke_method(data_dir, variance="fixed"):
  config = load_config("ddpm", **{"data.data_dir": data_dir, "diffusion.variance": variance})
  exp = build_experiment(config)
  return exp.method, exp.method.init(jax.random.key(0), None)


def test_repaint_chain_is_one_compiled_loop(data_dir):
  """The whole chain, ups and downs, is one scan over its transitions (a cond inside)."""
  method, state = smoke_method(data_dir, "learned_range")
  x0 = jnp.zeros((2, 28, 28, 1))
  known = inpainting.make_masks("left", 2, 28, 28)
  chain = method.inpaint_chain(config_group(sampler="repaint", jump_length=3, jump_n_sample=2,
                                            steps=0))
  jaxpr = jax.make_jaxpr(lambda p: chain.repair(p, x0, known, jax.random.key(0)))(state.params)
  loops = [e for e in jaxpr.jaxpr.eqns if e.primitive.name in ("scan", "while")]
  T = method.schedule.num_timesteps
  assert [e.primitive.name for e in loops] == ["scan"]
  assert loops[0].params["length"] == len(inpainting.repaint_times(T, 3, 2)) - 1
  body = loops[0].params["jaxpr"].jaxpr
  assert "cond" in [e.primitive.name for e in body.eqns]


# -------------------------------------------------------------------------------- masks


def test_masks():
  center = inpainting.make_masks("center", 3, 28, 28, fraction=0.25)
  assert center.shape == (3, 28, 28, 1) and center.dtype == bool
  assert (~center[0, 7:21, 7:21]).all() and (~center).sum() == 3 * 14 * 14
  left = inpainting.make_masks("left", 1, 28, 28)
  assert (~left[0, :, :14]).all() and left[0, :, 14:].all()
  right = inpainting.make_masks("right", 1, 28, 28)
  assert (~right[0, :, 14:]).all() and right[0, :, :14].all()
  pixels = inpainting.make_masks("random_pixels", 2, 28, 28, fraction=0.3, seed=5)
  assert ((~pixels).sum(axis=(1, 2, 3)) == round(0.3 * 784)).all()
  assert (pixels[0] != pixels[1]).any()
  np.testing.assert_array_equal(pixels, inpainting.make_masks("random_pixels", 2, 28, 28,
                                                              fraction=0.3, seed=5))
  strokes = inpainting.make_masks("strokes", 4, 28, 28, fraction=0.2, seed=0)
  filled = (~strokes).mean(axis=(1, 2, 3))
  assert (filled >= 0.2).all() and (filled < 0.5).all()


def masks_from_config(cfg, height, width):
  return inpainting_mode.masks_from_config(cfg, height, width, method_modes.read_grayscale_image)


def config_group(**fields):
  import ml_collections
  return ml_collections.ConfigDict({**INPAINT_DEFAULTS, "num_images": 2, **fields})


def test_bad_masks_are_clear_errors(tmp_path):
  with pytest.raises(InpaintConfigError, match="expected one of"):
    masks_from_config(config_group(mask="circle"), 28, 28)
  with pytest.raises(InpaintConfigError, match="fraction"):
    masks_from_config(config_group(mask="random_pixels", fraction=1.0), 28, 28)
  with pytest.raises(InpaintConfigError, match="no pixel to fill"):
    inpainting.validate_masks(np.ones((2, 28, 28, 1), bool), 2, 28, 28)
  with pytest.raises(InpaintConfigError, match="no known pixel"):
    inpainting.validate_masks(np.zeros((1, 28, 28, 1), bool), 2, 28, 28)
  with pytest.raises(InpaintConfigError, match="28x28"):
    inpainting.validate_masks(np.zeros((2, 32, 32, 1), bool), 2, 28, 28)
  garbage = tmp_path / "garbage.png"
  garbage.write_bytes(b"not a png")
  with pytest.raises(InpaintConfigError, match="cannot be read"):
    masks_from_config(config_group(mask=str(garbage)), 28, 28)
  with pytest.raises(InpaintConfigError, match="cannot be read"):
    masks_from_config(config_group(mask=str(tmp_path / "missing.png")), 28, 28)
  small = tmp_path / "small.png"
  Image.fromarray(np.zeros((16, 16), np.uint8)).save(small)
  with pytest.raises(InpaintConfigError, match="16x16"):
    masks_from_config(config_group(mask=str(small)), 28, 28)
  white = tmp_path / "white.png"
  Image.fromarray(np.full((28, 28), 255, np.uint8)).save(white)
  with pytest.raises(InpaintConfigError, match="no pixel to fill"):
    masks_from_config(config_group(mask=str(white)), 28, 28)
  good = np.full((28, 28), 255, np.uint8)
  good[10:15, 3:9] = 0
  Image.fromarray(good).save(tmp_path / "hole.png")
  known = masks_from_config(config_group(mask=str(tmp_path / "hole.png")), 28, 28)
  assert known.shape == (2, 28, 28, 1) and (~known).sum() == 2 * 5 * 6
  with pytest.raises(InpaintConfigError, match="sampler"):
    inpainting.validate_options("ddim", 10, 10, 0, 20)
  with pytest.raises(InpaintConfigError, match="steps"):
    inpainting.validate_options("repaint", 10, 10, 50, 20)


# ------------------------------------------------------------------------------ metrics


def test_masked_psnr_and_ssim_closed_form():
  original = np.zeros((1, 32, 32, 1), np.float32)   # 0.5 in [0, 1]
  region = np.zeros((1, 32, 32, 1), bool)
  region[:, :, :8] = True
  repaired = np.where(region, original + 0.2, original + 1.0)   # known pixels far off
  # MSE in [0, 1] over the region: 0.1^2 -> PSNR 20 dB; the known pixels do not count.
  np.testing.assert_allclose(masked_psnr(repaired, original, region), [20.0], rtol=1e-5)
  # Constant images a, b: SSIM = (2ab + C1) / (a^2 + b^2 + C1), C1 = (0.01)^2.
  a, b, c1 = 0.5, 0.3, 0.01 ** 2
  ssim = masked_ssim(np.full_like(original, 2 * b - 1), original, region)
  np.testing.assert_allclose(ssim, [(2 * a * b + c1) / (a * a + b * b + c1)], rtol=1e-4)
  # Equal within 5 pixels of the region's window centres (columns 5..7): SSIM 1, although
  # the images differ in most of the rest.
  noisy = np.where(np.arange(32)[None, None, :, None] < 13, original,
                   np.random.default_rng(0).uniform(-1, 1, original.shape))
  np.testing.assert_allclose(masked_ssim(noisy, original, region), [1.0], atol=1e-6)
  assert float(masked_ssim(noisy, original, np.ones_like(region))[0]) < 0.5
  assert np.isnan(masked_ssim(noisy, original, np.zeros_like(region))).all()
  assert np.isnan(masked_psnr(noisy, original, np.zeros_like(region))).all()


# ------------------------------------------------------------------------------ the mode


def test_inpaint_mode_end_to_end(tmp_path, data_dir):
  """--mode=inpaint's function on an untrained smoke DDPM saved as a step-0 checkpoint
  (compiling the U-Net's gradient would dominate; the mode does not care whether it was
  trained): RePaint on the left halves of the first 4 eval digits; the grid's rows are
  masked input | repaired | original, the repaired row's known half is the model's last
  step (close to the original: the untrained U-Net predicts eps near 0, so x0_hat is the
  known half re-noised to t = 0), and the JSON has the metrics."""
  workdir = str(tmp_path / "run")
  config = load_config("ddpm", **{"data.data_dir": data_dir})
  ckpt = ckpt_lib.Checkpointer(os.path.join(workdir, "checkpoints"), async_save=False)
  ckpt.save(0, build_experiment(config).init_state(), None)
  ckpt.close()
  config.inpaint.update(mask="left", sampler="repaint", jump_length=3, jump_n_sample=2,
                        num_images=4, steps=0)
  result, _ = method_modes.run_method_mode(config, workdir, "inpaint")
  T = config.diffusion.num_timesteps
  assert result["nfe"] == int(np.sum(np.diff(inpainting.repaint_times(T, 3, 2)) < 0))
  assert (result["process"], result["step_sampler"], result["steps"]) == ("ddpm", "ddpm", T)
  assert os.path.basename(result["grid"]) == f"step_0_repaint_j3r2_steps{T}_left_seed0.png"
  assert result["fill_fraction"] == 0.5 and np.isfinite(result["psnr"])
  assert -1.0 <= result["ssim"] <= 1.0 and len(result["psnr_per_image"]) == 4
  saved = json.load(open(result["grid"].replace(".png", ".json")))
  assert saved["psnr"] == result["psnr"]
  assert os.path.dirname(result["grid"]) == os.path.join(workdir, "inpaint")
  grid = np.asarray(Image.open(result["grid"]))
  assert grid.shape == (3 * 30 + 2, 4 * 30 + 2)
  tile = lambda row, col: grid[2 + 30 * row:30 * row + 30, 2 + 30 * col:30 * col + 30]
  for col in range(4):
    assert np.abs(tile(1, col)[:, 14:].astype(int) - tile(2, col)[:, 14:]).mean() < 3
    np.testing.assert_array_equal(tile(0, col)[:, 14:], tile(2, col)[:, 14:])
    assert (tile(0, col)[:, :14] == 128).all()   # the hole, mid-gray
  assert "PSNR" in inpainting_mode.format_report(result)
  with pytest.raises(InpaintConfigError, match="no pixel to fill"):   # before any compile
    config.inpaint.update(mask="random_pixels", fraction=1e-6)
    method_modes.run_method_mode(config, workdir, "inpaint")


def test_inpaint_mode_on_a_continuous_process(tmp_path, data_dir):
  """--mode=inpaint of an untrained smoke EDM (configs/ddpm.py:edm,smoke; step-0 checkpoint):
  replacement with its own sampler, Karras et al.'s Heun (5 steps: 9 network evaluations).
  RePaint and the adaptive 'rk45' are ConfigErrors before anything is compiled. The output
  is the sampler's last step, D(x; 0.002) of the known pixels re-noised to sigma = 0.002:
  they come back within 0.002 x a few standard deviations of the input (about 1 level of
  255; 2 after rounding), while the hole is drawn by the model."""
  workdir = str(tmp_path / "run")
  config = load_config("ddpm", "edm,smoke", **{"data.data_dir": data_dir})
  method = build_experiment(config).method
  assert list(method.modes()) == ["inpaint"]
  ckpt = ckpt_lib.Checkpointer(os.path.join(workdir, "checkpoints"), async_save=False)
  ckpt.save(0, build_experiment(config).init_state(), None)
  ckpt.close()
  assert (config.inpaint.sampler, config.inpaint.steps) == ("replacement", 0)
  config.inpaint.update(mask="left", num_images=4)
  with pytest.raises(InpaintConfigError, match="set --config.inpaint.sampler=replacement"):
    method.inpaint_chain(config_group(sampler="repaint"))
  with pytest.raises(InpaintConfigError, match="'rk45' picks its steps adaptively"):
    config.sample.sampler = "rk45"
    method_modes.run_method_mode(config, workdir, "inpaint")
  config.sample.sampler = "edm_heun"

  result, report = method_modes.run_method_mode(config, workdir, "inpaint")
  assert {k: result[k] for k in ("process", "sampler", "step_sampler", "steps", "nfe")} == dict(
      process="edm", sampler="replacement", step_sampler="edm_heun", steps=5, nfe=9)
  assert os.path.basename(result["grid"]) == "step_0_replacement_edm_heun5_nfe9_left_seed0.png"
  assert json.load(open(result["grid"].replace(".png", ".json")))["nfe"] == 9
  assert "edm_heun steps" in report and "9 network evaluations" in report
  grid = np.asarray(Image.open(result["grid"])).astype(int)
  tile = lambda row, col: grid[2 + 30 * row:30 * row + 30, 2 + 30 * col:30 * col + 30]
  for col in range(4):
    assert np.abs(tile(1, col)[:, 14:] - tile(2, col)[:, 14:]).max() <= 2
    assert np.abs(tile(1, col)[:, :14] - tile(2, col)[:, :14]).mean() > 10
