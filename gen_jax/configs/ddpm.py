"""Diffusion on MNIST-sized images: DDPM (Ho et al. 2020) and the continuous processes.

  python launch.py --config=configs/ddpm.py                  # mnist_5k, ~10 min on 2 CPU cores
  python launch.py --config=configs/ddpm.py:smoke            # seconds; what the tests run
  python launch.py --config=configs/ddpm.py:dataset=mnist --config.data.manual_dir=/path/to/mnist
  python launch.py --config=configs/ddpm.py:conditional      # guided by class (Ho & Salimans 2022)
  python launch.py --workdir=<run> --mode=sample --config.sample.label=7 \
      --config.sample.guidance=3.0
  python launch.py --config=configs/ddpm.py:latents --config.data.latents_dir=<folder>

`get_config(arg)`: `arg` is a comma-separated list of variants: `smoke`, `dataset=<name>`,
`conditional` (model.num_classes=10, labels dropped with p_uncond=0.1, classifier-free
guidance w=1, 100 samples: one grid row per digit; docs/results.md "Classifier-free
guidance"), and one per continuous process (`PROCESS_VARIANTS`): `vp`, `edm`, `flow`, `sit`,
`gvp`, e.g. `python launch.py --config=configs/ddpm.py:edm,smoke`; and `latents`: latent
diffusion (Rombach et al. 2022) on the latents folder `data.latents_dir` that an
autoencoder's --mode=latents wrote (docs/latents.md): the network's input is the latent,
x0 is not clipped, no bits/dim, and samples are decoded to images.
Paper-exact recipes live in experiments/ (e.g. experiments/ho2020_ddpm/cifar10.py).
"""
from __future__ import annotations

import ml_collections

from gen_jax.configs import common

