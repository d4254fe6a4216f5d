"""Reads a PyTorch `.pth` state dict into numpy arrays without torch and without running code.

A `.pth` file is a pickle, and unpickling runs whatever callables the file names
(`os.system` included), so `pickle.load` on a downloaded file is arbitrary code execution.
This reader unpickles with an allow-list: the only globals it resolves are

  torch._utils._rebuild_tensor_v2, torch._utils._rebuild_parameter   (rebuilt here, in numpy)
  collections.OrderedDict                                             (the state dict itself)
  torch.<Float|Double|Half|BFloat16|Long|Int|Short|Char|Byte|Bool>Storage   (dtype markers)

and anything else stops the load with `UnsafePickleError` before it is called. Each load gets
its own allow-list objects (`_allowed()`), so nothing one file does can reach a later load,
and pickle's BUILD step (which sets attributes, and would otherwise reach the allowed classes
and functions themselves) is applied only to the ordered dicts this load created (torch
stores a state dict's `_metadata` that way); on anything else it stops the load. Storage
bytes are read with numpy from the file itself; every storage and tensor is checked against
the file's size before anything is allocated. Both of torch's formats are read:

* the zip format (torch >= 1.6): `<archive>/data.pkl` plus one raw entry per storage,
  `<archive>/data/<key>`, in the byte order of `<archive>/byteorder` (little when absent);
* the legacy format (torch < 1.6 and `_use_new_zipfile_serialization=False`): pickles of
  the magic number, protocol version and system info, then the object pickle, then the list
  of storage keys, then each storage as an int64 element count and its raw bytes.
"""
from __future__ import annotations

import collections
import dataclasses
import io
import os
import pickle
import struct
import zipfile
from typing import Any, BinaryIO

import numpy as np

from gen_jax.core.errors import UserError

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C   # torch/serialization.py MAGIC_NUMBER
LEGACY_PROTOCOL = 1001

_STORAGE_DTYPES = {
    "FloatStorage": "float32", "DoubleStorage": "float64", "HalfStorage": "float16",
    "BFloat16Storage": "bfloat16", "LongStorage": "int64", "IntStorage": "int32",
    "ShortStorage": "int16", "CharStorage": "int8", "ByteStorage": "uint8",
    "BoolStorage": "bool",
}


class TorchFileError(UserError, pickle.UnpicklingError):
  """The file is not a torch checkpoint of tensors, or it is damaged (truncated, corrupt)."""


class UnsafePickleError(TorchFileError):
  """The file names a global outside the allow-list (it could run code when loaded)."""


@dataclasses.dataclass(frozen=True)
class _StorageType:
  """What `torch.FloatStorage` etc. resolve to: a dtype marker, not a callable."""
  name: str

  @property
  def dtype(self) -> np.dtype:
    if self.name == "bfloat16":
      import ml_dtypes  # pylint: disable=import-outside-toplevel  (a jax dependency)
      return np.dtype(ml_dtypes.bfloat16)
    return np.dtype(self.name)


@dataclasses.dataclass
class _Storage:
  """A flat typed buffer; `data` is filled once its bytes are read."""
  dtype: np.dtype
  numel: int
  data: np.ndarray | None = None


@dataclasses.dataclass
class _PendingTensor:
  """`_rebuild_tensor_v2`'s arguments, turned into an array once the storages are read
  (the legacy format stores the bytes after the pickle that refers to them)."""
  storage: _Storage
  offset: int
  size: tuple[int, ...]
  stride: tuple[int, ...]

  def materialize(self, max_bytes: int) -> np.ndarray:
    """The tensor as its own array, refused (before allocating) when it would hold more
    than `max_bytes`."""
    buf = self.storage.data
    if buf is None:
      raise TorchFileError("A tensor refers to a storage whose bytes are missing.")
    if any(s < 0 for s in self.size) or any(s < 0 for s in self.stride) or self.offset < 0:
      raise TorchFileError(f"Invalid tensor layout size={self.size} "
                                   f"stride={self.stride} offset={self.offset}.")
    if 0 in self.size:
      return np.zeros(self.size, buf.dtype)
    nbytes = int(np.prod(self.size, dtype=object)) * buf.itemsize
    if nbytes > max_bytes:
      raise TorchFileError(
          f"A tensor of size {self.size}, stride {self.stride} would take {nbytes} bytes, "
          f"more than the {max_bytes} bytes the file can account for: the file is corrupt "
          "or crafted.")
    last = self.offset + sum((n - 1) * s for n, s in zip(self.size, self.stride, strict=True))
    if last >= buf.size:
      raise TorchFileError(
          f"A tensor of size {self.size}, stride {self.stride}, offset {self.offset} reads "
          f"past its storage of {buf.size} elements: the file is corrupt.")
    view = np.lib.stride_tricks.as_strided(
        buf[self.offset:], shape=self.size,
        strides=tuple(s * buf.itemsize for s in self.stride), writeable=False)
    return np.array(view)   # own, contiguous copy


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False,
                       backward_hooks=None, metadata=None):  # pylint: disable=unused-argument
  if not isinstance(storage, _Storage):
    raise TorchFileError("_rebuild_tensor_v2 got something that is not a storage.")
  return _PendingTensor(storage, int(storage_offset), tuple(int(s) for s in size),
                        tuple(int(s) for s in stride))


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None):  # pylint: disable=unused-argument
  if not isinstance(data, _PendingTensor):
    raise TorchFileError("_rebuild_parameter got something that is not a tensor.")
  return data


