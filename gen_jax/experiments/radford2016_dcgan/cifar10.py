"""Radford, Metz, Chintala 2016, "Unsupervised Representation Learning with Deep Convolutional
GANs" (arXiv:1511.06434) — the DCGAN recipe on CIFAR-10 (50,000 images, 32x32).

Recipe (§3-4): batch 128, init N(0, 0.02), Adam lr 0.0002, β1 = 0.5;
the authors' code: nz=100, z ~ U(−1, 1), ngf = ndf = 128, 5×5 kernels with stride 2, k=1,
niter=25 epochs (25 x 50,000 / 128 ~ 9,800 steps). The 32x32 networks are the paper's
64x64 ones without their widest stage: G 4x4x512 -> 8x8x256 -> 16x16x128 -> 32x32x3,
D 128 -> 256 -> 512 -> linear. As in the paper, samples come from the raw generator.

The authors' training loop as variants `l2`, `alternate` and `code` (both), and what is
left as is: as in experiments/radford2016_dcgan/mnist.py, whose docstring describes them.

Paper numbers: the paper reports no FID/IS for CIFAR-10 generation;
its CIFAR-10 number is 82.8% linear-SVM accuracy on features of an ImageNet-trained D
(not what this config measures). Later DCGAN measurements on CIFAR-10: FID 28.12
(Kurach et al. 2018, arXiv:1807.04720, as quoted by Mimicry, whose own run gives 28.95±0.42, 10K/10K
samples); StudioGAN (README @ 3f75b83): IS 6.638, FID 49.030 (10K test images, 200k steps
at batch 64); Gulrajani et al. 2017, Table 3: DCGAN IS 6.16±.07.

  python launch.py --config=experiments/radford2016_dcgan/cifar10.py --workdir=runs/dcgan_cifar10 \
      --config.data.manual_dir=/path/with/cifar-10-binary.tar.gz
  python launch.py --config=experiments/radford2016_dcgan/cifar10.py --mode=summary

Metrics (--mode=eval, configs/inception_eval.py): the paper reports none; we use the DDPM /
TTUR protocol: 50,000 samples (raw generator) against the CIFAR-10 train split, IS over 10
splits, on the FID Inception-v3 with pytorch-fid's weights file (docs/evaluation.md). Names:
eval/raw/fid_inception_50k_train, eval/raw/is_inception_50k,
eval/raw/kid_inception_50k_train. Checkpoint: the last (the authors' code trains a fixed 25
epochs). The FIDs quoted above use 10K samples (--config.eval.num_samples=10000), StudioGAN's
against the test split (--config.eval.reference_split=test).

Our measured number: not measured yet (needs the CIFAR-10 files and the weights file).
"""
from gen_jax.configs import common, dcgan, inception_eval
from gen_jax.experiments.radford2016_dcgan import mnist

NAME = "cifar10"
TRAIN_EXAMPLES = 50_000


def get_config(arg: str | None = None):
  variants = common.parse_variants(f"experiments/radford2016_dcgan/{NAME}.py", arg,
                                   ("l2", "alternate", "code"))
  config = dcgan.get_config("dataset=cifar10")
  config.gan.update(loss="non_saturating", n_critic=1, z_dim=100, z_prior="uniform", ngf=128,
                    ndf=128, kernel_size=5, d_norm="batch")
  config.data.random_flip = False    # the paper does not mention augmentation
  config.train.update(batch_size=128, num_steps=9_800, optimizer="adam", lr=2e-4, b1=0.5,
                      b2=0.999, lr_decay="constant", warmup_steps=0, grad_clip=0.0,
                      ema_decay=0.0, log_every=100, checkpoint_every=2_000, sample_every=1_000)
  config.sample.interpolation = "linear"
  config.eval.update(every=2_000, batch_size=500, num_batches=20)
  # G's BatchNorm on each generated batch's statistics, as the code's `_gen`.
  config.sample.batch_norm = "batch"
  inception_eval.add_inception_metrics(config.eval, num_samples=50_000, reference_split="train")
  mnist.apply_code_variants(config, variants, TRAIN_EXAMPLES)
  return config
