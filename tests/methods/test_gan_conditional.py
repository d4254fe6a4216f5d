"""Class-conditional GANs (Miyato & Koyama 2018): the projection discriminator in closed
form, conditional BatchNorm, K = 0 as today's models, labels in training and sampling, and
the label-agreement metric (issue 18)."""
import types

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from smoke import load_config

from gen_jax.core.state import count_params
from gen_jax.engine.sample_metrics import SampleQualityEvaluator
from gen_jax.engine.trained_run import TrainedRun
from gen_jax.evaluate.classifier_scores import label_agreement
from gen_jax.methods.base import class_rows
from gen_jax.methods.gan import GANMethod
from gen_jax.models import class_conditioning, dcgan, resnet_gan

MNIST = (28, 28, 1)
CIFAR = (32, 32, 3)
K = 3


def _vars(module, *args, rng=0, **kwargs):
  return module.init(jax.random.key(rng), *args, train=False, **kwargs)


def _unfreeze(tree):
  return flax.core.unfreeze(tree) if isinstance(tree, flax.core.FrozenDict) else tree


# ------------------------------------------------------------------ projection discriminator


@pytest.mark.parametrize("arch", ["dcgan", "resnet"])
def test_projection_discriminator_is_the_unconditional_head_plus_the_projection(arch):
  # Miyato & Koyama 2018, Eq. 3: D(x, y) = psi(phi(x)) + V[y] . phi(x). With psi's weights
  # and V set by hand, D(x, y) is computed from phi(x) alone; and D(x, y) - D_uncond(x)
  # (the same shared weights without V) is exactly the projection term.
  if arch == "dcgan":
    shape, kw = MNIST, dict(ndf=2, norm="none")
    make = lambda k: dcgan.Discriminator(num_classes=k, **kw)
  else:
    shape, kw = CIFAR, dict(dim=4)
    make = lambda k: resnet_gan.Discriminator(num_classes=k, **kw)
  x = jax.random.normal(jax.random.key(1), (4, *shape))
  y = jnp.array([0, 2, 1, 2])
  cond, uncond = make(K), make(0)
  params = _unfreeze(_vars(cond, x, labels_B=y)["params"])
  F = params["logit"]["kernel"].shape[0]
  w = np.linspace(-1.0, 1.0, F, dtype=np.float32)
  V = np.stack([np.zeros(F), np.ones(F), np.arange(F) % 3 - 1.0]).astype(np.float32)
  params["logit"] = {"kernel": jnp.asarray(w[:, None]), "bias": jnp.array([0.25])}
  params["embed"] = {"embedding": jnp.asarray(V)}

  got, inter = cond.apply({"params": params}, x, train=True, labels_B=y,
                          mutable=["intermediates"])
  phi = np.asarray(inter["intermediates"]["phi"][0], np.float64)
  assert phi.shape == (4, F) and np.abs(phi).max() > 0
  want = phi @ w + 0.25 + np.sum(V[np.asarray(y)] * phi, axis=1)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
  # Class 0's row is zero: its logit is the unconditional one.
  shared = {k: v for k, v in params.items() if k != "embed"}
  unconditional = uncond.apply({"params": shared}, x, train=True)
  np.testing.assert_allclose(got - unconditional, np.sum(V[np.asarray(y)] * phi, axis=1),
                             rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(got[0], unconditional[0], rtol=1e-6)


# --------------------------------------------------------------- conditional BatchNorm


def test_conditional_batchnorm_with_equal_class_rows_is_plain_batchnorm():
  # CBN(h, y) = gamma_y * BN(h) + beta_y: with every class row equal to a plain BatchNorm's
  # scale and offset, it is that BatchNorm (training and inference mode, 2-D and 4-D input).
  for shape in ((6, 5), (6, 3, 3, 5)):
    h = jax.random.normal(jax.random.key(0), shape) * 2.0 + 1.0
    labels = jnp.array([0, 1, 2, 0, 1, 2])
    scale = jnp.linspace(0.5, 1.5, 5)
    bias = jnp.linspace(-1.0, 1.0, 5)
    plain = flax.linen.BatchNorm(momentum=0.9, epsilon=1e-5)
    cbn = class_conditioning.ConditionalBatchNorm(K)
    cvars = _unfreeze(cbn.init(jax.random.key(0), h, labels, train=False))
    assert cvars["params"]["gamma"]["embedding"].shape == (K, 5)
    np.testing.assert_array_equal(cvars["params"]["gamma"]["embedding"], 1.0)   # init 1, 0
    np.testing.assert_array_equal(cvars["params"]["beta"]["embedding"], 0.0)
    cvars["params"] = {"gamma": {"embedding": jnp.tile(scale, (K, 1))},
                       "beta": {"embedding": jnp.tile(bias, (K, 1))}}
    stats = {"mean": jnp.full((5,), 0.3), "var": jnp.full((5,), 2.0)}
    cvars["batch_stats"] = {"bn": stats}
    pvars = {"params": {"scale": scale, "bias": bias}, "batch_stats": stats}
    for train in (True, False):
      got = cbn.apply(cvars, h, labels, train=train, mutable=["batch_stats"])[0]
      want = plain.apply(pvars, h, use_running_average=not train, mutable=["batch_stats"])[0]
      np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("style", ["radford", "tflib"])
def test_conditional_generator_with_equal_rows_is_the_plain_generator(style):
  # The whole DCGAN G: each BatchNorm's tables tiled from the plain G's scale and offset
  # give the plain G's images for any labels (the first 'tflib' BatchNorm per feature).
  g, cg = (dcgan.Generator(image_shape=MNIST, ngf=4, style=style, num_classes=k) for k in (0, K))
  z = jax.random.normal(jax.random.key(3), (6, 8))
  y = jnp.array([2, 1, 0, 0, 1, 2])
  plain = _unfreeze(_vars(g, z, rng=4))
  plain["batch_stats"] = jax.tree.map(lambda s: s + 0.1, plain["batch_stats"])
  cond = {"params": {}, "batch_stats": {}}
  for name, p in plain["params"].items():
    if name.endswith("_bn"):
      cond["params"][name] = {"gamma": {"embedding": jnp.tile(p["scale"], (K, 1))},
                              "beta": {"embedding": jnp.tile(p["bias"], (K, 1))}}
      cond["batch_stats"][name] = {"bn": plain["batch_stats"][name]}
    else:
      cond["params"][name] = p
  for train in (True, False):
    want = g.apply(plain, z, train=train, mutable=["batch_stats"])[0]
    got = cg.apply(cond, z, train=train, labels_B=y, mutable=["batch_stats"])[0]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_samples_change_with_the_label_only_through_its_table_rows():
  # Same z, labels 0 vs 1: different images. Changing the tables' rows of class 2 (and D's
  # V row 2) changes nothing for samples of classes 0 and 1 (running averages: per sample).
  cg = dcgan.Generator(image_shape=MNIST, ngf=4, num_classes=K)
  z = jax.random.normal(jax.random.key(5), (2, 8))
  variables = _unfreeze(_vars(cg, z, labels_B=jnp.zeros(2, jnp.int32)))
  randomize = lambda key, t: t + 0.3 * jax.random.normal(key, t.shape)
  leaves, tree = jax.tree.flatten(variables["params"])
  variables["params"] = jax.tree.unflatten(
      tree, [randomize(jax.random.key(i), leaf) for i, leaf in enumerate(leaves)])
  draw = lambda v, y: cg.apply(v, z, train=False, labels_B=jnp.full((2,), y))
  x0, x1 = draw(variables, 0), draw(variables, 1)
  assert float(jnp.abs(x0 - x1).max()) > 1e-2
  np.testing.assert_array_equal(draw(variables, 0), x0)          # deterministic
  edited = jax.tree_util.tree_map_with_path(
      lambda path, t: t.at[2].add(5.0) if "embedding" in jax.tree_util.keystr(path) else t,
      variables)
  np.testing.assert_array_equal(draw(edited, 0), x0)
  np.testing.assert_array_equal(draw(edited, 1), x1)
  assert float(jnp.abs(draw(edited, 2) - draw(variables, 2)).max()) > 1e-2


# ------------------------------------------------------------------ K = 0: today's models


def _count(module, *args, **kwargs):
  return count_params(jax.eval_shape(lambda: module.init(jax.random.key(0), *args,
                                                         train=False, **kwargs))["params"])


def test_parameter_counts_unconditional_unchanged_conditional_adds_the_tables():
  z, y = jnp.zeros((1, 100)), jnp.zeros((1,), jnp.int32)
  x28, x32 = jnp.zeros((1, *MNIST)), jnp.zeros((1, *CIFAR))
  K10 = 10
  # DCGAN, MNIST, ngf = ndf = 64 (tests/methods/test_gan.py: 833,985 and 212,993 by hand). The
  # plain BNs' scale/offset (2 x C) become tables (2 x K x C); D gains V [K, 7*7*128].
  g, d = dcgan.Generator(image_shape=MNIST, ngf=64), dcgan.Discriminator(ndf=64)
  assert (_count(g, z), _count(d, x28)) == (833_985, 212_993)
  cg = dcgan.Generator(image_shape=MNIST, ngf=64, num_classes=K10)
  cd = dcgan.Discriminator(ndf=64, num_classes=K10)
  assert _count(cg, z, labels_B=y) == 833_985 + (K10 - 1) * 2 * (128 + 64)
  assert _count(cd, x28, labels_B=y) == 212_993 + K10 * 7 * 7 * 128
  # 'tflib': the first BN is per feature of the flat 7*7*128 projection.
  tg = dcgan.Generator(image_shape=MNIST, ngf=64, style="tflib")
  ctg = dcgan.Generator(image_shape=MNIST, ngf=64, style="tflib", num_classes=K10)
  assert _count(ctg, z, labels_B=y) == _count(tg, z) + (K10 - 1) * 2 * (7 * 7 * 128 + 64)
  # ResNet (Gulrajani et al.: 1,204,483 / 1,053,825): six conditional block BNs, plain output BN.
  rg, rd = resnet_gan.Generator(image_shape=CIFAR), resnet_gan.Discriminator()
  assert (_count(rg, jnp.zeros((1, 128))), _count(rd, x32)) == (1_204_483, 1_053_825)
  crg = resnet_gan.Generator(image_shape=CIFAR, num_classes=K10)
  crd = resnet_gan.Discriminator(num_classes=K10)
  assert _count(crg, jnp.zeros((1, 128)), labels_B=y) == 1_204_483 + 13_824
  assert _count(crd, x32, labels_B=y) == 1_053_825 + 1_280


def test_unconditional_train_step_and_samples_are_todays():
  # Numbers of the smoke DCGAN at the commit before class conditioning (same key, same
  # batch): K = 0 must draw the same latents and compute the same losses and images. Update
  # them only for a deliberate change of the unconditional GAN.
  config = load_config("dcgan")
  method = GANMethod.from_config(config, MNIST)
  state = jax.jit(method.init)(jax.random.key(0), None)
  real = jax.random.uniform(jax.random.key(1), (8, *MNIST), minval=-1, maxval=1)
  new, metrics = jax.jit(method.train_step)(state, {"image": real}, jax.random.key(2))
  samples = jax.jit(method.sample, static_argnums=(2, 3))(new, jax.random.key(3), 4, True)
  np.testing.assert_allclose(float(metrics["d_loss"]), 1.3681762218475342, rtol=2e-5)
  np.testing.assert_allclose(float(metrics["g_loss"]), 0.6888022422790527, rtol=2e-5)
  np.testing.assert_allclose(float(jnp.sum(samples.images)), 45.94158172607422, rtol=2e-4)
  assert method.sample_labels(4) is None and samples.labels is None and method.sample_tag == ""


# ------------------------------------------------------------------- training, sampling


def test_conditional_train_step_reads_the_batch_labels_and_samples_one_row_per_class():
  config = load_config("dcgan", "smoke,conditional")
  assert config.model.num_classes == 10
  method = GANMethod.from_config(config, MNIST)
  state = jax.jit(method.init)(jax.random.key(0), None)
  real = jax.random.uniform(jax.random.key(1), (8, *MNIST), minval=-1, maxval=1)
  step = jax.jit(method.train_step)
  labels = jnp.arange(8) % 10
  a, ma = step(state, {"image": real, "label": labels}, jax.random.key(2))
  b, mb = step(state, {"image": real, "label": (labels + 3) % 10}, jax.random.key(2))
  again, _ = step(state, {"image": real, "label": labels}, jax.random.key(2))
  # D scores real images with their labels (the fakes' labels come from the key).
  assert float(ma["d_real"]) != float(mb["d_real"])
  assert float(ma["d_fake"]) == float(mb["d_fake"])
  for x, y in zip(jax.tree.leaves(again.params), jax.tree.leaves(a.params), strict=True):
    np.testing.assert_array_equal(x, y)
  # Sampling: blocks of classes (sample.label=-1), or one class; explicit labels override.
  sample = jax.jit(method.sample, static_argnums=(2, 3))
  np.testing.assert_array_equal(method.sample_labels(4), [0, 2, 5, 7])
  grid = sample(a, jax.random.key(3), 4, True)
  by_hand = sample(a, jax.random.key(3), 4, True, None, jnp.array([0, 2, 5, 7]))
  np.testing.assert_array_equal(grid.images, by_hand.images)
  np.testing.assert_array_equal(grid.labels, [0, 2, 5, 7])     # the classes drawn for
  # At init every class row is (1, 0): the label changes nothing; one update later it does.
  sevens = lambda s: sample(s, jax.random.key(3), 4, True, None, jnp.full((4,), 7))
  grid0 = sample(state, jax.random.key(3), 4, True).images
  np.testing.assert_array_equal(sevens(state).images, grid0)
  assert not np.array_equal(sevens(a).images, grid.images)
  np.testing.assert_array_equal(sevens(a).labels, [7, 7, 7, 7])
  seven = GANMethod.from_config(load_config("dcgan", "smoke,conditional", **{"sample.label": 7}),
                                MNIST)
  np.testing.assert_array_equal(seven.sample_labels(3), [7, 7, 7])
  assert seven.sample_tag == "label7"


def test_class_rows_layout():
  np.testing.assert_array_equal(class_rows(100, 10).reshape(10, 10), np.arange(10)[:, None]
                                .repeat(10, 1))               # one grid row per class
  assert np.bincount(class_rows(500, 10)).tolist() == [50] * 10
  np.testing.assert_array_equal(class_rows(3, 10, label=4), [4, 4, 4])
  with pytest.raises(ValueError, match=r"sample.label=10.*\[0, 10\)"):
    class_rows(3, 10, label=10)


@pytest.mark.parametrize("overrides,message", [
    ({"sample.label": 3}, "needs a class-conditional GAN"),
    ({"model.num_classes": 10, "sample.label": 12}, r"sample.label=12"),
    ({"model.num_classes": -1}, "model.num_classes=-1"),
])
def test_invalid_conditional_config_fails_clearly(overrides, message):
  with pytest.raises(ValueError, match=message):
    GANMethod.from_config(load_config("dcgan", **overrides), MNIST)


def test_conditional_config_variant():
  config = load_config("dcgan", "conditional")
  assert (config.model.num_classes, config.sample.num, config.sample.label) == (10, 100, -1)
  assert (config.data.dataset, config.train.num_steps) == ("mnist_5k", 3000)
  assert load_config("dcgan", "").model.num_classes == 0


def test_networks_reject_missing_or_unexpected_labels():
  x = jnp.zeros((2, *MNIST))
  with pytest.raises(ValueError, match="pass the class labels"):
    _vars(dcgan.Discriminator(ndf=2, num_classes=K), x)
  with pytest.raises(ValueError, match="unconditional"):
    _vars(dcgan.Discriminator(ndf=2), x, labels_B=jnp.zeros(2, jnp.int32))
  with pytest.raises(ValueError, match=r"shape \[B\]=\(2,\)"):
    _vars(dcgan.Generator(image_shape=MNIST, ngf=2, num_classes=K), jnp.zeros((2, 4)),
          labels_B=jnp.zeros((2, 1), jnp.int32))


# ---------------------------------------------------------------------- label agreement


def test_label_agreement_on_hand_made_logits():
  logits = np.array([[3.0, 0.0, 0.0],    # class 0
                     [0.0, 2.0, 1.0],    # class 1
                     [0.0, 1.0, 2.0],    # class 2
                     [5.0, 0.0, 1.0]])   # class 0
  assert label_agreement(logits, [0, 1, 2, 0]) == 1.0
  assert label_agreement(logits, [0, 2, 2, 1]) == 0.5
  assert label_agreement(logits, [1, 0, 0, 2]) == 0.0
  with pytest.raises(ValueError, match="outside the classifier's 3 classes"):
    label_agreement(logits, [0, 1, 2, 3])
  with pytest.raises(ValueError, match="labels \\[N\\]"):
    label_agreement(logits, [0, 1])


def test_sample_metrics_labels_follow_the_batches():
  # SampleQualityEvaluator draws num_samples in batches of batch_size, each with the
  # method's sample_labels(batch_size), and keeps the first num_samples.
  method = types.SimpleNamespace(sample_labels=lambda n: class_rows(n, 2))
  evaluator = types.SimpleNamespace(exp=types.SimpleNamespace(method=method), batch_size=4,
                                    num_samples=10)
  np.testing.assert_array_equal(SampleQualityEvaluator.sample_labels(evaluator),
                                [0, 0, 1, 1, 0, 0, 1, 1, 0, 0])
  method.sample_labels = lambda n: None
  assert SampleQualityEvaluator.sample_labels(evaluator) is None


def test_trained_run_checks_labels():
  exp = types.SimpleNamespace(method=types.SimpleNamespace(num_classes=10),
                              config=types.SimpleNamespace(method="gan"))
  np.testing.assert_array_equal(TrainedRun._check_labels(exp, 7, 3), [7, 7, 7])
  np.testing.assert_array_equal(TrainedRun._check_labels(exp, [1, 2, 3], 3), [1, 2, 3])
  with pytest.raises(ValueError, match=r"classes in \[0, 10\)"):
    TrainedRun._check_labels(exp, [1, 2, 10], 3)
  with pytest.raises(ValueError, match="an int or 3 ints"):
    TrainedRun._check_labels(exp, [1, 2], 3)
  exp.method.num_classes = 0
  with pytest.raises(ValueError, match="unconditional"):
    TrainedRun._check_labels(exp, 7, 3)