def _allowed() -> dict[tuple[str, str], Any]:
  """A fresh allow-list for one load: {(module, name): what the pickle gets}."""
  return {
      ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
      ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
      ("collections", "OrderedDict"): _LoadedOrderedDict,
      **{("torch", name): _StorageType(dtype) for name, dtype in _STORAGE_DTYPES.items()},
  }


class _LoadedOrderedDict(collections.OrderedDict):
  """The state dicts of one load; the only objects whose attributes BUILD may set."""


class RestrictedUnpickler(pickle._Unpickler):   # pylint: disable=protected-access
  """An Unpickler that resolves only the allow-listed globals above (a fresh copy per
  instance) and refuses BUILD on anything but the dicts it created.

  It is Python's pure-Python unpickler, whose opcodes can be overridden (the C one's BUILD
  cannot); the pickles of weights files are small (the tensor bytes are outside them).
  `storage_for(pid)` is given each persistent id (a storage reference) and returns the
  `_Storage` it names.
  """

  dispatch = dict(pickle._Unpickler.dispatch)   # pylint: disable=protected-access

  def __init__(self, file: BinaryIO, source: str, storage_for=None):
    super().__init__(file)
    self._source = source
    self._storage_for = storage_for
    self._allowed = _allowed()

  def find_class(self, module: str, name: str) -> Any:
    try:
      return self._allowed[(module, name)]
    except KeyError:
      raise UnsafePickleError(
          f"{self._source} refers to the Python object {module}.{name}, which a weights "
          "file has no need of; a pickle that names it can run arbitrary code, so it is not "
          "loaded. Only tensors in (ordered) dicts are read: get the file from its official "
          "source.") from None

  def persistent_load(self, pid):
    if self._storage_for is None or not isinstance(pid, tuple) or not pid or pid[0] != "storage":
      raise UnsafePickleError(f"{self._source}: unexpected persistent id {pid!r:.80}; only "
                              "tensor storages are read.")
    return self._storage_for(pid)

  def load_build(self) -> None:
    """BUILD: sets the state (attributes) of the object on the stack; only a dict of this
    load may get plain attributes (torch's `_metadata`)."""
    # typeshed leaves out the pure-Python Unpickler's `stack`.
    state = self.stack.pop()  # pyright: ignore[reportAttributeAccessIssue]
    target = self.stack[-1]  # pyright: ignore[reportAttributeAccessIssue]
    if (type(target) is not _LoadedOrderedDict or not isinstance(state, dict)
        or not all(isinstance(k, str) and not k.startswith("__") for k in state)):
      raise UnsafePickleError(
          f"{self._source} tries to set the state of a {type(target).__name__} "
          f"({type(state).__name__} {state!r:.80}); a weights file sets none but a state "
          "dict's metadata, so it is not loaded.")
    target.__dict__.update(state)

  # typeshed types the dispatch table's entries as taking any Unpickler.
  dispatch[pickle.BUILD[0]] = load_build  # pyright: ignore[reportArgumentType]


# The arrays of one file may hold at most this many times its size in all (tensors that
# share a storage, e.g. tied weights, are each their own array); one tensor at most once.
MAX_EXPANSION = 8


def _materialize(obj, file_bytes: int):
  """Replaces every `_PendingTensor` inside dicts, lists and tuples by its array; each
  tensor is checked against `file_bytes`, and all of them against MAX_EXPANSION times it,
  before it is allocated."""
  budget = [MAX_EXPANSION * file_bytes]

  def convert(node):
    if isinstance(node, _PendingTensor):
      array = node.materialize(min(file_bytes, budget[0]))
      budget[0] -= array.nbytes
      return array
    if isinstance(node, dict):
      return type(node)((k, convert(v)) for k, v in node.items())
    if isinstance(node, (list, tuple)):
      return type(node)(convert(v) for v in node)
    return node

  return convert(obj)


def _storage_type(pid_type, source: str) -> _StorageType:
  if not isinstance(pid_type, _StorageType):
    raise UnsafePickleError(f"{source}: a storage of unknown type {pid_type!r:.80}.")
  return pid_type


# ------------------------------------------------------------------------------- formats