# Variants that train a continuous process: (process, prediction, sampler, sample steps).
PROCESS_VARIANTS = {
    "vp": ("vp", "eps", "euler_maruyama", 100),        # Song et al. 2021, VP SDE
    "edm": ("edm", "edm", "edm_heun", 18),             # Karras et al. 2022, Alg. 1 (35 NFE)
    "flow": ("linear", "velocity", "euler", 50),       # rectified flow (Liu et al. 2023)
    "sit": ("linear", "velocity", "heun", 50),         # SiT's linear interpolant, ODE
    "gvp": ("gvp", "velocity", "heun", 50),            # SiT's GVP interpolant, ODE
}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  variants = common.parse_variants("configs/ddpm.py", arg, ("smoke", "dataset", "conditional",
                                                            "latents", *PROCESS_VARIANTS))

  config = common.base_config("diffusion", common.variant_value(variants, "dataset", "mnist_5k"))

  # Training augmentation: 'none', or 'edm' (Karras et al. 2022, App. C.4: geometric,
  # non-leaking; the network is told the augmentation through its augment labels) with
  # probability augment_p per transformation (EDM's CIFAR-10: 0.12).
  config.data.augment = "none"
  config.data.augment_p = 0.12
  # Reflow (Liu et al. 2023): the (noise, image) pairs files (or their folder) that a flow's
  # --mode=reflow wrote; data.train_split='pairs' trains on them as couplings
  # (gen_jax/data/couplings.py). '' = none.
  config.data.pairs = ""
  # dataset='latents': the folder of autoencoder latents that --mode=latents wrote
  # (gen_jax/data/latents.py); their shape is the network's image shape.
  config.data.latents_dir = ""

  config.model = ml_collections.ConfigDict()
  # 'unet' (Ho et al. App. B; the fields below) or 'ddpmpp' (Song et al.'s DDPM++ as EDM
  # configures it for CIFAR-10: gen_jax/models/song_unet.py, ddpmpp_cifar10_kwargs).
  config.model.architecture = "unet"
  # U-Net of Ho et al. App. B, scaled down for 28x28 digits on a CPU.
  config.model.ch = 16
  config.model.ch_mult = (1, 2, 2)
  config.model.num_res_blocks = 1
  config.model.attn_resolutions = (7,)
  config.model.dropout = 0.0
  config.model.num_groups = 8
  # Recompute each ResBlock/attention block in the backward pass (less memory, ~1/3 more FLOPs).
  config.model.remat = False
  # Classes of the label embedding (Ho & Salimans 2022): 0 = unconditional, 10 for digits.
  config.model.num_classes = 0

  config.diffusion = ml_collections.ConfigDict()
  # The noise process x_t = alpha(t) x_0 + sigma(t) eps (gen_jax/methods/diffusion/core.py):
  # 'ddpm' (Ho et al.'s discrete T steps: num_timesteps, schedule, target, loss, variance
  # below), or the continuous 'vp' (Song et al. 2021), 'edm' (Karras et al. 2022,
  # sigma = t), 'linear' (rectified flow / SiT, x_t = (1 - t) x_0 + t eps) or 'gvp' (SiT).
  config.diffusion.process = "ddpm"
  # What the network predicts for a continuous process: 'eps', 'x0', 'v', 'score',
  # 'velocity' (dx_t/dt) or 'edm' (Karras et al.'s preconditioned D(x; sigma)).
  config.diffusion.prediction = "eps"
  # EDM (Karras et al. Table 1): sigma_data, and ln(sigma) ~ N(p_mean, p_std^2) in training.
  config.diffusion.edm = ml_collections.ConfigDict()
  config.diffusion.edm.sigma_data = 0.5
  config.diffusion.edm.p_mean = -1.2
  config.diffusion.edm.p_std = 1.2
  # T: number of diffusion steps.
  config.diffusion.num_timesteps = 1000
  # 'linear' (Ho et al.) or 'cosine' (Nichol & Dhariwal).
  config.diffusion.schedule = "linear"
  config.diffusion.beta_start = 1e-4
  config.diffusion.beta_end = 0.02
  # What the network predicts: 'eps' (Eq. 14), 'x0', 'v' or 'mu' (the posterior mean, Eq. 7).
  config.diffusion.target = "eps"
  # Objective: 'simple' (Eq. 14), 'kl' (the bound's term L_t in bits/dim, as Ho et al.'s
  # code), 'rescaled_kl' (T times it, improved-diffusion's use_kl) or 'hybrid' (Nichol &
  # Dhariwal).
  config.diffusion.loss = "simple"
  # Reverse variance: 'fixed' (sample.variance), 'learned' (diagonal) or 'learned_range'.
  config.diffusion.variance = "fixed"
  # lambda of the hybrid objective L_simple + lambda L_vlb (Nichol & Dhariwal §3.1: 0.001).
  config.diffusion.hybrid_lambda = 1e-3
  # Conditional model: probability of training on the null label (Ho & Salimans Alg. 1).
  config.diffusion.p_uncond = 0.1

  config.train = common.train_group(
      batch_size=64, num_steps=1500, optimizer="adam", lr=2e-3, warmup_steps=100,
      grad_clip=1.0, ema_decay=0.995, sample_every=500)

  config.eval = common.eval_group(every=500, batch_size=128, num_batches=4)
  # Bits/dim (variational bound, Ho et al. Eq. 5) of the first N eval images in --mode=eval
  # (0 = off); each image costs T network calls. Breakdown in eval/step_<N>.json.
  config.eval.bpd_num_images = 100
  config.eval.bpd_batch_size = 50       # images per compiled call
  config.eval.bpd_timestep_batch = 10   # timesteps per network call (x bpd_batch_size images)
  # A continuous process's bits/dim: Heun steps of the probability-flow ODE, and its
  # divergence: 'hutchinson' (one probe per image) or 'exact' (D products: small images).
  config.eval.bpd_ode_steps = 100
  config.eval.bpd_trace = "hutchinson"
  common.add_sample_metrics(config.eval, config.data.dataset, num_samples=1000,
                            sample_batch_size=250)

  config.sample = common.sample_group(num=64)
  # 'ddpm' (Alg. 2, all T steps) or 'ddim' for process='ddpm'; for the continuous
  # processes 'ancestral', 'ddim', 'euler' and 'heun' (the probability-flow ODE),
  # 'euler_maruyama' (the reverse SDE) or 'edm_heun' (Karras et al. Alg. 2, process='edm').
  config.sample.sampler = "ddim"
  config.sample.steps = 100             # sampler steps (0 = all T for process='ddpm')
  # edm_heun's stochasticity (Karras et al. Alg. 2; 0 churn = deterministic Alg. 1).
  config.sample.s_churn = 0.0
  config.sample.s_tmin = 0.0
  config.sample.s_tmax = float("inf")
  config.sample.s_noise = 1.0
  # euler_maruyama's reverse SDE (gen_jax/methods/diffusion/samplers.py SDEOptions): its
  # diffusion coefficient 'sbdm' (Song et al. 2021, Eq. 6) or 'sigma' (SiT's), that
  # coefficient's scale, and the length in t of the last, noiseless step (0: equal steps;
  # SiT: 0.04).
  config.sample.sde_diffusion = "sbdm"
  config.sample.sde_norm = 1.0
  config.sample.sde_last_step = 0.0
  # DDIM subsequence: 'linspace' (ends at T-1), or Song et al.'s code's 'uniform' or 'quad'.
  config.sample.timesteps = "linspace"
  # DDIM noise: 'eta' (Eq. 16), 'model' (ancestral, the model's variance; beta: sigma-hat).
  config.sample.ddim_sigma = "eta"
  # DDIM eta: 0 deterministic, 1 = ancestral-like noise. For this small CPU model eta=1 gives
  # far cleaner digits than eta=0 (docs/results.md).
  config.sample.eta = 1.0
  # sigma^2 of a fixed-variance model (diffusion.variance='fixed'): 'beta' or 'beta_tilde'.
  config.sample.variance = "beta"
  # Clip predicted x0 to [-1, 1] at each step (Ho et al.'s code does; Song et al.'s DDIM not).
  config.sample.clip_x0 = True
  # Class of a conditional model's samples: -1 = all classes, one grid row each (at num =
  # num_classes^2), or a class c in [0, num_classes) for every sample.
  config.sample.label = -1
  # Classifier-free guidance weight w (Ho & Salimans Alg. 2); 0 = the conditional model.
  config.sample.guidance = 0.0
  # Guidance only at noise levels sigma / alpha in (lo, hi] (Kynkaanniemi et al. 2024);
  # the whole chain by default.
  config.sample.guidance_interval = (0.0, float("inf"))
  # Guide only the first N channels of the target, the rest conditional (0: all); the DiT
  # and SiT authors guide 3 of the 4 latent channels.
  config.sample.guidance_channels = 0

  config.inpaint = inpaint_group()
  config.reflow = reflow_group()

  if config.data.dataset == "cifar10":
    config.data.random_flip = True
    config.model.attn_resolutions = (8,)

  if "conditional" in variants:
    config.model.num_classes = 10
    config.sample.num = config.model.num_classes ** 2   # 10 x 10 grid: row r = class r
    config.sample.guidance = 1.0

  for name in PROCESS_VARIANTS:
    if name in variants:
      config.diffusion.process, config.diffusion.prediction = PROCESS_VARIANTS[name][:2]
      config.sample.sampler, config.sample.steps = PROCESS_VARIANTS[name][2:]
      # A continuous process inpaints by replacement with sample.sampler and sample.steps.
      config.inpaint.update(sampler="replacement", steps=0)

  if "latents" in variants:
    config.data.dataset = "latents"
    config.sample.clip_x0 = False         # latents are not bounded to [-1, 1]
    config.eval.bpd_num_images = 0        # bits/dim are for 8-bit pixels
    # configs/autoencoder.py's digits are 7x7x4 latents (f = 4): one resolution, no
    # downsampling (7 is odd), wider and deeper than the pixel U-Net at a 16th of its positions.
    config.model.ch = 64
    config.model.ch_mult = (1,)
    config.model.num_res_blocks = 2
    config.model.attn_resolutions = (7,)

  if "smoke" in variants:
    config.model.ch = 8
    config.model.ch_mult = (1,) if "latents" in variants else (1, 2)
    config.model.num_res_blocks = 1
    config.model.attn_resolutions = () if "latents" in variants else (14,)
    config.model.num_groups = 4
    config.diffusion.num_timesteps = 20
    config.inpaint.steps = 0              # all T = 20
    common.apply_smoke(config, eval=dict(bpd_num_images=0, bpd_batch_size=8,
                                         bpd_timestep_batch=5), sample=dict(steps=5))
  return config


