"""GAN objectives side by side on mnist_5k: non-saturating, hinge, WGAN-GP, SN-hinge and
RpGAN + R1/R2 (Huang et al. 2024), one small DCGAN at one budget.

Every run trains configs/dcgan.py's network (ngf = ndf = 32, z of 100, 5x5 kernels; G with
BatchNorm) for NUM_STEPS generator updates of 32 fakes, each objective with the optimizer
and discriminator its paper pairs it with, and nothing else changed:

  non_saturating  Goodfellow et al. 2014 §3 with DCGAN's recipe: BatchNorm D, Adam 2e-4,
                  betas (0.5, 0.999), one D update per G update
  hinge           Lim & Ye 2017 / Miyato et al. 2018 §4's loss on the same D and optimizer
  wgan_gp         Gulrajani et al. 2017, Alg. 1: LayerNorm critic, lambda 10, n_critic 5
                  (each step takes 5 x 32 real images), Adam 1e-4, betas (0, 0.9)
  sn_hinge        the hinge loss on a spectrally normalized D without BatchNorm (Miyato et
                  al. 2018), the hinge run's optimizer
  rpgan           Huang et al. 2024, §2: relativistic pairing + R1 + R2 with gamma 0.05 (the
                  release's CIFAR-10 start value, constant here), D without normalization,
                  Adam 2e-4, betas (0, 0.9) (the release's start values)

The eval losses are logged every EVAL_EVERY steps; the sample metrics (FID, KID,
precision/recall, class coverage) of the final checkpoint come from --mode=eval: 1,000 EMA
samples against the 500 test digits, on the features of the classifier of
configs/classifier.py (runs/classifier: train it first); not Inception FIDs
(docs/evaluation.md).

  python launch.py --config=configs/classifier.py --workdir=runs/classifier
  python launch.py --config=experiments/gan_objectives/mnist_5k.py --sweep \
      --workdir=runs/gan_objectives
  for run in runs/gan_objectives/loss=*; do
    python launch.py --workdir="$run" --mode=eval
  done
  python launch.py --workdir=runs/gan_objectives --mode=report

Measured in docs/results.md ("GAN objectives on mnist_5k").
"""
from gen_jax.configs import common, dcgan

NUM_STEPS = 600       # generator updates per run
EVAL_EVERY = 200
BATCH = 32            # real images per D update


def get_config(arg: str | None = None):
  """configs/dcgan.py at the comparison's budget; the sweep sets each objective."""
  common.parse_variants("experiments/gan_objectives/mnist_5k.py", arg, ())
  config = dcgan.get_config()
  config.train.update(batch_size=BATCH, num_steps=NUM_STEPS, log_every=50,
                      checkpoint_every=EVAL_EVERY, sample_every=EVAL_EVERY)
  config.eval.update(every=EVAL_EVERY)
  return config


def get_sweep(arg: str | None = None):
  """One run per objective, with the optimizer and D its paper pairs it with."""
  common.parse_variants("experiments/gan_objectives/mnist_5k.py", arg, ())
  return [
      {"gan.loss": "non_saturating"},
      {"gan.loss": "hinge"},
      {"gan.loss": "wgan_gp", "gan.n_critic": 5, "gan.d_norm": "layer",
       "train.batch_size": 5 * BATCH, "train.lr": 1e-4, "train.b1": 0.0, "train.b2": 0.9},
      {"gan.loss": "rpgan", "gan.gamma": 0.05, "gan.d_norm": "none", "train.b1": 0.0,
       "train.b2": 0.9},
      {"gan.loss": "hinge", "gan.d_spectral_norm": True, "gan.d_norm": "none"},
  ]
