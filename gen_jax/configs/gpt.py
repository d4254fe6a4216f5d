"""GPT character language model on Tiny Shakespeare (Radford et al. 2019; nanoGPT's recipes).

  python launch.py --config=configs/gpt.py:baby --config.data.manual_dir=/path/to/tiny_shakespeare
  python launch.py --config=configs/gpt.py:baby --mode=sample --config.sample.prompt="ROMEO:"
  python launch.py --config=configs/gpt.py:baby --mode=eval        # loss, perplexity, bits/char
  python launch.py --config=configs/gpt.py:shakespeare_char        # 10.65M params, GPU-sized
  python launch.py --config=configs/gpt.py:smoke                   # seconds; what the tests run

`get_config(arg)`: `arg` is a comma-separated list of variants:
  `baby` (the default) - nanoGPT's CPU config: 4 layers, 4 heads, 128 wide, context 64,
      batch 12, 2000 iterations, lr 1e-3 cosine to 1e-4, warmup 100, beta2 0.99, dropout 0,
      no biases, exact GELU (nanoGPT's nn.GELU()); evaluated every 250 iterations on 20
      batches. nanoGPT's README: "gets us a
      loss of only 1.88".
  `shakespeare_char` - nanoGPT's GPU config: 6 layers, 6 heads, 384 wide, context 256,
      batch 64, dropout 0.2 (embeddings, attention probabilities and residual branches, as
      nanoGPT), 5000 iterations (10.65M parameters without position embeddings). nanoGPT's
      README: best validation loss 1.4697 ("about 3 minutes" on one A100).
  `smoke` - a tiny model for tests.
  `tokenizer=byte` - UTF-8 bytes (vocabulary 256) instead of characters; `tokenizer=bpe` - a
      byte-level BPE read from `data.tokenizer_path` (a tiktoken rank file or tokenizer.json).
  `dataset=<name>` - another text dataset (a TFDS dataset with a `text` feature), or
      `dataset=token_shards`: token shards on disk (data.shards; docs/data.md), e.g.
      `configs/gpt.py:dataset=token_shards,tokenizer=bpe --config.data.shards=...
      --config.data.tokenizer_path=...`.
The data: `--config.data.manual_dir` is a folder holding Tiny Shakespeare's `input.txt`
(nothing is downloaded then); without it the builder downloads the file once.
Paper recipe: experiments/radford2019_gpt2/openwebtext.py. Modern blocks (model.position,
norm, qk_norm, mlp_activation, tie_head, ...) and Muon (train.optimizer='muon'):
experiments/jordan2024_modded_nanogpt/ (fineweb.py; shakespeare_char.py at this size).

Measured (`baby`, 2-core AMD EPYC CPU): the compiled train step runs 21-26 steps/s (~50%
MFU); validation loss on the whole split 1.905 at step 2,000 and 1.875 at step 2,750 if
training continues at the final lr, reached in 158.5 s with compile and evaluations (seed 0;
`python benchmarks/lm.py`; docs/results.md for three seeds against PyTorch). These runs
predate `model.gelu` and used the tanh GELU; the exact one trains at the same speed (a
round-robin A/B of the two compiled baby steps in one process: 4.00 vs 3.93 steps/s median
on the shared, loaded machine). Attention dropout (`shakespeare_char`) leaves
`jax.nn.dot_product_attention` for the explicit path: 0.10 vs 0.13 steps/s without it
(batch 8, same A/B), the cost of matching nanoGPT.
Against nanoGPT's own CPU command, with the exact GELU (idle 2-core AMD EPYC without AVX-512,
2026-11-30, three alternating pairs): 133.3, 130.7 (empty compilation cache) and 110.1 s
(warm cache) from start to exit against nanoGPT's 131.6, 114.0 and 117.3 s; whole-split
validation loss 1.905 at step 2,000 (docs/results.md, "Against nanoGPT's own command").
"""
from __future__ import annotations

import ml_collections

from gen_jax.configs import common

