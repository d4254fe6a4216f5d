"""gen_jax's own TF-free TFDS builders, by name (each dataset's module cites its paper).

Each is a `tfds.core.GeneratorBasedBuilder` declared with `skip_registration=True`
(so it never replaces TFDS's TF-based builder of the same name), at version 1.0.0,
writing array_record files. Image builders (mnist, cifar10, mnist_5k) are
`image_label.ImageLabelBuilder`s: they declare `IMAGE_SHAPE` and features `image`
(uint8 HxWxC) and `label` (ClassLabel, 10 classes); text builders (tiny_shakespeare)
declare `TEXT_FEATURE`, the name of their `tfds.features.Text` feature.

Builders of the user's own files (image_folder, text_files) are
`user_files.UserFilesBuilder`s: they read fields of `config.data` (`CONFIG_FIELDS`) and
prepare one copy per folder, settings and contents, as a TFDS builder config.
"""
from gen_jax.data.builders.cifar10 import Cifar10
from gen_jax.data.builders.image_folder import ImageFolder
from gen_jax.data.builders.image_label import ImageLabelBuilder
from gen_jax.data.builders.mnist import Mnist
from gen_jax.data.builders.mnist_5k import Mnist5k
from gen_jax.data.builders.text_files import TextFiles
from gen_jax.data.builders.tiny_shakespeare import TinyShakespeare
from gen_jax.data.builders.user_files import UserFilesBuilder

BUILDERS = {cls.name: cls for cls in (Mnist, Cifar10, Mnist5k, TinyShakespeare, ImageFolder,
                                      TextFiles)}

__all__ = ["BUILDERS", "Cifar10", "ImageFolder", "ImageLabelBuilder", "Mnist", "Mnist5k",
           "TextFiles", "TinyShakespeare", "UserFilesBuilder"]
