"""Where a builder's raw files come from: a local `manual_dir`, or the web.

Rule shared by every builder that needs raw files:
  * if TFDS's manual dir holds files (the `manual_dir` the caller passed in
    `tfds.download.DownloadConfig`, or TFDS's default `<data_dir>/downloads/manual`),
    the raw files are read from there and nothing is downloaded;
  * otherwise they are downloaded from the dataset's public mirrors, tried in order.
Either way a missing file raises `DatasetUnavailableError` naming the files and
the `manual_dir` option, never a stack trace from inside the download code.
"""
from __future__ import annotations

import os
import socket
import urllib.parse
from collections.abc import Sequence

import tensorflow_datasets as tfds
from etils import epath

from gen_jax.data.errors import DatasetUnavailableError


def manual_dir_with_files(dl_manager: tfds.download.DownloadManager) -> epath.Path | None:
  """Returns TFDS's manual dir if it exists and is non-empty, else None."""
  try:
    return dl_manager.manual_dir
  except AssertionError:  # TFDS's way of saying: not set, missing or empty.
    return None


def locate_raw_files(
    dl_manager: tfds.download.DownloadManager,
    *,
    dataset: str,
    filenames: Sequence[str],
    mirrors: Sequence[str],
) -> dict[str, epath.Path]:
  """Finds each raw file locally (manual dir) or downloads it.

  Args:
    dl_manager: the download manager TFDS passes to `_split_generators`.
    dataset: dataset name, for error messages.
    filenames: raw file names, e.g. `("train-images-idx3-ubyte.gz", ...)`.
    mirrors: base URLs ending in "/", tried in order until one serves every file.

  Returns:
    A dict from each file name to its local path.

  Raises:
    DatasetUnavailableError: a file is missing from the manual dir, or no mirror
      could be reached.
  """
  manual_dir = manual_dir_with_files(dl_manager)
  if manual_dir is not None:
    paths = {name: manual_dir / name for name in filenames}
    missing = [name for name, path in paths.items() if not path.exists()]
    if missing:
      raise DatasetUnavailableError(
          f"{dataset}: manual_dir={manual_dir} lacks {', '.join(missing)}. "
          f"Put the raw files {', '.join(filenames)} there "
          f"(--config.data.manual_dir=/path/with/{filenames[0]} ...).")
    return paths

  failures = []
  for base_url in mirrors:
    if reason := unreachable_reason(base_url):
      failures.append(f"{base_url}: {reason}")
      continue
    try:
      downloaded = dl_manager.download({name: base_url + name for name in filenames})
      return {name: epath.Path(path) for name, path in downloaded.items()}
    except Exception as err:  # pylint: disable=broad-except  # any network failure
      failures.append(f"{base_url}: {type(err).__name__}: {str(err)[:200]}")
  raise DatasetUnavailableError(
      f"{dataset}: could not download {', '.join(filenames)} "
      f"(tried {'; '.join(failures)}). If this machine is offline, download "
      f"the raw files elsewhere and set "
      f"--config.data.manual_dir=/path/with/{filenames[0]} (a folder holding "
      f"{', '.join(filenames)}).")


def unreachable_reason(url: str) -> str | None:
  """Says why `url`'s host cannot be reached (its name does not resolve), or None.

  A quick check before TFDS's downloader, which retries each file 10 times with
  backoff: offline, that takes minutes to fail. Skipped behind a proxy, where
  names may resolve only on the proxy.
  """
  if any(os.environ.get(var) for var in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
    return None
  host = urllib.parse.urlparse(url).hostname
  try:
    socket.getaddrinfo(host, 443)
  except OSError as err:
    return f"cannot resolve {host} ({err})"
  return None

