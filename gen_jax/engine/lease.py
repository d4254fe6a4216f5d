"""One writer per run: the workdir's lease.

Training, sample dumps and evaluation of a workdir hold its lease (`RunLease`, `leased`):
an OS lock (`fcntl.flock` on `run.lock`, never deleted) where the filesystem has one, and
`run_lease.json` naming the holder: pid, host, what it does, since when, and a heartbeat
renewed every `HEARTBEAT_SECONDS`. A second writer is refused with `WorkdirBusyError`, one
line naming the holder and what to do. A lease is stale, and taken over with a warning,
when its holder is a dead process on this host (or the OS lock is free on this host), or,
on another host, when its heartbeat is older than `LEASE_TIMEOUT_SECONDS` (a shared cluster
filesystem whose locks do not reach across hosts). Without OS locks, creating the lease file
(O_EXCL) is the atomic step. The lease is released on return, on exceptions and on SIGTERM.
"""
from __future__ import annotations

import contextlib
import datetime
import errno
import fcntl
import functools
import inspect
import json
import os
import signal
import socket
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from absl import logging
from etils import epath

from gen_jax.core.errors import UserError
from gen_jax.engine.outputs import is_main_process

LOCK, LEASE = "run.lock", "run_lease.json"
HEARTBEAT_SECONDS = 30.0
# A lease from another host whose heartbeat is older than this is stale (its holder is gone).
LEASE_TIMEOUT_SECONDS = 300.0


class WorkdirBusyError(UserError, RuntimeError):
  """Another live process holds the workdir's lease (it trains, dumps samples or evaluates)."""


def pid_alive(pid: Any) -> bool:
  """Whether process `pid` exists on this host (a zombie counts as gone)."""
  try:
    pid = int(pid)
    os.kill(pid, 0)
  except (ProcessLookupError, TypeError, ValueError):
    return False
  except PermissionError:   # someone else's process
    return True
  try:
    with open(f"/proc/{pid}/stat") as f:
      return f.read().rsplit(")", 1)[1].split()[0] != "Z"
  except (OSError, IndexError):
    return True


def _now() -> str:
  return datetime.datetime.now().isoformat(timespec="seconds")


def read_lease(workdir: str | epath.Path) -> dict | None:
  """The lease record in `workdir` (pid, host, purpose, since, heartbeat), or None when
  there is none or it cannot be read."""
  try:
    record = json.loads((epath.Path(workdir) / LEASE).read_text())
  except (OSError, ValueError):
    return None
  return record if isinstance(record, dict) else None


def _lease_is_live(record: dict, locked_here: bool) -> bool:
  """Whether the holder named by `record` is alive. `locked_here`: this process got the OS
  lock, so no process on a host sharing the lock holds the lease."""
  if record.get("host") == socket.gethostname():
    return not locked_here and pid_alive(record.get("pid"))
  return time.time() - float(record.get("heartbeat_unix", 0.0)) < LEASE_TIMEOUT_SECONDS


def live_holder(workdir: str | epath.Path) -> dict | None:
  """The lease record of a live process holding `workdir`, or None (nobody, or stale).

  Used by sweeps to skip a run that is running elsewhere; it takes no lock.
  """
  record = read_lease(workdir)
  if record is None or (record.get("host") == socket.gethostname()
                        and record.get("pid") == os.getpid()):
    return None
  lock_free = False   # this host's OS lock could be taken: nobody here holds the lease
  lock = epath.Path(workdir) / LOCK
  if lock.exists():
    fd = os.open(lock, os.O_RDWR)
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
      fcntl.flock(fd, fcntl.LOCK_UN)
      lock_free = True
    except BlockingIOError:
      return record
    except OSError:   # no OS locks on this filesystem: the record decides
      pass
    finally:
      os.close(fd)
  return record if _lease_is_live(record, locked_here=lock_free) else None


def busy_message(workdir: str | epath.Path, record: dict) -> str:
  """One line: who holds `workdir` and what to do."""
  return (f"{workdir} is in use by pid {record.get('pid', '?')} on {record.get('host', '?')} "
          f"({record.get('purpose', 'a run')} since {record.get('since', '?')}): wait for it "
          "to finish or stop it (kill -TERM saves and exits), or use another --workdir.")


