"""Gulrajani et al. 2017, "Improved Training of Wasserstein GANs" (arXiv:1704.00028) — WGAN-GP
with the DCGAN architecture on CIFAR-10 (unsupervised).

Recipe (Algorithm 1 defaults): λ = 10, n_critic = 5, Adam α = 1e-4,
β1 = 0, β2 = 0.9; two-sided penalty on x̂ = εx + (1−ε)x̃, ε ~ U[0, 1]; no BatchNorm in the
critic, "layer normalization as a drop-in replacement" (§4). The authors' DCGAN-architecture
script (`gan_cifar.py`, MODE wgan-gp): DIM 128, batch 64, 200k generator iterations (it uses
β1 = 0.5 and no critic normalization; we follow the paper's Alg. 1 and §4 instead).
Here every train step takes 5 x 64 = 320 real images: 5 critic updates of 64, then one
G update on 64 fakes. z ~ N(0, I), 100-d.

Paper numbers (Table 3, CIFAR-10 Inception Score, unsupervised): WGAN-GP **7.86±.07** —
with the paper's ResNet networks, not this DCGAN architecture (in the same table DCGAN
scores 6.16±.07). The CIFAR-10 FID of WGAN-GP cited by Song & Ermon 2019 (NCSN, arXiv:1907.05600) is
36.4; Lee & Town 2020 (Mimicry, arXiv:2005.02494), ResNet WGAN-GP: FID 26.08±0.12.

  python launch.py --config=experiments/gulrajani2017_wgan_gp/cifar10.py --workdir=runs/wgan_gp_cifar10 \
      --config.data.manual_dir=/path/with/cifar-10-binary.tar.gz
  python launch.py --config=experiments/gulrajani2017_wgan_gp/cifar10.py --mode=summary

Our measured number: not measured yet. gen_jax has no Inception network yet, so the
Inception score and Inception-feature FID of the paper cannot be computed here; its FID,
KID and precision/recall use the features of a classifier gen_jax trains, for digits only
(docs/evaluation.md).
"""
from configs import dcgan


def get_config(arg: str | None = None):
  config = dcgan.get_config("dataset=cifar10,loss=wgan_gp")
  config.gan.update(loss="wgan_gp", n_critic=5, gp_weight=10.0, z_dim=100, z_prior="normal",
                    ngf=128, ndf=128, kernel_size=5, d_norm="layer")
  config.data.random_flip = False
  config.train.update(batch_size=5 * 64, num_steps=200_000, optimizer="adam", lr=1e-4, b1=0.0,
                      b2=0.9, lr_decay="constant", warmup_steps=0, grad_clip=0.0,
                      ema_decay=0.0, log_every=100, checkpoint_every=10_000,
                      sample_every=10_000)
  config.eval.update(every=10_000, batch_size=500, num_batches=20)
  return config
