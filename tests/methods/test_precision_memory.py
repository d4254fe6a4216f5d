"""Precision and memory: bfloat16 compute, gradient accumulation, U-Net rematerialization.

Every family's smoke config (images shrunk to 8x8 where the family allows it), so each test
compiles a handful of tiny functions once.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from smoke import load_config

from gen_jax.data import CharTokenizer, DataSpec
from gen_jax.methods import build_method
from gen_jax.methods.gan import D, G
from gen_jax.models.unet import UNet

SMALL = (8, 8, 1)       # images for the families that take any size
# RBG keys: XLA:CPU compiles threefry random bits (for every initializer, dropout mask and
# noise draw) several times slower, and the methods take any typed key.
rbg_key = lambda seed: jax.random.key(seed, impl="rbg")
INIT_KEY = rbg_key(0)
MATMULS = ("dot_general", "conv_general_dilated")
REDUCTIONS = ("reduce_sum", "reduce_max", "reduce_min")

# family -> (config file, variant, overrides, image shape or None for text)
FAMILIES = {
    # One level: 5 ResBlocks and the middle attention block.
    "ddpm": ("ddpm", "smoke", {"model.ch_mult": (1,), "model.attn_resolutions": (),
                               "train.batch_size": 8}, SMALL),
    "vae": ("vae", "smoke", {}, SMALL),
    "dcgan": ("dcgan", "smoke", {}, (28, 28, 1)),
    "gpt": ("gpt", "smoke", {}, None),
    "lstm": ("lstm", "smoke", {}, None),
}
CONFIGS = {**FAMILIES,
           # 5 critic updates of 8 real images, a layer-norm critic (no BatchNorm).
           "wgan_gp": ("dcgan", "smoke,loss=wgan_gp", {}, (28, 28, 1))}


def _method_and_batch(family, **overrides):
  name, variant, base, image_shape = CONFIGS[family]
  config = load_config(name, variant, **{**base, **overrides})
  B, key = config.train.batch_size, rbg_key(1)
  if image_shape is None:
    tokenizer = CharTokenizer("abcdefgh\n")
    spec = DataSpec.for_text(tokenizer, config.data.seq_len)
    # A repeating pattern from random offsets: the next token is predictable, so a few
    # steps on this one batch lower the loss a lot.
    offsets = jax.random.randint(key, (B, 1), 0, tokenizer.vocab_size)
    tokens = (offsets + jnp.arange(config.data.seq_len + 1)) % tokenizer.vocab_size
    return build_method(config, spec), {"tokens": tokens.astype(jnp.int32)}
  spec = DataSpec.for_images(image_shape)
  x = jax.random.uniform(key, (B, *image_shape), minval=-1.0, maxval=1.0)
  if family == "vae":     # the smoke VAE is Bernoulli: binary images
    x = (x > 0).astype(jnp.float32)
  return build_method(config, spec), {"image": x}


def _equations(jaxpr):
  """Every equation of a jaxpr, those of nested jaxprs (jit, scan, remat, custom_jvp) too."""
  for eqn in getattr(jaxpr, "jaxpr", jaxpr).eqns:
    yield eqn
    for param in eqn.params.values():
      for sub in param if isinstance(param, (tuple, list)) else (param,):
        if hasattr(sub, "eqns") or hasattr(sub, "jaxpr"):
          yield from _equations(sub)


def _operand_dtypes(jaxpr, primitives):
  """{primitive name: set of operand dtypes} over every equation of those primitives.

  A dot whose algorithm is BF16_BF16_F32 rounds its operands to bfloat16 and counts as
  such: jax.nn.dot_product_attention computes its float32 logits that way, so the
  backward pass feeds it their float32 cotangent.
  """
  seen = {}
  for eqn in _equations(jaxpr):
    if eqn.primitive.name in primitives:
      dtypes = {str(v.aval.dtype) for v in eqn.invars}
      if eqn.params.get("precision") == jax.lax.DotAlgorithmPreset.BF16_BF16_F32:
        dtypes = {"bfloat16"}
      seen.setdefault(eqn.primitive.name, set()).update(dtypes)
  return seen


def _forward(method, state, batch):
  """The outputs of the family's networks (eval mode; the GAN's on batch statistics)."""
  params = state.params
  if "tokens" in batch:
    return method.model.apply({"params": params}, batch["tokens"][:, :-1], train=False)
  x = batch["image"]
  if hasattr(method, "schedule"):      # diffusion
    return method.model.apply({"params": params}, x, jnp.zeros(x.shape[:1], jnp.int32),
                              train=False)
  if hasattr(method, "generator"):     # GAN: G(z), then D on it (both with batch statistics)
    stats = state.model_state
    fake, _ = method.generate(params[G], stats[G], jnp.zeros((x.shape[0], method.z_dim)), True)
    return fake, method.discriminate(params[D], stats, fake)[0]
  return method.model.apply({"params": params}, x)


def _float_leaves(tree):
  return [x for x in jax.tree.leaves(tree) if jnp.issubdtype(x.dtype, jnp.floating)]


# ------------------------------------------------------------------------------- bfloat16

# Learning rates that move a smoke model clearly in 20 steps (the LM smoke schedule decays
# over its 4 steps; give it 20).
TRAIN_OVERRIDES = {"vae": {"train.lr": 1e-2},
                   "gpt": {"train.num_steps": 20, "train.lr": 1e-2},
                   "lstm": {"train.num_steps": 20, "train.lr": 3e-2}}


@pytest.mark.parametrize("family", list(FAMILIES))
def test_bfloat16_computes_in_bfloat16_keeps_float32_state_and_trains(family):
  method, batch = _method_and_batch(family, dtype="bfloat16", **TRAIN_OVERRIDES.get(family, {}))
  state = jax.jit(method.init)(INIT_KEY, batch)
  rng = rbg_key(2)

  # Every matmul and convolution of the whole step (forward, backward, the WGAN penalty's
  # double backward) takes bfloat16 operands: a layer without `dtype`, or a config dtype
  # that never reaches the model, leaves float32 ones here.
  matmuls = _operand_dtypes(jax.make_jaxpr(method.train_step)(state, batch, rng), MATMULS)
  assert matmuls and set().union(*matmuls.values()) == {"bfloat16"}, matmuls
  # In the forward pass every reduction -- softmax max/sum, GroupNorm/LayerNorm/BatchNorm
  # statistics -- runs in float32; the networks return float32.
  forward = jax.make_jaxpr(lambda s, b: _forward(method, s, b))(state, batch)
  reductions = _operand_dtypes(forward, REDUCTIONS)
  assert set().union(set(), *reductions.values()) <= {"float32", "int32"}, reductions
  assert {str(v.aval.dtype) for v in forward.jaxpr.outvars} == {"float32"}

  step = jax.jit(method.train_step)
  losses = []
  for _ in range(20):
    state, metrics = step(state, batch, rng)
    assert metrics["loss"].dtype == jnp.float32
    losses.append(float(metrics["loss"]))
  assert np.all(np.isfinite(losses)), losses
  # 20 steps on one batch with one key: the loss is a deterministic function of the params,
  # and falls by 20-65% (measured; dcgan's is D's loss).
  assert losses[-1] < 0.9 * losses[0], losses
  # Params, their EMA, optimizer moments and BatchNorm averages stay float32 after updates.
  for tree in (state.params, state.ema_params, state.opt_state, state.model_state):
    assert {x.dtype for x in _float_leaves(tree)} <= {jnp.dtype(jnp.float32)}
  assert _float_leaves(state.opt_state)


# -------------------------------------------------------------------- gradient accumulation


def _one_step(family, M, **overrides):
  """(state before, state after, metrics) of one float32 train step with grad_accum_steps M
  (no lr warmup, which would make the first update zero)."""
  method, batch = _method_and_batch(family, **{"train.grad_accum_steps": M,
                                               "train.warmup_steps": 0, **overrides})
  state = jax.jit(method.init)(INIT_KEY, batch)
  return (state, *jax.jit(method.train_step)(state, batch, rbg_key(3)))


@pytest.mark.parametrize("family, overrides", [
    ("ddpm", {}),
    ("vae", {"vae.objective": "iwae", "vae.train_k": 3}),
])
def test_gradient_accumulation_gives_the_update_of_the_whole_batch(family, overrides):
  """One step with 4 micro-batches of 2 against one step on the batch of 8.

  A real check although micro-batch m gets the key fold_in(rng, m): the random inputs of
  the loss -- diffusion's t and eps, the IWAE's eps [k, B, L] -- are drawn per example
  for the whole batch before the split, and the smoke configs have no dropout, so both
  steps differentiate the same function, the mean loss over the same 8 (image, noise)
  rows. Summing instead of averaging (grad_norm x 4), dropping or repeating a micro-batch,
  or pairing an image with another row's t or eps changes the loss, grad_norm or update.
  """
  before, one, metrics_one = _one_step(family, 1, **overrides)
  _, four, metrics_four = _one_step(family, 4, **overrides)
  np.testing.assert_allclose(metrics_four["loss"], metrics_one["loss"], rtol=1e-5)
  np.testing.assert_allclose(metrics_four["grad_norm"], metrics_one["grad_norm"], rtol=1e-4)
  step_one = jax.tree.map(jnp.subtract, one.params, before.params)
  step_four = jax.tree.map(jnp.subtract, four.params, before.params)
  size = max(float(jnp.abs(x).max()) for x in jax.tree.leaves(step_one))
  assert size > 0
  for a, b in zip(jax.tree.leaves(step_four), jax.tree.leaves(step_one), strict=True):
    # Adam's first step is ~lr sign(g): agree to 0.1% of the step size.
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-3 * size)


def test_gan_accumulation_averages_the_micro_batch_gradients_and_statistics():
  """What holds for a GAN: M = 4 on one WGAN-GP critic update (layer-norm critic, 8 real
  images) and on a G update (8 latents).

  D's and G's losses, gradients, metrics and BatchNorm running averages equal the means
  of those of the 4 micro-batches of 2 rows (m, m + 4: the same real images, latents and
  penalty weights) computed one at a time with M = 1. Equality with the update of the
  whole batch cannot hold: G has BatchNorm, so each micro-batch's fakes are normalized by
  that micro-batch's statistics (gen_jax/methods/gan.py, module docstring).
  """
  (four, batch), (one, _) = (_method_and_batch("wgan_gp", **{"train.grad_accum_steps": M})
                             for M in (4, 1))
  state = jax.jit(four.init)(INIT_KEY, batch)
  k_z, k_eps = jax.random.split(rbg_key(4))
  z = jax.random.normal(k_z, (8, four.z_dim))
  rows = (batch["image"][:8], z, jax.random.uniform(k_eps, (8,)))

  def both_players(params, stats, rows, z, method):
    return (method.discriminator_grads(params[D], params[G], stats, rows),
            method.generator_grads(params[G], params[D], stats, z))

  both_players = jax.jit(both_players, static_argnums=4)
  params, stats = state.params, state.model_state
  accumulated = both_players(params, stats, rows, z, four)
  per_micro_batch = [
      both_players(params, stats, *jax.tree.map(lambda x, m=m: x[m::4], (rows, z)), one)
      for m in range(4)]
  mean = jax.tree.map(lambda *xs: sum(xs) / 4, *per_micro_batch)

  ((_, (d_stats, d_metrics)), _), ((_, g_stats), _) = accumulated
  assert set(d_metrics) == {"d_real", "d_fake", "gp"}
  assert jax.tree.leaves(d_stats[G]) and jax.tree.leaves(g_stats)   # G's BatchNorm averages
  for a, b in zip(jax.tree.leaves(accumulated), jax.tree.leaves(mean), strict=True):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6 * max(1.0, float(jnp.abs(b).max())))


def test_grad_accum_steps_must_divide_the_rows_it_splits():
  with pytest.raises(ValueError, match=r"grad_accum_steps=3 must be >= 1 and divide "
                                       r"train.batch_size=8"):
    _method_and_batch("ddpm", **{"train.grad_accum_steps": 3})
  with pytest.raises(ValueError, match=r"grad_accum_steps=0 must be >= 1"):
    _method_and_batch("vae", **{"train.grad_accum_steps": 0})
  # wgan_gp smoke: 5 critic updates of 8 real images each.
  with pytest.raises(ValueError, match=r"divide the 8 real images of each critic update "
                                       r"\(train.batch_size=40 / gan.n_critic=5\)"):
    _method_and_batch("wgan_gp", **{"train.grad_accum_steps": 3})


# ------------------------------------------------------------------------ rematerialization


def test_unet_remat_keeps_params_and_gradients_and_recomputes_every_block():
  kw = dict(ch=8, ch_mult=(1,), num_res_blocks=1, attn_resolutions=(), dropout=0.1,
            num_groups=4)
  plain, remat = UNet(**kw), UNet(**kw, remat=True)
  x = jax.random.normal(rbg_key(5), (2, *SMALL))
  t = jnp.array([3, 17])
  shapes = [jax.eval_shape(lambda k, m=m: m.init(k, x, t, train=False), INIT_KEY)
            for m in (plain, remat)]
  assert jax.tree.structure(shapes[0]) == jax.tree.structure(shapes[1])   # same names
  assert jax.tree.leaves(shapes[0]) == jax.tree.leaves(shapes[1])         # same shapes
  params = jax.jit(lambda k: plain.init(k, x, t, train=False))(INIT_KEY)["params"]
  # Move off the (nearly) zero-initialized output layers so every gradient is sizable.
  noise = np.random.default_rng(0)
  params = jax.tree.map(lambda p: p + 0.1 * noise.standard_normal(p.shape).astype(np.float32),
                        params)

  def loss(model):   # training mode: dropout masks must be reproduced when recomputing
    return lambda p: jnp.mean((model.apply({"params": p}, x, t, train=True,
                                           rngs={"dropout": rbg_key(6)}) - x) ** 2)

  # nn.remat wraps each of the 5 ResBlocks and the attention block in a jax.checkpoint.
  count = lambda m: sum(e.primitive.name in ("checkpoint", "remat2")
                        for e in _equations(jax.make_jaxpr(loss(m))(params)))
  assert (count(plain), count(remat)) == (0, 6)
  g_plain, g_remat = (jax.jit(jax.grad(loss(m)))(params) for m in (plain, remat))
  for a, b in zip(jax.tree.leaves(g_remat), jax.tree.leaves(g_plain), strict=True):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
