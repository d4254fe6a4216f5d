"""The optional `safetensors` dependency, with an error that says how to install it."""
from __future__ import annotations


def safetensors_numpy():
  """The `safetensors.numpy` module, or an ImportError saying how to install it."""
  try:
    import safetensors.numpy  # an optional dependency: pip install -e ".[export]"
  except ImportError:
    raise ImportError("--mode=export and loading an export need the safetensors package: "
                      'pip install -e ".[export]" (or pip install safetensors).') from None
  return safetensors.numpy
