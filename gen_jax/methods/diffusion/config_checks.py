"""Clear errors for a diffusion config, before anything is compiled (`DiffusionMethod.from_config`).

Each raises `gen_jax.core.errors.ConfigError`: one line saying which field is wrong and what
to set instead.
"""
from __future__ import annotations

import ml_collections

from gen_jax.core.errors import ConfigError
from gen_jax.methods.base import class_rows
from gen_jax.methods.diffusion import core, samplers
from gen_jax.methods.diffusion.ddim import DDIM_SIGMAS, TIMESTEP_SPACINGS
from gen_jax.methods.diffusion.ddpm import LOSSES, TARGETS
from gen_jax.methods.diffusion.variances import LEARNED_VARIANCES
from gen_jax.models.dit import DIT_SIZES

ARCHITECTURES = ("unet", "ddpmpp", "dit")
# The fields a DiT reads (configs/dit.py has them; configs/ddpm.py's model group does not).
DIT_FIELDS = ("dit_size", "patch_size", "hidden_size", "depth", "num_heads", "mlp_ratio",
              "attention_impl")
AUGMENTS = ("none", "edm")


def validate_config(config: ml_collections.ConfigDict) -> None:
  """Checks the `diffusion`, `model`, `data`, `sample` and `eval` fields a diffusion run reads.

  Raises:
    ConfigError: the first bad field.
  """
  cfg = config.diffusion
  if cfg.process not in core.PROCESSES:
    raise ConfigError(f"diffusion.process={cfg.process!r}; expected one of {core.PROCESSES}.")
  if cfg.target not in TARGETS:
    raise ConfigError(f"diffusion.target={cfg.target!r}; expected one of {TARGETS}.")
  if cfg.loss not in LOSSES:
    raise ConfigError(f"diffusion.loss={cfg.loss!r}; expected one of {LOSSES}.")
  if cfg.variance not in ("fixed", *LEARNED_VARIANCES):
    raise ConfigError(f"diffusion.variance={cfg.variance!r}; expected 'fixed' or one of "
                      f"{LEARNED_VARIANCES}.")
  if cfg.loss == "hybrid" and cfg.variance == "fixed":
    raise ConfigError("diffusion.loss='hybrid' trains a learned variance with L_vlb; set "
                      "diffusion.variance='learned_range' (Nichol & Dhariwal) or 'learned'.")
  if cfg.process != "ddpm":
    _validate_continuous(config)
  else:
    _validate_ddpm_sampler(config.sample, cfg.num_timesteps)
  m, d = config.model, config.data
  if m.architecture not in ARCHITECTURES:
    raise ConfigError(f"model.architecture={m.architecture!r}; expected one of {ARCHITECTURES}.")
  if d.augment not in AUGMENTS:
    raise ConfigError(f"data.augment={d.augment!r}; expected one of {AUGMENTS}.")
  if d.augment == "edm" and m.architecture != "ddpmpp":
    raise ConfigError("data.augment='edm' conditions the network on the augmentation labels, "
                      "which only model.architecture='ddpmpp' takes.")
  if d.augment == "edm" and not 0.0 <= d.augment_p <= 1.0:
    raise ConfigError(f"data.augment_p={d.augment_p} must be a probability in [0, 1].")
  if m.architecture == "dit":
    _validate_dit(m, cfg.p_uncond)
  e = config.eval
  if e.bpd_num_images % e.bpd_batch_size:
    raise ConfigError(f"eval.bpd_num_images={e.bpd_num_images} must be a multiple of "
                      f"eval.bpd_batch_size={e.bpd_batch_size}.")
  _validate_conditioning(m.num_classes, cfg.p_uncond, config.sample)
  if d.dataset == "latents":
    _validate_latents(config)


