"""Gulrajani et al. 2017, "Improved Training of Wasserstein GANs" (arXiv:1704.00028) — the ResNet
WGAN-GP on CIFAR-10 (unsupervised), the model of Table 3's Inception score 7.86 ± .07.

Recipe, checked against igul222/improved_wgan_training@fa66c57 `gan_cifar_resnet.py` with
CONDITIONAL = False (the file's default is True with ACGAN = True: Table 3's *supervised*
8.42): ITERS = 100,000 generator iterations, N_CRITIC = 5, BATCH_SIZE = 64 real images
per critic update, GEN_BS_MULTIPLE = 2 (G's update on 128 fakes), lambda = 10, Adam
lr 2e-4 with beta1 0, beta2 0.9 (TF's eps 1e-8) for both nets, the rate decayed linearly
to 0 over the 100k iterations (DECAY: lr * max(0, 1 - iteration / ITERS)), z ~ N(0, I)
with 128 dimensions, DIM_G = DIM_D = 128, BatchNorm in G (NORMALIZATION_G), no
normalization in the critic (NORMALIZATION_D = False). The networks
(gen_jax/models/resnet_gan.py): G linear -> 4x4x128 -> 3 up-sampling residual blocks ->
BN, ReLU, 3x3 conv, tanh; D an optimized first block (mean-pool shortcut), one
down-sampling block, two plain blocks, ReLU, global mean, linear; tflib's uniform init.
Parameters (pinned in tests/methods/test_gan_resnet.py): G 1,204,483 (+ 1,792 BatchNorm
statistics), D 1,053,825. Real images as theirs: 2 (x / 256 - 0.5) plus U(0, 1/128)
dequantization noise, i.e. (x + U(0, 1)) / 128 - 1 (data.dequantize='uniform'), no flips.
G's BatchNorm runs on batch statistics also when sampling (sample.batch_norm='batch'), and
their Inception score draws 500 batches of 100 (`samples_100`, one `Generator(100)` call
each): eval.sample_batch_size=100, so every metric batch is normalized by the statistics of
its own 100 images, as theirs.

Each train step takes 5 x 64 = 320 real images: 5 critic updates of 64 (64 fresh fakes
each), then one G update on 2 x 64 fresh fakes. The schedule: G's rate at train step t is
2e-4 (1 - t / 100k), as theirs; the critic's decays over its 5 x 100k updates, so within
a step its 5 updates take rates 1/500k apart instead of one rate (a relative difference
below 1e-5).

Where this differs from their script, and why:
  * they ran on 2 GPUs (N_GPUS = 2): G's BatchNorm saw the critic's fakes 32 at a time and
    G's update 64 at a time (one Generator call per GPU); here one call makes each batch
    (64 and 128 rows), on any number of devices;
  * their loop runs G's update before the critic's from iteration 1 on; ours after (the
    same alternation, shifted by one G update at the end).

Paper numbers (Table 3, CIFAR-10 Inception score, unsupervised): WGAN-GP ResNet
**7.86 ± .07** (50,000 samples). Later FIDs of ResNet WGAN-GP: Lee & Town 2020 (Mimicry,
arXiv:2005.02494) 26.08 ± 0.12 (100k steps: 23.13).

  python launch.py --config=experiments/gulrajani2017_wgan_gp/cifar10_resnet.py \
      --workdir=runs/wgan_gp_resnet_cifar10 \
      --config.data.manual_dir=/path/with/cifar-10-binary.tar.gz
  python launch.py --config=experiments/gulrajani2017_wgan_gp/cifar10_resnet.py --mode=summary
  python launch.py --config=experiments/gulrajani2017_wgan_gp/cifar10_resnet.py \
      --workdir=runs/wgan_gp_resnet_cifar10 --mode=eval      # the Inception score

Metrics (--mode=eval, configs/inception_eval.py): Table 3's Inception score with their
protocol (`get_inception_score(50000)`: 50,000 samples, 10 splits), and FID and KID against
the CIFAR-10 train split, on the FID Inception-v3 with pytorch-fid's weights file
(docs/evaluation.md; their tflib/inception_score.py runs the TF graph of the same 2015
Inception, and rounds samples down, int((x + 1) 127.995), where ours round to the nearest
of 255 levels). Names: eval/raw/is_inception_50k, eval/raw/fid_inception_50k_train,
eval/raw/kid_inception_50k_train. Checkpoint: the last (a fixed number of iterations).

Our measured number: not measured yet (100k steps of this model need an accelerator).
"""
from gen_jax.configs import dcgan, inception_eval

ITERS = 100_000      # generator iterations
N_CRITIC = 5
BATCH = 64           # real images per critic update


def get_config(arg: str | None = None):
  config = dcgan.get_config("dataset=cifar10,loss=wgan_gp")
  config.gan.update(arch="resnet", loss="wgan_gp", n_critic=N_CRITIC, gp_weight=10.0,
                    z_dim=128, z_prior="normal", ngf=128, ndf=128, d_norm="none", l2=0.0,
                    alternate_minibatches=False, g_batch_multiple=2)
  config.data.update(random_flip=False, dequantize="uniform")
  config.train.update(batch_size=N_CRITIC * BATCH, num_steps=ITERS, optimizer="adam", lr=2e-4,
                      b1=0.0, b2=0.9, eps=1e-8, lr_decay="linear", min_lr_ratio=0.0,
                      decay_steps=0, warmup_steps=0, grad_clip=0.0, ema_decay=0.0,
                      log_every=100, checkpoint_every=10_000, sample_every=10_000)
  config.sample.batch_norm = "batch"
  config.eval.update(every=10_000, batch_size=500, num_batches=20)
  # `samples_100`: the score's 50,000 samples come from 500 calls of G on 100 latents.
  inception_eval.add_inception_metrics(config.eval, num_samples=50_000, reference_split="train",
                                       sample_batch_size=100)
  return config
