"""The diffusion family: noise processes, objectives, samplers, likelihood and inpainting.

`method.py` holds `DiffusionMethod` (registered in `gen_jax.methods.METHODS`); `process.py`
the forward process and the reverse variances; `sampling.py` the samplers; `likelihood.py`
the variational bound (bits/dim); `inpainting.py` and `inpainting_mode.py` inpainting and
`--mode=inpaint`.
"""
