"""Ho & Salimans 2022, "Classifier-Free Diffusion Guidance" (arXiv:2207.12598) on mnist_5k:
the guidance weight's trade-off between sample quality/diversity (FID) and how well samples
follow their label, measured on one CPU-trained class-conditional DDPM.

The paper (ImageNet 64x64, Table 1 / Fig. 4): FID is best at a small w (0.1-0.3) and grows
with w, while IS (a proxy of class fidelity) grows with w; p_uncond 0.1-0.2 works best.
Here fidelity is the MNIST classifier's agreement with the requested label (runs/classifier),
next to FID on that classifier's features, for w in GUIDANCE, one sampler-only run per w
that restores the checkpoint of the run variant 'train' trains (configs/ddpm.py:conditional's
U-Net, T = 100 with the linear betas rescaled by 1000/T as in
experiments/ho2020_ddpm/table2_mnist.py, p_uncond = 0.1). Samples: ancestral steps over a
20-step strided chain (sample.ddim_sigma='model', beta), one row per digit.

  python launch.py --config=experiments/ho2022_cfg/mnist.py:train --workdir=runs/cfg_mnist_train
  python launch.py --config=experiments/ho2022_cfg/mnist.py --sweep --mode=eval \
      --workdir=runs/cfg_mnist
  python launch.py --workdir=runs/cfg_mnist --mode=report
  python launch.py --workdir=runs/cfg_mnist_train --mode=sample --config.sample.label=7 \
      --config.sample.guidance=3.0

Measured in docs/results.md ("Classifier-free guidance").
"""
from gen_jax.configs import common, ddpm

# Guidance weights w of the sweep (Ho & Salimans Alg. 2; w = 0 is the conditional model).
GUIDANCE = [0.0, 1.0, 3.0, 5.0]
# Where variant 'train' is trained (the command in the docstring).
TRAINED_RUN = "runs/cfg_mnist_train"


def get_config(arg: str | None = None):
  """The sweep's sampler-only config; variant 'train': the conditional model's training."""
  variants = common.parse_variants("experiments/ho2022_cfg/mnist.py", arg, ("train",))
  config = ddpm.get_config("conditional")
  config.diffusion.update(num_timesteps=100, beta_start=1e-3, beta_end=0.2, p_uncond=0.1)
  # 1,000 updates of 64 digits: ~40 min at the 0.44 steps/s of the loaded 2-core CPU (the
  # measured run was stopped with SIGTERM at step 308, docs/results.md).
  config.train.update(num_steps=1000, warmup_steps=100, log_every=50, checkpoint_every=500,
                      sample_every=500)
  config.eval.update(every=500, batch_size=128, num_batches=2, bpd_num_images=0)
  config.sample.update(sampler="ddim", steps=20, ddim_sigma="model", variance="beta")
  if "train" in variants:
    return config
  # The trained run whose checkpoint every guidance weight samples.
  config.eval.checkpoint_from = TRAINED_RUN
  # 100 samples (10 per digit) per weight on the classifier's features, one batch; the eval
  # loss on one small batch.
  config.eval.update(sample_metrics=True, num_samples=100, sample_batch_size=100,
                     batch_size=16, num_batches=1)
  return config


def get_sweep(arg: str | None = None):
  """One sampler-only run per guidance weight."""
  common.parse_variants("experiments/ho2022_cfg/mnist.py", arg, ())
  return common.product({"sample.guidance": GUIDANCE})
