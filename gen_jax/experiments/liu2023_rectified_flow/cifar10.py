"""Liu, Gong, Liu 2023, "Flow Straight and Fast: Learning to Generate and Transfer Data with
Rectified Flow" (arXiv:2209.03003) — CIFAR-10, 1-rectified flow and reflow.

The 1-rectified flow is the authors' released config
(gnobitab/RectifiedFlow, ImageGeneration/configs/rectified_flow/cifar10_rf_gaussian_ddpmpp.py
over default_cifar10_configs.py): the straight path x_t = (1 - t) x + t eps with a velocity
network (gen_jax/methods/diffusion/flow.py; their time runs the other way: data at t = 1),
score_sde's DDPM++ (128 channels, multipliers (1, 2, 2, 2), 4 blocks, attention at 16x16,
dropout 0.15; here SongUNet's DDPM++, `model.architecture='ddpmpp'`), batch 128, Adam lr 2e-4
after 5,000 warmup steps, gradient clipping at 1, EMA 0.999999, random x-flips, 1.3M steps,
sampled with RK45 at rtol = atol = 1e-5 (gen_jax/methods/diffusion/rk45.py, scipy's step
control). Their t is drawn from U[1e-3, 1] and the ODE starts at t = 1e-3 in their time;
here t ~ U[0, 1] and sampling starts at pure noise.

Paper / the authors' README: FID 2.58 for the released 1-rectified flow (50,000 samples,
score_sde's evaluation against the CIFAR-10 training set).

Reflow (§2.3, Alg. 1; gen_jax/methods/diffusion/reflow.py): the trained flow's ODE maps
noise to images, the pairs become the next flow's training couplings, and the 2-rectified
flow samples in one Euler step (variant `reflow`, fine-tuned from the 1-rectified flow as
the authors' `reflow.last_flow_ckpt`, EMA 0.9999 and dropout 0.1 as their reflow configs):

  python launch.py --config=experiments/liu2023_rectified_flow/cifar10.py \
      --workdir=runs/rf_cifar10 --config.data.manual_dir=/path/with/cifar-10-binary.tar.gz
  # 100,000 pairs per seed; the authors suggest at least 1M: seeds 0 .. 9.
  python launch.py --config=experiments/liu2023_rectified_flow/cifar10.py \
      --workdir=runs/rf_cifar10 --mode=reflow --config.reflow.seed=0
  python launch.py --config=experiments/liu2023_rectified_flow/cifar10.py:reflow \
      --workdir=runs/rf_cifar10_reflow
  python launch.py --config=experiments/liu2023_rectified_flow/cifar10.py --mode=summary
  # -> params: 61804419 (SongUNet's DDPM++ at the authors' widths, no augment labels)

FID (--mode=eval): Inception FID of 50,000 EMA samples against the CIFAR-10 train split
(configs/inception_eval.py), metric eval/ema/fid_inception_50k_train.

Our measured numbers: not yet run (needs an accelerator and the CIFAR-10 files).
"""
from gen_jax.configs import common, ddpm, inception_eval

# The 1-rectified flow's workdir, whose pairs (<workdir>/reflow/) and params the reflowed
# run takes (the commands in the docstring).
FIRST_FLOW = "runs/rf_cifar10"


def get_config(arg: str | None = None):
  """The 1-rectified flow; variant `reflow`: the 2-rectified flow on its pairs."""
  variants = common.parse_variants("experiments/liu2023_rectified_flow/cifar10.py", arg,
                                   ("reflow",))
  config = ddpm.get_config("dataset=cifar10,flow")
  config.diffusion.update(process="linear", prediction="velocity")
  config.model.update(architecture="ddpmpp", ch=128, ch_mult=(1, 2, 2, 2), num_res_blocks=4,
                      attn_resolutions=(16,), dropout=0.15)
  config.data.random_flip = True
  config.train.update(batch_size=128, num_steps=1_300_000, optimizer="adam", lr=2e-4,
                      b1=0.9, b2=0.999, eps=1e-8, lr_decay="constant", warmup_steps=5000,
                      grad_clip=1.0, ema_decay=0.999999, ema_warmup=False, log_every=100,
                      checkpoint_every=10_000, sample_every=50_000)
  config.eval.update(every=50_000, batch_size=128, num_batches=20, bpd_num_images=0)
  config.sample.update(sampler="rk45", steps=0, num=64)
  inception_eval.add_inception_metrics(config.eval, num_samples=50_000, reference_split="train")
  # --mode=reflow: 100,000 pairs per seed (the authors' example), 500 per compiled call.
  config.reflow.update(num_pairs=100_000, batch_size=500, solver="rk45", rtol=1e-5, atol=1e-5)
  if "reflow" in variants:
    # Train on the couplings of the 1-rectified flow's ODE (every pairs file of its
    # --mode=reflow; evaluation and the FID reference stay CIFAR-10's), from its params
    # (the authors fine-tune from last_flow_ckpt).
    config.data.update(train_split="pairs", pairs=f"{FIRST_FLOW}/reflow")
    config.init_from = FIRST_FLOW
    config.model.dropout = 0.1
    config.train.ema_decay = 0.9999
    # One Euler step: x_0 = x_1 - v(x_1, 1).
    config.sample.update(sampler="euler", steps=1)
  return config
