"""`Method.sample` returns one declared structure, `Samples` (gen_jax/methods/base.py): its
invariants, its pytree behaviour, and each family's shapes and dtypes, read from abstract
evaluation (`jax.eval_shape`: nothing is compiled)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from smoke import load_config

from gen_jax.data.spec import DataSpec
from gen_jax.data.text import CharTokenizer
from gen_jax.methods import build_method
from gen_jax.methods.base import Samples

MNIST = (28, 28, 1)
N = 4


def _images(n=N, shape=MNIST):
  return jnp.zeros((n, *shape), jnp.float32)


# ----------------------------------------------------------------------------- the type


def test_samples_hold_images_or_tokens_exactly_one():
  with pytest.raises(ValueError, match="exactly one of the two; got both"):
    Samples(images=_images(), tokens=jnp.zeros((N, 5), jnp.int32))
  with pytest.raises(ValueError, match="exactly one of the two; got neither"):
    Samples()
  with pytest.raises(ValueError, match="exactly one of the two; got neither"):
    Samples(labels=jnp.zeros((N,), jnp.int32))
  assert Samples(images=_images()).num == N
  assert Samples(tokens=jnp.zeros((3, 5), jnp.int32)).num == 3


@pytest.mark.parametrize("fields,message", [
    ({"images": jnp.zeros((N, 28, 28), jnp.float32)}, r"images must be floating \[N, H, W, C\]"),
    ({"images": jnp.zeros((N, *MNIST), jnp.int32)}, r"images must be floating"),
    ({"tokens": jnp.zeros((N, 5), jnp.float32)}, r"tokens must be int32 \[N, L\]"),
    ({"tokens": jnp.zeros((N,), jnp.int32)}, r"tokens must be int32 \[N, L\]"),
    ({"images": _images(), "labels": jnp.zeros((N + 1,), jnp.int32)},
     r"labels must be int32 \[N=4\], one class per sample"),
    ({"images": _images(), "labels": np.zeros((N,), np.int64)}, r"labels must be int32"),
    ({"tokens": jnp.zeros((N, 5), jnp.int32), "grids": {"x": _images()}},
     "tokens have no image grids"),
    ({"images": _images(), "grids": {"samples": _images()}}, "other than 'samples'"),
    ({"images": _images(), "grids": {"": _images()}}, "other than 'samples'"),
    ({"images": _images(), "grids": {"x": jnp.zeros((N, 28), jnp.float32)}},
     r"grids\['x'\] must be floating \[M, H, W, C\]"),
])
def test_samples_reject_fields_of_the_wrong_shape_or_dtype(fields, message):
  with pytest.raises(ValueError, match=message):
    Samples(**fields)


def test_image_grids_put_the_samples_first_and_tokens_have_none():
  samples = Samples(images=_images(), grids={"manifold": _images(9), "recon": _images(2)})
  assert list(samples.image_grids()) == ["samples", "manifold", "recon"]
  assert samples.image_grids()["samples"] is samples.images
  with pytest.raises(ValueError, match="no image grids"):
    Samples(tokens=jnp.zeros((N, 5), jnp.int32)).image_grids()


def test_samples_are_a_pytree_that_comes_out_of_jit_whole():
  labels = jnp.arange(N, dtype=jnp.int32)
  out = jax.jit(lambda x: Samples(images=x, labels=labels, grids={"g": 2 * x}))(_images() + 1)
  assert isinstance(out, Samples) and out.tokens is None
  np.testing.assert_array_equal(out.grids["g"], 2 * np.ones((N, *MNIST)))
  np.testing.assert_array_equal(out.labels, np.arange(N))
  host = jax.device_get(out)
  assert isinstance(host, Samples) and isinstance(host.images, np.ndarray)
  # Leaves in field order, named by attribute; JAX may rebuild the tree from placeholder
  # leaves, which the invariants (checked when a family builds it) must not reject.
  paths = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_flatten_with_path(out)[0]]
  assert paths == [".images", ".labels", ".grids['g']"]
  leaves, treedef = jax.tree_util.tree_flatten(out)
  rebuilt = jax.tree_util.tree_unflatten(treedef, [object()] * len(leaves))
  assert isinstance(rebuilt, Samples) and rebuilt.tokens is None


# -------------------------------------------------------------------------- the families


def _abstract_sample(method, spec, num=N, batch=None, **kwargs) -> Samples:
  """`method.sample` on an abstract state (`jax.eval_shape`): shapes and dtypes only."""
  state = jax.eval_shape(method.init, jax.random.key(0), spec.example_batch())
  return jax.eval_shape(lambda s, r, b: method.sample(s, r, num, True, batch=b, **kwargs),
                        state, jax.random.key(1), batch)


def _shape_dtype(x):
  return tuple(x.shape), jnp.dtype(x.dtype)


IMAGES_F32 = ((N, *MNIST), jnp.dtype(jnp.float32))


@pytest.mark.parametrize("arg", ["smoke", "smoke,conditional"])
def test_diffusion_samples_are_images_with_labels_when_conditional(arg):
  spec = DataSpec.for_images(MNIST)
  method = build_method(load_config("ddpm", arg), spec)
  out = _abstract_sample(method, spec)
  assert isinstance(out, Samples) and out.tokens is None and out.grids == {}
  assert _shape_dtype(out.images) == IMAGES_F32
  if method.num_classes:
    assert _shape_dtype(out.labels) == ((N,), jnp.dtype(jnp.int32))
  else:
    assert out.labels is None


@pytest.mark.parametrize("arg", ["smoke", "smoke,conditional"])
def test_gan_samples_are_images_with_an_interpolation_grid(arg):
  spec = DataSpec.for_images(MNIST)
  method = build_method(load_config("dcgan", arg), spec)
  S = method.interpolation_steps
  out = _abstract_sample(method, spec)
  assert isinstance(out, Samples) and out.tokens is None and S > 0
  assert _shape_dtype(out.images) == IMAGES_F32
  assert list(out.grids) == ["interpolation"]
  assert _shape_dtype(out.grids["interpolation"]) == ((S * S, *MNIST), jnp.dtype(jnp.float32))
  assert (out.labels is None) == (not method.num_classes)
  no_path = build_method(load_config("dcgan", arg, **{"sample.interpolation_steps": 0}), spec)
  assert _abstract_sample(no_path, spec).grids == {}


def test_vae_samples_carry_reconstructions_and_the_manifold_grid():
  spec = DataSpec.for_images(MNIST)
  method = build_method(load_config("vae"), spec)
  assert method.latent_dim == 2   # the smoke VAE draws the latent manifold
  S = method.manifold_size
  batch = {"image": jax.ShapeDtypeStruct((N + 2, *MNIST), jnp.float32)}
  out = _abstract_sample(method, spec, batch=batch)
  assert isinstance(out, Samples) and out.tokens is None and out.labels is None
  assert _shape_dtype(out.images) == IMAGES_F32
  assert sorted(out.grids) == ["manifold", "reconstructions"]
  # The first N images of the batch beside their reconstructions (2W wide).
  assert _shape_dtype(out.grids["reconstructions"]) == ((N, 28, 56, 1), jnp.dtype(jnp.float32))
  assert _shape_dtype(out.grids["manifold"]) == ((S * S, *MNIST), jnp.dtype(jnp.float32))
  assert list(_abstract_sample(method, spec).grids) == ["manifold"]   # no batch: no pairs


def test_language_model_samples_are_int32_token_ids_with_the_prompt():
  config = load_config("gpt")
  spec = DataSpec.for_text(CharTokenizer("abcdefgh\n"), 16)
  method = build_method(config, spec)
  out = _abstract_sample(method, spec, num=3)
  assert isinstance(out, Samples) and out.images is None and out.labels is None
  assert out.grids == {}
  L = len(method.prompt) + config.sample.max_new_tokens
  assert _shape_dtype(out.tokens) == ((3, L), jnp.dtype(jnp.int32))


def test_classifier_cannot_sample():
  method = build_method(load_config("classifier"), DataSpec.for_images(MNIST))
  assert not method.can_sample
  with pytest.raises(NotImplementedError, match="cannot sample"):
    method.sample(None, None, N)


@pytest.mark.parametrize("name", ["ddpm", "dcgan"])
def test_conditional_samples_are_labelled_with_the_classes_they_were_drawn_for(name):
  # Only the labels are returned, so XLA drops the network and the sampler: nothing runs.
  spec = DataSpec.for_images(MNIST)
  method = build_method(load_config(name, "smoke,conditional"), spec)
  batch = spec.example_batch()
  labels_of = jax.jit(lambda r, *labels: method.sample(method.init(r, batch), r, N,
                                                       labels=labels[0] if labels else None)
                      .labels)
  np.testing.assert_array_equal(labels_of(jax.random.key(0)), method.sample_labels(N))
  assert labels_of(jax.random.key(0)).dtype == jnp.int32
  chosen = jnp.array([3, 3, 9, 0], jnp.int32)   # labels the caller passes are the ones drawn
  np.testing.assert_array_equal(labels_of(jax.random.key(0), chosen), chosen)
