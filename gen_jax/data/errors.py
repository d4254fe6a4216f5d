"""The one error the data package raises when a dataset cannot be obtained."""


class DatasetUnavailableError(ValueError):
  """A dataset's raw files or prepared records cannot be found or read.

  The message always says what was missing and how to provide it (a
  `manual_dir` with the raw files, or a dataset prepared in array_record form
  in the TFDS data dir).
  """


class DamagedDatasetError(DatasetUnavailableError):
  """A prepared file of a dataset is damaged (e.g. a truncated array_record shard).

  The message names the file and how to rebuild the dataset.
  """
