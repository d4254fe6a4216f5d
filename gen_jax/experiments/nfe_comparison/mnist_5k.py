"""Sample quality against network evaluations (NFE): DDPM, EDM and rectified flow on mnist_5k.

Three models trained at one common budget (the same U-Net, updates, batch, learning rate and
EMA; `TRAINED`):

  DDPM      process 'ddpm' (Ho et al. 2020, T = 1000 linear betas), eps prediction, L_simple,
            sampled by DDIM (Song et al. 2021, Eq. 12) with eta = 0, the deterministic
            sampler, on the 'linspace' subsequence;
  EDM       process 'edm' (Karras et al. 2022, Table 1's preconditioning and loss), sampled
            by their Heun sampler (Alg. 1: `edm_heun` without churn, the rho = 7 grid);
  flow      process 'linear' with velocity prediction (rectified flow, Liu et al. 2023, one
            flow, no reflow), sampled by Euler and by Heun on the probability-flow ODE
            (uniform t grid).

then each trained checkpoint sampled over an NFE grid from 1 to 100 by sampler-only runs
(`eval.checkpoint_from`, as experiments/song2021_ddim/mnist.py; variant `nfe=<model>`, one
sweep per model, since a read mode keeps the trained run's process), FID etc. from
`eval.num_samples` samples on the MNIST classifier's features (runs/classifier,
configs/classifier.py). A Heun sampler whose last step ends at t = 0 costs 2 steps - 1
evaluations (`samplers.num_evaluations`), so its grid is the step counts whose NFE is
closest to the one-step samplers' (`HEUN_STEPS`; EDM's from 2 steps, NFE 3, as its sigma
grid needs two).

  python launch.py --config=configs/classifier.py --workdir=runs/classifier
  python launch.py --config=experiments/nfe_comparison/mnist_5k.py --sweep \
      --workdir=runs/nfe_mnist5k
  for m in ddpm edm flow; do
    python launch.py --config=experiments/nfe_comparison/mnist_5k.py:nfe=$m --sweep \
        --mode=eval --workdir=runs/nfe_mnist5k_eval/$m
  done
  python tools/plot_nfe_fid.py runs/nfe_mnist5k_eval docs/images/nfe_fid_mnist5k.png

Measured in docs/results.md ("Sample quality against NFE: DDPM, EDM, rectified flow").
"""
from gen_jax.configs import common, ddpm

# Sweep workdir of the three training runs (the first command above).
TRAIN_WORKDIR = "runs/nfe_mnist5k"
# One-evaluation-per-step samplers (DDIM, Euler): steps = NFE.
STEPS = [1, 2, 4, 8, 16, 32, 64, 100]
# Heun (2 steps - 1 evaluations): NFE 1, 3, 5, 9, 17, 33, 65, 99. EDM's sigma grid (Karras
# et al. Eq. 5) needs 2 steps or more: its grid starts at NFE 3.
HEUN_STEPS = [1, 2, 3, 5, 9, 17, 33, 50]
SAMPLER_STEPS = {"heun": HEUN_STEPS, "edm_heun": HEUN_STEPS[1:]}
# The order in which an eval sweep visits its grid points, coarse to fine (so that a sweep
# cut short spans the grid): NFE 1, 8, 100, 2, 32, 4, 16, 64; 'quick': NFE 1, 16, 100.
GRID_ORDER = [0, 3, 7, 1, 5, 2, 4, 6]
QUICK_GRID = [0, 4, 7]

# The trained models: (process, prediction) and the samplers each is swept with (the first
# also draws the training run's samples).
TRAINED = {
    "ddpm": ("ddpm", "eps", ("ddim",)),
    "edm": ("edm", "edm", ("edm_heun",)),
    "flow": ("linear", "velocity", ("euler", "heun")),
}
VARIANTS = ("nfe", "quick")


def trained_overrides(model: str) -> dict[str, str]:
  """The training sweep's overrides of one of `TRAINED`."""
  process, prediction, samplers = TRAINED[model]
  return {"diffusion.process": process, "diffusion.prediction": prediction,
          "sample.sampler": samplers[0]}


def trained_run(model: str) -> str:
  """The workdir of one of `TRAINED`: the training sweep's member (`sweep.run_name`)."""
  name = ",".join(f"{k.split('.')[-1]}={v}" for k, v in trained_overrides(model).items())
  return f"{TRAIN_WORKDIR}/{name}"


def get_config(arg: str | None = None):
  """configs/ddpm.py with a smaller U-Net and the common training budget; variant
  'nfe=<model>': the sampler-only evaluation of that trained model.

  Raises:
    ValueError: an unknown variant or model.
  """
  variants = common.parse_variants("experiments/nfe_comparison/mnist_5k.py", arg, VARIANTS)
  config = ddpm.get_config()
  # configs/ddpm.py's U-Net at 12 channels (158,341 parameters): cheap to sample 100 NFE.
  config.model.update(ch=12, num_groups=4)
  # 400 updates of 64 digits: about a quarter of configs/ddpm.py's budget.
  config.train.update(batch_size=64, num_steps=400, lr=2e-3, warmup_steps=100,
                      ema_decay=0.995, log_every=50, checkpoint_every=400, sample_every=0)
  config.sample.num = 64
  # DDIM's deterministic sampler (eta = 0), the ODE counterpart of the others.
  config.sample.update(sampler="ddim", steps=100, eta=0.0)
  # Held-out loss on one batch; no bits/dim; sample quality only in --mode=eval.
  config.eval.update(every=400, batch_size=128, num_batches=1, bpd_num_images=0,
                     sample_metrics_every=0, num_samples=250, sample_batch_size=250)
  if "nfe" in variants:
    model = common.variant_value(variants, "nfe", "")
    if model not in TRAINED:
      raise ValueError(f"experiments/nfe_comparison/mnist_5k.py: nfe={model!r}; expected one "
                       f"of {', '.join(TRAINED)}.")
    for field, value in trained_overrides(model).items():
      group, name = field.split(".")
      config[group][name] = value
    config.eval.checkpoint_from = trained_run(model)
  return config


def get_sweep(arg: str | None = None):
  """The three training runs; variant 'nfe=<model>': that model's samplers over the NFE grid
  as sampler-only runs, coarse to fine (`GRID_ORDER`; 'quick': NFE 1, 16 and 100 only)."""
  variants = common.parse_variants("experiments/nfe_comparison/mnist_5k.py", arg, VARIANTS)
  if "nfe" not in variants:
    return [trained_overrides(model) for model in TRAINED]
  model = common.variant_value(variants, "nfe", "")
  columns = []   # per sampler its members on the grid (None: no such point, EDM's NFE 1)
  for sampler in TRAINED[model][2]:
    steps = SAMPLER_STEPS.get(sampler, STEPS)
    steps = [None] * (len(STEPS) - len(steps)) + steps
    columns.append([None if s is None else {"sample.sampler": sampler, "sample.steps": s}
                    for s in steps])
  order = QUICK_GRID if "quick" in variants else GRID_ORDER
  return [column[i] for i in order for column in columns if column[i] is not None]
