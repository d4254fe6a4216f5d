"""Reading foreign safetensors files: the optional `safetensors` dependency, with an error
that says how to install it, and the path of a weights file given as a file or a folder."""
from __future__ import annotations

import os

from etils import epath

from gen_jax.interop import ForeignWeightsError, ForeignWeightsNotFoundError

# Files that hold pickles: loading one would run code, so they are refused by name.
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")


def safetensors_numpy():
  """The `safetensors.numpy` module, or an ImportError saying how to install it."""
  try:
    import safetensors.numpy  # an optional dependency: pip install -e ".[export]"
  except ImportError:
    raise ImportError("--mode=export and loading an export need the safetensors package: "
                      'pip install -e ".[export]" (or pip install safetensors).') from None
  return safetensors.numpy


def weights_path(spec: str, *, prefix: str, weights: str, what: str, convert_hint: str,
                 label: str | None = None) -> epath.Path:
  """The safetensors file of `[<prefix>]<file or folder>` (a folder: its `weights` file).

  Args:
    spec: the path, with or without `prefix` (e.g. 'hf_gpt2:').
    prefix: the format's prefix in `init_from`.
    weights: the file name a folder of the format holds (e.g. 'model.safetensors').
    what: what the file holds, for messages (e.g. 'GPT-2 weights').
    convert_hint: how to turn a pickled checkpoint into `weights`.
    label: how messages name `spec` (default: `spec` itself).

  Raises:
    ForeignWeightsError (a ValueError): a pickled checkpoint (or a folder holding only
      one), or a file that is not .safetensors.
    ForeignWeightsNotFoundError (a FileNotFoundError): nothing there.
  """
  label = spec if label is None else label
  refusal = (f"unpickling runs arbitrary code, so gen_jax reads {what} from safetensors only: "
             f"{convert_hint}.")
  path = epath.Path(os.path.expanduser(spec.removeprefix(prefix)))
  if path.is_dir():
    pickled = sorted(p.name for p in path.iterdir() if p.suffix in PICKLE_SUFFIXES)
    if not (path / weights).exists() and pickled:
      raise ForeignWeightsError(f"{label}: the folder holds no {weights}, only the pickled "
                                f"PyTorch checkpoint {', '.join(pickled)}; {refusal}")
    path = path / weights
  if path.suffix in PICKLE_SUFFIXES:
    raise ForeignWeightsError(f"{label}: {path.name} is a pickled PyTorch checkpoint, and "
                              f"{refusal}")
  if path.suffix != ".safetensors":
    raise ForeignWeightsError(f"{label}: expected a .safetensors file or a folder holding "
                              f"{weights}, got {path.name!r}.")
  if not path.exists():
    raise ForeignWeightsNotFoundError(f"{label}: {path} does not exist.")
  return path
