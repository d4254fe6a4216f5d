"""Writes tests/fixtures/gpt2_tiny/: a randomly initialized tiny Hugging Face GPT-2 and its
logits, so tests/interop/test_gpt_hf.py can check our GPT against `transformers` without PyTorch.

  /path/to/venv-with-torch-and-transformers/bin/python tools/make_gpt2_fixture.py
  .../python tools/make_gpt2_fixture.py --check_export=<workdir>/export/step_<N>_hf_gpt2 \
      [--ours=<our logits on the fixture tokens, .npy>]

The first form writes, with a fixed torch seed,

  model.safetensors   the `GPT2LMHeadModel` weights as `save_pretrained` writes them
  config.json         its GPT2Config (2 layers, 3 heads, 24 wide, vocabulary 256 = bytes,
                      16 positions; GPT-2's tanh GELU, 'gelu_new')
  logits.safetensors  `tokens` [2, 16] and the model's float32 logits for them, with the
                      tanh GELU (`logits_gelu_new`) and with the exact one (`logits_gelu`)

Every parameter, LayerNorm scales and all biases included, is perturbed off its
initialization, so a swapped or transposed tensor changes the logits. The second form loads
a gen_jax `--mode=export --config.export.format=hf_gpt2` directory with
`GPT2LMHeadModel.from_pretrained` and prints the largest difference of its logits on the
fixture tokens from the fixture's (zero when the run was initialized from the fixture and
not trained) and from `--ours` (gen_jax's logits of the same run; docs/interop.md shows how
to write them). Needs torch, transformers and safetensors (none of them gen_jax
dependencies).
"""
from __future__ import annotations

import argparse
import json
import os

import numpy as np
import torch
import transformers
from safetensors.numpy import load_file, save_file

OUT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                   "tests", "fixtures", "gpt2_tiny")
SHAPE = dict(vocab_size=256, n_positions=16, n_embd=24, n_layer=2, n_head=3)


def logits_of(model: transformers.GPT2LMHeadModel, tokens: np.ndarray) -> np.ndarray:
  with torch.no_grad():
    return model(torch.from_numpy(tokens).long()).logits.float().numpy()


def make_fixture() -> None:
  torch.manual_seed(0)
  config = transformers.GPT2Config(**SHAPE, activation_function="gelu_new", resid_pdrop=0.0,
                                   embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=None,
                                   eos_token_id=None)
  model = transformers.GPT2LMHeadModel(config).eval()
  with torch.no_grad():   # off the initialization: LayerNorm scales != 1, biases != 0
    for name, p in model.named_parameters():
      p.add_(torch.randn_like(p) * (0.2 if "ln_" in name else 0.05))
  tokens = torch.randint(0, SHAPE["vocab_size"], (2, SHAPE["n_positions"]),
                         generator=torch.Generator().manual_seed(1)).numpy().astype(np.int32)
  os.makedirs(OUT, exist_ok=True)
  model.save_pretrained(OUT, safe_serialization=True)
  extra = os.path.join(OUT, "generation_config.json")
  if os.path.exists(extra):
    os.remove(extra)
  out = {"tokens": tokens, "logits_gelu_new": logits_of(model, tokens)}
  model.config.activation_function = "gelu"   # the same weights through the exact GELU
  exact = transformers.GPT2LMHeadModel(model.config).eval()
  exact.load_state_dict(model.state_dict())
  out["logits_gelu"] = logits_of(exact, tokens)
  save_file(out, os.path.join(OUT, "logits.safetensors"),
            metadata={"made_by": "tools/make_gpt2_fixture.py", "torch": torch.__version__,
                      "transformers": transformers.__version__})
  names = sorted(load_file(os.path.join(OUT, "model.safetensors")))
  sizes = {f: os.path.getsize(os.path.join(OUT, f)) for f in sorted(os.listdir(OUT))}
  print(f"wrote {OUT}: {sizes}\n{len(names)} tensors: {names[:4]} ...")
  print("max |logits(gelu_new) - logits(gelu)|:",
        float(np.abs(out["logits_gelu_new"] - out["logits_gelu"]).max()))


def check_export(path: str, ours: str) -> None:
  model = transformers.GPT2LMHeadModel.from_pretrained(path).eval()
  fixture = load_file(os.path.join(OUT, "logits.safetensors"))
  form = model.config.activation_function
  got = logits_of(model, fixture["tokens"])
  print(f"loaded {path}: {model.config.n_layer} layers, {model.config.n_head} heads, "
        f"{model.config.n_embd} wide, vocabulary {model.config.vocab_size}, GELU {form!r}")
  print(f"logits {got.shape}; max |HF(export) - fixture logits_{form}|:",
        float(np.abs(got - fixture[f"logits_{form}"]).max()))
  if ours:
    print(f"max |HF(export) - gen_jax logits ({ours})|:",
          float(np.abs(got - np.load(ours)).max()))
  print(json.dumps({"logits[0, :2, :4]": got[0, :2, :4].tolist()}))


if __name__ == "__main__":
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--check_export", default="", help="a gen_jax hf_gpt2 export directory")
  parser.add_argument("--ours", default="", help="gen_jax's logits on the fixture tokens (.npy)")
  args = parser.parse_args()
  check_export(args.check_export, args.ours) if args.check_export else make_fixture()