def _validate_dit(m: ml_collections.ConfigDict, p_uncond: float) -> None:
  """Clear errors for a DiT's fields (the image's shape is checked by the model)."""
  missing = [name for name in DIT_FIELDS if name not in m]
  if missing:
    raise ConfigError(f"model.architecture='dit' needs the fields model.{', model.'.join(missing)}"
                      "; start from configs/dit.py.")
  if m.dit_size and m.dit_size not in DIT_SIZES:
    raise ConfigError(f"model.dit_size={m.dit_size!r}; expected '' (the fields patch_size, "
                      f"hidden_size, depth, num_heads) or one of {sorted(DIT_SIZES)}.")
  sizes = DIT_SIZES[m.dit_size] if m.dit_size else m
  if sizes["hidden_size"] % sizes["num_heads"] or sizes["hidden_size"] % 4:
    raise ConfigError(f"model.hidden_size={sizes['hidden_size']} must be divisible by "
                      f"model.num_heads={sizes['num_heads']} and by 4 (the 2-D position "
                      "embedding).")
  if m.attention_impl not in ("", "xla", "cudnn"):
    raise ConfigError(f"model.attention_impl={m.attention_impl!r}; expected '' (JAX's choice), "
                      "'xla' or 'cudnn' (GPU only, with dtype bfloat16).")
  if m.num_classes and p_uncond <= 0:
    raise ConfigError("A class-conditional DiT has the null class (the authors' label table) "
                      "only with class dropout: set diffusion.p_uncond > 0 (0.1 in the paper).")


def _validate_continuous(config: ml_collections.ConfigDict) -> None:
  cfg, s = config.diffusion, config.sample
  try:
    core.validate_prediction(cfg.process, cfg.prediction)
  except ValueError as e:
    raise ConfigError(str(e)) from None
  if cfg.prediction == "edm" and cfg.process != "edm":
    raise ConfigError(f"diffusion.prediction='edm' is Karras et al.'s preconditioned D(x; "
                      f"sigma) of process 'edm'; process={cfg.process!r} takes 'eps', 'x0', "
                      "'velocity' or 'score'.")
  if cfg.loss != "simple" or cfg.variance != "fixed":
    raise ConfigError(f"diffusion.loss={cfg.loss!r} / diffusion.variance={cfg.variance!r} are "
                      f"DDPM's; process={cfg.process!r} trains the squared error of "
                      "diffusion.prediction with a fixed variance: leave them 'simple' and "
                      "'fixed'.")
  if s.sampler not in samplers.SAMPLERS:
    raise ConfigError(f"sample.sampler={s.sampler!r} with diffusion.process={cfg.process!r}; "
                      f"expected one of {samplers.SAMPLERS}.")
  if s.sampler == "edm_heun" and cfg.process != "edm":
    raise ConfigError("sample.sampler='edm_heun' is Karras et al.'s Alg. 2 on process 'edm'; "
                      "use 'heun' for the probability-flow ODE of another process.")
  if s.sampler != "rk45" and s.steps < (2 if s.sampler == "edm_heun" else 1):
    raise ConfigError(f"sample.steps={s.steps}: a continuous process's sampler needs "
                      f"{'at least 2' if s.sampler == 'edm_heun' else 'at least 1'} steps.")
  if s.sampler == "euler_maruyama":
    _validate_sde(s, cfg.process, cfg.prediction)
  if config.eval.bpd_num_images and config.eval.bpd_ode_steps < 1:
    raise ConfigError(f"eval.bpd_ode_steps={config.eval.bpd_ode_steps} must be >= 1.")


def _validate_sde(s: ml_collections.ConfigDict, process: str, prediction: str) -> None:
  """euler_maruyama's `sample.sde_*` (samplers.SDEOptions)."""
  if s.sde_diffusion not in core.SDE_DIFFUSIONS:
    raise ConfigError(f"sample.sde_diffusion={s.sde_diffusion!r}; expected one of "
                      f"{core.SDE_DIFFUSIONS}.")
  if s.sde_norm < 0:
    raise ConfigError(f"sample.sde_norm={s.sde_norm} must be >= 0 (0: the probability-flow "
                      "ODE by Euler steps).")
  if s.sde_last_step < 0:
    raise ConfigError(f"sample.sde_last_step={s.sde_last_step} must be >= 0 (0: equal steps).")
  if s.sde_last_step > 0 and process == "edm":
    raise ConfigError("sample.sde_last_step is a length in t in [0, 1]; process 'edm' steps "
                      "on Karras et al.'s sigma grid: leave it 0.")
  if s.sde_last_step > 0:
    try:
      samplers.time_grid(process, s.steps, prediction, "euler_maruyama",
                         samplers.SDEOptions.from_config(s))
    except ValueError as e:
      raise ConfigError(str(e)) from None


