"""Miyato, Kataoka, Koyama, Yoshida 2018, "Spectral Normalization for Generative Adversarial
Networks" (arXiv:1802.05957) — SN-GAN with the ResNet networks on CIFAR-10 (unsupervised).

Recipe, checked against the authors' release pfnet-research/sngan_projection
(configs/sn_cifar10_unconditional.yml, updater.py, train.py, gen_models/resnet_32.py,
dis_models/snresnet_32.py, datasets/cifar10.py): hinge loss (`loss_type: hinge`), n_dis = 5
critic updates of 64 real images each, G's update on n_gen_samples = 128 fakes, 50,000
generator iterations, Adam alpha 2e-4, beta1 0, beta2 0.9 (chainer's eps 1e-8) for both
nets, alpha decayed linearly to 0 from iteration 0 to 50,000 (`LinearShift`), z ~ N(0, I)
with 128 dimensions. G: ch = 256, linear -> 4x4x256 -> 3 up-sampling residual blocks ->
BN, ReLU, conv3x3, tanh, BatchNorm eps 2e-5 (chainer's default). D: ch = 128, the
optimized block, one down-sampling block, two plain blocks, ReLU, sum over H, W, a linear
read-out without bias; every convolution and the read-out spectrally normalized, one power
iteration per pass of D (gen_jax/models/spectral_norm.py). The networks are
gen_jax/models/resnet_gan.py with gan.layer_style='sngan' (the blocks and initializers are
Gulrajani et al.'s, which theirs equal). Real images (x + U(0, 1)) / 128 - 1 for pixel
values x (`x / 128. - 1.` plus U(0, 1/128)), no flips. Samples for the metrics come in
batches of 100 from G with its BatchNorm running averages (evaluation.py `gen_images`
under `chainer.using_config('train', False)`).

Here each train step takes 5 x 64 = 320 real images: 5 critic updates of 64 (64 fresh
fakes each), then one G update on 128 fresh fakes. Where this differs from their code:
  * their loop runs G's update before the critic's in every iteration (G first, on the
    critic of the previous iteration); ours after (the same alternation, shifted by one G
    update at the end);
  * their D's rate is one value per iteration; here the critic's schedule decays over its
    5 x 50k updates, so its 5 updates of a step take rates 1/250k apart;
  * their linear and embedding layers also store the power iteration's u in evaluation
    passes; here no layer does outside training.

Paper numbers (Table 2, CIFAR-10, unsupervised, ResNet, hinge loss): SN-GANs Inception
score **8.22 ± .05**, FID **21.7 ± .21**.

  python launch.py --config=experiments/miyato2018_sngan/cifar10.py \\
      --workdir=runs/sngan_cifar10 --config.data.manual_dir=/path/with/cifar-10-binary.tar.gz
  python launch.py --config=experiments/miyato2018_sngan/cifar10.py --mode=summary

Metrics (--mode=eval, configs/inception_eval.py): Inception score with Salimans et al.'s
protocol (50,000 samples, 10 splits), FID and KID against the CIFAR-10 train split, on the
FID Inception-v3 with pytorch-fid's weights file (docs/evaluation.md). Names:
eval/raw/is_inception_50k, eval/raw/fid_inception_50k_train. The authors' training-time FID
(evaluation.py `calc_FID`) uses 5,000 samples against their own statistics file, so FIDs
from the two protocols are not directly comparable. Checkpoint: the last (a fixed number
of iterations, as their script).

Our measured number: not measured yet (50,000 steps of these networks need an
accelerator, the CIFAR-10 files and the Inception weights).
"""
from gen_jax.configs import dcgan, inception_eval

ITERS = 50_000       # generator iterations
N_DIS = 5
BATCH = 64           # real images per critic update


def get_config(arg: str | None = None):
  config = dcgan.get_config("dataset=cifar10")
  config.gan.update(arch="resnet", layer_style="sngan", loss="hinge", n_critic=N_DIS,
                    d_spectral_norm=True, z_dim=128, z_prior="normal", ngf=256, ndf=128,
                    d_norm="none", l2=0.0, alternate_minibatches=False, g_batch_multiple=2)
  config.data.update(random_flip=False, dequantize="uniform")
  config.train.update(batch_size=N_DIS * BATCH, num_steps=ITERS, optimizer="adam", lr=2e-4,
                      b1=0.0, b2=0.9, eps=1e-8, lr_decay="linear", min_lr_ratio=0.0,
                      decay_steps=0, warmup_steps=0, grad_clip=0.0, ema_decay=0.0,
                      log_every=100, checkpoint_every=5_000, sample_every=5_000)
  config.sample.batch_norm = "running"
  config.eval.update(every=5_000, batch_size=500, num_batches=20)
  inception_eval.add_inception_metrics(config.eval, num_samples=50_000, reference_split="train",
                                       sample_batch_size=100)
  return config
