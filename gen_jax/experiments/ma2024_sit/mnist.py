"""Ma, Goldstein, Albergo, Boffi, Vanden-Eijnden, Xie 2024, "SiT: Exploring Flow and
Diffusion-based Generative Models with Scalable Interpolant Transformers" (arXiv:2401.08740)
on mnist_5k: SiT's design axes on one small CPU model.

The sweep crosses SiT's choices (§3; willisma/SiT, transport/): the interpolant
x_t = alpha(t) x + sigma(t) eps ('linear': 1 - t, t; 'gvp': cos, sin of pi t / 2), what the
network predicts ('velocity', 'score', or the noise 'eps', with the targets and conversions
of gen_jax/methods/diffusion/flow.py, checked against SiT's code by tests/methods/
test_flow.py), and the sampler (the probability-flow ODE with Heun steps, or the SDE of
SiT's sample scripts: Euler-Maruyama steps with diffusion coefficient sigma(t) and a last,
noiseless "Mean" step of 0.04, pinned to SiT's code by tests/methods/
test_diffusion_samplers.py). Each of the 12 runs trains its model (configs/ddpm.py's
U-Net, variant `sit`: 1,000 updates of 64 digits) and reports FID on the MNIST classifier's
features (runs/classifier, configs/classifier.py) of 1,000 samples at 50 steps.

The paper's axes are measured on class-conditional ImageNet 256x256 with SiT transformers
(SiT-XL/2: FID-50K 2.06, the abstract and the authors' README); here the same axes on a
network and data that fit a CPU, so only their ordering can be compared.

  python launch.py --config=configs/classifier.py --workdir=runs/classifier
  python launch.py --config=experiments/ma2024_sit/mnist.py --sweep --workdir=runs/sit_mnist
  python launch.py --config=experiments/ma2024_sit/mnist.py --sweep --dry_run \
      --workdir=runs/sit_mnist            # one launch.py command per run
  python launch.py --workdir=runs/sit_mnist --mode=report

Our measured numbers: not yet run.
"""
from gen_jax.configs import common, ddpm

# SiT's interpolants, predictions ('eps' is SiT's "noise") and samplers (ODE, SDE).
PATHS = ["linear", "gvp"]
PREDICTIONS = ["velocity", "score", "eps"]
SAMPLERS = ["heun", "euler_maruyama"]


def get_config(arg: str | None = None):
  """One run of the sweep: the linear interpolant, velocity, the ODE (SiT's default);
  variant `smoke`: seconds, for tests."""
  variants = common.parse_variants("experiments/ma2024_sit/mnist.py", arg, ("smoke",))
  config = ddpm.get_config("sit,smoke" if "smoke" in variants else "sit")
  config.diffusion.update(process="linear", prediction="velocity")
  config.sample.sampler = "heun"
  # SiT's SDE, for the runs that sample with 'euler_maruyama' (samplers.SDEOptions).
  config.sample.update(sde_diffusion="sigma", sde_norm=1.0, sde_last_step=0.04)
  if "smoke" in variants:
    return config
  config.sample.steps = 50
  # 1,000 updates of 64 digits with the U-Net of configs/ddpm.py.
  config.train.update(num_steps=1000, warmup_steps=100, log_every=50, checkpoint_every=500,
                      sample_every=500)
  # FID etc. of 1,000 samples on the classifier's features at the end, one eval batch.
  config.eval.update(every=1000, sample_metrics=True, num_samples=1000,
                     sample_batch_size=250, batch_size=128, num_batches=2, bpd_num_images=0)
  return config


def get_sweep(arg: str | None = None):
  """Interpolant x prediction x sampler: 12 runs."""
  common.parse_variants("experiments/ma2024_sit/mnist.py", arg, ("smoke",))
  return common.product({"diffusion.process": PATHS, "diffusion.prediction": PREDICTIONS,
                         "sample.sampler": SAMPLERS})
