"""VAE (Kingma & Welling 2014) with IWAE evaluation (Burda et al. 2016) on binarized digits.

  python launch.py --config=configs/vae.py                   # mnist_5k, ~7 min on 2 CPU cores
  python launch.py --config=configs/vae.py --mode=eval       # ELBO, -L_5000 -> eval/step_N.json
  python launch.py --config=configs/vae.py:smoke             # seconds; what the tests run
  python launch.py --config=configs/vae.py:latent=2          # + the latent manifold (K&W Fig. 4)
  python launch.py --config=configs/vae.py:dataset=mnist --config.data.manual_dir=/path/to/mnist
  python launch.py --config=configs/vae.py:continuous,conv   # [-1, 1] images, discretized Gaussian

`get_config(arg)`: `arg` is a comma-separated list of variants: `smoke`, `dataset=<name>`,
`latent=<L>`, `conv` (convolutional encoder/decoder), `continuous` (no binarization; a
discretized-Gaussian decoder, reconstruction PSNR/SSIM in the eval).
Paper recipes: experiments/kingma2014_vae/mnist.py, experiments/burda2016_iwae/mnist.py.

Measured (default config, 2-core CPU): at most 7 min 08 s wall for
6,000 updates (~20-35 updates/s, input-bound) plus the final k=5000 eval of the 500 test
digits; test ELBO -112.6 nats and NLL (-L_5000) 107.1 nats with the EMA weights (raw: -113.6,
106.7). mnist_5k has 4,500 training digits, so these are well above full-MNIST numbers.
"""
from __future__ import annotations

import ml_collections

from gen_jax.configs import common

VARIANTS = ("smoke", "dataset", "latent", "conv", "continuous")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  variants = common.parse_variants("configs/vae.py", arg, VARIANTS)

  config = common.base_config("vae", common.variant_value(variants, "dataset", "mnist_5k"))
  # 'dynamic': each pixel ~ Bernoulli(intensity/255), redrawn every time an image is read
  # (Burda et al. 2016); 'fixed': one draw per image (seeded by binarize_seed and the index);
  # 'none': continuous images in [-1, 1]. Binarized images are in {0, 1}.
  config.data.binarize = "dynamic"
  config.data.binarize_seed = 0

  config.model = ml_collections.ConfigDict()
  # 'mlp' (both papers) or 'conv' (strided convolutions; model.hidden holds one dense width).
  config.model.arch = "mlp"
  # Hidden widths of the encoder (the decoder mirrors them). Burda et al. 2016: (200, 200);
  # Kingma & Welling 2014: (500,).
  config.model.hidden = (200, 200)
  # Latent dimension L (Burda et al.: 50; K&W sweep 3..200; 2 adds the manifold grid).
  config.model.latent_dim = int(variants.get("latent", 50))
  # Hidden nonlinearity: 'tanh' (both papers), 'relu' or 'softplus'.
  config.model.activation = "tanh"
  # Channels of the stride-2 convolutions of arch='conv' (each halves H and W).
  config.model.conv_channels = (32, 64)
  # Std of the N(0, std^2) weight init (K&W: 0.01); 0 = flax's lecun_normal.
  config.model.init_std = 0.0

  config.vae = ml_collections.ConfigDict()
  # p(x|z): 'bernoulli' (binarized data), 'gaussian' or 'discretized_gaussian' (continuous).
  config.vae.decoder = "bernoulli"
  # Training bound: 'elbo' (K&W Eq. 10, analytic KL) or 'iwae' (Burda et al. Eq. 8).
  config.vae.objective = "elbo"
  # ELBO estimator (objective='elbo'): 'analytic_kl' (K&W Eq. 10, KL in closed form) or
  # 'monte_carlo' (K&W Eq. 6: mean log-weight, what Burda et al.'s code trains for the VAE).
  config.vae.elbo = "analytic_kl"
  # Samples per image in training (the k of the IWAE bound; L of the ELBO).
  config.vae.train_k = 1
  # Importance samples of the test NLL estimate -L_k (Burda et al. §5: 5000) ...
  config.vae.eval_k = 5000
  # ... computed this many at a time (memory ~ eval_chunk x eval.batch_size x pixels).
  config.vae.eval_chunk = 500
  # Which weights the eval reports ('ema', 'raw'); metric names say which.
  config.vae.eval_weights = ("ema", "raw")
  # 'engine': train.lr_decay / warmup; 'burda2016': 3^i epochs at lr * 10^(-i/7).
  config.vae.lr_schedule = "engine"
  # burda2016: number of stages i = 0 .. lr_stages-1 (the paper: 8, 3280 epochs) ...
  config.vae.lr_stages = 8
  # ... and the training-set size that defines an epoch.
  config.vae.train_examples = 4500
  # Side of the latent-manifold grid drawn when latent_dim == 2 (0 disables).
  config.vae.manifold_size = 20

  config.train = common.train_group(
      batch_size=100,
      num_steps=6000,
      steps_per_call=100,     # the MLP VAE is dispatch-bound without fused updates
      optimizer="adam",
      lr=1e-3,                # lr_decay/warmup_steps apply with vae.lr_schedule='engine'
      eps=1e-4,               # Burda et al. §5
      ema_decay=0.999,
      log_every=500,
      checkpoint_every=2000,
      sample_every=2000)

  # num_batches=0: the whole eval split (mnist_5k: 500 images).
  config.eval = common.eval_group(every=6000, batch_size=100, num_batches=0)
  # Images per compiled sampling call of --mode=sample's dumps (with sample.batch_size=0).
  config.eval.sample_batch_size = 250

  # Prior samples, and reconstructions of the first `num` test images.
  config.sample = common.sample_group(num=64)

  if config.data.dataset == "mnist":
    config.vae.train_examples = 60_000

  if "conv" in variants:
    config.model.arch = "conv"
    config.model.hidden = (256,)
    config.model.activation = "relu"

  if "continuous" in variants:
    config.data.binarize = "none"
    config.vae.decoder = "discretized_gaussian"

  if "smoke" in variants:
    config.model.hidden = (16,) if config.model.arch == "conv" else (32, 32)
    config.model.conv_channels = (4, 8)
    config.model.latent_dim = int(variants.get("latent", 2))
    config.vae.eval_k = 20
    config.vae.eval_chunk = 10
    config.vae.manifold_size = 4
    common.apply_smoke(config, train=dict(steps_per_call=1))
  return config
