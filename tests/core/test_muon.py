"""Muon (gen_jax/core/muon.py): Newton-Schulz orthogonalization against numpy's SVD, the
momentum and shape scale of one update against a hand computation, and the split of a GPT's
parameters between Muon and Adam (gen_jax/core/optimizer.py)."""
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from gen_jax.core import muon
from gen_jax.core.optimizer import learning_rate_schedule, make_optimizer, muon_momentum_schedule


@pytest.mark.parametrize("shape", [(24, 40), (40, 24)])
def test_newton_schulz_gives_g_s_singular_vectors_with_singular_values_near_one(shape):
  """NS5(G) = U S' V^T with G = U S V^T (numpy SVD): U^T NS5(G) V is diagonal to float
  precision, with S' in [0.6, 1.3] for a Gaussian matrix (modded-nanogpt's docstring: ~0.5 to
  1.5), where the exact polar factor U V^T has S' = 1."""
  g = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
  u, s, vt = np.linalg.svd(g.astype(np.float64), full_matrices=False)
  x = np.asarray(jax.jit(muon.newton_schulz_orthogonalize)(jnp.asarray(g)), np.float64)
  core = u.T @ x @ vt.T                                   # [k, k], k = min(shape)
  off_diagonal = core - np.diag(np.diag(core))
  assert np.abs(off_diagonal).max() < 1e-4
  s_prime = np.diag(core)
  assert 0.6 < s_prime.min() and s_prime.max() < 1.3
  # The input's scale does not matter: NS5(c G) = NS5(G) for c > 0.
  x_scaled = np.asarray(muon.newton_schulz_orthogonalize(jnp.asarray(7.0 * g)))
  np.testing.assert_allclose(x_scaled, x, atol=1e-5)


def test_muon_update_is_the_orthogonalized_nesterov_momentum_times_the_shape_scale():
  """Two updates of a [8, 32] kernel by hand (modded-nanogpt's Muon.step): B = mu B + G,
  M = G + mu B, update = -lr sqrt(max(1, 32 / 8)) NS5(M)."""
  rng = np.random.default_rng(1)
  g1, g2 = (jnp.asarray(rng.standard_normal((8, 32)), jnp.float32) for _ in range(2))
  mu = 0.9
  opt = muon.scale_by_muon(momentum=mu)
  state: Any = opt.init(g1)
  u1: Any
  u2: Any
  u1, state = opt.update(g1, state)
  u2, state = opt.update(g2, state)
  ns = muon.newton_schulz_orthogonalize
  b1 = g1
  b2 = mu * b1 + g2
  np.testing.assert_allclose(u1, 2.0 * ns(g1 + mu * b1), atol=1e-5)
  np.testing.assert_allclose(u2, 2.0 * ns(g2 + mu * b2), atol=1e-5)
  np.testing.assert_allclose(state.momentum, b2, atol=1e-6)


def _train_cfg(**overrides):
  cfg = dict(optimizer="muon", lr=0.05, lr_decay="constant", warmup_steps=0, num_steps=10,
             min_lr_ratio=0.0, decay_steps=0, cooldown_steps=0, b1=0.8, b2=0.95, eps=1e-10,
             weight_decay=0.0, grad_clip=0.0, muon_momentum=0.95, muon_momentum_start=0.85,
             muon_momentum_warmup=0, muon_ns_steps=5, adam_lr_embedding=0.6,
             adam_lr_head=0.008, adam_lr_other=0.04)
  return ml_collections.ConfigDict({**cfg, **overrides})


def test_roles_choose_the_optimizer_and_its_learning_rate():
  """First update: a 'hidden' matrix moves by lr x an orthogonal direction (all singular
  values of update / (lr * scale) near 1); Adam's first step is -lr_role * sign(g) for
  the embedding, the head and the others (|update| = its lr wherever g != 0)."""
  rng = np.random.default_rng(2)
  params = {"wte": {"embedding": jnp.zeros((10, 8))}, "lm_head": {"kernel": jnp.zeros((8, 10))},
            "h_0": {"kernel": jnp.zeros((8, 16)), "bias": jnp.zeros((16,))}}
  grads = jax.tree.map(lambda p: jnp.asarray(rng.standard_normal(p.shape), jnp.float32), params)
  roles = {"wte": {"embedding": "embedding"}, "lm_head": {"kernel": "head"},
           "h_0": {"kernel": "hidden", "bias": "other"}}
  tx = make_optimizer(_train_cfg(), param_roles=lambda p: roles)
  updates: Any = tx.update(grads, tx.init(params), params)[0]
  singular = np.linalg.svd(np.asarray(updates["h_0"]["kernel"]) / (-0.05 * np.sqrt(2.0)),
                           compute_uv=False)
  assert 0.6 < singular.min() and singular.max() < 1.3
  for leaf, lr in ((("wte", "embedding"), 0.6), (("lm_head", "kernel"), 0.008),
                   (("h_0", "bias"), 0.04)):
    u, g = updates[leaf[0]][leaf[1]], grads[leaf[0]][leaf[1]]
    np.testing.assert_allclose(u, -lr * np.sign(g), rtol=1e-4)


def test_cooldown_schedule_and_momentum_warmup():
  """lr_decay='cooldown': constant until num_steps - cooldown_steps, then linear to
  lr * min_lr_ratio; Muon's momentum rises linearly over muon_momentum_warmup updates."""
  cfg = _train_cfg(lr_decay="cooldown", num_steps=100, cooldown_steps=40,
                   muon_momentum_warmup=30)
  lr = learning_rate_schedule(cfg)
  np.testing.assert_allclose([np.asarray(lr(s)) for s in (0, 60, 80, 100)],
                             [0.05, 0.05, 0.025, 0.0], atol=1e-7)
  mu = muon_momentum_schedule(cfg)
  np.testing.assert_allclose([np.asarray(mu(s)) for s in (0, 15, 30, 90)], [0.85, 0.90, 0.95, 0.95],
                             atol=1e-6)
