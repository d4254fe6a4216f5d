"""Shared test setup: a persistent XLA compilation cache (compiles dominate CPU test time)
and one prepared copy of the embedded mnist_5k dataset (and of a small text dataset) for
the whole session."""
import os
import sys

import jax
import pytest

TESTS_DIR = os.path.dirname(__file__)
REPO_ROOT = os.path.dirname(TESTS_DIR)
sys.path.insert(0, REPO_ROOT)   # tests import gen_jax from this checkout
sys.path.insert(0, TESTS_DIR)   # and `smoke` (shared helpers) from any tests/<package>/ folder

from gen_jax.engine.cpu_flags import apply_cpu_xla_flags  # noqa: E402

# The XLA:CPU options launch.py sets, before any test starts a backend: the tests compile
# the programs users run (Eigen convolutions), not XLA's defaults.
apply_cpu_xla_flags()


@pytest.fixture(scope="session", autouse=True)
def compilation_cache(tmp_path_factory):
  # One cache for all xdist workers of a run (their base temps share a parent), so a
  # function that two test files compile (the smoke configs' steps) compiles once.
  base = tmp_path_factory.getbasetemp()
  shared = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
  cache = str(shared / "xla_cache")
  os.makedirs(cache, exist_ok=True)
  os.environ["GEN_JAX_TEST_XLA_CACHE"] = cache   # shared with subprocess tests
  jax.config.update("jax_compilation_cache_dir", cache)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
  jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
  yield


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory):
  """A TFDS data dir with mnist_5k prepared once (from the digits packaged in
  gen_jax/data/assets)."""
  path = str(tmp_path_factory.mktemp("tfds"))
  from gen_jax import data
  data.prepare_builder("mnist_5k", data_dir=path)
  return path


def python_source_text(num_chars: int = 40_000) -> str:
  """Text that ships with Python itself (stdlib sources): no download, ~90 distinct chars."""
  import inspect
  import json.decoder
  import textwrap
  text = "".join(inspect.getsource(m) for m in (textwrap, json.decoder, inspect))
  return text[:num_chars]


@pytest.fixture(scope="session")
def text_data_dir(tmp_path_factory):
  """A TFDS data dir with `tiny_shakespeare` prepared from Python's own source text.

  The builder verifies the canonical file's sha256; the test text's hash stands in for it
  while preparing (the check itself still runs). Later loads read the prepared files.
  """
  import hashlib

  from gen_jax import data
  from gen_jax.data.builders import tiny_shakespeare
  root = tmp_path_factory.mktemp("text")
  raw = root / "raw"
  raw.mkdir()
  payload = python_source_text().encode("utf-8")
  (raw / "input.txt").write_bytes(payload)
  with pytest.MonkeyPatch.context() as patch:
    patch.setattr(tiny_shakespeare, "SHA256", hashlib.sha256(payload).hexdigest())
    data.prepare_builder("tiny_shakespeare", data_dir=str(root / "tfds"), manual_dir=str(raw))
  return str(root / "tfds")


@pytest.fixture
def no_downloads(monkeypatch):
  """Host names resolve, but every download fails; records the attempted URLs."""
  import socket

  import tensorflow_datasets as tfds
  attempts = []

  def failing_download(self, url_or_urls):
    attempts.append(url_or_urls)
    raise ConnectionError("connection refused (test)")

  monkeypatch.setattr(socket, "getaddrinfo", lambda host, port, *a, **k: [("resolved (test)",)])
  monkeypatch.setattr(tfds.download.DownloadManager, "download", failing_download)
  return attempts
