"""Radford et al. 2019, "Language Models are Unsupervised Multitask Learners" (GPT-2 small)
— trained from scratch on OpenWebText, nanoGPT's reproduction recipe.

Model: nanoGPT's GPT-2 small as its `train_gpt2.py` builds it: 12 layers, 12 heads, 768
wide, 1024 context, GPT-2 BPE vocabulary 50257 with the token embedding padded to 50,304
rows, no biases (`bias=False`), exact GELU, dropout 0. That is 124,373,760 parameters
(`--mode=summary` prints `params: 124373760`; pinned by tests/interop/test_gpt_hf.py). nanoGPT
prints "number of parameters: 123.59M": its `get_num_params()` leaves out the position
embeddings (1024 x 768 = 786,432) and counts the tied token embedding once, 123,587,328.
OpenAI's GPT-2 small itself (biases, 50257 rows, tanh GELU) has 124,439,808.
Recipe (nanoGPT `config/train_gpt2.py` with its train.py defaults): 491,520 tokens per
update (480 sequences of 1024 = 12 per device x 5 micro-batches x 8 GPUs), AdamW lr 6e-4
with 2000 warmup steps and cosine decay to 6e-5 over 600k updates (~300B tokens),
beta = (0.9, 0.95), weight decay 0.1, grad clip 1, dropout 0.
Reference numbers (nanoGPT README): ~2.85 validation loss after ~4 days on 8 x A100 40GB;
the released GPT-2 124M checkpoint evaluates to 3.12 on OpenWebText (3.11 train).

Data: OpenWebText tokenized with GPT-2's BPE (<|endoftext|> = 50256 before each document),
as token shards (the llm.c / modded-nanogpt `.bin` layout, read memory-mapped; docs/data.md):

  python -m gen_jax.data.tokenize_shards --input=/data/openwebtext.jsonl \
      --tokenizer=/path/to/gpt2.tiktoken --out=/data/owt --name=openwebtext \
      --val_tokens=4400000
  python launch.py --config=experiments/radford2019_gpt2/openwebtext.py \
      --config.data.shards='/data/owt/openwebtext_{split}_*.bin' --workdir=runs/gpt2_owt
  python launch.py --config=experiments/radford2019_gpt2/openwebtext.py --mode=summary

(nanoGPT holds out 0.05% of the documents at random, ~4.4M tokens; here the first 4.4M
tokens of the input are 'val'.) Training batches are nanoGPT's random windows of 1025
tokens (`data.batching='windows'`). The run reads ids (`data.tokenizer='ids'`): prompts for
`--mode=sample` are token ids (`--config.sample.prompt=50256`) and samples are written as
ids; with `--config.data.tokenizer=bpe --config.data.tokenizer_path=/path/to/gpt2.tiktoken`
they are text, and the shards' record of their tokenizer is checked against it.
`gpt2.tiktoken` is GPT-2's vocabulary as a tiktoken rank file (tiktoken's "gpt2" encoding,
50,256 ranks); GPT-2's tokenizer.json from the Hugging Face hub works as well.

Fine-tuning the released GPT-2 instead (its model.safetensors and config.json from Hugging
Face, docs/interop.md): its architecture has biases and the tanh GELU,

  python launch.py --config=experiments/radford2019_gpt2/openwebtext.py \
      --config.init_from=hf_gpt2:/path/to/gpt2 --config.model.use_bias=True \
      --config.model.gelu=tanh ...

The global batch of 480 is split over all devices (mesh data x fsdp) and into
`train.grad_accum_steps` micro-batches per device step: 40 micro-batches of 12 sequences
on one device, 5 on 8 devices, 1 on 40 or more. Set it so that batch / (devices x
grad_accum_steps) fits in memory.

Our measured number: not run (needs an accelerator cluster and the prepared dataset).
"""
from gen_jax.configs import gpt


def get_config(arg: str | None = None):
  config = gpt.get_config(f"dataset={gpt.TOKEN_SHARDS}")
  config.data.update(tokenizer="ids", vocab_size=50257, batching="windows")
  config.model.update(n_layer=12, n_head=12, n_embd=768, block_size=1024)
  # nanoGPT: "for pretraining 0 is good, for finetuning try 0.1+".
  config.model.dropout = 0.0
  # No biases in dense layers and LayerNorms (nanoGPT's bias=False; OpenAI's GPT-2 has them).
  config.model.use_bias = False
  # nanoGPT's nn.GELU() is the exact GELU; OpenAI's GPT-2 (and its released weights) used tanh.
  config.model.gelu = "exact"
  # nanoGPT pads GPT-2's 50257 to 50304 rows (a multiple of 64) for faster matmuls; we also
  # cut the logits back to 50257 (nanoGPT keeps the 47 in its softmax, where training
  # drives their probability to ~0; the padded rows never appear as inputs or targets).
  config.model.vocab_multiple = 64
  config.train.update(batch_size=480, grad_accum_steps=5, num_steps=600_000, lr=6e-4,
                      min_lr_ratio=0.1, warmup_steps=2000, b1=0.9, b2=0.95, weight_decay=0.1,
                      grad_clip=1.0, steps_per_call=1, log_every=10, checkpoint_every=5000,
                      sample_every=10_000)
  config.eval.update(every=1000, batch_size=480, num_batches=10)   # ~4.9M tokens per eval
  config.sample.update(prompt="50256", max_new_tokens=256, top_k=200, temperature=0.8)
  return config
