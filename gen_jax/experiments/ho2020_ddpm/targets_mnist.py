"""Ablation: what the DDPM network predicts (eps, x0 or v) x two learning rates, on mnist_5k.

Ho et al. 2020 (§3.2, §4.2) predict the noise eps and report that predicting the mean
directly works worse; Salimans & Ho 2022 (§4) introduce v = sqrt(abar) eps - sqrt(1-abar) x0.
This sweep trains configs/ddpm.py's U-Net briefly with each target at lr 2e-3 and 5e-4 (6 runs)
on the embedded 5,000 digits and compares sample quality on the engine-trained classifier's
features (FID, KID, precision/recall; docs/evaluation.md), measured on 250 DDIM samples at
the end of each run. The eval loss (`eval/*/loss`) is each target's own regression error,
so it is comparable only between runs with the same target.

  python launch.py --config=configs/classifier.py                      # the feature extractor, once
  python launch.py --config=experiments/ho2020_ddpm/targets_mnist.py --sweep
  python launch.py --workdir=runs/targets_mnist --mode=report          # report.md, curves, samples

Sized for a 2-core CPU: the whole sweep is measured in docs/results.md ("DDPM prediction
targets"), with the report table and the learning curves.
"""
from gen_jax.configs import common, ddpm


def get_config(arg: str | None = None):
  config = ddpm.get_config(arg)   # configs/ddpm.py's U-Net (280,177 parameters)
  # A tenth of configs/ddpm.py's training (300 steps of 32 digits), so six runs fit in
  # half an hour on a 2-core CPU.
  config.train.update(batch_size=32, num_steps=300, warmup_steps=50, log_every=25,
                      checkpoint_every=150, sample_every=150)
  config.eval.update(every=50, batch_size=128, num_batches=2, bpd_num_images=0)
  # Sample quality at the end of training, on the classifier in runs/classifier.
  config.eval.update(sample_metrics=True, sample_metrics_every=300, num_samples=250,
                     sample_batch_size=250)
  config.sample.update(sampler="ddim", steps=25, eta=1.0, num=64)
  return config


def get_sweep(arg: str | None = None):
  return common.product({"diffusion.target": ["eps", "x0", "v"]},
                        {"train.lr": [2e-3, 5e-4]})
