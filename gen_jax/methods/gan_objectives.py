"""The objectives of the GAN family (gen_jax/methods/gan.py): each player's loss, the
WGAN-GP gradient penalty and the zero-centered R1/R2 penalties.

Goodfellow et al. 2014, "Generative Adversarial Nets" (arXiv:1406.2661): the minimax game
(Eq. 1) and the non-saturating generator objective (§3).
Lim & Ye 2017 "Geometric GAN" (arXiv:1705.02894); Miyato et al. 2018 (arXiv:1802.05957, §4):
the hinge objective.
Gulrajani et al. 2017, "Improved Training of Wasserstein GANs" (arXiv:1704.00028): the
critic loss with gradient penalty (Eq. 3, Algorithm 1).
Huang, Gokaslan, Kuleshov, Tompkin 2024, "The GAN is dead; long live the GAN! A Modern GAN
Baseline" (R3GAN, NeurIPS 2024, arXiv:2501.05441), §2: the relativistic pairing loss (RpGAN)
with the zero-centered gradient penalties R1 on real and R2 on fake data (Mescheder et al.
2018, "Which Training Methods for GANs do actually Converge?", arXiv:1801.04406, Eq. 9).
"""
from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

CriticFn = Callable[[jax.Array], jax.Array]   # images [B, H, W, C] -> logits [B]


# ------------------------------------------------------------------------------ losses


def d_loss_non_saturating(real_logits_B: jax.Array, fake_logits_B: jax.Array) -> jax.Array:
  """Goodfellow et al. 2014, Eq. 1, D's side: maximize E log D(x) + E log(1 - D(G(z))).

  With D = sigmoid(logit): -log D = softplus(-logit), -log(1 - D) = softplus(logit), so the
  loss is E softplus(-l_real) + E softplus(l_fake) (the binary cross-entropy DCGAN uses).
  """
  return jnp.mean(jax.nn.softplus(-real_logits_B)) + jnp.mean(jax.nn.softplus(fake_logits_B))


def g_loss_non_saturating(fake_logits_B: jax.Array) -> jax.Array:
  """Goodfellow et al. 2014, §3: "train G to maximize log D(G(z))" rather than minimize
  log(1 - D(G(z))) (which saturates early on). Loss: E softplus(-l_fake).
  """
  return jnp.mean(jax.nn.softplus(-fake_logits_B))


def d_loss_hinge(real_logits_B: jax.Array, fake_logits_B: jax.Array) -> jax.Array:
  """Lim & Ye 2017; Miyato et al. 2018, §4: E max(0, 1 - D(x)) + E max(0, 1 + D(G(z)))."""
  return jnp.mean(jax.nn.relu(1.0 - real_logits_B)) + jnp.mean(jax.nn.relu(1.0 + fake_logits_B))


def g_loss_hinge(fake_logits_B: jax.Array) -> jax.Array:
  """Lim & Ye 2017; Miyato et al. 2018, §4: the generator minimizes -E D(G(z))."""
  return -jnp.mean(fake_logits_B)


def d_loss_wasserstein(real_logits_B: jax.Array, fake_logits_B: jax.Array) -> jax.Array:
  """Gulrajani et al. 2017, Eq. 3, first two terms: E D(x~) - E D(x), x~ = G(z).

  Its negative is the critic's estimate of the Wasserstein-1 distance (Arjovsky et al.
  2017, Eq. 3).
  """
  return jnp.mean(fake_logits_B) - jnp.mean(real_logits_B)


def g_loss_wasserstein(fake_logits_B: jax.Array) -> jax.Array:
  """Gulrajani et al. 2017, Alg. 1, line 11: G descends -E D(G(z))."""
  return -jnp.mean(fake_logits_B)


