"""Writes tests/fixtures/token_shards/: two tiny token shards in the reference layout.

The layout is restated here from the writers the shards must match, independently of
gen_jax/data/shard_file.py (numpy only): llm.c `dev/data/data_common.py::write_datafile`
(also modded-nanogpt's `data/fineweb.py`): a header of 256 int32, [0] the magic, [1] the
version, [2] the number of tokens, the rest zero; then the tokens, uint16 for "gpt-2"
(magic 20240520, version 1) or uint32 for "llama-3" (magic 20240801, version 7); numpy's
native byte order on x86, little-endian.

    python tools/make_token_shard_fixture.py     # rewrites the fixture; commit the result

tests/data/test_token_shards.py reads these files and checks that gen_jax writes the same
bytes for the same tokens.
"""
import os

import numpy as np

OUT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests",
                   "fixtures", "token_shards")

# Three documents in GPT-2 ids, each after <|endoftext|> (50256), as the FineWeb scripts
# write them; ids above 32767 check that the tokens are unsigned.
GPT2_TOKENS = [50256, 15496, 995, 13, 50256, 464, 3290, 318, 40000, 65535, 0, 50256, 1, 2, 3]
# The llama-3 layout's uint32 ids (128,000 and more do not fit uint16).
LLAMA3_TOKENS = [128000, 9906, 1917, 13, 128001, 2**32 - 1, 0]


def write_datafile(filename, toks, magic, version, dtype):
  header = np.zeros(256, dtype=np.int32)
  header[0] = magic
  header[1] = version
  header[2] = len(toks)
  with open(filename, "wb") as f:
    f.write(header.tobytes())
    f.write(np.array(toks, dtype=dtype).tobytes())


def main():
  os.makedirs(OUT, exist_ok=True)
  write_datafile(os.path.join(OUT, "gpt2_val_000000.bin"), GPT2_TOKENS, 20240520, 1, np.uint16)
  write_datafile(os.path.join(OUT, "llama3_val_000000.bin"), LLAMA3_TOKENS, 20240801, 7,
                 np.uint32)
  print(f"wrote {OUT}")


if __name__ == "__main__":
  main()
