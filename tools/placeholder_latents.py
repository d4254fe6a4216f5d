"""A latents folder that holds only shapes: for `--mode=summary` and `--mode=compile` of a
latent-diffusion config (and benchmarks/dit.py) before the real latents exist.

  python tools/placeholder_latents.py --out=/tmp/imagenet256_shapes      # 32x32x4 of 256x256x3
  python launch.py --config=experiments/peebles2023_dit/imagenet256.py --mode=compile \
      --cpu_devices=8 --config.data.latents_dir=/tmp/imagenet256_shapes

A config on `data.dataset='latents'` takes its network's input shape from the folder's
`latents.json` (gen_jax/data/latents.py), and the run decodes samples with the decoder
recorded there (gen_jax/methods/latents.py). This writes a folder in that format with the
shapes of Stable Diffusion's VAE on ImageNet 256 (latents 32x32x4 of 256x256x3 images,
scaling factor 0.18215) but NOT its content: `--records` zero posteriors per split (labels
0, 1, ...) and a tiny randomly initialized decoder of the same factor (8) and channels. It is
enough to build, count, lower and compile; training on it or sampling from it means nothing.
The folder's `extraction.json` says so.
"""
from __future__ import annotations

import os
import sys

from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from gen_jax.data import latents as latents_data  # noqa: E402
from gen_jax.methods.latents import model_fields, write_decoder  # noqa: E402
from gen_jax.models.autoencoder_kl import AutoencoderKL  # noqa: E402

# Stable Diffusion's VAE: f = 8, 4 latent channels, its scaling factor (Rombach et al. 2022).
SD_SCALING_FACTOR = 0.18215


def write_placeholder_latents(folder: str, *, latent_shape=(32, 32, 4), image_shape=(256, 256, 3),
                              num_classes: int = 1000, records: int = 8,
                              splits=("train", "test")) -> str:
  """Writes a shapes-only latents folder (module docstring) and returns `folder`.

  Args:
    latent_shape: (h, w, c) of a latent.
    image_shape: (H, W, C) of the source images; H / h must be a power of 2 (the decoder's
      factor) and H / h == W / w.
    num_classes: labels of the placeholder records cycle through range(num_classes).
    records: posteriors per split.
  """
  h, w, c = latent_shape
  H, W, C = image_shape
  factor = H // h
  if H != factor * h or W != factor * w or factor & (factor - 1):
    raise ValueError(f"image {image_shape} is not latents {latent_shape} times a power of 2.")
  os.makedirs(folder, exist_ok=True)
  levels = factor.bit_length()                         # f = 2 ** (levels - 1)
  decoder = AutoencoderKL(in_channels=C, out_channels=C, block_out_channels=(8,) * levels,
                          layers_per_block=1, latent_channels=c, norm_num_groups=4,
                          scaling_factor=SD_SCALING_FACTOR)
  params = decoder.init(jax.random.key(0), jnp.zeros((1, h, w, c)),
                        method=AutoencoderKL.decode)["params"]
  write_decoder(folder, model_fields(decoder), jax.tree.map(np.asarray, params),
                {"placeholder": "random tiny decoder; tools/placeholder_latents.py"})
  labels = (np.arange(records) % max(num_classes, 1)).astype(np.int32)
  zeros = np.zeros((records, h, w, c), np.float32)
  split_meta = {}
  for split in splits:
    name = latents_data.shard_name(split, 0, 1)
    latents_data.write_shard(os.path.join(folder, name), zeros, zeros, labels)
    split_meta[split] = {"num_examples": records, "shards": [[name, records]]}
  latents_data.write_json_atomic(os.path.join(folder, "extraction.json"), {
      "placeholder": "shapes only (tools/placeholder_latents.py): zero posteriors, random "
                     "decoder; for --mode=summary / --mode=compile, not for training"})
  latents_data.write_json_atomic(
      os.path.join(folder, latents_data.METADATA),
      latents_data.metadata(latent_shape=latent_shape, scaling_factor=SD_SCALING_FACTOR,
                            source={"dataset": "placeholder", "image_shape": list(image_shape)},
                            splits=split_meta))
  return folder


def main(argv):
  del argv
  folder = write_placeholder_latents(
      flags.FLAGS.out, latent_shape=tuple(map(int, flags.FLAGS.latent_shape)),
      image_shape=tuple(map(int, flags.FLAGS.image_shape)), num_classes=flags.FLAGS.num_classes)
  print(f"wrote a shapes-only latents folder: {folder}")


if __name__ == "__main__":
  # Defined here, not at import: tests import this file into processes that hold other
  # tools' absl flags (benchmarks/gpu_suite.py also has --out).
  flags.DEFINE_string("out", None, "Folder to write.", required=True)
  flags.DEFINE_list("latent_shape", ["32", "32", "4"], "h,w,c of a latent.")
  flags.DEFINE_list("image_shape", ["256", "256", "3"], "H,W,C of the source images.")
  flags.DEFINE_integer("num_classes", 1000, "Classes the placeholder labels cycle through.")
  app.run(main)
