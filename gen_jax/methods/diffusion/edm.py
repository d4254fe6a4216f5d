"""EDM: Karras, Aittala, Aila, Laine 2022, "Elucidating the Design Space of Diffusion-Based
Generative Models" (arXiv:2206.00364).

The process is x = y + n with n ~ N(0, sigma^2 I) (sigma(t) = t, s(t) = 1), and the network
is wrapped as the denoiser D(x; sigma) of Table 1's "Ours" column:

  D(x; sigma) = c_skip(sigma) x + c_out(sigma) F(c_in(sigma) x; c_noise(sigma))     (Eq. 7)

trained with ln sigma ~ N(P_mean, P_std^2) and the weight lambda(sigma) (Eq. 8, Table 1),
and sampled with Algorithm 2 (Heun's 2nd-order method on the probability-flow ODE, with
optional "churn" noise) over the time steps of Eq. 5.

Checked against the authors' released code (NVlabs/edm: `EDMPrecond` in
training/networks.py, `EDMLoss` in training/loss.py, `edm_sampler` in generate.py) by
tests/methods/test_edm.py with the fixture that tools/make_diffusion_parity.py writes.

Pure jax functions on arrays; images are [B, H, W, C] and sigma a per-example [B] array.
"""
from __future__ import annotations

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

# Table 1 / App. B.6 defaults of the paper (and of the authors' code).
SIGMA_DATA = 0.5
P_MEAN = -1.2
P_STD = 1.2
SIGMA_MIN = 0.002
SIGMA_MAX = 80.0
RHO = 7.0

# F(c_in x, c_noise_B) -> the raw network output, same shape as x.
NetFn = Callable[[jax.Array, jax.Array], jax.Array]
# D(x, sigma_B) -> the denoised image, same shape as x.
DenoiseFn = Callable[[jax.Array, jax.Array], jax.Array]
# (x_i, i, t_i) -> x_i changed before step i (inpainting's known pixels, samplers.py).
StepHook = Callable[[jax.Array, jax.Array, jax.Array], jax.Array]


def _per_example(sigma_B: jax.Array, x: jax.Array) -> jax.Array:
  """sigma [B] (or a scalar) as [B, 1, ..., 1], broadcastable against x [B, ...]."""
  sigma_B = jnp.asarray(sigma_B, jnp.float32)
  return sigma_B.reshape(sigma_B.shape + (1,) * (x.ndim - sigma_B.ndim))


def preconditioning(sigma: jax.Array, sigma_data: float = SIGMA_DATA
                    ) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
  """Table 1, "Network and preconditioning" (Ours), and App. B.6.

  Args:
    sigma: noise levels, any shape.
    sigma_data: the data's standard deviation (0.5 for images in [-1, 1]).

  Returns:
    (c_skip, c_out, c_in, c_noise), each shaped like `sigma`:
    c_skip = sigma_data^2 / (sigma^2 + sigma_data^2),
    c_out = sigma sigma_data / sqrt(sigma^2 + sigma_data^2),
    c_in = 1 / sqrt(sigma^2 + sigma_data^2), c_noise = ln(sigma) / 4.
  """
  total_var = sigma ** 2 + sigma_data ** 2
  c_skip = sigma_data ** 2 / total_var
  c_out = sigma * sigma_data / jnp.sqrt(total_var)
  c_in = 1.0 / jnp.sqrt(total_var)
  c_noise = jnp.log(sigma) / 4.0
  return c_skip, c_out, c_in, c_noise


def denoised(net_fn: NetFn, x: jax.Array, sigma: jax.Array,
             sigma_data: float = SIGMA_DATA) -> jax.Array:
  """Eq. 7: D(x; sigma) = c_skip x + c_out F(c_in x; c_noise), in float32 (`EDMPrecond`).

  Args:
    net_fn: F(x_in, c_noise_B) -> raw output shaped like x_in (labels closed over).
    x: noisy images [B, H, W, C].
    sigma: their noise levels [B] (or a scalar, for every example).
    sigma_data: the data's standard deviation.

  Returns:
    D(x; sigma) [B, H, W, C], the denoised images in float32.
  """
  x = x.astype(jnp.float32)
  sigma_B = jnp.broadcast_to(jnp.asarray(sigma, jnp.float32), x.shape[:1])
  c_skip, c_out, c_in, c_noise = preconditioning(_per_example(sigma_B, x), sigma_data)
  F_x = net_fn(c_in * x, c_noise.reshape(-1)).astype(jnp.float32)
  return c_skip * x + c_out * F_x


