"""The errors a user can fix: a bad config, a missing or damaged file, a run that does not
fit. Every layer raises them (this module imports nothing), and `launch.py` prints any of
them as `launch.py: <message>` with exit code 1 and no traceback (gen_jax/engine/cli.py),
so their messages say what is wrong and what to do.
"""
from __future__ import annotations


class UserError(Exception):
  """Base class of the errors whose message is for the user (not a bug in gen_jax).

  A subclass usually also derives from the built-in type a caller would catch, e.g.
  `class ConfigMismatchError(UserError, ValueError)`.
  """


class ConfigError(UserError, ValueError):
  """A config field has a value gen_jax cannot run with (checked before anything is
  compiled): a non-positive batch size, a batch the mesh cannot split, an unknown option.
  A ValueError too, for callers that catch those."""
