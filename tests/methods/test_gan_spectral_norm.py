"""A spectrally normalized discriminator in the GAN's train step (gen_jax/methods/gan.py): same
parameters, u vectors in the model state, and as many power iterations per step as the
authors' chainer updater (sngan_projection updater.py: D on the real batch, D on the fakes,
and D in G's update each evaluate W_bar once)."""
import jax
import jax.numpy as jnp
import numpy as np
from smoke import load_config

from gen_jax.methods.gan import D_SN, D, G, GANMethod
from gen_jax.models.spectral_norm import power_iteration

MNIST = (28, 28, 1)
SN = {"gan.d_spectral_norm": True, "gan.loss": "hinge"}


def test_a_train_step_iterates_twice_per_critic_update_and_once_in_the_generator_update():
  method = GANMethod.from_config(load_config("dcgan", "smoke,conditional", **SN), MNIST)
  plain = GANMethod.from_config(load_config("dcgan", "smoke,conditional",
                                            **{"gan.loss": "hinge"}), MNIST)
  state = jax.jit(method.init)(jax.random.key(0), None)
  plain_state = jax.jit(plain.init)(jax.random.key(0), None)
  # Spectral normalization adds state, not parameters: the same params from the same key.
  jax.tree.map(np.testing.assert_array_equal, state.params, plain_state.params)
  assert D_SN not in plain_state.model_state
  u0 = state.model_state[D_SN]
  assert sorted(u0) == ["conv0_sn", "conv1_sn", "embed_sn", "logit_sn"]

  batch = {"image": jax.random.uniform(jax.random.key(1), (8, *MNIST), minval=-1, maxval=1),
           "label": jnp.arange(8) % 10}
  new, _ = jax.jit(method.train_step)(state, batch, jax.random.key(2))
  u1 = new.model_state[D_SN]
  # n_critic = 1: two iterations on D's params before its update, one on those after it.
  W0, W1 = state.params[D]["logit"]["kernel"].T, new.params[D]["logit"]["kernel"].T
  u = u0["logit_sn"]["u"]
  for W in (W0, W0, W1):
    _, u = power_iteration(W, u)
  np.testing.assert_allclose(u1["logit_sn"]["u"], u, rtol=1e-4, atol=1e-6)
  E0, E1 = state.params[D]["embed"]["embedding"], new.params[D]["embed"]["embedding"]
  u = u0["embed_sn"]["u"]
  for W in (E0, E0, E1):
    _, u = power_iteration(W, u)
  np.testing.assert_allclose(u1["embed_sn"]["u"], u, rtol=1e-4, atol=1e-6)
  assert sorted(new.model_state) == sorted([G, D, D_SN])
