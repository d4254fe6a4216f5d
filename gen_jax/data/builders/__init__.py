"""gen_jax's own TF-free TFDS builders, by name (each dataset's module cites its paper).

Each is a `tfds.core.GeneratorBasedBuilder` declared with `skip_registration=True`
(so it never replaces TFDS's TF-based builder of the same name), at version 1.0.0,
writing array_record files. Image builders (mnist, cifar10, mnist_5k) are
`image_label.ImageLabelBuilder`s: they declare `IMAGE_SHAPE` and features `image`
(uint8 HxWxC) and `label` (ClassLabel, 10 classes); text builders (tiny_shakespeare)
declare `TEXT_FEATURE`, the name of their `tfds.features.Text` feature.
"""
from gen_jax.data.builders.cifar10 import Cifar10
from gen_jax.data.builders.mnist import Mnist
from gen_jax.data.builders.mnist_5k import Mnist5k
from gen_jax.data.builders.tiny_shakespeare import TinyShakespeare

BUILDERS = {cls.name: cls for cls in (Mnist, Cifar10, Mnist5k, TinyShakespeare)}

__all__ = ["BUILDERS", "Cifar10", "Mnist", "Mnist5k", "TinyShakespeare"]
