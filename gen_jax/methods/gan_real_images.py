"""Real images of the GAN family (gen_jax/methods/gan.py) as the reference codes feed them.

The data pipeline gives x / 127.5 - 1 for pixel values x in {0, ..., 255}. Gulrajani et al.'s
ResNet script (igul222/improved_wgan_training, gan_cifar_resnet.py) dequantizes instead:

    real = 2 (x / 256 - 0.5) + U(0, 1/128) = (x + U(0, 1)) / 128 - 1,

so each pixel value is spread uniformly over its own interval [x/128 - 1, (x+1)/128 - 1) of
[-1, 1), fresh noise every time an image is read (`data.dequantize='uniform'`; 'none'
keeps the pipeline's images).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

DEQUANTIZATIONS = ("none", "uniform")


def dequantize_uniform(images_BxHxWxC: jax.Array, rng: jax.Array) -> jax.Array:
  """The pipeline's x / 127.5 - 1 images -> (x + U(0, 1)) / 128 - 1 (gan_cifar_resnet.py).

  Args:
    images_BxHxWxC: images in [-1, 1], x / 127.5 - 1 for integer x in [0, 255].
    rng: key of the noise.

  Returns:
    float32 images in [-1, 1), the same shape.
  """
  x = jnp.round((images_BxHxWxC.astype(jnp.float32) + 1.0) * 127.5)   # the pixel values
  noise = jax.random.uniform(rng, images_BxHxWxC.shape, jnp.float32)
  return (x + noise) / 128.0 - 1.0
