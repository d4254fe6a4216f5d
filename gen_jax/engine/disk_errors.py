"""A full or read-only disk while a run writes its outputs (metrics, samples, evaluation
JSON, exports): the OS error becomes one `OutputWriteError` naming the path and what to do,
which `launch.py` prints as one line. Checkpoints have their own message (`CheckpointWriteError`
in gen_jax/engine/checkpoint_checks.py).
"""
from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Iterator

from gen_jax.core.errors import UserError

# The storage errors a user fixes outside gen_jax, and how.
FULL_OR_READ_ONLY = {
    errno.ENOSPC: "free space on that disk",
    errno.EDQUOT: "free space within your quota",
    errno.EROFS: "remount it read-write (or use another --workdir)",
}


class OutputWriteError(UserError, OSError):
  """An output of a run could not be written: its disk is full or read-only. The message
  names the path and what to do; `errno` is the OS error's."""

  def __init__(self, code: int, message: str):
    super().__init__(message)
    self.errno = code


def output_write_error(error: BaseException, what: str) -> OutputWriteError | None:
  """`error` as an `OutputWriteError` about writing `what` (e.g. 'the samples'), or None
  when it is not an OSError of a full or read-only disk (or is a UserError already)."""
  if isinstance(error, UserError) or not isinstance(error, OSError):
    return None
  if error.errno not in FULL_OR_READ_ONLY:
    return None
  code = error.errno
  where = f" ({error.filename})" if error.filename else ""
  return OutputWriteError(code, (
      f"Could not write {what}{where}: {os.strerror(code)} ({errno.errorcode[code]}). "
      f"{FULL_OR_READ_ONLY[code].capitalize()}, then rerun the same command; what was "
      "finished before is kept."))


@contextlib.contextmanager
def writing(what: str) -> Iterator[None]:
  """Turns a full or read-only disk inside the block into an `OutputWriteError` about
  `what`; any other error passes unchanged.

  Raises:
    OutputWriteError: ENOSPC, EDQUOT or EROFS inside the block.
  """
  try:
    yield
  except OSError as e:
    if (converted := output_write_error(e, what)) is None:
      raise
    raise converted from e
