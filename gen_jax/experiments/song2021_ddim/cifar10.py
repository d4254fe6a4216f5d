"""Song, Meng, Ermon 2021, "Denoising Diffusion Implicit Models", Table 1 — CIFAR-10.

Sampling only: every run of the sweep samples the same trained DDPM (Ho et al.'s CIFAR-10
model, experiments/ho2020_ddpm/cifar10.py), named by `eval.checkpoint_from`; nothing is
retrained. Each sweep member is a sampler-only run: `--mode=eval` restores that checkpoint,
draws `eval.num_samples` samples with its sampler settings and writes its metrics, config
and a 'done' status into its own workdir (gen_jax/engine/modes.py, `trained_workdir`).

Paper's FIDs (Table 1, CIFAR-10, 50k samples; S sampling steps, T = 1000):

  eta \\ S        10      20      50     100    1000
  0.0 (DDIM)    13.36    6.84    4.67    4.16    4.04
  0.2           14.04    7.11    4.77    4.25    4.09
  0.5           16.66    8.35    5.25    4.46    4.29
  1.0           41.07   18.36    8.01    5.78    4.73
  sigma-hat    367.43  133.37   32.72    9.99    3.17

As the authors' code (ermongroup/ddim): the 'quad' timestep subsequence for CIFAR-10
(App. D.2; `sample.timesteps`), the eta rows by `generalized_steps` (Eq. 12 and 16, x0_hat
not clipped: `sample.clip_x0=False`), the sigma-hat row by `ddpm_steps` (ancestral steps on
the strided chain with sigma^2 = 1 - abar_t / abar_prev and x0_hat clipped:
`sample.ddim_sigma='model'`, `sample.variance='beta'`, `sample.clip_x0=True`).

  python launch.py --config=experiments/ho2020_ddpm/cifar10.py --workdir=runs/ddpm_cifar10 ...
  python launch.py --config=experiments/song2021_ddim/cifar10.py --sweep --mode=eval \\
      --workdir=runs/ddim_cifar10 --config.data.manual_dir=/path/with/cifar-10-binary.tar.gz
  python launch.py --workdir=runs/ddim_cifar10 --mode=report

FID as the paper's: Inception FID/IS/KID of 50,000 samples against the CIFAR-10 train split
(inherited from experiments/ho2020_ddpm/cifar10.py; pytorch-fid's weights file, see
docs/evaluation.md); metric names eval/ema/fid_inception_50k_train, is_inception_50k.

Our measured numbers: not yet run (needs the trained CIFAR-10 model and an accelerator).
experiments/song2021_ddim/mnist.py runs the same grid on a CPU-trained MNIST model with FID
on the MNIST classifier's features (docs/results.md).
"""
from gen_jax.configs import common
from gen_jax.experiments.ho2020_ddpm import cifar10 as ho2020_cifar10

# Table 1's columns and rows.
STEPS = [10, 20, 50, 100, 1000]
ETAS = [0.0, 0.2, 0.5, 1.0]


def get_config(arg: str | None = None):
  config = ho2020_cifar10.get_config(arg)   # the trained model's config
  # The trained run whose checkpoint every sampler setting samples.
  config.eval.checkpoint_from = "runs/ddpm_cifar10"
  # DDIM as the authors' code runs it for CIFAR-10: quad subsequence, no x0 clipping.
  config.sample.update(sampler="ddim", steps=100, eta=0.0, timesteps="quad", ddim_sigma="eta",
                       clip_x0=False)
  # The paper's FID protocol: 50k samples; bits/dim do not depend on the sampler.
  config.eval.update(num_samples=50_000, sample_batch_size=500, bpd_num_images=0,
                     num_batches=1)
  return config


def noise_rows() -> list[dict]:
  """Table 1's rows: eta in ETAS by Eq. 16, then sigma-hat (the authors' `ddpm_steps`)."""
  return ([{"sample.eta": eta} for eta in ETAS]
          + [{"sample.ddim_sigma": "model", "sample.variance": "beta", "sample.clip_x0": True}])


def get_sweep(arg: str | None = None):
  return common.product(noise_rows(), {"sample.steps": STEPS})
