"""The diffusion family: a continuous-time core, one module per paper, shared samplers.

  core.py          the noise processes (DDPM's discrete betas, continuous VP, EDM, the
                   linear and GVP interpolants) and the conversions between predictions
  ddpm.py          Ho et al. 2020: Alg. 1 with Table 2's targets and objectives, Alg. 2
  variances.py     DDPM's reverse variances (fixed, learned, learned-range)
  ddim.py          Song et al. 2021 (DDIM) on the DDPM process
  edm.py           Karras et al. 2022: preconditioning, loss, Alg. 2
  flow.py          flow matching, rectified flow and SiT's interpolants
  guidance.py      classifier-free guidance with the guidance interval
  samplers.py      ancestral, DDIM, Euler, Heun, Euler-Maruyama on every continuous process;
                   EDM's Heun and RK45; inpainting's replacement of the known pixels
  likelihood.py    bits/dim: DDPM's bound, the probability-flow ODE's likelihood
  inpainting.py    DDPM's replacement and RePaint; inpainting_mode.py: `--mode=inpaint` of
                   every process (a continuous one: replacement with its sampler)
  config_checks.py clear errors for the config
  method.py        `DiffusionMethod` (registered in `gen_jax.methods.METHODS`)
"""
