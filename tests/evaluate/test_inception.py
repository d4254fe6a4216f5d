"""FID Inception-v3: parity with pytorch-fid, the restricted .pth reader, the weights file.

The parity fixture (tests/fixtures/inception_parity.npz) was written by
tools/make_inception_fixture.py with torch 2.14 and pytorch-fid 0.3.0: random weights from
`inception_weights.random_state_dict(shapes, seed)` loaded into pytorch-fid's InceptionV3,
run on 4 fixed 32x32 images. Here the same weights are regenerated with numpy and run
through our network. No torch is needed.
"""
from __future__ import annotations

import os
import pickle
import zipfile

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from smoke import FIXTURES

from gen_jax.core.errors import UserError
from gen_jax.evaluate import (
  inception,
  inception_metrics,
  inception_weights,
  pickle_reader,
  sample_quality,
)


@pytest.fixture(scope="module")
def parity():
  return dict(np.load(os.path.join(FIXTURES, "inception_parity.npz")))


def test_state_dict_names_and_shapes_match_pytorch_fid(parity):
  """Every tensor of pytorch-fid's FID Inception has our name and (torch) shape."""
  theirs = {str(n): tuple(int(d) for d in str(s).split(",")) if str(s) else ()
            for n, s in zip(parity["names"], parity["shapes"], strict=True)}
  ours = inception.torch_shapes()
  assert {k: v for k, v in theirs.items() if k != "fc.bias"} == ours
  assert sum(int(np.prod(s)) for s in ours.values()) == 23_884_384   # conv+BN 21.8M, fc 2.06M


def test_network_matches_pytorch_fid(parity):
  """Pool features and logits equal pytorch-fid's within float32 round-off.

  The tolerance: both sides run the same ~100 float32 layers (convolutions summing up to
  3x3x448 = 4032 products) in different summation orders, so relative differences of a few
  1e-7 per layer accumulate to ~1e-6 of the activations' scale; we allow 1e-5 of the largest
  |value| (measured: 8.1e-6 on pool values up to 14.5, 6.0e-6 on logits up to 9.0). A wrong
  block (e.g. an average pool counting the padding, or the E_2 average pool instead of the
  max) moves features by 1e-2 or more.
  """
  state = inception_weights.random_state_dict(inception.torch_shapes(), int(parity["seed"]))
  variables = inception.variables_from_state_dict(state)
  # Model-space images in [-1, 1]; make_apply quantizes them back to the same uint8 levels
  # and feeds level / 255 to the network, as pytorch-fid does with PNG files.
  images = jnp.asarray(parity["images_uint8"] / 127.5 - 1.0, jnp.float32)
  pool, logits = inception.make_apply(variables)(images)
  for name, ours in (("pool", pool), ("logits", logits)):
    ref = parity[name]
    diff = float(np.max(np.abs(np.asarray(ours) - ref)))
    print(f"{name}: max |ours - pytorch-fid| = {diff:.3g} (max |ref| {np.abs(ref).max():.3g})")
    assert ours.shape == ref.shape
    assert diff <= 1e-5 * np.abs(ref).max()


@pytest.mark.parametrize("case", ["down", "up", "mixed"])
def test_resize_matches_torch_interpolate(parity, case):
  """torch's bilinear, align_corners=False; jax.image.resize's default antialias does not
  match when downsampling, which is why resize_bilinear turns it off."""
  x, ref = parity[f"resize_{case}_in"], parity[f"resize_{case}_out"]
  ours = np.asarray(inception.resize_bilinear(jnp.asarray(x), ref.shape[1:3]))
  np.testing.assert_allclose(ours, ref, atol=1e-6)
  if case == "down":
    antialiased = np.asarray(jax.image.resize(jnp.asarray(x), ref.shape, "bilinear"))
    assert np.abs(antialiased - ref).max() > 0.1


# ------------------------------------------------------------------ restricted reader


def _tiny_expected():
  base = np.arange(24, dtype=np.float32).reshape(4, 6)
  return {"plain": np.arange(6, dtype=np.float32).reshape(2, 3) / 4, "transposed": base.T,
          "offset_view": base[1:, ::2], "half": np.arange(5, dtype=np.float16) / 8,
          "int64": np.arange(3, dtype=np.int64) * 1000,
          "bn.num_batches_tracked": np.array(7, np.int64)}


