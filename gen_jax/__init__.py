"""gen_jax: generative models (DDPM/DDIM diffusion, DCGAN/WGAN-GP, VAE/IWAE, GPT and LSTM
language models) as pure-functional Flax linen modules on one sharded JAX engine.

Layers, each importing only those before it (docs/design.md): `core` (train state,
optimizer, shared probability) with `data` and `evaluate` beside it, then `models`,
`methods` (one file per family), `engine` (devices, files, meshes, the loop), and the
launcher `launch.py`.
"""
