"""Peebles & Xie 2023, "Scalable Diffusion Models with Transformers" (arXiv:2212.09748):
DiT-XL/2 on ImageNet 256x256, class-conditional, trained on Stable Diffusion VAE latents.

Paper (Table 4, class-conditional ImageNet 256x256, FID-50K with ADM's evaluation suite):
DiT-XL/2-G (cfg = 1.50) FID 2.27, sFID 4.60, IS 278.24, precision 0.83, recall 0.57 after
7M steps; DiT-XL/2 without guidance FID 9.62 at 7M steps. The authors' PyTorch retraining
(their README) reached FID-50K 18.1 at 400K steps without guidance (cfg 1, 250 DDPM steps,
the `mse` VAE decoder); the paper's JAX run 19.5.

Recipe, as the authors' train.py and sample_ddp.py (facebookresearch/DiT) run it:
- network: DiT-XL/2 (28 blocks, D 1152, 16 heads, patch 2) on 32x32x4 latents,
  1000 classes plus the null class, learned sigma (8 output channels): 675,129,632
  parameters in the authors' count, of which 674,834,720 are trained (the rest is the fixed
  position table, a constant in gen_jax/models/dit.py, so `--mode=summary` prints the
  trained 674,834,720);
- diffusion: T = 1000, linear betas 1e-4 -> 0.02, eps-prediction with the learned range of
  the variance (`create_diffusion(timestep_respacing="")`): loss = MSE + the KL term L_t in
  bits per dimension, which is gen_jax's 'hybrid' with lambda T = 0.001 x 1000 = 1;
  labels replaced by the null class with p = 0.1 (classifier-free guidance);
- optimizer: AdamW, lr 1e-4 constant, weight decay 0, torch's (0.9, 0.999, 1e-8), no warmup,
  no clipping, batch 256, float32; EMA 0.9999 from the initial weights (no warm-up);
  train.py's default is 1400 epochs, the paper's ablations stop at 400K steps (this file's
  `num_steps`) and its headline model at 7M;
- data: ADM's centre crop to 256 (gen_jax's image_folder does the same), encoded by
  sd-vae-ft-ema (x 0.18215). The authors encode at every step with a random horizontal
  flip and a fresh draw of z ~ q(z|x); gen_jax's latents store q(z|x) once and draw a fresh
  z every epoch, WITHOUT the flip (a latent cannot be flipped exactly): extract the flipped
  images as a second folder to add it;
- sampling: 250 respaced DDPM steps (ancestral, with the learned variance; gen_jax's
  `ddim` sampler with `ddim_sigma='model'` over the same 250 of the 1000 timesteps),
  classifier-free guidance scale 1.5 (gen_jax's w = scale - 1 = 0.5). The authors'
  `forward_with_cfg` guides only the first 3 of the 4 latent channels (a leftover from
  pixel models, kept for their reported numbers), the 4th and the variance conditional;
  so does this config (`sample.guidance_channels=3`).

Commands. Extract the latents once (docs/latents.md), then train, sample and evaluate:

  python launch.py --config=configs/autoencoder.py:sd,dataset=image_folder \
      --workdir=runs/sd_vae --config.data.image_folder=/path/to/imagenet/train \
      --config.data.image_size=256 --config.init_from=diffusers_vae:/path/to/sd-vae-ft-ema \
      --mode=latents          # -> runs/sd_vae/latents/image_folder
  python launch.py --config=experiments/peebles2023_dit/imagenet256.py --workdir=runs/dit_xl2 \
      --config.data.latents_dir=runs/sd_vae/latents/image_folder
  python launch.py --workdir=runs/dit_xl2 --mode=sample      # decoded 256x256 images
  python launch.py --workdir=runs/dit_xl2 --mode=eval        # Inception FID of 50,000 samples

Shapes alone (no ImageNet): tools/placeholder_latents.py writes a folder with the latents'
shapes, enough for the parameter count and the memory of the train step:

  python tools/placeholder_latents.py --out=/tmp/imagenet256_shapes
  python launch.py --config=experiments/peebles2023_dit/imagenet256.py --mode=summary \
      --config.data.latents_dir=/tmp/imagenet256_shapes      # params: 674834720
  python launch.py --config=experiments/peebles2023_dit/imagenet256.py --mode=compile \
      --cpu_devices=8 --config.data.latents_dir=/tmp/imagenet256_shapes \
      --config.mesh.data=1 --config.mesh.fsdp=8
  # -> FLOPs per update 1.826e+14; per device: state 1.26 GiB, peak 34.44 GiB (float32,
  #    no remat; XLA:CPU's estimate, docs/scaling.md "DiT" for remat and bfloat16)

The FID here is gen_jax's Inception FID of 50,000 EMA samples against the latents' source
images (docs/evaluation.md), not ADM's TensorFlow suite against its reference batch.
The authors trained DiT-XL/2 on TPU v3-256 pods (the paper, §4); their PyTorch retraining
used 8 A100s.

Our measured number: not measured (needs ImageNet and accelerators).
"""
from gen_jax.configs import common, dit, inception_eval

BATCH = 256


def get_config(arg: str | None = None):
  """DiT-XL/2, the paper's recipe."""
  common.parse_variants("experiments/peebles2023_dit/imagenet256.py", arg, ())
  config = dit.get_config()
  # SD-VAE latents of ImageNet (data.latents_dir: the folder --mode=latents wrote); their
  # shape, 32x32x4, is the network's input. No pixel augmentation on latents.
  config.data.dataset = "latents"
  config.data.random_flip = False
  config.model.update(dit_size="DiT-XL/2", num_classes=1000, mlp_ratio=4.0)
  # DDPM, eps with the learned range of the variance, L_simple + L_t (the authors').
  config.diffusion.update(process="ddpm", num_timesteps=1000, schedule="linear",
                          beta_start=1e-4, beta_end=0.02, target="eps",
                          variance="learned_range", loss="hybrid", hybrid_lambda=1e-3,
                          p_uncond=0.1)
  config.train.update(
      batch_size=BATCH, num_steps=400_000, optimizer="adamw", lr=1e-4, b1=0.9, b2=0.999,
      eps=1e-8, weight_decay=0.0, lr_decay="constant", warmup_steps=0, grad_clip=0.0,
      ema_decay=0.9999, ema_warmup=False, log_every=100, checkpoint_every=50_000,
      sample_every=50_000)
  # 250 of the 1000 timesteps (the authors' respacing: both ends kept), ancestral steps with
  # the model's variance; guidance scale 1.5 = w 0.5 on the first 3 latent channels, as the
  # authors' forward_with_cfg. Latents are not clipped.
  config.sample.update(sampler="ddim", steps=250, timesteps="linspace", ddim_sigma="model",
                       guidance=0.5, guidance_channels=3, clip_x0=False, label=-1, num=64)
  config.eval.update(every=50_000, batch_size=BATCH, num_batches=10, bpd_num_images=0)
  inception_eval.add_inception_metrics(config.eval, num_samples=50_000,
                                       reference_split="train", sample_batch_size=250)
  return config