@pytest.mark.parametrize("fmt", ["zip", "legacy"])
def test_reader_loads_torch_save_files(fmt):
  """Files written by torch.save (zip and legacy formats) read back exactly: dtypes,
  transposed strides and storage offsets included."""
  got = pickle_reader.load_torch_state_dict(os.path.join(FIXTURES, f"inception_tiny_{fmt}.pth"))
  want = _tiny_expected()
  assert list(got) == list(want)
  for name, value in want.items():
    assert got[name].dtype == value.dtype, name
    np.testing.assert_array_equal(got[name], value, err_msg=name)


class _RunsShell:
  def __reduce__(self):
    return (os.system, ("echo pwned > /dev/null",))


def test_reader_refuses_a_malicious_pickle(tmp_path, monkeypatch):
  """A pickle that would call os.system is refused before anything is called, in both
  formats (a legacy-style pickle and a zip with data.pkl)."""
  payload = pickle.dumps({"weight": _RunsShell()}, protocol=2)
  assert b"system" in payload
  calls = []   # if the reader ever called it, the test would see it (and run nothing)
  monkeypatch.setattr(os, "system", lambda *a: calls.append(a))
  legacy = tmp_path / "evil_legacy.pth"
  legacy.write_bytes(pickle.dumps(pickle_reader.LEGACY_MAGIC, 2)
                     + pickle.dumps(pickle_reader.LEGACY_PROTOCOL, 2)
                     + pickle.dumps({"little_endian": True}, 2) + payload)
  zipped = tmp_path / "evil_zip.pth"
  with zipfile.ZipFile(zipped, "w") as z:
    z.writestr("archive/data.pkl", payload)
  for path in (legacy, zipped):
    with pytest.raises(pickle_reader.UnsafePickleError, match="os.system|posix.system"):
      pickle_reader.load_torch_state_dict(path)
  # Even the very first pickle (the magic number) goes through the allow-list.
  first = tmp_path / "evil_first.pth"
  first.write_bytes(payload)
  with pytest.raises(pickle_reader.UnsafePickleError):
    pickle_reader.load_torch_state_dict(first)
  assert not calls


def test_reader_refuses_out_of_bounds_tensors(tmp_path):
  """A tensor whose size/stride read past its storage is a corrupt file, not a crash."""
  src = os.path.join(FIXTURES, "inception_tiny_zip.pth")
  with zipfile.ZipFile(src) as z:
    entries = {n: z.read(n) for n in z.namelist()}
  data_key = next(n for n in entries if n.endswith("data.pkl"))
  storage = next(n for n in entries if "/data/" in n)
  entries[storage] = entries[storage][:4]      # a storage shorter than its tensors
  bad = tmp_path / "short.pth"
  with zipfile.ZipFile(bad, "w") as z:
    for name, raw in entries.items():
      z.writestr(name, raw)
  assert data_key
  with pytest.raises(pickle.UnpicklingError, match="past its storage|corrupt"):
    pickle_reader.load_torch_state_dict(bad)


# ---------------------------------------------------------------------- weights file


def test_missing_weights_message(tmp_path):
  path = str(tmp_path / "nowhere" / inception_weights.FID_WEIGHTS_FILENAME)
  with pytest.raises(inception_weights.InceptionWeightsMissing) as info:
    inception_weights.load_state_dict(path, field="eval.inception_weights")
  message = str(info.value)
  assert inception_weights.FID_WEIGHTS_URL in message       # where to download it
  assert path in message                                    # where to put it
  assert "eval.inception_weights" in message                # which field names it
  assert "\n" not in message                                # launch.py prints one line


def test_a_file_that_is_no_torch_checkpoint_is_one_user_error(tmp_path):
  """Garbage, or a file cut short: an InceptionWeightsMismatch saying to download it again,
  not the unpickler's own error."""
  src = os.path.join(FIXTURES, "inception_tiny_zip.pth")
  for name, payload in (("garbage.pth", bytes(range(256)) * 8),
                        ("short.pth", open(src, "rb").read()[:300])):
    path = tmp_path / name
    path.write_bytes(payload)
    with pytest.raises(pickle_reader.TorchFileError, match=f"{path}"):
      pickle_reader.load_torch_state_dict(path)
    with pytest.raises(inception_weights.InceptionWeightsMismatch,
                       match=f"{path}.*Download the FID Inception weights again from https"):
      inception_weights.load_state_dict(str(path), "", cache_dir=str(tmp_path))
  assert issubclass(pickle_reader.UnsafePickleError, UserError)   # launch.py: one line


