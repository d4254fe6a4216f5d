"""Kingma & Welling 2014, "Auto-Encoding Variational Bayes" — MNIST, the §5 setup.

Paper (§5, App. C): encoder and decoder MLPs with one hidden layer of 500 tanh units,
Gaussian q(z|x), Bernoulli decoder, latent sizes N_z in {3, 5, 10, 20, 200}, weights
initialized from N(0, 0.01), Adagrad with a global step size from {0.01, 0.02, 0.1},
minibatch M = 100, L = 1 sample per datapoint, and a small weight decay standing for a
N(0, I) prior on the parameters. Results are curves only (Fig. 2: the training and test
lower bound against the number of training samples evaluated, up to 10^8; Fig. 4: the 2-D
latent manifold): there is no numeric table to match.

Choices the paper leaves open, made here: dynamic binarization (the paper does not say how
the grey levels meet the Bernoulli likelihood); N(0, 0.01) read as standard deviation 0.01;
step size 0.02; weight decay 1/60000 (the N(0, I) log-prior divided by the training-set size,
since our loss is per image); 10^6 updates = 10^8 samples, the end of Fig. 2's axis. We also
report the k = 5000 IWAE NLL (Burda et al. 2016), which the paper predates.

  python launch.py --config=experiments/kingma2014_vae/mnist.py --workdir=runs/kw_vae \
      --config.data.manual_dir=/path/with/mnist-idx-files
  python launch.py --config=experiments/kingma2014_vae/mnist.py:latent=2 ...   # Fig. 4a manifold
  python launch.py --config=experiments/kingma2014_vae/mnist.py --mode=summary
  # params: 815824 (N_z=20)

Hardware/time: 10^6 updates at batch 100 (~5 MFLOPs per image and update, 5e14 FLOPs in
all). On a 2-core CPU the input pipeline delivered at least ~2,000-2,500
images/s, i.e. 20-25 updates/s (measured over 1,200 updates): 11-14 hours. An accelerator
needs grain workers (data.num_workers) to keep up.
Our measured number: not run (only 1,200 updates as a check: train -ELBO 203 -> ~170 nats).
"""
from gen_jax.configs import common, vae

MNIST_TRAIN = 60_000


def get_config(arg: str | None = None):
  variants = common.parse_variants("experiments/kingma2014_vae/mnist.py", arg, ("latent",))
  config = vae.get_config("dataset=mnist")
  config.data.binarize = "dynamic"
  config.model.update(arch="mlp", hidden=(500,), latent_dim=int(variants.get("latent", 20)),
                      activation="tanh", init_std=0.01)
  # Estimator B (Eq. 7 / 10): the KL in closed form, the paper's choice for its experiments.
  config.vae.update(decoder="bernoulli", objective="elbo", elbo="analytic_kl", train_k=1,
                    eval_k=5000, eval_chunk=500, lr_schedule="engine", eval_weights=("raw",))
  config.train.update(
      batch_size=100, optimizer="adagrad", lr=0.02, lr_decay="constant", warmup_steps=0,
      eps=1e-8, weight_decay=1.0 / MNIST_TRAIN, grad_clip=0.0, num_steps=1_000_000,
      ema_decay=0.0, ema_warmup=False,
      steps_per_call=200, log_every=6000, checkpoint_every=60_000, sample_every=60_000)
  config.eval.update(every=0, batch_size=100, num_batches=0)
  return config
