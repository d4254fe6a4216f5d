"""Ma, Goldstein, Albergo, Boffi, Vanden-Eijnden, Xie 2024, "SiT: Exploring Flow and
Diffusion-based Generative Models with Scalable Interpolant Transformers" (arXiv:2401.08740):
SiT-XL/2 on ImageNet 256x256, class-conditional, on Stable Diffusion VAE latents.

Paper (abstract; the authors' README, willisma/SiT): SiT-XL/2 with classifier-free guidance
scale 1.5 and the SDE sampler reaches FID-50K 2.06 (IS 270.27 in the README's table) after
7M steps (ADM's evaluation suite); the README notes 2.15 when sampled on TPU.

Recipe, as the authors' train.py, train_utils.py and transport/ run it:
- network: DiT-XL/2's backbone unchanged (SiT's models.py is DiT's); the authors build it
  with learn_sigma=True and then discard the 4 extra output channels (675,129,632
  parameters in their count). Those channels get no gradient, so with AdamW's weight decay
  0 they stay at their zero init and change nothing: gen_jax builds the same network without
  them (`--mode=summary` prints 674,816,272 trained parameters; 18,448 fewer than
  DiT-XL/2's 674,834,720, the final layer's unused half);
- interpolant (`--path-type Linear`, `--prediction velocity`, no loss weight): x_t =
  (1 - t) x + t eps in gen_jax's time (SiT's t runs the other way), target dx_t/dt, loss
  the mean squared error, t ~ U[0, 1] (train_eps = 0 for velocity on the linear path);
- labels replaced by the null class with p = 0.1; AdamW lr 1e-4 constant, weight decay 0,
  (0.9, 0.999, 1e-8), no warmup or clipping, batch 256, EMA 0.9999 from the initial
  weights, float32; train.py's default is 1400 epochs, the paper's ablations compare at
  400K steps (this file's `num_steps`), the headline model at 7M;
- sampling (sample_ddp.py SDE, train_utils.py's defaults): Euler-Maruyama with the
  diffusion coefficient sigma_t (`--diffusion-form sigma`, norm 1; gen_jax's
  `sample.sde_diffusion='sigma'`), 249 noisy steps uniform over SiT's t in [0, 0.96], then
  the "Mean" step (drift only) of 0.04 to the data (`sample.sde_last_step=0.04`): 250
  network evaluations, guidance scale 1.5 (gen_jax's w = 0.5) on the first 3 of the 4
  channels, as SiT's `forward_with_cfg` (DiT's) does (inherited from the DiT config's
  `sample.guidance_channels=3`). The sampler is pinned
  to SiT's `transport` code on a closed-form model by tests/fixtures/sit/sde_parity.npz
  (tools/make_sit_sde_fixture.py). The probability-flow ODE (`--config.sample.sampler=rk45`,
  Dormand-Prince at 1e-5; SiT's ODE default is dopri5 at atol 1e-6, rtol 1e-3) is the
  other choice.

Data and commands as experiments/peebles2023_dit/imagenet256.py (the same latents folder):

  python launch.py --config=experiments/ma2024_sit/imagenet256.py --workdir=runs/sit_xl2 \
      --config.data.latents_dir=runs/sd_vae/latents/image_folder
  python launch.py --workdir=runs/sit_xl2 --mode=eval        # Inception FID of 50,000 samples
  python tools/placeholder_latents.py --out=/tmp/imagenet256_shapes     # shapes only
  python launch.py --config=experiments/ma2024_sit/imagenet256.py --mode=summary \
      --config.data.latents_dir=/tmp/imagenet256_shapes      # params: 674816272

Our measured number: not measured (needs ImageNet and accelerators).
"""
from gen_jax.configs import common
from gen_jax.experiments.peebles2023_dit import imagenet256 as dit_imagenet256


def get_config(arg: str | None = None):
  """SiT-XL/2: DiT-XL/2's recipe with the linear interpolant and velocity prediction."""
  common.parse_variants("experiments/ma2024_sit/imagenet256.py", arg, ())
  config = dit_imagenet256.get_config()
  # The linear interpolant and velocity; a fixed-variance network (C output channels).
  config.diffusion.update(process="linear", prediction="velocity", variance="fixed",
                          loss="simple")
  # SiT's SDE sampler: diffusion sigma_t, 249 Euler-Maruyama steps and a last "Mean" step
  # of 0.04 (250 evaluations), guidance scale 1.5.
  config.sample.update(sampler="euler_maruyama", steps=250, guidance=0.5,
                       sde_diffusion="sigma", sde_norm=1.0, sde_last_step=0.04)
  return config