def test_weights_file_sha_check_and_cache(tmp_path):
  """A file with the wrong digest is refused; an accepted one is cached as .npz (named by
  its digest) and the cache gives the same arrays."""
  src = os.path.join(FIXTURES, "inception_tiny_zip.pth")
  with pytest.raises(inception_weights.InceptionWeightsMismatch, match="sha256"):
    inception_weights.load_state_dict(src, inception_weights.FID_WEIGHTS_SHA256,
                                      cache_dir=str(tmp_path))
  sha = inception_weights.sha256_of_file(src)
  first, got_sha = inception_weights.load_state_dict(src, sha, cache_dir=str(tmp_path))
  assert got_sha == sha and "bn.num_batches_tracked" not in first
  assert os.listdir(tmp_path) == [f"fid_inception_{sha[:16]}.npz"]
  second, _ = inception_weights.load_state_dict(src, sha, cache_dir=str(tmp_path))
  assert first.keys() == second.keys()
  for name in first:
    np.testing.assert_array_equal(first[name], second[name])
  with pytest.raises(inception_weights.InceptionWeightsMismatch, match="not the FID Inception"):
    inception.variables_from_state_dict(first, source=src)


# ------------------------------------------------------------------------ the metrics


def test_inception_score_of_uniform_predictions_is_one():
  """p(y|x) = p(y) for every x: every KL term is 0, IS = exp(0) = 1 (with any logits that are
  the same for all samples)."""
  same = np.tile(np.random.default_rng(0).normal(size=(1, 1008)), (100, 1))
  for logits in (np.zeros((100, 1008)), same):
    mean, std = inception_metrics.inception_score(logits, splits=10)
    assert mean == pytest.approx(1.0, abs=1e-12) and std == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("num_classes", [2, 10, 1000])
def test_inception_score_of_confident_distinct_classes_is_the_class_count(num_classes):
  """One-hot p(y|x) spread evenly over K classes: KL(p(y|x) || p(y)) = log K for every x,
  IS = K (Salimans et al.'s upper bound), in each split."""
  splits = 5
  labels = np.tile(np.arange(num_classes), splits)           # every split holds each class once
  logits = np.full((len(labels), 1008), -1e4)
  logits[np.arange(len(labels)), labels] = 1e4
  mean, std = inception_metrics.inception_score(logits, splits=splits)
  assert mean == pytest.approx(num_classes, rel=1e-9) and std == pytest.approx(0.0, abs=1e-6)


def test_inception_score_splits_are_consecutive_blocks():
  """Split 1 confident over 4 classes (IS 4), split 2 one class only (IS 1): mean 2.5,
  std 1.5; the trailing N mod splits samples are dropped."""
  logits = np.full((9, 1008), -1e4)
  logits[np.arange(4), np.arange(4)] = 1e4
  logits[4:, 7] = 1e4
  mean, std = inception_metrics.inception_score(logits, splits=2)
  assert (mean, std) == (pytest.approx(2.5), pytest.approx(1.5))
  with pytest.raises(ValueError, match="splits"):
    inception_metrics.inception_score(logits[:1], splits=2)


