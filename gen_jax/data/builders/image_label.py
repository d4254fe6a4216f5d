"""The base of the image builders: `image`/`label` features, DatasetInfo and examples written
once (no paper; mnist.py, cifar10.py and mnist_5k.py cite their datasets').

A subclass of `ImageLabelBuilder` sets the class constants (IMAGE_SHAPE, LABEL_NAMES,
DESCRIPTION, HOMEPAGE, plus TFDS's name, VERSION, RELEASE_NOTES) and writes only
`_split_generators`, returning `self._generate_examples(images, labels)` for each split.
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import tensorflow_datasets as tfds


def image_label_features(
    *, shape: tuple[int, int, int], label_names: Sequence[str]
) -> tfds.features.FeaturesDict:
  """The features every image builder here declares: `image` and `label`.

  `image` is a raw uint8 tensor, not `tfds.features.Image`: that one PNG-encodes
  numpy arrays with `tf.image.encode_png` (TensorFlow) and decodes every read
  with PIL. Raw bytes need neither, read about 5x faster, and array_record's
  compression keeps the files about as small as PNG.
  """
  return tfds.features.FeaturesDict({
      "image": tfds.features.Tensor(
          shape=shape, dtype=np.uint8, encoding=tfds.features.Encoding.BYTES),
      "label": tfds.features.ClassLabel(names=list(label_names)),
  })


class ImageLabelBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """A TF-free builder of labelled images, written in the order its subclass hands them over.

  Abstract (no `_split_generators`), so TFDS never registers it.
  """

  IMAGE_SHAPE: tuple[int, int, int]  # (H, W, C), known without preparing (--mode=summary)
  LABEL_NAMES: Sequence[str]
  DESCRIPTION: str
  HOMEPAGE: str

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description=self.DESCRIPTION,
        features=image_label_features(shape=self.IMAGE_SHAPE, label_names=self.LABEL_NAMES),
        supervised_keys=("image", "label"),
        homepage=self.HOMEPAGE,
        disable_shuffling=True,  # keep the builder's order; grain shuffles at read time
    )

  def _generate_examples(self, images: np.ndarray, labels: np.ndarray) -> Iterator:
    """Example i is (images[i] uint8 [H, W, C], labels[i]), keyed by its index i."""
    for index, (image, label) in enumerate(zip(images, labels, strict=True)):
      yield index, {"image": image, "label": int(label)}
