"""modded-nanogpt's blocks and Muon (Jordan et al. 2024) at nanoGPT's CPU ("baby") size, on
Tiny Shakespeare characters: the same 4 layers x 4 heads x 128 wide, context 64, batch 12 as
`configs/gpt.py:baby`, with the options of experiments/jordan2024_modded_nanogpt/fineweb.py
(rotary positions, parameter-free RMSNorm, QK-norm, ReLU², untied head, zero-initialized
output projections, logit soft-cap 30) and Muon for the hidden matrices with Adam for the
rest, on a constant-then-cooldown schedule, for fewer steps.

  python launch.py --config=experiments/jordan2024_modded_nanogpt/shakespeare_char.py \\
      --config.data.manual_dir=/path/to/tiny_shakespeare
  python launch.py --config=experiments/jordan2024_modded_nanogpt/shakespeare_char.py \\
      --sweep --workdir=runs/modded_baby        # the ablation; then --mode=report

Measured against nanoGPT's own CPU command (`benchmarks/nanogpt_baby.py --pairs=3`, idle
2-core Intel Xeon VM, 2026-12-07): whole-split validation loss 1.8238 against nanoGPT's
1.8981, in 0.475x its wall time (median of 3 alternating pairs, 0.459-0.486; gen_jax's
compile included). docs/results.md, "Modern blocks and Muon at nanoGPT's baby size".
"""
from __future__ import annotations

from gen_jax.configs import common, gpt

MODERN_BLOCKS = dict(position="rope", norm="rmsnorm", embed_norm=True, qk_norm=True,
                     mlp_activation="relu2", tie_head=False, zero_init_proj=True,
                     logit_softcap=30.0)


# The same fields at GPT-2's (and configs/gpt.py:baby's) values.
GPT2_BLOCKS = {"model.position": "learned", "model.norm": "layernorm", "model.embed_norm": False,
               "model.qk_norm": False, "model.mlp_activation": "gelu", "model.tie_head": True,
               "model.zero_init_proj": False, "model.logit_softcap": 0.0}


def get_config(arg: str | None = None):
  config = gpt.get_config(arg)
  config.model.update(MODERN_BLOCKS)
  config.train.update(optimizer="muon", num_steps=500, lr=0.02, lr_decay="cooldown",
                      cooldown_steps=200, min_lr_ratio=0.0, warmup_steps=0, b1=0.8,
                      b2=0.95, eps=1e-10, weight_decay=0.0, grad_clip=0.0,
                      muon_momentum=0.95, muon_momentum_start=0.85, muon_momentum_warmup=100,
                      adam_lr_embedding=0.05, adam_lr_head=0.008, adam_lr_other=0.04)
  # The whole validation split once, at the end (the side by side's number).
  config.eval.update(every=config.train.num_steps, num_batches=0)
  return config


def get_sweep(arg: str | None = None):
  """The ablation: the recipe, then each option (or Muon) switched back to GPT-2's (AdamW's:
  configs/gpt.py:baby's optimizer and schedule), then all of them."""
  del arg
  adamw = {"train.optimizer": "adamw", "train.lr": 1e-3, "train.lr_decay": "cosine",
           "train.min_lr_ratio": 0.1, "train.warmup_steps": 100, "train.b1": 0.9,
           "train.b2": 0.99, "train.eps": 1e-8, "train.weight_decay": 0.1,
           "train.grad_clip": 1.0}
  return common.product([
      {},
      {"model.position": "learned"},
      {"model.norm": "layernorm", "model.embed_norm": False},
      {"model.qk_norm": False},
      {"model.mlp_activation": "gelu"},
      {"model.tie_head": True},
      {"model.zero_init_proj": False},
      {"model.logit_softcap": 0.0},
      adamw,
      {**GPT2_BLOCKS, **adamw},   # configs/gpt.py:baby, for 500 steps
  ])
