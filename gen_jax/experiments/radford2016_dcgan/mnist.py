"""Radford, Metz, Chintala 2016, "Unsupervised Representation Learning with Deep Convolutional
GANs" (arXiv:1511.06434) — the DCGAN recipe on full MNIST (60,000 digits, 28x28).

Recipe (§3-4): "Minibatch SGD with batch 128", "Init N(0, 0.02)",
"Adam with lr 0.0002 (0.001 was too high) and β1 = 0.5 (0.9 oscillated)"; the authors' code:
nz=100, z ~ U(−1, 1), 5×5 kernels with stride 2, k=1 D step per G step, niter=25 epochs
(25 x 60,000 / 128 ~ 11,700 steps). The paper gives no MNIST architecture: we drop one
stage of its 64x64 model (7x7 start; ngf = ndf = 64, the PyTorch example's width) and,
as the paper, sample from the raw generator (no EMA), with G's BatchNorm on the statistics
of each generated batch as the code's `_gen` (sample.batch_norm='batch').

The authors' training loop (dcgan_code@ee12b2d faces/train_uncond_dcgan.py, lib/updates.py),
as variants (comma-separated after a colon):
  `l2`         their `l2 = 1e-5`: `Adam(..., regularizer=Regularizer(l2=l2))` adds 1e-5 * theta
               to the gradient of *every* parameter of both nets -- weights, BN gains and
               offsets -- before Adam (coupled L2, `gradient_regularize`; gan.l2). The paper
               does not mention it.
  `alternate`  their loop `if n_updates % (k+1) == 0: _train_g(imb, zmb) else: _train_d(imb,
               zmb)`: each minibatch of 128 serves one update, G and D in turn, G first; G's
               real minibatch is unused (gan.alternate_minibatches). A train step then reads
               2 x 128 images (batch_size 256: G's turn, D's turn) and 25 epochs take
               25 x N / 256 steps, half the updates of the default (which gives each D
               update a fresh minibatch and counts an epoch as N / 128 steps). The paper
               says only "minibatch SGD with a mini-batch size of 128".
  `code`       both.
Left as is: dcgan_code has no bias outside its BatchNorms (D's input conv, D's read-out
and G's output deconv have none; ours do: 3 bias vectors) and BatchNorm eps 1e-8 (ours 1e-5).

Paper numbers: none for MNIST generation (the paper predates FID). For scale, Lucic et al.
2018 (Table 2, best over a large search, "neutral" architecture) report MNIST FID
6.8±0.5 for the non-saturating GAN (Lucic et al. 2018, arXiv:1711.10337, on
Inception features).

  python launch.py --config=experiments/radford2016_dcgan/mnist.py --workdir=runs/dcgan_mnist \
      --config.data.manual_dir=/path/with/mnist-idx-files
  python launch.py --config=experiments/radford2016_dcgan/mnist.py --mode=summary
  # params: 1046978

Our measured number: not measured yet, nor the wall time on an accelerator. Its FID,
KID and precision/recall on the features of a classifier trained on full MNIST come from
--mode=eval with eval.classifier_workdir set (docs/evaluation.md); they are not
comparable with Inception-feature FIDs. (configs/dcgan.py's ~10-minute CPU default is this model
at half width, ngf = ndf = 32, batch 32, normal latents, 3,000 steps on mnist_5k.)
"""
from gen_jax.configs import common, dcgan

NAME = "mnist"
TRAIN_EXAMPLES = 60_000
EPOCHS = 25          # niter
CODE_BATCH = 128     # nbatch


def get_config(arg: str | None = None):
  variants = common.parse_variants(f"experiments/radford2016_dcgan/{NAME}.py", arg,
                                   ("l2", "alternate", "code"))
  config = dcgan.get_config("dataset=mnist")
  config.gan.update(loss="non_saturating", n_critic=1, z_dim=100, z_prior="uniform", ngf=64,
                    ndf=64, kernel_size=5, d_norm="batch")
  config.train.update(batch_size=128, num_steps=11_700, optimizer="adam", lr=2e-4, b1=0.5,
                      b2=0.999, lr_decay="constant", warmup_steps=0, grad_clip=0.0,
                      ema_decay=0.0, log_every=100, checkpoint_every=2_000, sample_every=1_000)
  config.sample.interpolation = "linear"   # uniform latents: straight lines in the cube
  config.eval.update(every=2_000, batch_size=500, num_batches=20)
  # G's BatchNorm on each generated batch's statistics, as the code's `_gen`.
  config.sample.batch_norm = "batch"
  apply_code_variants(config, variants, TRAIN_EXAMPLES)
  return config


def apply_code_variants(config, variants, train_examples: int) -> None:
  """The dcgan_code variants of the docstring: `l2`, `alternate`, `code` (both)."""
  code = "code" in variants
  if code or "l2" in variants:
    config.gan.l2 = 1e-5
  if code or "alternate" in variants:
    # One minibatch per update, G's and D's in turn: 2 x 128 images per step, and the 25
    # epochs are 25 N / 128 updates = 25 N / 256 steps.
    config.gan.alternate_minibatches = True
    config.train.update(batch_size=2 * CODE_BATCH,
                        num_steps=round(EPOCHS * train_examples / (2 * CODE_BATCH)))