def _validate_ddpm_sampler(cfg: ml_collections.ConfigDict, T: int) -> None:
  """Clear errors for `config.sample` of the discrete process."""
  if cfg.sampler not in ("ddpm", "ddim"):
    raise ConfigError(f"sample.sampler={cfg.sampler!r} with diffusion.process='ddpm'; expected "
                      "'ddpm' or 'ddim' (the ODE and SDE samplers need a continuous process: "
                      f"diffusion.process in {core.CONTINUOUS_PROCESSES}).")
  if cfg.sampler == "ddpm" and cfg.steps not in (0, T):
    raise ConfigError(f"sample.sampler='ddpm' runs all T={T} steps; for sample.steps={cfg.steps} "
                      "use --config.sample.sampler=ddim (with sample.eta=1 for a stochastic chain,"
                      " or sample.ddim_sigma=model for ancestral steps with the model's variance).")
  if cfg.sampler == "ddim" and not 0 <= cfg.steps <= T:
    raise ConfigError(f"sample.steps={cfg.steps} must be in [1, T={T}] (0 means all T).")
  if cfg.variance not in ("beta", "beta_tilde"):
    raise ConfigError(f"sample.variance={cfg.variance!r}; expected 'beta' or 'beta_tilde'.")
  if cfg.timesteps not in TIMESTEP_SPACINGS:
    raise ConfigError(f"sample.timesteps={cfg.timesteps!r}; expected one of {TIMESTEP_SPACINGS}.")
  if cfg.ddim_sigma not in DDIM_SIGMAS:
    raise ConfigError(f"sample.ddim_sigma={cfg.ddim_sigma!r}; expected one of {DDIM_SIGMAS}.")


def _validate_conditioning(num_classes, p_uncond, sample: ml_collections.ConfigDict) -> None:
  """Clear errors for the class-conditioning and guidance fields."""
  label, guidance = sample.label, sample.guidance
  if not isinstance(num_classes, int) or num_classes < 0:
    raise ConfigError(f"model.num_classes={num_classes!r}: expected 0 (unconditional) or the "
                      "number of classes of the dataset's labels (10 for digits).")
  if not 0.0 <= p_uncond <= 1.0:
    raise ConfigError(f"diffusion.p_uncond={p_uncond} must be a probability in [0, 1] "
                      "(Ho & Salimans 2022 use 0.1 or 0.2).")
  if not num_classes and (label != -1 or guidance != 0.0):
    raise ConfigError(f"sample.label={label} / sample.guidance={guidance} need a "
                      "class-conditional model: train with model.num_classes > 0 "
                      "(configs/ddpm.py:conditional).")
  if sample.guidance_channels < 0:
    raise ConfigError(f"sample.guidance_channels={sample.guidance_channels} must be >= 0 (0: "
                      "guide every channel).")
  interval = tuple(sample.guidance_interval)
  if len(interval) != 2 or not 0.0 <= interval[0] < interval[1]:
    raise ConfigError(f"sample.guidance_interval={interval}: expected (lo, hi) with "
                      "0 <= lo < hi, noise levels sigma between which guidance applies.")
  if num_classes:
    try:
      class_rows(1, num_classes, label)
    except ValueError as e:
      raise ConfigError(str(e)) from None


def _validate_latents(config: ml_collections.ConfigDict) -> None:
  """A latents dataset (gen_jax/data/latents.py) is not bounded to [-1, 1] nor quantized to
  256 levels: no clipping of x0, no bits/dim (both assume pixels)."""
  if config.sample.get("clip_x0", False):
    raise ConfigError("data.dataset='latents': sample.clip_x0=True clips the predicted x0 to "
                      "the pixel range [-1, 1], and latents are not bounded; set "
                      "--config.sample.clip_x0=False (configs/ddpm.py:latents does).")
  if config.eval.bpd_num_images:
    raise ConfigError("data.dataset='latents': bits/dim are for 8-bit pixels, not latents; set "
                      "--config.eval.bpd_num_images=0 (configs/ddpm.py:latents does).")
  if config.data.augment != "none" or config.data.get("random_flip", False):
    raise ConfigError("data.dataset='latents': augmentations act on pixels; set "
                      "data.augment='none' and data.random_flip=False.")
