"""Huang et al. 2024, "The GAN is dead; long live the GAN! A Modern GAN Baseline" (R3GAN,
NeurIPS 2024, arXiv:2501.05441) on CIFAR-10, class-conditional: the paper's FID **1.96**
(its CIFAR-10 comparison, config E; 50k samples against the training set).

The released configuration, checked against brownvc/R3GAN@19a7ddf: the README's CIFAR-10
command (`train.py --gpus=8 --batch=512 --mirror=1 --aug=1 --cond=1 --preset=CIFAR10`) and
train.py's CIFAR10 preset, training/training_loop.py and R3GAN/Trainer.py:

  networks   4 stages (4, 8, 16, 32 px) of width 3 x 1024 / 4 = 768, 2 residual blocks
             each, cardinality 3 x 32 = 96 (16 channels per group of the 1536-wide grouped
             conv), expansion 2, z of 64; D mirrors G; class embedding of 64 in G and of 768
             in D (gen_jax/models/r3gan.py; G 20,781,952 and D 21,280,512 parameters, as the
             authors' Networks.py counts them, pinned in tests/models/test_r3gan.py)
  objective  RpGAN + R1 + R2 (§2), gamma 0.05 -> 0.005
  optimizer  Adam, lr 2e-4 -> 5e-5, beta1 0, beta2 0.9 -> 0.99, eps 1e-8, both nets
  schedules  every schedule is the release's cosine_decay_with_warmup over 2e7 images (=
             39,063 steps of 512), constant after: lr, gamma and beta2 as above, the EMA
             half-life of G from 0 to 5e6 images (9,765.6 steps)
  data       batch 512 for D's update and another 512 (with their labels) for G's, the
             fakes of each update drawn for the labels of its reals; x-flips (--mirror=1)
  schedule   one D update then one G update per iteration (n_critic 1)

Here each train step takes 1024 images, slice 0 for G's update and slice 1 for D's
(`gan.alternate_minibatches`; the module docstring of gen_jax/methods/gan.py).

Where this differs from the release, and why:
  * no augmentation: the release trains with the ADA pipeline (--aug=1: xflip, rotate90,
    integer translation, scale, rotation, anisotropy, fractional translation, color and
    cutout) at a probability that rises from 0 to 0.55 over the 2e7 images; gen_jax has no
    differentiable augmentation pipeline yet, so FID will be worse than the paper's;
  * G's update comes before D's within a step (theirs: D, then G), so the alternation starts
    with a G update against the untrained D;
  * float32 throughout; the release runs its three lowest-resolution stages in bfloat16
    (FP16Stages; set --config.dtype=bfloat16 for bf16 compute everywhere);
  * the release trains until stopped (train.py's --kimg default); the paper does not state
    the duration of its CIFAR-10 run. num_steps here is the schedules' horizon (2e7 images);
    decay_steps is fixed, so raising num_steps continues with the final values, as theirs.

  python launch.py --config=experiments/huang2024_r3gan/cifar10.py \
      --workdir=runs/r3gan_cifar10 --config.data.manual_dir=/path/with/cifar-10-binary.tar.gz
  python launch.py --config=experiments/huang2024_r3gan/cifar10.py --mode=summary

Metrics (--mode=eval, configs/inception_eval.py): FID and KID of 50,000 EMA samples against
the CIFAR-10 train split on the FID Inception-v3 (eval/ema/fid_inception_50k_train); the
release's fid50k_full also compares with the full training set.

Hardware: the authors trained on 8 GPUs. Our measured number: not measured (a CPU cannot
train 42M parameters for 39k steps of 1024 images).
"""
import math

from gen_jax.configs import common, dcgan, inception_eval

BATCH = 512                 # real images per update (D's and G's each)
DECAY_IMAGES = 2e7          # the release's `decay_nimg`: every schedule's horizon
DECAY_STEPS = math.ceil(DECAY_IMAGES / BATCH)    # 39,063
EMA_HALFLIFE_IMAGES = 5e6   # `ema_nimg`


def get_config(arg: str | None = None):
  common.parse_variants("experiments/huang2024_r3gan/cifar10.py", arg, ())
  config = dcgan.get_config("dataset=cifar10,conditional")
  config.model.num_classes = 10
  config.gan.update(arch="r3gan", loss="rpgan", n_critic=1, z_dim=64, z_prior="normal",
                    d_norm="auto", l2=0.0, alternate_minibatches=True, g_batch_multiple=1,
                    gamma=0.05, gamma_final_ratio=0.1, b2_final=0.99,
                    ema_halflife_steps=EMA_HALFLIFE_IMAGES / BATCH)
  config.gan.r3gan.update(widths=(768,) * 4, blocks=(2,) * 4, cardinality=(96,) * 4,
                          expansion=2)
  config.data.random_flip = True
  config.train.update(batch_size=2 * BATCH, num_steps=DECAY_STEPS, optimizer="adam", lr=2e-4,
                      lr_decay="cosine", min_lr_ratio=5e-5 / 2e-4, decay_steps=DECAY_STEPS,
                      warmup_steps=0, b1=0.0, b2=0.9, eps=1e-8, grad_clip=0.0,
                      ema_decay=0.0, ema_warmup=False, log_every=100,
                      checkpoint_every=5_000, sample_every=5_000)
  config.eval.update(every=5_000, batch_size=500, num_batches=20)
  inception_eval.add_inception_metrics(config.eval, num_samples=50_000, reference_split="train")
  return config
