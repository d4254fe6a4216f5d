"""TF-free TFDS builders and grain input pipelines.

    from gen_jax import data
    loader = data.make_image_loader(config.data, split="train",
                                    global_batch_size=128, seed=0)
    batch = next(iter(loader))  # {"image": f32 [B, H, W, C] in [-1, 1], "label": i32 [B]}
"""
from gen_jax.data.builders import BUILDERS
from gen_jax.data.errors import DatasetUnavailableError
from gen_jax.data.pipeline import image_shape
from gen_jax.data.pipeline import local_batch_size
from gen_jax.data.pipeline import make_image_loader
from gen_jax.data.pipeline import num_examples
from gen_jax.data.sources import dataset_image_shape
from gen_jax.data.sources import load_split
from gen_jax.data.sources import prepare_builder

__all__ = [
    "BUILDERS",
    "DatasetUnavailableError",
    "dataset_image_shape",
    "image_shape",
    "load_split",
    "local_batch_size",
    "make_image_loader",
    "num_examples",
    "prepare_builder",
]