def gradient_penalty(critic: CriticFn, real_BxHxWxC: jax.Array, fake_BxHxWxC: jax.Array,
                     eps_B: jax.Array, weight: float = 10.0) -> jax.Array:
  """Gulrajani et al. 2017, Eq. 3 third term and Alg. 1, lines 6-7:

    x^ = eps x + (1 - eps) x~,  eps ~ U[0, 1] per example,
    GP = lambda E (||grad_x^ D(x^)||_2 - 1)^2          (two-sided, lambda = 10).

  `critic` must treat examples independently (no BatchNorm), so the gradient of
  sum_b D(x^_b) w.r.t. x^ is the per-example gradient. Differentiable w.r.t. the critic's
  parameters (closed over by `critic`).

  Args:
    critic: images -> logits [B].
    real_BxHxWxC, fake_BxHxWxC: real and generated images.
    eps_B: interpolation weights in [0, 1].
    weight: lambda.

  Returns:
    The scalar penalty lambda E (||grad||_2 - 1)^2.
  """
  eps = eps_B[:, None, None, None]
  x_hat = eps * real_BxHxWxC + (1.0 - eps) * fake_BxHxWxC
  grads_BxHxWxC = jax.grad(lambda x: jnp.sum(critic(x)))(x_hat)
  # A tiny constant keeps the sqrt differentiable at a zero gradient.
  norms_B = jnp.sqrt(jnp.sum(grads_BxHxWxC ** 2, axis=(1, 2, 3)) + 1e-12)
  return weight * jnp.mean((norms_B - 1.0) ** 2)


def d_loss_relativistic_pairing(real_logits_B: jax.Array, fake_logits_B: jax.Array) -> jax.Array:
  """Huang et al. 2024, §2, D's side of RpGAN: E_{x, z} f(D(G(z)) - D(x)), f = softplus.

  Real example b is paired with fake example b (the authors' trainer forms one relativistic
  logit D(x_b) - D(G(z_b)) per row): the loss is E_b softplus(D(G(z_b)) - D(x_b)), i.e.
  -E log sigmoid(D(x) - D(G(z))), the probability that the real is more real than its fake.
  """
  return jnp.mean(jax.nn.softplus(fake_logits_B - real_logits_B))


def g_loss_relativistic_pairing(real_logits_B: jax.Array, fake_logits_B: jax.Array) -> jax.Array:
  """Huang et al. 2024, §2, G's side of RpGAN: E_b softplus(D(x_b) - D(G(z_b))).

  G minimizes the same pairing with the roles swapped; its gradient w.r.t. the fake logit
  of row b is -sigmoid(D(x_b) - D(G(z_b))) / B: large while the fake scores below its real
  partner, so G is pushed until every fake outscores the real it is paired with.
  """
  return jnp.mean(jax.nn.softplus(real_logits_B - fake_logits_B))


def zero_centered_gradient_penalty(critic: CriticFn, x_BxHxWxC: jax.Array,
                                   gamma: float | jax.Array) -> jax.Array:
  """Mescheder et al. 2018, Eq. 9; Huang et al. 2024, §2: gamma / 2 E_x ||grad_x D(x)||_2^2.

  On real images this is R1, on generated images R2 (the fakes as data: no gradient flows
  into G through this term). `critic` must treat examples independently (no BatchNorm), so
  the gradient of sum_b D(x_b) w.r.t. x is the per-example gradient; the penalty is
  differentiable w.r.t. the critic's parameters (closed over by `critic`).

  Args:
    critic: images -> logits [B].
    x_BxHxWxC: the points where the gradient is penalized.
    gamma: the penalty's weight (R3GAN's released CIFAR-10 setting: 0.05, decayed to 0.005).

  Returns:
    The scalar penalty gamma / 2 E ||grad_x D(x)||^2.
  """
  grads_BxHxWxC = jax.grad(lambda x: jnp.sum(critic(x)))(x_BxHxWxC)
  return 0.5 * gamma * jnp.mean(jnp.sum(grads_BxHxWxC ** 2, axis=(1, 2, 3)))


OBJECTIVES = {  # loss -> (discriminator loss, generator loss)
    "non_saturating": (d_loss_non_saturating, g_loss_non_saturating),
    "hinge": (d_loss_hinge, g_loss_hinge),
    "wgan_gp": (d_loss_wasserstein, g_loss_wasserstein),
}

# Relativistic objectives score (real, fake) pairs on both sides, so G's update needs real
# images too: loss -> (discriminator loss, generator loss), each f(real_logits, fake_logits).
PAIRED_OBJECTIVES = {
    "rpgan": (d_loss_relativistic_pairing, g_loss_relativistic_pairing),
}
