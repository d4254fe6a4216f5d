"""The global stream of a dataset, computed for whole batches of positions at once.

Position s of the stream (0, 1, 2, ... over all processes and epochs) stands for one read
of one record. Two things are fixed by (seed, s) alone, whatever the batch size and the
number of processes:

  * which record it reads: `ShuffledOrder` gives grain's seeded global shuffle
    (`grain.MapDataset.source(...).seed(seed).shuffle().repeat()`), record
    index_shuffle(s mod N) of epoch s // N with the epoch's own seed, computed with
    numpy over an array of positions instead of one grain call per record;
  * its random bits: `position_bits` gives each position its own words of one Philox
    stream per (seed, purpose), so the words of a run of consecutive positions are a
    contiguous piece of that stream, drawn by one numpy call.

Philox: Salmon et al. 2011, "Parallel random numbers: as easy as 1, 2, 3" (a counter-based
generator: block j of the stream is a keyed function of the counter j, so any block is
reached without computing the ones before it).
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

_MASK32 = 0xFFFFFFFF


def _seed_seq_generate(seed: int, n: int) -> list[int]:
  """`std::seed_seq{seed}.generate(n words)` of the C++ standard ([rand.util.seedseq]),
  which grain's index_shuffle uses for its round keys."""
  begin = [0x8B8B8B8B] * n
  s = 1   # one seed word
  t = 11 if n >= 623 else 7 if n >= 68 else 5 if n >= 39 else 3 if n >= 7 else (n - 1) // 2
  p = (n - t) // 2
  q = p + t
  m = max(s + 1, n)
  T = lambda x: (x ^ (x >> 27)) & _MASK32
  for k in range(m):
    r1 = (1664525 * T(begin[k % n] ^ begin[(k + p) % n] ^ begin[(k - 1) % n])) & _MASK32
    r2 = (r1 + (s if k == 0 else (k % n + seed) if k <= s else k % n)) & _MASK32
    begin[(k + p) % n] = (begin[(k + p) % n] + r1) & _MASK32
    begin[(k + q) % n] = (begin[(k + q) % n] + r2) & _MASK32
    begin[k % n] = r2
  for k in range(m, m + n):
    r3 = (1566083941 * T((begin[k % n] + begin[(k + p) % n] + begin[(k - 1) % n])
                         & _MASK32)) & _MASK32
    r4 = (r3 - k % n) & _MASK32
    begin[(k + p) % n] ^= r3
    begin[(k + q) % n] ^= r4
    begin[k % n] = r4
  return begin


def _block_bits(max_index: int) -> int:
  """grain's cipher block: ceil(log2(max_index)) bits, made even, at least 16."""
  block = max(math.ceil(math.log2(max_index)), 1)
  return max(block + block % 2, 16)


def _feistel_cipher(block: int, seed: int, rounds: int):
  """The Simon-style Feistel cipher of grain's index_shuffle on `block`-bit values: a
  function uint64 array -> uint64 array (a permutation of [0, 2**block)).

  The two halves have W = block / 2 <= 32 bits, so the rounds run in uint32 (half the
  memory traffic of uint64; a shift past bit 31 only drops bits the mask drops anyway).
  """
  W = block // 2
  mask = np.uint32((1 << W) - 1)
  keys = [np.uint32(k & ((1 << W) - 1)) for k in _seed_seq_generate(seed, rounds)]

  def rotl(x, r):
    return ((x << np.uint32(r)) | (x >> np.uint32(W - r))) & mask

  def f(x):   # Simon's round function: (x <<< 1) & (x <<< 8) ^ (x <<< 2)
    return (rotl(x, 1) & rotl(x, 8)) ^ rotl(x, 2)

  def encrypt(x):
    left = ((x >> np.uint64(W)) & np.uint64(mask)).astype(np.uint32)
    right = (x & np.uint64(mask)).astype(np.uint32)
    for i in range(0, rounds, 2):
      left = left ^ f(right) ^ keys[i]
      right = right ^ f(left) ^ keys[i + 1]
    return (left.astype(np.uint64) << np.uint64(W)) | right.astype(np.uint64)
  return encrypt


def index_shuffle(index: np.ndarray, max_index: int, seed: int, rounds: int = 4) -> np.ndarray:
  """grain's `index_shuffle` of every entry of `index` at once (same results).

  A pseudorandom permutation of [0, max_index]: a Simon-style Feistel cipher (Beaulieu
  et al. 2013, "The SIMON and SPECK families of lightweight block ciphers") on blocks of
  at least 16 bits, keyed by `std::seed_seq{seed}`, walked in cycles (Black & Rogaway
  2002, "Ciphers with arbitrary finite domains") until the value falls in range.

  Args:
    index: integer array, entries in [0, max_index].
    max_index: the largest index (the dataset's size - 1).
    seed: uint32 seed of the permutation.
    rounds: Feistel rounds (even, >= 4); grain's shuffle uses 4.

  Returns:
    uint64 array of the shape of `index`: the permuted indices.

  grain's block is ceil(log2(max_index)) bits, so when max_index is itself 2**block (a
  split of 2**16 + 1, 2**18 + 1, ... records) the index max_index lies outside the cipher's
  domain and lands on the same value as another index: grain's shuffle of such a split reads
  one record twice per epoch and skips one (grain 0.2.18; reproduced here, not corrected,
  so that the order stays grain's).
  """
  index = np.asarray(index, dtype=np.uint64)
  if max_index == 0:
    return np.zeros_like(index)
  encrypt = _feistel_cipher(_block_bits(max_index), seed, rounds)
  out = encrypt(index.ravel())
  pending = np.flatnonzero(out > max_index)
  while pending.size:   # cycle walking: apply again until back in [0, max_index]
    out[pending] = encrypt(out[pending])
    pending = pending[out[pending] > max_index]
  return out.reshape(index.shape)


