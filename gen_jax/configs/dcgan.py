"""DCGAN (Radford et al. 2016) on MNIST-sized images; hinge and WGAN-GP objectives by switch.

  python launch.py --config=configs/dcgan.py                  # mnist_5k, ~10 min on 2 CPU cores
  python launch.py --config=configs/dcgan.py:smoke            # seconds; what the tests run
  python launch.py --config=configs/dcgan.py --config.gan.loss=hinge
  python launch.py --config=configs/dcgan.py:loss=wgan_gp     # + Gulrajani et al.'s n_critic/Adam
  python launch.py --config=configs/dcgan.py:dataset=cifar10 --config.data.manual_dir=/path
  python launch.py --config=configs/dcgan.py:conditional     # class-conditional (projection D)
  python launch.py --workdir=runs/dcgan_conditional --mode=sample --config.sample.label=7

`get_config(arg)`: `arg` is a comma-separated list of variants: `smoke`, `dataset=<name>`,
`loss=<non_saturating|hinge|wgan_gp|rpgan>` (`loss=wgan_gp` also sets n_critic=5, Adam betas
(0, 0.9), lr 1e-4 and a batch of 5 x 32), `conditional` (model.num_classes=10: conditional
BatchNorm in G, Miyato & Koyama 2018's projection D; 100 samples, one grid row per digit;
docs/results.md "Conditional GAN" has its measured run). `--config.gan.loss=wgan_gp` alone
only swaps the objective (and the critic's normalization, via d_norm='auto').
Paper-exact recipes live in experiments/radford2016_dcgan/ and experiments/gulrajani2017_wgan_gp/.
"""
from __future__ import annotations

import ml_collections

