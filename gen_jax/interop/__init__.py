"""Foreign weight layouts: other libraries' files read into and written from gen_jax's
params (safetensors only: loading one runs no code). Between models and methods: it may
import core and models, and a family imports it to offer the formats (`Method`'s
`init_from_formats` / `export_formats`).

  hf_gpt2.py           Hugging Face GPT-2 (`init_from='hf_gpt2:<path>'`, export.format)
  diffusers_vae.py     Stable Diffusion's VAE, diffusers' AutoencoderKL
                       (`init_from='diffusers_vae:<path>'`, `load_autoencoder(path)`,
                       export.format)
  dit.py               the authors' DiT state dict (facebookresearch/DiT) as DiT params
  safetensors_file.py  the optional `safetensors` dependency

`FORMATS` names every format and the runs that can use it, so the engine can check
`init_from` and `export.format` against the run's method and say what would fit.
"""
from __future__ import annotations

import dataclasses

from gen_jax.core.errors import UserError


class ForeignWeightsError(UserError, ValueError):
  """A foreign file cannot be used: pickled, unreadable, or not fitting the config."""


class ForeignWeightsNotFoundError(UserError, FileNotFoundError):
  """No foreign file where `init_from` points."""


@dataclasses.dataclass(frozen=True)
class ForeignFormat:
  """A foreign weight layout: `init_from='<name>:<path>'` and `export.format='<name>'`.

  Attributes:
    weights: what the files hold, for messages (e.g. 'GPT-2').
    needs: the runs that can use them, for messages.
  """
  weights: str
  needs: str


FORMATS = {
    "hf_gpt2": ForeignFormat(weights="GPT-2", needs="method='autoregressive' with "
                             "model.arch='gpt' (configs/gpt.py)"),
    "diffusers_vae": ForeignFormat(weights="diffusers AutoencoderKL (Stable Diffusion VAE)",
                                   needs="method='autoencoder' (configs/autoencoder.py)"),
}


def init_from_format(init_from: str) -> str | None:
  """The format of `init_from='<format>:<path>'`, or None for a gen_jax run's directory."""
  name, sep, _ = init_from.partition(":")
  return name if sep and name in FORMATS else None
