"""GPT character language model on Tiny Shakespeare (Radford et al. 2019; nanoGPT's recipes).

  python launch.py --config=configs/gpt.py:baby --config.data.manual_dir=/path/to/tiny_shakespeare
  python launch.py --config=configs/gpt.py:baby --mode=sample --config.sample.prompt="ROMEO:"
  python launch.py --config=configs/gpt.py:baby --mode=eval        # loss, perplexity, bits/char
  python launch.py --config=configs/gpt.py:shakespeare_char        # 10.65M params, GPU-sized
  python launch.py --config=configs/gpt.py:smoke                   # seconds; what the tests run

`get_config(arg)`: `arg` is a comma-separated list of variants:
  `baby` (the default) - nanoGPT's CPU config: 4 layers, 4 heads, 128 wide, context 64,
      batch 12, 2000 iterations, lr 1e-3 cosine to 1e-4, warmup 100, beta2 0.99, dropout 0,
      no biases; evaluated every 250 iterations on 20 batches. nanoGPT's README: "gets us a
      loss of only 1.88".
  `shakespeare_char` - nanoGPT's GPU config: 6 layers, 6 heads, 384 wide, context 256,
      batch 64, dropout 0.2, 5000 iterations (10.65M parameters without position
      embeddings). nanoGPT's README: best validation loss 1.4697 ("about 3 minutes" on one A100).
  `smoke` - a tiny model for tests.
  `tokenizer=byte` - UTF-8 bytes (vocabulary 256) instead of characters.
  `dataset=<name>` - another text dataset (a TFDS dataset with a `text` feature).
The data: `--config.data.manual_dir` is a folder holding Tiny Shakespeare's `input.txt`
(nothing is downloaded then); without it the builder downloads the file once.
Paper recipe: experiments/radford2019_gpt2/openwebtext.py.

Measured (`baby`, 2-core AMD EPYC CPU): the compiled train step runs 21-26 steps/s (~50%
MFU); validation loss on the whole split 1.905 at step 2,000 and 1.875 at step 2,750 if
training continues at the final lr, reached in 158.5 s with compile and evaluations (seed 0;
`python benchmarks/lm.py`; README, "Results", for three seeds against PyTorch).
"""
from __future__ import annotations

import ml_collections

from configs import common

VARIANTS = ("smoke", "baby", "shakespeare_char", "tokenizer", "dataset")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  variants = common.parse_variants("configs/gpt.py", arg, VARIANTS)

  config = common.base_config("autoregressive", variants.get("dataset", "tiny_shakespeare"))
  text_data(config, tokenizer=variants.get("tokenizer", "char"))

  config.model = ml_collections.ConfigDict()
  config.model.arch = "gpt"
  config.model.n_layer = 4
  config.model.n_head = 4
  config.model.n_embd = 128
  # Longest context (learned position embeddings); training windows are data.seq_len.
  config.model.block_size = 64
  config.model.dropout = 0.0
  # Biases in dense layers and LayerNorms (GPT-2: True; nanoGPT's default: False).
  config.model.use_bias = False
  # Recompute each block's activations in the backward pass (less memory, ~1/3 more FLOPs).
  config.model.remat = False
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
  """The data fields of a character (or byte) language model."""
  config.data.eval_split = "validation"
  # 'char' (the dataset's characters; Tiny Shakespeare: 65) or 'byte' (UTF-8 bytes, 256).
  config.data.tokenizer = tokenizer
  # Tokens a model sees per training window (each batch row holds seq_len + 1).
  config.data.seq_len = 64


def language_model_train() -> ml_collections.ConfigDict:
  """nanoGPT's shakespeare_char optimizer and schedule, at its CPU ("baby") size."""
  train = ml_collections.ConfigDict()
  train.batch_size = 12
  # The batch is split into this many micro-batches whose gradients are averaged before
  # one update (same update as the whole batch; activations of one micro-batch in memory).
  train.grad_accum_steps = 1
  train.num_steps = 2000
  # AdamW with decoupled weight decay on matrices only (not biases, LayerNorm).
  train.optimizer = "adamw"
  train.lr = 1e-3
  train.lr_decay = "cosine"             # to lr * min_lr_ratio at decay_steps
  train.min_lr_ratio = 0.1
  train.decay_steps = 0                 # 0 = num_steps (nanoGPT's lr_decay_iters)
  train.warmup_steps = 100
  train.b1 = 0.9
  train.b2 = 0.99
  train.eps = 1e-8
  train.weight_decay = 0.1
  train.grad_clip = 1.0                 # global norm; 0 disables
  # No EMA (as in nanoGPT): ema_params are the params, and eval reports raw/ only.
  train.ema_decay = 0.0
  train.ema_warmup = False
  # Updates per compiled call (a lax.scan over stacked batches): a small model's step
  # costs less than its dispatch, so fusing updates speeds up training on CPU.
  train.steps_per_call = 10
  train.log_every = 50
  train.checkpoint_every = 500
  train.max_checkpoints = 3
  train.async_checkpointing = True
  train.sample_every = 1000             # 0 disables periodic samples
  return train


def language_model_eval() -> ml_collections.ConfigDict:
  evaluation = ml_collections.ConfigDict()
  evaluation.every = 250                # 0 disables periodic evaluation
  evaluation.batch_size = 12
  # Random windows of the validation split (fixed seed: the same ones at every eval);
  # 0 = every window of the split once (the full validation loss).
  evaluation.num_batches = 20
  evaluation.step = -1                  # checkpoint for --mode=eval/sample (-1 = newest)
  return evaluation


def language_model_sample() -> ml_collections.ConfigDict:
  sample = ml_collections.ConfigDict()
  sample.prompt = "\n"                  # every sample continues this text
  sample.max_new_tokens = 500
  sample.temperature = 0.8              # 0 = greedy
  sample.top_k = 200                    # 0 = off
  sample.top_p = 1.0                    # nucleus mass; 1 = off
  sample.num = 4
  sample.use_ema = True
  sample.seed = 0                       # for --mode=sample
  return sample


def smoke(config: ml_collections.ConfigDict) -> None:
  """Seconds on a CPU: a few updates, checkpoints, an eval and a short sample."""
  config.train.update(batch_size=8, num_steps=4, warmup_steps=2, steps_per_call=2, log_every=2,
                      checkpoint_every=2, sample_every=4, async_checkpointing=False)
  config.eval.update(every=4, batch_size=8, num_batches=2)
  config.sample.update(max_new_tokens=24, num=2)
