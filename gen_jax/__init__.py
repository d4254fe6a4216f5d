"""gen_jax: generative models (DDPM/DDIM diffusion, DCGAN/WGAN-GP, VAE/IWAE, GPT and LSTM
language models) as pure-functional Flax linen modules on one sharded JAX engine.

The top level, for notebooks and scripts:

  load_config(path[:arg], overrides)     a config file's config, as launch.py builds it
  train_and_evaluate(config, workdir)    what `launch.py` runs to train
  load_run(workdir, step=None)           a trained run: .sample, .draw, .generate, .evaluate
                                         (an autoencoder's: .encode, .decode)

Layers, each importing only those before it (docs/design.md): `core` (train state,
optimizer, shared probability) with `data` and `evaluate` beside it, then `models`,
`methods` (one file per family), `engine` (devices, files, meshes, the loop), and the
launcher `launch.py`.
"""
from gen_jax.engine.config_files import load_config
from gen_jax.engine.train import train_and_evaluate
from gen_jax.engine.trained_run import TrainedRun, load_run

__all__ = ["TrainedRun", "load_config", "load_run", "train_and_evaluate"]
