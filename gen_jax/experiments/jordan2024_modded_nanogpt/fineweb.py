"""Jordan et al. 2024, modded-nanogpt: GPT-2 small (124M) trained to 3.28 validation loss on
FineWeb, with the architecture and optimizer of the record `train_gpt2.py` at commit
759b8fc74c2ef30e5c78ceec65bcb6a190a61399 (github.com/KellerJordan/modded-nanogpt,
"11/24/24 record": 3.28 in 1,750 steps on 8 x H100).

Model (theirs -> ours): 12 layers, 6 heads of 128, 768 wide, vocabulary 50,304 (GPT-2's
50,257 padded), no biases; token embedding followed by RMSNorm (`embed_norm`), rotary
positions (no position embedding), parameter-free RMSNorm before each branch and at the end,
QK-norm, ReLU² MLP, untied zero-initialized `lm_head`, zero-initialized output
projections, logits soft-capped at 30 (tanh), documents packed with attention only within
each document (`data.batching='documents'`, segment ids from the BOS token).
Optimizer: Muon (lr 0.05, Nesterov momentum 0.95 warmed up from 0.85 over 300 steps,
5 Newton-Schulz steps) for the blocks' matrices; Adam with betas (0.8, 0.95) at lr 0.6
for the token embedding, 0.008 for the head and 0.04 for the scalars; no weight decay;
constant learning rate, then linear cooldown to 0 over the last 640 of 1,750 steps.
Batch: 8 x 65,536 = 524,288 tokens per step (here 512 rows of 1,024 tokens).

Where ours differs from that record (each could cost steps to the target; not measured):
- no value residual (each block's v mixed with the first block's by a learned lambda), no
  x0 skip lambdas and no U-Net skip connections between the first and last 6 blocks;
- rows of 1,024 tokens with dense masks instead of one 65,536-token sequence per GPU with
  FlexAttention's block-sparse mask, and no sliding window (theirs grows from 64 to 1,792
  tokens over training; with rows of 1,024 and per-document masks a window of >= 1,024 is
  the whole row): set `model.attention_window` for a fixed window;
- the fused `c_attn` is orthogonalized by Muon as one [768, 2304] matrix (theirs: q, k and v
  separately); Newton-Schulz in float32 (theirs bfloat16);
- their Adam eps is PyTorch's default 1e-8, as here.

Data: FineWeb-10B in modded-nanogpt's GPT-2 token shards (`fineweb_train_*.bin`,
`fineweb_val_*.bin`, from their data/cached_fineweb10B.py), which you provide:

  python launch.py --config=experiments/jordan2024_modded_nanogpt/fineweb.py \\
      --config.data.shards='/data/fineweb10B/fineweb_{split}_*.bin' --workdir=runs/modded

Evaluation every 125 steps on 10,485,760 validation tokens (theirs: `val_tokens`):
batches of 512 x 1,024 tokens would be 5.2M; here 20. The run logs train/tokens_per_sec and
train/flops_per_sec every `log_every` steps (XLA's count of the step's FLOPs; MFU is that
over the accelerator's peak, e.g. 989 TFLOP/s for an H100's dense bfloat16); time to target
is the first evaluation with eval/raw/loss <= TARGET_VAL_LOSS in metrics.jsonl, its wall
time the TensorBoard event's `wall_time` minus the run's first event's.

Hardware: 8 GPUs (mesh data=8) or more; the record's 1,750 steps took 4.66 minutes on 8 x H100
(their README, record 14, "Window Warmup").
Our measured number: not run (needs the shards and an accelerator node).
"""
from gen_jax.configs import gpt
from gen_jax.experiments.jordan2024_modded_nanogpt.shakespeare_char import MODERN_BLOCKS

TARGET_VAL_LOSS = 3.28


def get_config(arg: str | None = None):
  del arg
  config = gpt.get_config(f"dataset={gpt.TOKEN_SHARDS}")
  config.data.update(tokenizer="ids", vocab_size=50257, batching="documents")
  config.model.update(n_layer=12, n_head=6, n_embd=768, block_size=1024, dropout=0.0,
                      use_bias=False, vocab_multiple=128, **MODERN_BLOCKS)
  config.dtype = "bfloat16"
  config.train.update(
      batch_size=512, grad_accum_steps=1, steps_per_call=1, num_steps=1750,
      optimizer="muon", lr=0.05, lr_decay="cooldown", cooldown_steps=640, min_lr_ratio=0.0,
      warmup_steps=0, b1=0.8, b2=0.95, eps=1e-8, weight_decay=0.0, grad_clip=0.0,
      muon_momentum=0.95, muon_momentum_start=0.85, muon_momentum_warmup=300,
      muon_ns_steps=5, adam_lr_embedding=0.6, adam_lr_head=0.008, adam_lr_other=0.04,
      ema_decay=0.0, log_every=10, checkpoint_every=250, sample_every=0)
  config.eval.update(every=125, batch_size=512, num_batches=20)   # 10,485,760 tokens
  config.sample.update(prompt="50256", max_new_tokens=256, top_k=200, temperature=0.8)
  return config
