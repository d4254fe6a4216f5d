"""Ho et al. 2020, Table 2 (parameterizations and objectives) as a sweep on mnist_5k.

Table 2 (CIFAR-10, unconditional; IS / FID, "-" = unstable training):

  mu~ prediction (baseline)
    L, learned diagonal Sigma        7.28 +- 0.10 / 23.69
    L, fixed isotropic Sigma         8.06 +- 0.09 / 13.22
    ||mu~ - mu_theta||^2             -            / -
  eps prediction (ours)
    L, learned diagonal Sigma        -            / -
    L, fixed isotropic Sigma         7.67 +- 0.13 / 13.51
    ||eps~ - eps_theta||^2 (L_simple) 9.46 +- 0.11 / 3.17

and (Table 1) L with fixed isotropic Sigma reaches NLL <= 3.70 bits/dim against L_simple's
3.75: the bound trains the best likelihood, L_simple the best samples. Nichol & Dhariwal
2021's hybrid objective with the learned-range variance (Eq. 15-16) is a seventh row.

Here, at a 2-core-CPU scale: configs/ddpm.py's U-Net (280,177 parameters; 145 more with a
learned variance, whose output has twice the channels), 200 updates of 32 digits per row,
T = 100 with the linear betas rescaled by 1000/T (1e-3 -> 0.2, as Nichol & Dhariwal rescale
for fewer steps) so that bits/dim's T terms are affordable, the fixed variance beta (the
paper's CIFAR-10 choice). Sample quality from 200 samples on the classifier's features
(runs/classifier), drawn by ancestral steps over a 25-step strided chain with each model's
own variance (sample.ddim_sigma='model', Nichol & Dhariwal §4); bits/dim (the bound, Eq. 5,
all T terms) on the first 50 test digits, in --mode=eval.

  python launch.py --config=experiments/ho2020_ddpm/table2_mnist.py --sweep \
      --workdir=runs/table2_mnist
  for r in runs/table2_mnist/*/; do python launch.py --workdir=$r --mode=eval; done
  python launch.py --workdir=runs/table2_mnist --mode=report

Measured in docs/results.md ("Ho et al. Table 2 on mnist_5k").
"""
from gen_jax.experiments.ho2020_ddpm import targets_mnist


def get_config(arg: str | None = None):
  config = targets_mnist.get_config(arg)   # lr 2e-3, batch 32, sample metrics at the end
  config.diffusion.update(num_timesteps=100, beta_start=1e-3, beta_end=0.2)
  config.train.update(num_steps=200, log_every=25, checkpoint_every=200, sample_every=200)
  config.eval.update(every=200, sample_metrics_every=200, num_samples=200,
                     sample_batch_size=200)
  # Ancestral steps on a 25-step strided chain with the model's own variance.
  config.sample.update(sampler="ddim", steps=25, ddim_sigma="model", variance="beta")
  # Bits/dim in --mode=eval: the first 50 test digits, all T terms.
  config.eval.update(bpd_num_images=50, bpd_batch_size=50, bpd_timestep_batch=10)
  return config


def get_sweep(arg: str | None = None):
  # Table 2's rows (eps / L_simple, the paper's model, first: experiments/song2021_ddim/
  # mnist.py samples its checkpoint), then Nichol & Dhariwal's hybrid.
  rows = [
      dict(target="eps", loss="simple", variance="fixed"),
      dict(target="mu", loss="kl", variance="learned"),
      dict(target="mu", loss="kl", variance="fixed"),
      dict(target="mu", loss="simple", variance="fixed"),
      dict(target="eps", loss="kl", variance="learned"),
      dict(target="eps", loss="kl", variance="fixed"),
      dict(target="eps", loss="hybrid", variance="learned_range"),
  ]
  return [{f"diffusion.{k}": v for k, v in row.items()} for row in rows]
