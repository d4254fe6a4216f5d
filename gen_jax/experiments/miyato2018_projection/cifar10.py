"""Miyato & Koyama 2018, "cGANs with Projection Discriminator" (arXiv:1802.05637) — the
class-conditional SN-GAN with the projection discriminator on CIFAR-10.

Recipe: the authors' configs/sn_cifar10_conditional.yml in pfnet-research/sngan_projection,
which is the unconditional SN-GAN recipe (experiments/miyato2018_sngan/cifar10.py: hinge
loss, n_dis = 5, batch 64, G's update on 128 fakes, 50,000 iterations, Adam 2e-4 (0, 0.9)
decayed linearly to 0, ResNet G ch 256 / SN ResNet D ch 128) with n_classes = 10 for both
nets and `conditional: True` in the updater:
  * G: the six BatchNorms of the residual blocks are conditional
    (`CategoricalConditionalBatchNormalization`: per-class gain and offset tables from 1 and
    0, eps 2e-5); the output BatchNorm stays plain (gen_jax/models/class_conditioning.py);
  * D: D(x, y) = psi(phi(x)) + embed(y) . phi(x) (Eq. 3), phi(x) the ReLU features summed
    over H, W, psi a linear read-out without bias, embed a [10, 128] table with Glorot init;
    psi, the table and every convolution spectrally normalized (`SNLinear`, `SNEmbedID`,
    `SNConvolution2D`);
  * labels: real images with theirs; every fake, in D's updates and in G's, for a class
    drawn uniformly (updater.py `_generete_samples`: `sample_categorical(n_classes, ...)`),
    and the metrics' samples likewise (evaluation.py `gen_images`: `gen(batchsize)` draws
    y uniformly; here the classes come in equal blocks, `base.class_rows`).

Paper numbers (§5.1, CIFAR-10, class-conditional, projection discriminator): Inception
score **8.62**, FID **17.5**.

  python launch.py --config=experiments/miyato2018_projection/cifar10.py \\
      --workdir=runs/projection_cifar10 \\
      --config.data.manual_dir=/path/with/cifar-10-binary.tar.gz
  python launch.py --config=experiments/miyato2018_projection/cifar10.py --mode=summary
  python launch.py --workdir=runs/projection_cifar10 --mode=sample --config.sample.label=3

Metrics and checkpoint as experiments/miyato2018_sngan/cifar10.py (Inception score and FID
over 50,000 samples against the train split; the last checkpoint).

Our measured number: not measured yet (needs an accelerator, the CIFAR-10 files and the
Inception weights).
"""
from gen_jax.experiments.miyato2018_sngan import cifar10 as sngan

NUM_CLASSES = 10


def get_config(arg: str | None = None):
  config = sngan.get_config(arg)
  config.model.num_classes = NUM_CLASSES
  config.sample.num = NUM_CLASSES ** 2     # 10 x 10 grid: row r = class r
  return config
