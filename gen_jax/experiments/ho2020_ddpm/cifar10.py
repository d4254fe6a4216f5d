"""Ho et al. 2020, "Denoising Diffusion Probabilistic Models" — CIFAR-10, unconditional.

Paper (Table 1, L_simple, eps-prediction): FID 3.17, IS 9.46 +- 0.11, NLL <= 3.75 bits/dim
(test). Recipe (App. B, and the authors' code): 35.7M-param U-Net (ch 128, mult
(1,2,2,2), 2 res blocks, attention at 16x16, dropout 0.1), T=1000, linear betas
1e-4 -> 0.02, Adam lr 2e-4 with 5000 warmup steps, grad clip 1, batch 128, EMA 0.9999,
random horizontal flips (training data only), 800k steps. The paper trained on a TPU v3-8 at
21 steps/s (~10.6 h); on 8 modern GPUs expect a similar order of time.

  python launch.py --config=experiments/ho2020_ddpm/cifar10.py --workdir=runs/ddpm_cifar10 \
      --config.data.manual_dir=/path/with/cifar-10-binary.tar.gz
  python launch.py --config=experiments/ho2020_ddpm/cifar10.py --mode=summary   # params: 35746307
  # Memory and FLOPs of the train step on an 8-device mesh, compiled on a CPU (no data):
  python launch.py --config=experiments/ho2020_ddpm/cifar10.py --mode=compile --cpu_devices=8
  # -> FLOPs per update 4.482e+12; per device: state 545.4 MiB, peak 1.73 GiB (data=8);
  #    with --config.mesh.data=1 --config.mesh.fsdp=8: state 68.9 MiB, peak 1.39 GiB

Metrics (--mode=eval, configs/inception_eval.py), the paper's protocol (App. B, §4.1):
50,000 samples (EMA weights), FID against the CIFAR-10 *train* split ("as is standard
practice"; 5.24 against test), IS over 10 splits, on the FID Inception-v3 with pytorch-fid's
weights file (docs/evaluation.md: how to get it), comparable with the TTUR / improved-gan TF
code the paper used. Names: eval/ema/fid_inception_50k_train, eval/ema/is_inception_50k,
eval/ema/kid_inception_50k_train. Checkpoint selection: the paper reports the minimum-FID
checkpoint seen during training; evaluate each saved step (--config.eval.step=N) and take
the minimum.

  python launch.py --config=experiments/ho2020_ddpm/cifar10.py --workdir=runs/ddpm_cifar10 \
      --mode=eval --config.eval.step=800000

Our measured number: not yet run (needs an accelerator and the CIFAR-10 files); the same
command also gives bits/dim.
"""
from gen_jax.configs import ddpm, inception_eval


def get_config(arg: str | None = None):
  config = ddpm.get_config("dataset=cifar10")
  config.model.update(ch=128, ch_mult=(1, 2, 2, 2), num_res_blocks=2, attn_resolutions=(16,),
                      dropout=0.1, num_groups=32)
  config.diffusion.update(num_timesteps=1000, schedule="linear", beta_start=1e-4,
                          beta_end=0.02, target="eps")
  config.data.random_flip = True
  config.train.update(batch_size=128, num_steps=800_000, optimizer="adam", lr=2e-4,
                      lr_decay="constant", warmup_steps=5000, grad_clip=1.0,
                      ema_decay=0.9999, ema_warmup=False, log_every=100, checkpoint_every=10_000,
                      sample_every=50_000)
  config.eval.update(every=50_000, batch_size=128, num_batches=20)
  # Bits/dim over the whole test set (10,000 images), as the paper's NLL (--mode=eval).
  config.eval.update(bpd_num_images=10_000, bpd_batch_size=50)
  # The paper samples with the ancestral sampler over all T steps, sigma^2 = beta.
  config.sample.update(sampler="ddpm", steps=0, variance="beta", num=64)
  inception_eval.add_inception_metrics(config.eval, num_samples=50_000, reference_split="train")
  return config