class RunLease:
  """The one-writer lease of a workdir; `acquire()` takes it, `release()` gives it back.

  Only process 0 of a multi-host job takes it (the others write nothing of their own).
  """

  def __init__(self, workdir: str | epath.Path, purpose: str):
    self.workdir = epath.Path(workdir)
    self.purpose = purpose
    self._fd: int | None = None
    self._token = uuid.uuid4().hex
    self._record: dict = {}   # the lease record while held; empty otherwise
    self._stop = threading.Event()
    self._thread: threading.Thread | None = None

  def _write(self, exclusive: bool) -> None:
    self._record["heartbeat"] = _now()
    self._record["heartbeat_unix"] = time.time()
    payload = json.dumps(self._record, indent=2) + "\n"
    path = self.workdir / LEASE
    if exclusive:   # no OS lock: creating the file is the atomic step that decides
      fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
      with os.fdopen(fd, "w") as f:
        f.write(payload)
      return
    tmp = self.workdir / f"{LEASE}.{self._token}.tmp"
    tmp.write_text(payload)
    tmp.replace(path)

  def acquire(self) -> RunLease:
    """Takes the lease.

    Raises:
      WorkdirBusyError: a live process holds it (one line naming pid, host and since when).
    """
    if not is_main_process():
      return self
    self.workdir.mkdir(parents=True, exist_ok=True)
    fd = os.open(self.workdir / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    locked = True
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      os.close(fd)
      record = read_lease(self.workdir) or {}
      raise WorkdirBusyError(busy_message(self.workdir, record)) from None
    except OSError as e:   # a filesystem without flock (some cluster filesystems)
      if e.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
        os.close(fd)
        raise
      os.close(fd)
      fd, locked = None, False
    self._fd = fd
    try:
      previous = read_lease(self.workdir)
      if previous is not None:
        if _lease_is_live(previous, locked_here=locked):
          raise WorkdirBusyError(busy_message(self.workdir, previous))
        logging.warning("Taking over the stale lease of %s: pid %s on %s (%s since %s, last "
                        "heartbeat %s) is gone.", self.workdir, previous.get("pid"),
                        previous.get("host"), previous.get("purpose"), previous.get("since"),
                        previous.get("heartbeat"))
        (self.workdir / LEASE).unlink(missing_ok=True)
      elif (self.workdir / LEASE).exists():   # unreadable: being written, or damaged
        age = time.time() - (self.workdir / LEASE).stat().mtime   # epath's StatResult
        if not locked and age < LEASE_TIMEOUT_SECONDS:
          raise WorkdirBusyError(busy_message(self.workdir, {}))
        logging.warning("Replacing the unreadable lease file %s.", self.workdir / LEASE)
        (self.workdir / LEASE).unlink(missing_ok=True)
      self._record = {"pid": os.getpid(), "host": socket.gethostname(),
                      "purpose": self.purpose, "since": _now(), "token": self._token}
      try:
        self._write(exclusive=not locked)
      except FileExistsError:   # another process created it between our read and write
        raise WorkdirBusyError(busy_message(self.workdir, read_lease(self.workdir) or {})
                               ) from None
    except BaseException:
      self._unlock()
      raise
    self._thread = threading.Thread(target=self._beat, name="workdir-lease", daemon=True)
    self._thread.start()
    return self

  def _beat(self) -> None:
    while not self._stop.wait(HEARTBEAT_SECONDS):
      try:
        if (read_lease(self.workdir) or {}).get("token") != self._token:
          logging.error("The lease of %s was taken by another process.", self.workdir)
          return
        self._write(exclusive=False)
      except OSError as e:   # a full disk must not kill the run; the lease may go stale
        logging.warning("Could not renew the lease of %s: %s", self.workdir, e)

  def _unlock(self) -> None:
    if self._fd is not None:
      fcntl.flock(self._fd, fcntl.LOCK_UN)
      os.close(self._fd)
      self._fd = None

  def release(self) -> None:
    """Removes the lease record (when still ours) and the OS lock; safe to call twice."""
    self._stop.set()
    if self._thread is not None:
      self._thread.join(timeout=5)
      self._thread = None
    if self._record:
      if (read_lease(self.workdir) or {}).get("token") == self._token:
        with contextlib.suppress(OSError):
          (self.workdir / LEASE).unlink()
      self._record = {}
    self._unlock()

  def __enter__(self) -> RunLease:
    return self.acquire()

  def __exit__(self, *exc) -> None:
    self.release()


@contextlib.contextmanager
def _release_on_sigterm(lease: RunLease):
  """While active, a SIGTERM that no loop handles (start-up, compilation) releases the lease,
  then ends the process as SIGTERM does by default. Loops install their own handler (they
  save and return), which replaces this one while they run."""
  if threading.current_thread() is not threading.main_thread():
    yield
    return

  def handler(signum, frame):
    del frame
    lease.release()
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)

  previous = signal.signal(signal.SIGTERM, handler)
  try:
    yield
  finally:
    signal.signal(signal.SIGTERM, previous)


def leased(purpose: str, os_error: Callable[[OSError, Any], BaseException] | None = None
           ) -> Callable:
  """Decorator: the call holds the lease of its `workdir` argument (`RunLease`) throughout,
  released on return, on an exception and on SIGTERM (which the loops turn into a return).

  `os_error(error, workdir)`: what an OSError while taking the lease (an unwritable or full
  disk) is raised as, e.g. one clear line; None: as it is.
  """

  def decorate(fn: Callable) -> Callable:
    signature = inspect.signature(fn)

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
      workdir = signature.bind(*args, **kwargs).arguments["workdir"]
      lease = RunLease(workdir, purpose)
      try:
        lease.acquire()
      except OSError as e:
        if os_error is None or (clear := os_error(e, workdir)) is e:
          raise
        raise clear from None
      try:
        with _release_on_sigterm(lease):
          return fn(*args, **kwargs)
      finally:
        lease.release()

    return wrapper

  return decorate