def inpaint_group() -> ml_collections.ConfigDict:
  """`--mode=inpaint` (gen_jax/methods/diffusion/inpainting_mode.py); configs/migration.py
  gives these defaults to diffusion runs saved before the group existed."""
  inpaint = ml_collections.ConfigDict()
  # Pixels to fill: 'center' (a centred box), 'left' / 'right' (half), 'random_pixels',
  # 'strokes' (random brush strokes), or the path of a mask image (white: known, black: fill).
  inpaint.mask = "center"
  # Fraction of the pixels to fill for 'center', 'random_pixels' and 'strokes'.
  inpaint.fraction = 0.25
  # Seed of the random masks (one per image).
  inpaint.mask_seed = 0
  # 'replacement' (Song et al. 2021, App. I.2; every process, a continuous one with
  # sample.sampler) or 'repaint' (Lugmayr et al. 2022, Alg. 1; process 'ddpm').
  inpaint.sampler = "repaint"
  # RePaint: timesteps the chain jumps back at each jump point (j; 10 in the paper).
  inpaint.jump_length = 10
  # RePaint: passes through each jump interval (r; 10 in the paper); 1 = replacement.
  inpaint.jump_n_sample = 10
  # Reverse steps. DDPM: S < T strides the chain over S timesteps, as RePaint runs its
  # 1000-step models on 250 (its confs' timestep_respacing); 0 = all T. A continuous
  # process: steps of sample.sampler; 0 = sample.steps.
  inpaint.steps = 250
  # Images repaired: the first N of the eval split, in order (one compiled call).
  inpaint.num_images = 8
  # Seed of the chain's noise.
  inpaint.seed = 0
  return inpaint


def reflow_group() -> ml_collections.ConfigDict:
  """`--mode=reflow` of a flow ('linear' or 'gvp'; gen_jax/methods/diffusion/reflow.py): the
  (noise, ODE(noise)) pairs it writes for a reflowed run (Liu et al. 2023, Alg. 1)."""
  reflow = ml_collections.ConfigDict()
  # Pairs per call, drawn in batches of batch_size from `seed` (another seed adds new pairs,
  # as the authors' data generation per seed).
  reflow.num_pairs = 1000
  reflow.batch_size = 250
  reflow.seed = 0
  # The ODE: 'rk45' (adaptive, rtol / atol below: the authors') or 'euler' (`steps` steps).
  reflow.solver = "rk45"
  reflow.steps = 100
  reflow.rtol = 1e-5
  reflow.atol = 1e-5
  return reflow