def loss_weight(sigma: jax.Array, sigma_data: float = SIGMA_DATA) -> jax.Array:
  """Table 1, lambda(sigma) = (sigma^2 + sigma_data^2) / (sigma sigma_data)^2 = 1 / c_out^2.

  Args:
    sigma: noise levels, any shape.
    sigma_data: the data's standard deviation.

  Returns:
    lambda(sigma), shaped like `sigma`.
  """
  return (sigma ** 2 + sigma_data ** 2) / (sigma * sigma_data) ** 2


def training_sigma(rng_or_normal: jax.Array, num: int | None = None, *,
                   p_mean: float = P_MEAN, p_std: float = P_STD) -> jax.Array:
  """Table 1, the training noise distribution: ln(sigma) ~ N(P_mean, P_std^2).

  Args:
    rng_or_normal: a PRNG key (then `num` is required), or standard normal draws [B] to
      map (the authors' `rnd_normal`; a float array).
    num: how many noise levels to draw from a key.
    p_mean: P_mean (-1.2 in the paper).
    p_std: P_std (1.2 in the paper).

  Returns:
    sigma [B] = exp(normal * P_std + P_mean), float32.

  Raises:
    ValueError: given a key without `num`.
  """
  if jnp.issubdtype(rng_or_normal.dtype, jnp.floating):
    normal_B = rng_or_normal
  else:
    if num is None:
      raise ValueError("training_sigma: drawing from a key needs num (the batch size).")
    normal_B = jax.random.normal(rng_or_normal, (num,), jnp.float32)
  return jnp.exp(normal_B.astype(jnp.float32) * p_std + p_mean)


def loss(denoise_fn: DenoiseFn, y: jax.Array, sigma_B: jax.Array, noise: jax.Array,
         sigma_data: float = SIGMA_DATA) -> jax.Array:
  """Eq. 8 with Table 1's lambda: lambda(sigma) ||D(y + n; sigma) - y||^2, per pixel.

  As `EDMLoss.__call__`, the loss is returned unreduced; the authors' training loop sums it
  over pixels and averages over the batch.

  Args:
    denoise_fn: D(x, sigma_B) (e.g. `denoised` around the network, labels closed over).
    y: clean (augmented) images [B, H, W, C].
    sigma_B: their noise levels [B] (`training_sigma`).
    noise: standard normal draws shaped like y; n = sigma * noise.
    sigma_data: the data's standard deviation.

  Returns:
    the weighted squared error [B, H, W, C], float32.
  """
  sigma = _per_example(sigma_B, y)
  D_yn = denoise_fn(y + sigma * noise, sigma_B)
  return loss_weight(sigma, sigma_data) * (D_yn - y) ** 2


def sampling_sigmas(num_steps: int, sigma_min: float = SIGMA_MIN, sigma_max: float = SIGMA_MAX,
                    rho: float = RHO) -> np.ndarray:
  """Eq. 5: sigma_i = (sigma_max^(1/rho) + i/(N-1) (sigma_min^(1/rho) - sigma_max^(1/rho)))^rho
  for i < N, and sigma_N = 0; computed in float64 as the authors' sampler does.

  Args:
    num_steps: N, the number of steps (N >= 2).
    sigma_min, sigma_max: the first and last nonzero levels (0.002 and 80 in the paper).
    rho: the exponent (7 in the paper).

  Returns:
    float64 array [N + 1], decreasing from sigma_max to sigma_min, then 0.

  Raises:
    ValueError: for num_steps < 2.
  """
  if num_steps < 2:
    raise ValueError(f"sampling_sigmas: num_steps={num_steps}; Eq. 5 needs at least 2.")
  i = np.arange(num_steps, dtype=np.float64)
  lo, hi = sigma_min ** (1.0 / rho), sigma_max ** (1.0 / rho)
  sigmas = (hi + i / (num_steps - 1) * (lo - hi)) ** rho
  return np.append(sigmas, 0.0)


def churn_gammas(sigmas: np.ndarray, s_churn: float, s_tmin: float, s_tmax: float
                 ) -> np.ndarray:
  """Alg. 2, line 4: gamma_i = min(S_churn / N, sqrt(2) - 1) where sigma_i is in
  [S_tmin, S_tmax], else 0.

  Args:
    sigmas: `sampling_sigmas` [N + 1].
    s_churn, s_tmin, s_tmax: S_churn, S_tmin, S_tmax.

  Returns:
    float64 array [N], one gamma per step.
  """
  num_steps = len(sigmas) - 1
  gamma = min(s_churn / num_steps, math.sqrt(2.0) - 1.0)
  t_cur = sigmas[:-1]
  return np.where((t_cur >= s_tmin) & (t_cur <= s_tmax), gamma, 0.0)