def test_fid_and_kid_on_inception_features(parity, tmp_path):
  """FID of a feature set with itself is 0 (also through a saved mu/sigma .npz), and of two
  Gaussians with shifted means and equal covariances is ||mu1 - mu2||^2 (the trace term
  vanishes: Tr(2S - 2 (S S)^1/2) = 0); KID of two draws of one distribution is ~0 (the
  estimator is unbiased; a set against *itself* is not: shared points make it slightly
  negative) next to that of a shifted draw; our FID equals pytorch-fid's."""
  rng = np.random.default_rng(0)
  feats = rng.normal(size=(400, 16)) * rng.uniform(0.5, 2.0, 16)
  mu, sigma = sample_quality.feature_statistics(feats)
  np.savez(tmp_path / "stats.npz", mu=mu, sigma=sigma)
  with pytest.raises(ValueError, match="pool3"):
    inception_metrics.load_reference_stats(str(tmp_path / "stats.npz"))
  mu_f, sigma_f = inception_metrics.load_reference_stats(str(tmp_path / "stats.npz"), dim=16)
  assert sample_quality.frechet_distance(mu, sigma, mu_f, sigma_f) == pytest.approx(0, abs=1e-8)
  shift = rng.normal(size=16)
  assert sample_quality.frechet_distance(mu + shift, sigma, mu, sigma) == pytest.approx(
      float(shift @ shift), rel=1e-6)
  other = rng.normal(size=(400, 16)) * np.std(feats, axis=0)   # same distribution, new draw
  kid_same, _ = sample_quality.kernel_inception_distance(feats, other, num_subsets=20,
                                                         subset_size=200)
  kid_shifted, _ = sample_quality.kernel_inception_distance(feats, other + 0.5, num_subsets=20,
                                                            subset_size=200)
  print(f"KID: same distribution {kid_same:.4f}, shifted by 0.5 {kid_shifted:.4f}")
  assert abs(kid_same) < 0.05 * kid_shifted
  # pytorch-fid's own calculate_frechet_distance on the fixture's two feature sets.
  ref = float(parity["fid_pytorch_fid"])
  ours = sample_quality.frechet_distance(*sample_quality.feature_statistics(parity["fid_a"]),
                                         *sample_quality.feature_statistics(parity["fid_b"]))
  print(f"FID: ours {ours:.10g}, pytorch-fid {ref:.10g}")
  assert ours == pytest.approx(ref, rel=1e-9)


# --------------------------------------------------------------------- config and wiring


def test_experiment_configs_use_the_paper_protocol():
  """The CIFAR-10 experiments evaluate with Inception FID/IS by default: 50,000 samples
  against the train split, the real file's name and digest (pinned here)."""
  from gen_jax.configs import inception_eval  # pylint: disable=import-outside-toplevel
  from gen_jax.experiments.gulrajani2017_wgan_gp import cifar10 as wgan_gp  # pylint: disable=import-outside-toplevel
  from gen_jax.experiments.ho2020_ddpm import cifar10 as ddpm  # pylint: disable=import-outside-toplevel
  from gen_jax.experiments.radford2016_dcgan import cifar10 as dcgan  # pylint: disable=import-outside-toplevel
  assert inception_eval.WEIGHTS_SHA256 == inception_weights.FID_WEIGHTS_SHA256
  assert inception_eval.WEIGHTS_FILE == inception_weights.FID_WEIGHTS_FILENAME
  assert inception_weights.FID_WEIGHTS_URL.endswith(inception_weights.FID_WEIGHTS_FILENAME)
  for module in (ddpm, dcgan, wgan_gp):
    cfg = module.get_config().eval
    assert (cfg.sample_metrics, cfg.feature_extractor, cfg.num_samples, cfg.reference_split,
            cfg.is_splits, cfg.inception_reference_stats) == (True, "inception", 50_000,
                                                              "train", 10, "")
    assert cfg.inception_weights.endswith(inception_weights.FID_WEIGHTS_FILENAME)


def test_eval_stops_before_sampling_without_the_weights(tmp_path, monkeypatch):
  """--mode=eval of the DDPM CIFAR-10 experiment without the weights file: one message,
  raised while the evaluator is built, before any checkpoint is read or image sampled."""
  from gen_jax.engine import modes  # pylint: disable=import-outside-toplevel
  from gen_jax.experiments.ho2020_ddpm import cifar10  # pylint: disable=import-outside-toplevel
  config = cifar10.get_config()
  config.data.dataset = "mnist_5k"     # shipped with gen_jax; CIFAR-10 needs a download
  config.model.update(ch=16, ch_mult=(1, 2), attn_resolutions=(), num_groups=8)
  config.eval.inception_weights = str(tmp_path / "missing.pth")
  touched = []
  monkeypatch.setattr(modes.ckpt_lib, "load_checkpoint", lambda *a: touched.append(a))
  with pytest.raises(inception_weights.InceptionWeightsMissing) as info:
    modes.evaluate(config, str(tmp_path / "run"))
  assert inception_weights.FID_WEIGHTS_URL in str(info.value)
  assert "eval.inception_weights" in str(info.value) and not touched


# ------------------------------------------------------------- crafted weights files


def _zip_pth(path, data_pkl: bytes, storages: dict[str, bytes] = ()) -> str:
  with zipfile.ZipFile(path, "w") as z:
    z.writestr("archive/data.pkl", data_pkl)
    for key, raw in dict(storages).items():
      z.writestr(f"archive/data/{key}", raw)
  return str(path)


