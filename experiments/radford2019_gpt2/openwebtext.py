"""Radford et al. 2019, "Language Models are Unsupervised Multitask Learners" (GPT-2 small)
— trained from scratch on OpenWebText, nanoGPT's reproduction recipe.

Model: GPT-2 small, 12 layers, 12 heads, 768 wide, 1024 context, biases, GPT-2 BPE
vocabulary 50257 (124,439,808 parameters; `--mode=summary` prints `params: 124439808`).
Recipe (nanoGPT `config/train_gpt2.py` with its train.py defaults): 491,520 tokens per
update (480 sequences of 1024 = 12 per device x 5 micro-batches x 8 GPUs), AdamW lr 6e-4 with 2000 warmup steps and cosine decay to 6e-5 over 600k updates
(~300B tokens), beta = (0.9, 0.95), weight decay 0.1, grad clip 1, dropout 0.
Reference numbers (nanoGPT README): ~2.85 validation loss after ~4 days on 8 x A100 40GB;
the released GPT-2 124M checkpoint evaluates to 3.12 on OpenWebText (3.11 train).

Data: OpenWebText tokenized with GPT-2's BPE (tiktoken "gpt2", <|endoftext|> = 50256 after
each document), written by you as a TFDS dataset `openwebtext_gpt2` in array_record form,
one example per document with an int32 sequence feature `tokens`, splits `train` and
`validation` (nanoGPT holds out 0.05% of documents: ~9.0B / ~4.4M tokens). gen_jax reads
such a dataset by name (`data.tokenizer='ids'`); a split is held in host memory as int32, so
the train split needs ~36 GB of RAM per host. Prompts for `--mode=sample` are token ids
(`--config.sample.prompt=50256`) and samples are written as ids.

  python launch.py --config=experiments/radford2019_gpt2/openwebtext.py \
      --config.data.data_dir=/path/to/tfds --workdir=runs/gpt2_owt
  python launch.py --config=experiments/radford2019_gpt2/openwebtext.py --mode=summary

The global batch of 480 is split over all devices (mesh data x fsdp) and into
`train.grad_accum_steps` micro-batches per device step: 40 micro-batches of 12 sequences
on one device, 5 on 8 devices, 1 on 40 or more. Set it so that batch / (devices x
grad_accum_steps) fits in memory.

Our measured number: not run (needs an accelerator cluster and the prepared dataset).
"""
from configs import gpt


def get_config(arg: str | None = None):
  config = gpt.get_config()
  config.data.update(dataset="openwebtext_gpt2", tokenizer="ids", vocab_size=50257,
                     text_feature="tokens", eval_split="validation")
  config.model.update(n_layer=12, n_head=12, n_embd=768, block_size=1024, dropout=0.0,
                      use_bias=True)
  config.train.update(batch_size=480, grad_accum_steps=5, num_steps=600_000, lr=6e-4,
                      min_lr_ratio=0.1, warmup_steps=2000, b1=0.9, b2=0.95, weight_decay=0.1,
                      grad_clip=1.0, steps_per_call=1, log_every=10, checkpoint_every=5000,
                      sample_every=10_000)
  config.eval.update(every=1000, batch_size=480, num_batches=10)   # ~4.9M tokens per eval
  config.sample.update(prompt="50256", max_new_tokens=256, top_k=200, temperature=0.8)
  return config
