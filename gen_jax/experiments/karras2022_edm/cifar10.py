"""Karras, Aittala, Aila, Laine 2022, "Elucidating the Design Space of Diffusion-Based
Generative Models" (arXiv:2206.00364) — CIFAR-10 32x32, DDPM++ with EDM's preconditioning.

Paper (Table 2, "Ours", VP-derived DDPM++ trained with EDM's preconditioning, loss and
augmentation; deterministic Heun sampler, 18 steps = 35 NFE): FID 1.97 unconditional,
1.79 class-conditional (variant `cond`); 50,000 samples against the CIFAR-10 training set,
the minimum of three sets of samples.

Recipe, as the authors' train.py (`--arch=ddpmpp --precond=edm`, CIFAR-10 defaults) runs it:
- network: SongUNet's DDPM++ (gen_jax/models/song_unet.py, `ddpmpp_cifar10_kwargs`: 128
  channels, multipliers (2, 2, 2), 4 blocks, attention at 16x16, dropout 0.13, 9 augment
  labels; 55,733,891 parameters unconditional), wrapped by D(x; sigma) of Eq. 7
  (gen_jax/methods/diffusion/edm.py: c_skip, c_out, c_in, c_noise with sigma_data = 0.5);
- loss: Eq. 8 with lambda(sigma) = 1 / c_out^2 and ln sigma ~ N(-1.2, 1.2^2) (Table 1);
- data: the non-leaky geometric augmentation with p = 0.12 (App. C.4, `data.augment='edm'`,
  gen_jax/data/edm_augment.py: x- and y-flips, isotropic and anisotropic scaling, rotation
  and translation; the network sees the augment labels), no dataset x-flips;
- optimizer: Adam (0.9, 0.999, 1e-8), lr 1e-3 ramped up linearly over the first 10 Mimg
  (19,531 steps of 512), batch 512, 200 Mimg (390,625 steps), no gradient clipping, fp32;
- EMA: half-life 0.5 Mimg, i.e. decay 0.5^(512 / 500,000) = 0.99929 per step. The authors
  also shorten the half-life to 5% of the images seen early in training (ema_rampup_ratio);
  gen_jax's warmup min(decay, (1 + step) / (10 + step)) plays that part (`train.ema_warmup`).
- sampling: Alg. 2 with S_churn = 0 (Alg. 1), 18 steps, sigma in [0.002, 80], rho = 7
  (`sample.sampler='edm_heun'`); the class-conditional model without guidance.

  python launch.py --config=experiments/karras2022_edm/cifar10.py --workdir=runs/edm_cifar10 \
      --config.data.manual_dir=/path/with/cifar-10-binary.tar.gz
  python launch.py --config=experiments/karras2022_edm/cifar10.py:cond \
      --workdir=runs/edm_cifar10_cond --config.data.manual_dir=...
  python launch.py --config=experiments/karras2022_edm/cifar10.py --mode=summary
  # -> params: 55733891 (:cond 55735299), the authors' counts (tests/models/test_song_unet.py)
  python launch.py --config=experiments/karras2022_edm/cifar10.py --sweep --dry_run \
      --workdir=runs/edm_cifar10_sweep   # both models, one command each

The authors trained each CIFAR-10 model for ~2 days on 8 V100s (their README's table).
FID (--mode=eval): Inception FID of 50,000 EMA samples against the CIFAR-10 train split
(configs/inception_eval.py; docs/evaluation.md), metric eval/ema/fid_inception_50k_train.
The authors' reference statistics are of their dataset zip of the 50,000 training images;
the paper reports the minimum of three FIDs of different sample seeds.

Our measured numbers: not yet run (needs an accelerator and the CIFAR-10 files).
"""
from gen_jax.configs import common, ddpm, inception_eval

# Total batch, and the training length and ramp-up in images (train.py's defaults).
BATCH = 512
DURATION_IMAGES = 200_000_000
LR_RAMPUP_IMAGES = 10_000_000
EMA_HALFLIFE_IMAGES = 500_000


def get_config(arg: str | None = None):
  """Unconditional DDPM++ (FID 1.97); variant `cond`: class-conditional (FID 1.79)."""
  variants = common.parse_variants("experiments/karras2022_edm/cifar10.py", arg, ("cond",))
  config = ddpm.get_config("dataset=cifar10,edm")
  # DDPM++ as train.py's --arch=ddpmpp: 128 channels x (2, 2, 2), 4 blocks per resolution,
  # attention at 16x16, dropout 0.13 (SongUNet reads the U-Net's fields).
  config.model.update(architecture="ddpmpp", ch=128, ch_mult=(2, 2, 2), num_res_blocks=4,
                      attn_resolutions=(16,), dropout=0.13)
  # EDM's class-conditional model has no label dropout and samples without guidance.
  config.model.num_classes = 10 if "cond" in variants else 0
  config.diffusion.p_uncond = 0.0
  config.diffusion.update(process="edm", prediction="edm")
  config.diffusion.edm.update(sigma_data=0.5, p_mean=-1.2, p_std=1.2)
  config.data.update(augment="edm", augment_p=0.12, random_flip=False)
  config.train.update(
      batch_size=BATCH, num_steps=DURATION_IMAGES // BATCH, optimizer="adam", lr=1e-3,
      b1=0.9, b2=0.999, eps=1e-8, lr_decay="constant",
      warmup_steps=LR_RAMPUP_IMAGES // BATCH, grad_clip=0.0,
      ema_decay=0.5 ** (BATCH / EMA_HALFLIFE_IMAGES), ema_warmup=True, log_every=100,
      checkpoint_every=10_000, sample_every=50_000)
  config.eval.update(every=50_000, batch_size=512, num_batches=10, bpd_num_images=0)
  config.sample.update(sampler="edm_heun", steps=18, s_churn=0.0, s_tmin=0.0,
                       s_tmax=float("inf"), s_noise=1.0, guidance=0.0, num=100)
  inception_eval.add_inception_metrics(config.eval, num_samples=50_000, reference_split="train")
  return config


def get_sweep(arg: str | None = None):
  """Table 2's two CIFAR-10 models: unconditional and class-conditional."""
  common.parse_variants("experiments/karras2022_edm/cifar10.py", arg, ())
  return [{"model.num_classes": 0}, {"model.num_classes": 10}]
