"""The errors the data package raises when a dataset cannot be obtained or used; all are
`DatasetUnavailableError`s, which launch.py reports in one line."""

from gen_jax.core.errors import UserError


class DatasetUnavailableError(UserError, ValueError):
  """A dataset's raw files or prepared records cannot be found or read.

  The message always says what was missing and how to provide it (a
  `manual_dir` with the raw files, or a dataset prepared in array_record form
  in the TFDS data dir).
  """


class DamagedDatasetError(DatasetUnavailableError):
  """A prepared file of a dataset is damaged (e.g. a truncated array_record shard).

  The message names the file and how to rebuild the dataset.
  """


class UserDataError(DatasetUnavailableError):
  """The user's own files (data.image_folder, data.text_path) cannot be used as they are:
  an empty folder or file, an unreadable image, mixed channel counts, text that is not UTF-8.

  The message names the file or folder and what to do about it.
  """


class DatasetTooSmallError(DatasetUnavailableError):
  """A split holds too little data for what was asked of it (e.g. fewer tokens than one
  window); the message says how much it holds and what to lower."""