def _text(s: str) -> bytes:   # pickle BINUNICODE
  return b"X" + len(s.encode()).to_bytes(4, "little") + s.encode()


@pytest.mark.parametrize("target", [b"ctorch\nFloatStorage\n",
                                    b"ctorch._utils\n_rebuild_tensor_v2\n",
                                    b"ccollections\nOrderedDict\n"])
def test_reader_cannot_be_altered_by_a_crafted_file(tmp_path, target):
  """pickle's BUILD on an allowed global (torch.FloatStorage -> float16) is refused, and a
  later load in the same process, and its cache, still read float32 exactly."""
  # PROTO 2; push the allowed global; BUILD it with {'name': 'float16'}; POP; return {}.
  crafted = (b"\x80\x02" + target + b"}" + _text("name") + _text("float16") + b"sb0}.")
  path = _zip_pth(tmp_path / "crafted.pth", crafted)
  with pytest.raises(pickle_reader.UnsafePickleError, match="state"):
    pickle_reader.load_torch_state_dict(path)
  src = os.path.join(FIXTURES, "inception_tiny_zip.pth")
  want = _tiny_expected()
  got = pickle_reader.load_torch_state_dict(src)
  for name, value in want.items():
    assert got[name].dtype == value.dtype, name
    np.testing.assert_array_equal(got[name], value, err_msg=name)
  sha = inception_weights.sha256_of_file(src)
  cached, _ = inception_weights.load_state_dict(src, sha, cache_dir=str(tmp_path / "cache"))
  again, _ = inception_weights.load_state_dict(src, sha, cache_dir=str(tmp_path / "cache"))
  for name in cached:
    assert cached[name].dtype == again[name].dtype == want[name].dtype
    np.testing.assert_array_equal(again[name], want[name])


def test_reader_refuses_a_tensor_larger_than_its_file_before_allocating(tmp_path):
  """A 2^20 x 2^20 float32 tensor with stride 0 over a 1-element storage would allocate
  4 TiB; it is refused as corrupt, and so is a storage declaring more bytes than it has."""
  pid = (b"(" + _text("storage") + b"ctorch\nFloatStorage\n" + _text("0") + _text("cpu")
         + b"K\x01tQ")
  size = b"(J\x00\x00\x10\x00J\x00\x00\x10\x00t"
  huge = (b"\x80\x02}" + _text("w") + b"ctorch._utils\n_rebuild_tensor_v2\n(" + pid + b"K\x00"
          + size + b"(K\x00K\x00t\x89tRs.")
  path = _zip_pth(tmp_path / "huge.pth", huge, {"0": b"\x00" * 4})
  with pytest.raises(pickle.UnpicklingError, match="bytes"):
    pickle_reader.load_torch_state_dict(path)
  lying = _zip_pth(tmp_path / "lying.pth", huge.replace(b"K\x01tQ", b"J\x00\x00\x00\x40tQ"),
                   {"0": b"\x00" * 4})   # declares 2^30 elements, holds 1
  with pytest.raises(pickle.UnpicklingError, match="declares"):
    pickle_reader.load_torch_state_dict(lying)


def test_weights_cache_is_checked_against_its_source_digest(tmp_path):
  """A cache file under the right name whose content came from elsewhere (no digest, or
  another one) is not used: the file is converted again and the cache replaced."""
  src = os.path.join(FIXTURES, "inception_tiny_zip.pth")
  sha = inception_weights.sha256_of_file(src)
  want, _ = inception_weights.load_state_dict(src, sha, cache_dir=str(tmp_path / "fresh"))
  cache = tmp_path / f"fid_inception_{sha[:16]}.npz"
  forged = {name: np.zeros_like(value, np.float16) for name, value in want.items()}
  for digest in (None, "0" * 64):
    extra = {} if digest is None else {inception_weights.SOURCE_KEY: np.asarray(digest)}
    np.savez(cache, **forged, **extra)
    got, _ = inception_weights.load_state_dict(src, sha, cache_dir=str(tmp_path))
    for name, value in want.items():
      assert got[name].dtype == value.dtype
      np.testing.assert_array_equal(got[name], value)
    with np.load(cache) as stored:
      assert str(stored[inception_weights.SOURCE_KEY]) == sha
