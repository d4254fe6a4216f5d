"""Song et al. 2021, Table 1's grid on MNIST: sampler settings of one CPU-trained DDPM.

The same sweep as experiments/song2021_ddim/cifar10.py (eta in 0 / 0.2 / 0.5 / 1 and
sigma-hat, as the authors' code runs them), sampling the eps-prediction, L_simple run of
experiments/ho2020_ddpm/table2_mnist.py (configs/ddpm.py's U-Net, T = 100, 200 updates on
mnist_5k). With T = 100 the step counts are 10 / 20 / 50 / 100 (S = T is the table's
S = 1000 column). Sample quality (FID, KID, precision/recall) from `eval.num_samples` samples
on the MNIST classifier's features (runs/classifier).

  python launch.py --config=experiments/ho2020_ddpm/table2_mnist.py --sweep \
      --workdir=runs/table2_mnist
  python launch.py --config=experiments/song2021_ddim/mnist.py --sweep --mode=eval \
      --workdir=runs/ddim_mnist
  # or only the first and last columns (S = 10 and S = T), 10 of the 20 runs:
  python launch.py --config=experiments/song2021_ddim/mnist.py:quick --sweep --mode=eval \
      --workdir=runs/ddim_mnist
  python launch.py --workdir=runs/ddim_mnist --mode=report

Measured in docs/results.md ("DDIM, Song et al. Table 1's grid on MNIST").
"""
from gen_jax.configs import common
from gen_jax.experiments.ho2020_ddpm import table2_mnist
from gen_jax.experiments.song2021_ddim import cifar10 as ddim_cifar10

# T = 100 here: all T is the last column.
STEPS = [10, 20, 50, 100]


def get_config(arg: str | None = None):
  common.parse_variants("experiments/song2021_ddim/mnist.py", arg, ("quick",))
  config = table2_mnist.get_config()   # the trained run's config (eps, L_simple, beta)
  # The trained run whose checkpoint every sampler setting samples.
  config.eval.checkpoint_from = "runs/table2_mnist/target=eps,loss=simple,variance=fixed"
  config.sample.update(sampler="ddim", steps=50, eta=0.0, timesteps="uniform",
                       ddim_sigma="eta", clip_x0=False)
  # Small sample counts for a 2-core CPU; the eval loss on one small batch.
  config.eval.update(num_samples=100, sample_batch_size=100, bpd_num_images=0,
                     batch_size=16, num_batches=1)
  return config


def get_sweep(arg: str | None = None):
  """Table 1's grid; variant 'quick': its first and last columns only."""
  variants = common.parse_variants("experiments/song2021_ddim/mnist.py", arg, ("quick",))
  steps = [STEPS[0], STEPS[-1]] if "quick" in variants else STEPS
  return common.product(ddim_cifar10.noise_rows(), {"sample.steps": steps})
