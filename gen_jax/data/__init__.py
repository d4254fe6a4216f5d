"""TF-free TFDS builders, and input pipelines for images (grain) and text.

    spec = data.describe(config.data)   # DataSpec: kind 'image' | 'text', shapes, tokenizer
    loader = data.make_loader(config.data, split="train", global_batch_size=64, seed=0)

    from gen_jax import data
    loader = data.make_image_loader(config.data, split="train",
                                    global_batch_size=128, seed=0)
    batch = next(iter(loader))  # {"image": f32 [B, H, W, C] in [-1, 1], "label": i32 [B]}

    if data.is_text_dataset(config.data):   # e.g. tiny_shakespeare
      tokenizer = data.text_tokenizer(config.data)    # .vocab_size, .encode, .decode
      loader = data.make_text_loader(config.data, split="train",
                                     global_batch_size=64, seed=0)
      batch = next(iter(loader))  # {"tokens": i32 [B, seq_len + 1]}

    # Token shards on disk (data.dataset='token_shards', docs/data.md): the same loader,
    # memory-mapped; data.batching='documents' adds "segment_ids": i32 [B, seq_len + 1].
"""
from gen_jax.data.bpe import BpeTokenizer, load_bpe, train_bpe
from gen_jax.data.builders import BUILDERS
from gen_jax.data.errors import DatasetUnavailableError
from gen_jax.data.pipeline import image_shape, local_batch_size, make_image_loader, num_examples
from gen_jax.data.sources import dataset_image_shape, load_split, prepare_builder
from gen_jax.data.spec import IMAGE, TEXT, DataSpec, describe, make_loader, sample_reference
from gen_jax.data.text import (
    TOKEN_SHARDS,
    ByteTokenizer,
    CharTokenizer,
    IdsTokenizer,
    is_text_dataset,
    load_tokens,
    make_text_loader,
    text_tokenizer,
)

__all__ = [
    "BUILDERS",
    "BpeTokenizer",
    "ByteTokenizer",
    "CharTokenizer",
    "DataSpec",
    "IMAGE",
    "IdsTokenizer",
    "TEXT",
    "TOKEN_SHARDS",
    "describe",
    "make_loader",
    "DatasetUnavailableError",
    "dataset_image_shape",
    "image_shape",
    "is_text_dataset",
    "load_bpe",
    "load_split",
    "load_tokens",
    "local_batch_size",
    "make_image_loader",
    "make_text_loader",
    "sample_reference",
    "num_examples",
    "prepare_builder",
    "text_tokenizer",
    "train_bpe",
]
