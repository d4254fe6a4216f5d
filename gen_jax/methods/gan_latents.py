"""Latents of the GAN family (gen_jax/methods/gan.py): the prior and the interpolation
paths of the sample grids."""
from __future__ import annotations

import jax
import jax.numpy as jnp


def sample_latents(rng: jax.Array, shape: tuple[int, ...], prior: str) -> jax.Array:
  """z ~ N(0, I) or U(-1, 1)^Z (the DCGAN authors' code draws uniform noise)."""
  if prior == "uniform":
    return jax.random.uniform(rng, shape, jnp.float32, -1.0, 1.0)
  return jax.random.normal(rng, shape, jnp.float32)


def slerp(z0_Z: jax.Array, z1_Z: jax.Array, t: jax.Array) -> jax.Array:
  """Spherical interpolation (White 2016, "Sampling Generative Networks", arXiv:1609.04468):

    slerp(z0, z1; t) = sin((1-t) w) / sin w z0 + sin(t w) / sin w z1,  cos w = <z0, z1> / |z0||z1|

  which keeps intermediate Gaussian latents at a typical norm; linear when w ~ 0.
  """
  cos = jnp.sum(z0_Z * z1_Z, -1, keepdims=True) / (
      jnp.linalg.norm(z0_Z, axis=-1, keepdims=True) * jnp.linalg.norm(z1_Z, axis=-1, keepdims=True))
  omega = jnp.arccos(jnp.clip(cos, -1.0, 1.0))
  sin = jnp.sin(omega)
  safe = sin > 1e-6
  sin = jnp.where(safe, sin, 1.0)
  w0 = jnp.where(safe, jnp.sin((1.0 - t) * omega) / sin, 1.0 - t)
  w1 = jnp.where(safe, jnp.sin(t * omega) / sin, t)
  return w0 * z0_Z + w1 * z1_Z


def interpolation_latents(rng: jax.Array, rows: int, steps: int, z_dim: int,
                          prior: str, kind: str) -> jax.Array:
  """[rows * steps, Z]: row r walks from one random latent to another in `steps` steps."""
  ends = sample_latents(rng, (2, rows, 1, z_dim), prior)
  t = jnp.linspace(0.0, 1.0, steps)[None, :, None]
  path = slerp(ends[0], ends[1], t) if kind == "slerp" else (1.0 - t) * ends[0] + t * ends[1]
  return path.reshape(rows * steps, z_dim)
