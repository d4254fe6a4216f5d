"""experiments/peebles2023_dit/imagenet256.py and experiments/ma2024_sit/imagenet256.py: the
authors' recipes, and `--mode=summary` on the shapes-only latents folder of
tools/placeholder_latents.py (abstract shapes only: nothing is initialized or compiled)."""
import importlib.util
import os

import pytest

from gen_jax.engine import modes
from gen_jax.experiments.ma2024_sit import imagenet256 as sit
from gen_jax.experiments.peebles2023_dit import imagenet256 as dit
from gen_jax.methods.diffusion.ddim import ddim_timesteps

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# facebookresearch/DiT: DiT-XL/2 with learned sigma on 32x32x4 latents, 1000 classes; the
# authors' count includes the fixed position table (256 tokens x 1152).
DIT_XL2_AUTHORS = 675_129_632
DIT_XL2_TRAINED = 674_834_720
POSITION_TABLE = 256 * 1152
UNUSED_SIGMA_HALF = 1152 * 2 * 2 * 4 + 2 * 2 * 4   # SiT's discarded output channels


@pytest.fixture(scope="module")
def latents_dir(tmp_path_factory):
  spec = importlib.util.spec_from_file_location(
      "placeholder_latents", os.path.join(ROOT, "tools", "placeholder_latents.py"))
  assert spec is not None and spec.loader is not None
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.write_placeholder_latents(str(tmp_path_factory.mktemp("imagenet256_shapes")))


def summary_count(config, latents_dir) -> int:
  config.data.latents_dir = latents_dir
  last = modes.summary(config).splitlines()[-1]
  assert last.startswith("params: "), last
  return int(last.split()[-1])


def test_dit_xl2_parameter_count_is_the_authors(latents_dir):
  assert DIT_XL2_TRAINED + POSITION_TABLE == DIT_XL2_AUTHORS
  assert summary_count(dit.get_config(), latents_dir) == DIT_XL2_TRAINED


def test_sit_xl2_is_dit_xl2_without_the_unused_sigma_channels(latents_dir):
  assert summary_count(sit.get_config(), latents_dir) == DIT_XL2_TRAINED - UNUSED_SIGMA_HALF


def test_dit_recipe_is_the_authors_train_and_sample_scripts():
  c = dit.get_config()
  t = c.train
  assert (t.batch_size, t.num_steps, t.optimizer, t.lr, t.lr_decay, t.warmup_steps) == (
      256, 400_000, "adamw", 1e-4, "constant", 0)
  assert (t.weight_decay, t.grad_clip, t.b1, t.b2, t.eps) == (0.0, 0.0, 0.9, 0.999, 1e-8)
  assert (t.ema_decay, t.ema_warmup, c.dtype) == (0.9999, False, "float32")
  assert (c.data.dataset, c.data.random_flip, c.model.dit_size, c.model.num_classes) == (
      "latents", False, "DiT-XL/2", 1000)
  d = c.diffusion
  assert (d.process, d.num_timesteps, d.schedule, d.beta_start, d.beta_end, d.target) == (
      "ddpm", 1000, "linear", 1e-4, 0.02, "eps")
  # improved-diffusion's MSE + vb (loss_type MSE with learned_range) = hybrid, lambda T = 1.
  assert (d.variance, d.loss, d.hybrid_lambda * d.num_timesteps, d.p_uncond) == (
      "learned_range", "hybrid", 1.0, 0.1)
  s = c.sample
  assert (s.sampler, s.steps, s.ddim_sigma, s.clip_x0) == ("ddim", 250, "model", False)
  assert s.guidance + 1 == 1.5                      # cfg scale 1.5 = (1 + w)
  assert s.guidance_channels == 3                    # forward_with_cfg: model_out[:, :3]
  assert c.eval.num_samples == 50_000 and c.eval.bpd_num_images == 0


def test_250_sampling_steps_are_the_authors_respaced_timesteps():
  # facebookresearch/DiT diffusion/respace.py space_timesteps(1000, "250"): one section,
  # stride (1000 - 1) / (250 - 1) accumulated in floating point, each index rounded.
  stride, index, theirs = 999 / 249, 0.0, []
  for _ in range(250):
    theirs.append(round(index))
    index += stride
  c = dit.get_config()
  ours = ddim_timesteps(c.diffusion.num_timesteps, c.sample.steps, c.sample.timesteps)
  assert sorted(int(x) for x in ours) == theirs


def test_sit_recipe():
  c, base = sit.get_config(), dit.get_config()
  assert (c.diffusion.process, c.diffusion.prediction, c.diffusion.variance) == (
      "linear", "velocity", "fixed")
  assert (c.sample.sampler, c.sample.steps, c.sample.guidance) == ("euler_maruyama", 250, 0.5)
  assert c.sample.guidance_channels == 3
  # SiT's sample_ddp.py SDE defaults: diffusion sigma_t, a "Mean" last step of 0.04.
  assert (c.sample.sde_diffusion, c.sample.sde_norm, c.sample.sde_last_step) == (
      "sigma", 1.0, 0.04)
  assert c.train.to_dict() == base.train.to_dict() and c.model.to_dict() == base.model.to_dict()


@pytest.mark.parametrize("module", [dit, sit])
def test_no_variants(module):
  with pytest.raises(ValueError, match="unknown variant"):
    module.get_config("smoke")