def shuffled_range(num_records: int, seed: int, rounds: int = 4) -> np.ndarray:
  """index_shuffle(arange(num_records), num_records - 1, seed): a whole permutation.

  The cipher is applied once to its whole domain [0, 2**block) (at most max(2**16,
  4 num_records) values), and the cycle walks follow that table: one vectorized cipher
  pass instead of one per walking step (a 5,000-record split walks about 13 steps on
  average, with a long tail, in its 2**16 domain).

  Returns:
    int64 [num_records].
  """
  if num_records == 1:
    return np.zeros(1, np.int64)
  block = _block_bits(num_records - 1)
  if 2**block < num_records:   # max_index = 2**block: outside the cipher's domain (below)
    return index_shuffle(np.arange(num_records), num_records - 1, seed, rounds).astype(np.int64)
  table = _feistel_cipher(block, seed, rounds)(np.arange(2**block, dtype=np.uint64))
  table = table.astype(np.int64)
  out = table[:num_records].copy()
  pending = np.flatnonzero(out >= num_records)
  while pending.size:
    out[pending] = table[out[pending]]
    pending = pending[out[pending] >= num_records]
  return out


def grain_shuffle_seed(seed: int) -> int:
  """The seed grain's `MapDataset.source(s).seed(seed).shuffle()` gives its shuffle: the
  default seed of a node one level below the `.seed()` node (grain 0.2)."""
  return int(np.random.SeedSequence([int(seed), 1]).generate_state(1, dtype=np.uint32)[0])


class ShuffledOrder:
  """Stream position -> record index, as grain's seeded shuffle repeated over epochs.

  Epoch e reads the records in the order index_shuffle(i, N - 1, (shuffle seed + e) mod
  2**32), i = 0 .. N - 1: a different permutation every epoch. The permutations of the
  two most recent epochs are kept (a batch may straddle an epoch's end).
  """

  def __init__(self, num_records: int, seed: int):
    if num_records < 1:
      raise ValueError(f"cannot shuffle {num_records} records.")
    self.num_records = num_records
    self._seed = grain_shuffle_seed(seed)
    self._epochs: dict[int, np.ndarray] = {}

  def _permutation(self, epoch: int) -> np.ndarray:
    if epoch not in self._epochs:
      if len(self._epochs) >= 2:
        del self._epochs[min(self._epochs)]
      self._epochs[epoch] = shuffled_range(self.num_records, (self._seed + epoch) % 2**32)
    return self._epochs[epoch]

  def __call__(self, positions: np.ndarray) -> np.ndarray:
    """int64 record indices of the stream positions (int64 array)."""
    epochs, within = np.divmod(positions, self.num_records)
    out = np.empty_like(within)
    for epoch in np.unique(epochs):
      here = epochs == epoch
      out[here] = self._permutation(int(epoch))[within[here]]
    return out

  def __getstate__(self):
    return {**self.__dict__, "_epochs": {}}   # workers recompute what they need


# Purposes of random bits: each has its own Philox key (seed, purpose), so their streams
# never overlap.
FLIP, BINARIZE, LATENT = 1, 2, 3


def position_bits(seed: int, purpose: int, first: int, count: int,
                  words: int) -> np.ndarray:
  """`words` random uint64 of each stream position first ... first + count - 1.

  Position s owns words s * words ... (s + 1) * words - 1 of the Philox4x64-10 stream
  keyed (seed, purpose); logical block j (words 4j ... 4j + 3) is numpy's Philox output
  at counter j + 1. So a position's bits depend only on (seed, purpose, s), and a run
  of positions costs one `random_raw` call.

  Args:
    seed: the loader's seed (an int >= 0).
    purpose: FLIP, BINARIZE or LATENT.
    first: the first position (an int >= 0).
    count: number of consecutive positions.
    words: uint64 words per position.

  Returns:
    uint64 [count, words].
  """
  start = first * words
  block, skip = divmod(start, 4)
  counter = np.array([block & (2**64 - 1), block >> 64, 0, 0], dtype=np.uint64)
  generator = np.random.Philox(counter=counter,
                               key=np.array([seed, purpose], dtype=np.uint64))
  raw = generator.random_raw(skip + count * words)
  return raw[skip:].reshape(count, words)


def uniform_uint32(bits: np.ndarray, shape: Sequence[int]) -> np.ndarray:
  """The first prod(shape) uint32 halves of each row of `bits` [count, words] (low half
  of a word first), as uint32 [count, *shape]."""
  per_row = int(np.prod(shape))
  halves = np.ascontiguousarray(bits).astype("<u8", copy=False).view("<u4")
  return halves[:, :per_row].reshape(len(bits), *shape)