from gen_jax.configs import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  variants = common.parse_variants("configs/dcgan.py", arg,
                                   ("smoke", "dataset", "loss", "conditional"))

  config = common.base_config("gan", common.variant_value(variants, "dataset", "mnist_5k"))

  config.model = ml_collections.ConfigDict()
  # Classes to condition on (conditional BN in G, projection D; Miyato & Koyama 2018):
  # 0 = unconditional, else the number of label values (10 for digits and CIFAR-10).
  config.model.num_classes = 0

  config.gan = ml_collections.ConfigDict()
  # Networks: 'dcgan' (Radford et al.; 28/32/64 px), 'resnet' (Gulrajani et al.'s 32x32
  # CIFAR-10 ResNet, gan_cifar_resnet.py; ngf/ndf are its DIM_G/DIM_D) or 'r3gan' (Huang et
  # al. 2024's ConvNet, stages from gan.r3gan; 4 x 2^(stages - 1) px).
  config.gan.arch = "dcgan"
  # DCGAN layer conventions: 'radford' (N(0, 0.02) init, no bias before a norm) or 'tflib'
  # (the WGAN-GP release: Glorot/'he' uniform init, biases, per-feature first BN in G); the
  # ResNet takes tflib's with either, or 'sngan' (Miyato et al.'s release: D sums its
  # features over H, W, no bias in D's read-out, G's BatchNorm eps 2e-5).
  config.gan.layer_style = "radford"
  # Objective: 'non_saturating' (Goodfellow et al. 2014 §3; DCGAN's), 'hinge',
  # 'wgan_gp' (Gulrajani et al. 2017, Eq. 3) or 'rpgan' (Huang et al. 2024: relativistic
  # pairing with the R1 and R2 penalties).
  config.gan.loss = common.variant_value(variants, "loss", "non_saturating")
  # D (critic) updates per G update; each takes train.batch_size / n_critic real images.
  config.gan.n_critic = 1
  # lambda of the WGAN-GP gradient penalty (wgan_gp only).
  config.gan.gp_weight = 10.0
  # gamma of rpgan's R1 and R2 penalties, gamma/2 E||grad_x D(x)||^2 on real and on fake
  # images (Huang et al. 2024; their CIFAR-10 release starts at 0.05).
  config.gan.gamma = 0.05
  # gamma follows a cosine to gamma x this at train.decay_steps (or num_steps), then stays
  # (the release: 0.1); 1 = constant.
  config.gan.gamma_final_ratio = 1.0
  # > 0: the R3GAN release's EMA of G, decay 0.5^(1 / half-life), the half-life rising from 0
  # to this many steps along a cosine to train.decay_steps (or num_steps); 0 = ema_decay.
  config.gan.ema_halflife_steps = 0.0
  # > 0: Adam's beta2 of both nets follows a cosine from train.b2 to this at
  # train.decay_steps (or num_steps), then stays (the R3GAN release: 0.9 -> 0.99); 0 = b2.
  config.gan.b2_final = 0.0
  # gan.arch='r3gan': per stage from 4x4 up (D mirrors them), the width, residual blocks and
  # groups of the 3x3 conv; each block's inverted bottleneck widens by `expansion`. The
  # default is the release's CIFAR-10 model (train.py preset CIFAR10).
  config.gan.r3gan = ml_collections.ConfigDict()
  config.gan.r3gan.widths = (768, 768, 768, 768)
  config.gan.r3gan.blocks = (2, 2, 2, 2)
  config.gan.r3gan.cardinality = (96, 96, 96, 96)
  config.gan.r3gan.expansion = 2
  # Latent dimension Z (DCGAN: 100).
  config.gan.z_dim = 100
  # Latent prior: 'normal' N(0, I) or 'uniform' U(-1, 1) (the DCGAN authors' code).
  config.gan.z_prior = "normal"
  # G's last hidden width (doubles per lower resolution); DCGAN's 64x64 model: 128.
  config.gan.ngf = 32
  # D's first width (doubles per lower resolution); DCGAN's 64x64 model: 128.
  config.gan.ndf = 32
  # Kernel side of every (transposed) convolution (DCGAN code: 5).
  config.gan.kernel_size = 5
  # D normalization: 'batch' (DCGAN), 'layer' or 'none' (a WGAN-GP critic must not use
  # BatchNorm); 'auto' = 'none' for arch='resnet', 'layer' for wgan_gp, else 'batch'.
  config.gan.d_norm = "auto"
  # Spectral normalization of every D weight (Miyato et al. 2018): W / sigma(W), one power
  # iteration per training pass of D, its u vectors kept in the train state.
  config.gan.d_spectral_norm = False
  # Coupled L2 penalty l2 * theta added to every gradient of both nets before Adam
  # (dcgan_code: l2 = 1e-5); 0 = none.
  config.gan.l2 = 0.0
  # dcgan_code's loop: each update (G's too, first) takes its own minibatch in turn, so a
  # step holds n_critic + 1 slices of real images and G's slice goes unused.
  config.gan.alternate_minibatches = False
  # G's update takes this many times the m = batch / n_critic fakes (gan_cifar_resnet: 2).
  config.gan.g_batch_multiple = 1

  # The batch of real images is split over the mesh and into n_critic slices (one per D
  # update); with grad_accum_steps > 1 each D/G update's images are split into micro-batches
  # (BatchNorm then sees micro-batch statistics). The optimizer settings serve G and D.
  config.train = common.train_group(
      batch_size=32,      # Radford et al. use 128; 32 gives a 2-core CPU 4x the updates per minute
      num_steps=3000,
      optimizer="adam",
      lr=2e-4,            # Radford et al. §4 (1e-3 "was too high")
      b1=0.5,             # Radford et al. §4 (0.9 "resulted in training oscillation")
      ema_decay=0.999,    # EMA of the generator, used for sampling by default
      sample_every=250)

  config.eval = common.eval_group(every=500, batch_size=100, num_batches=5)
  common.add_sample_metrics(config.eval, config.data.dataset, num_samples=1000,
                            sample_batch_size=500)

  config.sample = common.sample_group(num=64)
  # Latent interpolation grid: S rows x S steps (0 = none); 'slerp' or 'linear'.
  config.sample.interpolation_steps = 8
  config.sample.interpolation = "slerp"
  # G's BatchNorm when drawing samples (grids, sample metrics, eval fakes): 'batch' (the
  # statistics of each generated batch, as the DCGAN and WGAN-GP codes) or 'running'.
  config.sample.batch_norm = "batch"
  # Class of a conditional model's samples: -1 = all classes, one grid row each (at num =
  # num_classes^2), or a class c in [0, num_classes) for every sample.
  config.sample.label = -1

  # Real images: 'none' (x / 127.5 - 1) or 'uniform' (Gulrajani et al.'s ResNet script:
  # (x + U(0, 1)) / 128 - 1, fresh noise in every train step).
  config.data.dequantize = "none"

  if config.data.dataset == "cifar10":
    config.data.random_flip = True
    config.gan.update(ngf=64, ndf=64)

  if "conditional" in variants:
    config.model.num_classes = 10
    config.sample.num = config.model.num_classes ** 2   # 10 x 10 grid: row r = class r

  if config.gan.loss == "wgan_gp" and "loss" in variants:
    # Gulrajani et al. 2017, Alg. 1 defaults.
    # Each critic update keeps the default's batch of real images.
    config.gan.n_critic = 5
    config.train.update(batch_size=5 * config.train.batch_size, lr=1e-4, b1=0.0, b2=0.9)

  if "smoke" in variants:
    config.gan.update(ngf=4, ndf=4, z_dim=8)
    common.apply_smoke(config, train=dict(batch_size=8 * config.gan.n_critic),
                       sample=dict(interpolation_steps=2))
  return config
