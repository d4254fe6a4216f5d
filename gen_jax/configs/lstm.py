"""LSTM character language model on Tiny Shakespeare: the recurrent baseline of the GPT.

  python launch.py --config=configs/lstm.py --config.data.manual_dir=/path/to/tiny_shakespeare
  python launch.py --config=configs/lstm.py --mode=sample --config.sample.prompt="ROMEO:"
  python launch.py --config=configs/lstm.py:smoke      # seconds; what the tests run

`get_config(arg)`: variants `smoke`, `tokenizer=byte`, `dataset=<name>`. The default is a
char-rnn-sized model (Karpathy 2015: 2 layers; here 256 units) trained with the same data,
optimizer, schedule and evaluation as `configs/gpt.py:baby`, so the two compare directly.

Measured (2-core CPU): 944,577 parameters, 15-17 steps/s (a lower bound); validation
loss (20 batches) 2.198 at step 250 and 2.048 at step 500 (the baby GPT: 2.479 and 2.314).
The full 2,000-step run has not been timed yet.
"""
from __future__ import annotations

import ml_collections

from gen_jax.configs import common, gpt

VARIANTS = ("smoke", "tokenizer", "dataset")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  variants = common.parse_variants("configs/lstm.py", arg, VARIANTS)

  dataset = common.variant_value(variants, "dataset", "tiny_shakespeare")
  config = common.base_config("autoregressive", dataset)
  gpt.text_data(config, tokenizer=common.variant_value(variants, "tokenizer", "char"))

  config.model = ml_collections.ConfigDict()
  config.model.arch = "lstm"
  config.model.n_layer = 2
  config.model.n_embd = 128             # token embedding width
  config.model.hidden_size = 256        # LSTM state width
  # Dropout between layers (Zaremba et al. 2014: non-recurrent connections only).
  config.model.dropout = 0.0

  config.train = gpt.language_model_train()
  config.train.lr = 2e-3
  config.eval = gpt.language_model_eval()
  config.sample = gpt.language_model_sample()

  if "smoke" in variants:
    config.model.update(n_layer=1, n_embd=8, hidden_size=16)
    config.data.seq_len = 16
    gpt.smoke(config)
  return config
