"""Stop requests: SIGTERM/SIGINT (a preemption, Ctrl-C) set a flag that the training loop
reads after each step (it then saves a checkpoint and exits cleanly) and a sample dump reads
after each shard (it keeps the finished shards and raises `Interrupted`)."""
from __future__ import annotations

import contextlib
import signal
import threading

from absl import logging

from gen_jax.core.errors import UserError


class Interrupted(UserError, RuntimeError):
  """Work outside training stopped on SIGTERM/SIGINT after saving what it had finished."""


class StopRequest:
  """`requested` turns True on SIGTERM or SIGINT while `installed()` is active."""

  def __init__(self):
    self.requested = False

  @contextlib.contextmanager
  def installed(self):
    if threading.current_thread() is not threading.main_thread():   # signals need the main thread
      yield self
      return

    def handler(signum, frame):
      logging.warning("Received signal %d: saving what is finished and stopping.", signum)
      self.requested = True

    previous = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
      yield self
    finally:
      for s, h in previous.items():
        signal.signal(s, h)
