"""The bottom layer: what every family's training shares, importing nothing above it.

  state.py        TrainState, the optimizer step with EMA, gradient accumulation
  optimizer.py    the optax chain and learning-rate schedule from the `train` config
  probability.py  Gaussian KL and the discretized Gaussian likelihood (Ho et al. 2020, Eq. 13)
"""