def heun_sample(denoise_fn: DenoiseFn, latents: jax.Array, rng: jax.Array | None, *,
                num_steps: int = 18, sigma_min: float = SIGMA_MIN,
                sigma_max: float = SIGMA_MAX, rho: float = RHO, s_churn: float = 0.0,
                s_tmin: float = 0.0, s_tmax: float = math.inf, s_noise: float = 1.0,
                churn_noise: jax.Array | None = None,
                before_step: StepHook | None = None) -> jax.Array:
  """Algorithm 2: the stochastic sampler with Heun's 2nd-order correction (`edm_sampler`).

  For i = 0 .. N-1: raise the noise to t_hat = t_i + gamma_i t_i by adding
  sqrt(t_hat^2 - t_i^2) S_noise eps (line 5-6), take an Euler step to t_{i+1} (line 7-8)
  and, unless t_{i+1} = 0, correct it with the slope at t_{i+1} (line 9-11). The last step
  is Euler's, so N steps cost 2N - 1 network evaluations (35 for the paper's N = 18).
  With s_churn = 0 (the default) it is the deterministic Heun sampler of Alg. 1.

  Args:
    denoise_fn: D(x, sigma_B) -> denoised images (labels and guidance closed over).
    latents: standard normal draws [B, ...]; x_0 = latents * sigma_max.
    rng: key for the churn noise (unused when `churn_noise` is given or s_churn = 0).
    num_steps: N.
    sigma_min, sigma_max, rho: Eq. 5's discretization.
    s_churn, s_tmin, s_tmax, s_noise: Alg. 2's S_churn, S_tmin, S_tmax, S_noise.
    churn_noise: the standard normal eps of line 5 for every step [N, B, ...], in place of
      draws from `rng` (the parity test injects the reference sampler's draws).
    before_step: applied to x_i at t_i before step i's churn (None: nothing; inpainting's
      replacement of the known pixels, `samplers.known_pixels_replaced`).

  Returns:
    x_N [B, ...], float32.

  Raises:
    ValueError: for s_churn > 0 with neither rng nor churn_noise, or num_steps < 2.
  """
  sigmas = sampling_sigmas(num_steps, sigma_min, sigma_max, rho)
  gammas = churn_gammas(sigmas, s_churn, s_tmin, s_tmax)
  t_hats = sigmas[:-1] * (1.0 + gammas)
  # sqrt(t_hat^2 - t_i^2), line 6's noise scale (0 where gamma is 0).
  churn_std = np.sqrt(t_hats ** 2 - sigmas[:-1] ** 2) * s_noise
  f32 = lambda a: jnp.asarray(a, jnp.float32)
  batch = latents.shape[0]

  def slope(x, t):
    """dx/dt = (x - D(x; t)) / t, Eq. 1's ODE with sigma(t) = t (Alg. 2 line 8 and 10)."""
    return (x - denoise_fn(x, jnp.full((batch,), t, jnp.float32))) / t

  if churn_noise is None and rng is None and np.any(churn_std > 0):
    raise ValueError("heun_sample: s_churn > 0 needs rng (or churn_noise).")

  def churn(x, i):
    """Alg. 2 line 5-6: x_hat = x_i + sqrt(t_hat^2 - t_i^2) S_noise eps."""
    if churn_noise is not None:
      eps = churn_noise[i]
    elif rng is None or not np.any(churn_std > 0):
      return x
    else:
      eps = jax.random.normal(jax.random.fold_in(rng, i), x.shape, jnp.float32)
    return x + f32(churn_std)[i] * eps

  def hooked(x, i, t_cur):
    return x if before_step is None else before_step(x, i, t_cur)

  def heun_step(x, inputs):
    i, t_cur, t_hat, t_next = inputs
    x_hat = churn(hooked(x, i, t_cur), i)
    d_cur = slope(x_hat, t_hat)
    x_euler = x_hat + (t_next - t_hat) * d_cur
    d_prime = slope(x_euler, t_next)
    return x_hat + (t_next - t_hat) * (0.5 * d_cur + 0.5 * d_prime), None

  x = latents.astype(jnp.float32) * f32(sigmas[0])
  last = num_steps - 1
  steps = (jnp.arange(last), f32(sigmas[:last]), f32(t_hats[:last]), f32(sigmas[1:last + 1]))
  x, _ = jax.lax.scan(heun_step, x, steps)
  # The last step ends at t_N = 0, where the correction is undefined: Euler only (line 9).
  x_hat = churn(hooked(x, jnp.asarray(last), f32(sigmas[last])), last)
  t_hat = f32(t_hats[last])
  return x_hat + (0.0 - t_hat) * slope(x_hat, t_hat)