def _load_zip(path: str) -> Any:
  file_bytes = os.path.getsize(path)
  with zipfile.ZipFile(path) as archive:
    pickles = [n for n in archive.namelist() if n.endswith("data.pkl") and n.count("/") == 1]
    if len(pickles) != 1:
      raise TorchFileError(f"{path}: not a torch zip checkpoint (no single "
                                   "<archive>/data.pkl).")
    prefix = pickles[0][:-len("data.pkl")]
    order = "little"
    if prefix + "byteorder" in archive.namelist():
      order = archive.read(prefix + "byteorder").decode().strip()
    storages: dict[str, _Storage] = {}

    def storage_for(pid):
      # ('storage', storage_type, key, location, numel)
      _, kind, key, _, numel = pid
      kind = _storage_type(kind, path)
      if key not in storages:
        name = f"{prefix}data/{key}"
        try:
          declared = archive.getinfo(name).file_size
        except KeyError:
          raise TorchFileError(f"{path}: the storage {key} is missing.") from None
        if declared != int(numel) * kind.dtype.itemsize or declared > file_bytes:
          raise TorchFileError(
              f"{path}: storage {key} declares {numel} elements of {kind.dtype} but holds "
              f"{declared} bytes (the file has {file_bytes}): corrupt or crafted.")
        raw = archive.read(name)
        dtype = kind.dtype.newbyteorder("<" if order == "little" else ">")
        data = np.frombuffer(raw, dtype=dtype).astype(kind.dtype)
        storages[key] = _Storage(kind.dtype, int(numel), data)
      return storages[key]

    with archive.open(pickles[0]) as f:
      obj = RestrictedUnpickler(io.BytesIO(f.read()), path, storage_for).load()
  return _materialize(obj, file_bytes)


def _load_legacy(path: str) -> Any:
  file_bytes = os.path.getsize(path)
  with open(path, "rb") as f:
    plain = lambda: RestrictedUnpickler(f, path).load()   # pylint: disable=unnecessary-lambda-assignment
    if plain() != LEGACY_MAGIC:
      raise TorchFileError(f"{path}: not a torch checkpoint (wrong magic number).")
    if plain() != LEGACY_PROTOCOL:
      raise TorchFileError(f"{path}: unsupported legacy torch protocol version.")
    sys_info = plain()
    if isinstance(sys_info, dict) and not sys_info.get("little_endian", True):
      raise TorchFileError(f"{path}: big-endian legacy checkpoints are not supported.")
    storages: dict[str, _Storage] = {}
    views = []

    def storage_for(pid):
      # ('storage', storage_type, root_key, location, numel, view_metadata)
      _, kind, key, _, numel, view = pid
      kind = _storage_type(kind, path)
      if key not in storages:
        storages[key] = _Storage(kind.dtype, int(numel))
      if view is None:
        return storages[key]
      view_key, offset, view_size = view
      sub = _Storage(kind.dtype, int(view_size))
      views.append((sub, storages[key], int(offset)))
      return sub

    obj = RestrictedUnpickler(f, path, storage_for).load()
    keys = plain()
    for key in keys:
      storage = storages[key]
      (numel,) = struct.unpack("<q", f.read(8))
      nbytes = numel * storage.dtype.itemsize
      if numel != storage.numel or not 0 <= nbytes <= file_bytes - f.tell():
        raise TorchFileError(f"{path}: storage {key} declares {numel} elements, more "
                                     "than the file holds: truncated, corrupt or crafted.")
      raw = f.read(nbytes)
      if numel != storage.numel or len(raw) != nbytes:
        raise TorchFileError(f"{path}: storage {key} is truncated or corrupt.")
      storage.data = np.frombuffer(raw, dtype=storage.dtype.newbyteorder("<")).astype(
          storage.dtype)
    for sub, root, offset in views:
      sub.data = root.data[offset:offset + sub.numel]
  return _materialize(obj, file_bytes)


def load_torch_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
  """The tensors of a `.pth` state dict as {name: numpy array}, read without torch.

  Args:
    path: a file written by `torch.save(state_dict)` (zip or legacy format).

  Returns:
    {name: array} in the file's order; `num_batches_tracked` counters included.

  Raises:
    UnsafePickleError: the pickle names any global outside the allow-list.
    TorchFileError: the file is not a torch checkpoint or is corrupt (both are
      `pickle.UnpicklingError`s and `UserError`s).
  """
  path = os.fspath(path)
  try:
    obj = _load_zip(path) if zipfile.is_zipfile(path) else _load_legacy(path)
  except TorchFileError:
    raise
  except (pickle.UnpicklingError, EOFError, ValueError, struct.error, zipfile.BadZipFile,
          KeyError, IndexError, TypeError) as e:   # garbage, or a file cut short
    raise TorchFileError(f"{path} is not a readable torch checkpoint ({type(e).__name__}: "
                         f"{e}).") from None
  if not isinstance(obj, dict) or not all(isinstance(v, np.ndarray) for v in obj.values()):
    raise TorchFileError(f"{path} holds a {type(obj).__name__}, not a state dict of "
                                 "tensors.")
  return dict(obj)
