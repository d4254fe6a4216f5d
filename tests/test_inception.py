"""FID Inception-v3: parity with pytorch-fid, the restricted .pth reader, the weights file.

The parity fixture (tests/fixtures/inception_parity.npz) was written by
tools/make_inception_fixture.py with torch 2.14 and pytorch-fid 0.3.0: random weights from
`inception_weights.random_state_dict(shapes, seed)` loaded into pytorch-fid's InceptionV3,
run on 4 fixed 32x32 images. Here the same weights are regenerated with numpy and run
through our network. No torch is needed.
"""
from __future__ import annotations

import io
import os
import pickle
import zipfile

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gen_jax.evaluate import inception, inception_weights, pickle_reader

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")


@pytest.fixture(scope="module")
def parity():
  return dict(np.load(os.path.join(FIXTURES, "inception_parity.npz")))


def test_state_dict_names_and_shapes_match_pytorch_fid(parity):
  """Every tensor of pytorch-fid's FID Inception has our name and (torch) shape."""
  theirs = {str(n): tuple(int(d) for d in str(s).split(",")) if str(s) else ()
            for n, s in zip(parity["names"], parity["shapes"])}
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