VARIANTS = ("smoke", "baby", "shakespeare_char", "tokenizer", "dataset")
# data.dataset of token shards on disk (gen_jax/data/shard_loader.py).
TOKEN_SHARDS = "token_shards"


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  variants = common.parse_variants("configs/gpt.py", arg, VARIANTS)

  dataset = common.variant_value(variants, "dataset", "tiny_shakespeare")
  config = common.base_config("autoregressive", dataset)
  # Token shards hold a BPE's ids (data.tokenizer_path); text datasets default to characters.
  default_tokenizer = "bpe" if dataset == TOKEN_SHARDS else "char"
  text_data(config, tokenizer=common.variant_value(variants, "tokenizer", default_tokenizer))

  config.model = ml_collections.ConfigDict()
  config.model.arch = "gpt"
  config.model.n_layer = 4
  config.model.n_head = 4
  config.model.n_embd = 128
  # Longest context (learned position embeddings); training windows are data.seq_len.
  config.model.block_size = 64
  # Dropout on the embeddings, the attention probabilities and each residual branch, as
  # nanoGPT's `dropout` (training only; > 0 trains attention on the explicit path, since
  # jax.nn.dot_product_attention has no dropout: gen_jax/models/gpt.py).
  config.model.dropout = 0.0
  # Biases in dense layers and LayerNorms (GPT-2: True; nanoGPT's default: False).
  config.model.use_bias = False
  # The MLP's GELU: 'exact' x Phi(x), as nanoGPT's nn.GELU(); 'tanh' is GPT-2's approximation.
  config.model.gelu = "exact"
  # Token-embedding rows rounded up to a multiple of this (1: none; the logits keep the
  # data's vocabulary either way).
  config.model.vocab_multiple = 1
  # Recompute each block's activations in the backward pass (less memory, ~1/3 more FLOPs).
  config.model.remat = False
  # Modern blocks (gen_jax/models/gpt.py; modded-nanogpt's): the defaults are GPT-2's.
  # Positions: 'learned' (GPT-2's wpe) or 'rope' (rotary on queries and keys, no wpe) ...
  config.model.position = "learned"
  # ... with this base for RoPE's frequencies (Su et al. 2021: 10,000).
  config.model.rope_base = 10_000.0
  # 'layernorm' (GPT-2) or 'rmsnorm' (parameter-free, as modded-nanogpt's F.rms_norm).
  config.model.norm = "layernorm"
  # RMSNorm on the token embeddings (modded-nanogpt).
  config.model.embed_norm = False
  # RMSNorm on each head's queries and keys (before RoPE).
  config.model.qk_norm = False
  # The MLP's nonlinearity: 'gelu' (of model.gelu's form) or 'relu2' (squared ReLU, Primer).
  config.model.mlp_activation = "gelu"
  # Logits through the token embedding (True, GPT-2) or a separate lm_head matrix.
  config.model.tie_head = True
  # The residual branches' output projections (and an untied lm_head) start at zero.
  config.model.zero_init_proj = False
  # c > 0: logits -> c tanh(logits / c) (modded-nanogpt: 30); 0 = off.
  config.model.logit_softcap = 0.0
  # Sliding-window attention over the last this many positions; 0 = the whole context.
  config.model.attention_window = 0
  # Training windows fill the context: data.seq_len and model.block_size are one value
  # (a FieldReference), so overriding either sets both.
  config.data.seq_len = config.model.get_ref("block_size")

  config.train = language_model_train()
  config.eval = language_model_eval()
  config.sample = language_model_sample()

  if "shakespeare_char" in variants:
    config.model.update(n_layer=6, n_head=6, n_embd=384, block_size=256, dropout=0.2)
    config.train.update(batch_size=64, num_steps=5000)
    config.eval.num_batches = 200
  if "smoke" in variants:
    config.model.update(n_layer=2, n_head=2, n_embd=16, block_size=16)
    smoke(config)
  return config


def text_data(config: ml_collections.ConfigDict, tokenizer: str) -> None:
  """The data fields of a language model: text datasets, or token shards on disk."""
  # Token shards (dataset='token_shards') name their held-out split 'val', as modded-nanogpt's.
  shards = config.data.dataset == TOKEN_SHARDS
  config.data.eval_split = "val" if shards else "validation"
  # 'char' (the dataset's characters; Tiny Shakespeare: 65), 'byte' (UTF-8 bytes, 256), 'bpe'
  # (a byte-level BPE from data.tokenizer_path) or 'ids' (pre-tokenized, data.vocab_size).
  config.data.tokenizer = tokenizer
  # tokenizer='bpe': a tiktoken rank file (GPT-2's) or a tokenizer.json (e.g. one that
  # `python -m gen_jax.data.tokenize_shards --train_vocab_size=N` trained on your corpus).
  config.data.tokenizer_path = ""
  # Tokens a model sees per training window (each batch row holds seq_len + 1).
  config.data.seq_len = 64
  # dataset='token_shards': .bin files in the llm.c / modded-nanogpt layout, as a glob with
  # {split} for the split's name, e.g. '/data/fineweb10B/fineweb_{split}_*.bin'; written by
  # `python -m gen_jax.data.tokenize_shards` (docs/data.md) or by those projects' scripts.
  config.data.shards = ""
  # How token shards become rows: 'windows' (random windows of seq_len + 1, nanoGPT's) or
  # 'documents' (documents packed into rows from a BOS token on, with "segment_ids" so that
  # attention stays within a document; modded-nanogpt's).
  config.data.batching = "windows"
  # The id that starts each document ('documents'); -1: the <|endoftext|> that the shards'
  # token_shards.json or the tokenizer names (GPT-2: 50256).
  config.data.bos_id = -1


def language_model_train() -> ml_collections.ConfigDict:
  """nanoGPT's shakespeare_char optimizer and schedule, at its CPU ("baby") size."""
  return common.train_group(
      batch_size=12,
      num_steps=2000,
      # A small model's step costs less than its dispatch: fusing updates speeds up CPU training.
      steps_per_call=10,
      optimizer="adamw",      # weight decay on matrices only (not biases, LayerNorm)
      lr=1e-3,
      lr_decay="cosine",
      min_lr_ratio=0.1,
      decay_steps=0,
      warmup_steps=100,
      b2=0.99,
      weight_decay=0.1,
      grad_clip=1.0,
      ema_decay=0.0,          # no EMA, as in nanoGPT
      ema_warmup=False,
      sample_every=1000)


def language_model_eval() -> ml_collections.ConfigDict:
  # Random windows of the validation split (fixed seed: the same ones at every eval);
  # num_batches=0: every window of the split once (the full validation loss).
  return common.eval_group(every=250, batch_size=12, num_batches=20)


def language_model_sample() -> ml_collections.ConfigDict:
  sample = common.sample_group(num=4)
  sample.prompt = "\n"                  # every sample continues this text
  sample.max_new_tokens = 500
  sample.temperature = 0.8              # 0 = greedy
  sample.top_k = 200                    # 0 = off
  sample.top_p = 1.0                    # nucleus mass; 1 = off
  return sample


def smoke(config: ml_collections.ConfigDict) -> None:
  """Seconds on a CPU: a few updates (two per compiled call), checkpoints, an eval, a sample."""
  common.apply_smoke(config, train=dict(batch_size=8, steps_per_call=2, log_every=2),
                     eval=dict(batch_size=8), sample=dict(max_new_tokens=24, num=2))
