"""Gulrajani et al. 2017, "Improved Training of Wasserstein GANs" (arXiv:1704.00028) — WGAN-GP
with the DCGAN architecture on CIFAR-10 (unsupervised), as the authors' `gan_cifar.py`.

Recipe, checked line by line against igul222/improved_wgan_training@fa66c57 `gan_cifar.py`
(MODE = 'wgan-gp'): lambda = 10 (LAMBDA), n_critic = 5 (CRITIC_ITERS), batch 64
(BATCH_SIZE), 200k generator iterations (ITERS), DIM = 128; Adam lr 1e-4, beta1 0.5,
beta2 0.9 for both nets (the script's `AdamOptimizer(learning_rate=1e-4, beta1=0.5,
beta2=0.9)`; the paper's Alg. 1 says beta1 = 0); z ~ N(0, I) with 128 dimensions; G
128 -> 4x4x512 -> 8x8x256 -> 16x16x128 -> 32x32x3 with 5x5 stride-2 transposed convs, BN,
ReLU, tanh; the critic 3 -> 128 -> 256 -> 512 (5x5, stride 2, LeakyReLU 0.2) -> linear, with
no normalization ("if MODE != 'wgan-gp'" skips its BatchNorms; the paper's §4 recommends
layer normalization, which the script does not use). Their tflib layers
(gan.layer_style='tflib'): every layer has a bias; weights uniform, Glorot for the linear
layers and tflib's 'he' rule s^2 = 4 / (fan_in + fan_out) with stride-aware fans for the
(transposed) convolutions; BN scale 1; G's first BN normalizes each of the 4x4x512
projected features on its own (`Batchnorm('Generator.BN1', [0], ...)`). Parameters (pinned
in tests/methods/test_gan_resnet.py): G 5,179,907, D 4,114,689. G's BatchNorm runs on batch
statistics also when sampling (sample.batch_norm='batch'); their Inception score draws 10
batches of 100 (`samples_100`).
Here every train step takes 5 x 64 = 320 real images: 5 critic updates of 64 (each with 64
fresh fakes), then one G update on 64 fakes (the script runs G's update first from
iteration 1 on: the same alternation). Data: pixels 2 (x / 255 - 0.5), no flips.

Paper numbers (Table 3, CIFAR-10 Inception Score, unsupervised): WGAN-GP **7.86±.07** —
with the paper's ResNet networks, not this DCGAN architecture (in the same table DCGAN
scores 6.16±.07). The CIFAR-10 FID of WGAN-GP cited by Song & Ermon 2019 (NCSN, arXiv:1907.05600) is
36.4; Lee & Town 2020 (Mimicry, arXiv:2005.02494), ResNet WGAN-GP: FID 26.08±0.12.

  python launch.py --config=experiments/gulrajani2017_wgan_gp/cifar10.py \
      --workdir=runs/wgan_gp_cifar10 --config.data.manual_dir=/path/with/cifar-10-binary.tar.gz
  python launch.py --config=experiments/gulrajani2017_wgan_gp/cifar10.py --mode=summary

Metrics (--mode=eval, configs/inception_eval.py): Table 3's Inception score with Salimans
et al.'s protocol (50,000 samples, 10 splits), and FID and KID against the CIFAR-10 train
split, on the FID Inception-v3 with pytorch-fid's weights file (docs/evaluation.md). Names:
eval/raw/is_inception_50k, eval/raw/fid_inception_50k_train,
eval/raw/kid_inception_50k_train. Checkpoint: the paper states no selection rule; the
authors' scripts train a fixed number of generator iterations, so the last checkpoint.

Our measured number: not measured yet (needs the CIFAR-10 files and the weights file).
"""
from gen_jax.configs import dcgan, inception_eval


def get_config(arg: str | None = None):
  config = dcgan.get_config("dataset=cifar10,loss=wgan_gp")
  config.gan.update(arch="dcgan", layer_style="tflib", loss="wgan_gp", n_critic=5,
                    gp_weight=10.0, z_dim=128, z_prior="normal", ngf=128, ndf=128,
                    kernel_size=5, d_norm="none", l2=0.0, alternate_minibatches=False,
                    g_batch_multiple=1)
  config.data.random_flip = False
  config.train.update(batch_size=5 * 64, num_steps=200_000, optimizer="adam", lr=1e-4, b1=0.5,
                      b2=0.9, eps=1e-8, lr_decay="constant", warmup_steps=0, grad_clip=0.0,
                      ema_decay=0.0, log_every=100, checkpoint_every=10_000,
                      sample_every=10_000)
  config.sample.batch_norm = "batch"
  config.eval.update(every=10_000, batch_size=500, num_batches=20)
  # `samples_100`: G draws the score's samples 100 at a time, each batch its own statistics.
  inception_eval.add_inception_metrics(config.eval, num_samples=50_000, reference_split="train",
                                       sample_batch_size=100)
  return config
