"""gen_jax's own TF-free TFDS builders, by name.

Each is a `tfds.core.GeneratorBasedBuilder` declared with `skip_registration=True`
(so it never replaces TFDS's TF-based builder of the same name), at version 1.0.0,
writing array_record files with features `image` (uint8 HxWxC) and `label`
(ClassLabel, 10 classes).
"""
from gen_jax.data.builders.cifar10 import Cifar10
from gen_jax.data.builders.mnist import Mnist
from gen_jax.data.builders.mnist_5k import Mnist5k

BUILDERS = {cls.name: cls for cls in (Mnist, Cifar10, Mnist5k)}

__all__ = ["BUILDERS", "Cifar10", "Mnist", "Mnist5k"]
