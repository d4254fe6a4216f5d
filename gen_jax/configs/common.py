"""Fields every family's config shares: variant parsing, run identity, data and mesh, and
the train, eval and sample groups with their smoke-mode overrides.

A family config starts from `base_config(...)`, adds its model and objective groups, and
builds `train`, `eval` and `sample` with `train_group`, `eval_group` and `sample_group`,
passing its own values as keyword arguments (each field's meaning is commented once, here).
Its `smoke` variant calls `apply_smoke`.
"""
from __future__ import annotations

from typing import Any

import ml_collections

from gen_jax.configs import inception_eval

# The version of the config fields this gen_jax writes (every config's `version`). A saved
# config.json of an older version (none: version 1) is brought to today's fields by
# gen_jax/configs/migration.py when it is loaded; raise this when a field is renamed,
# removed, or added with a value that differs from what its absence meant, and add the step
# there.
CONFIG_VERSION = 3


def parse_variants(config_file: str, arg: str | None,
                   known: tuple[str, ...]) -> dict[str, str | bool]:
  """'smoke,dataset=mnist' -> {'smoke': True, 'dataset': 'mnist'}; unknown names fail clearly."""
  variants: dict[str, str | bool] = {}
  for part in (arg or "").split(","):
    if part:
      name, has_value, value = part.partition("=")
      variants[name] = value if has_value else True
  unknown = set(variants) - set(known)
  if unknown:
    raise ValueError(f"{config_file}: unknown variant(s) {sorted(unknown)}; known: "
                     f"{', '.join(known)}.")
  return variants


def variant_value(variants: dict[str, str | bool], name: str, default: str) -> str:
  """The value of a `name=<value>` variant, `default` when it is absent.

  Raises:
    ValueError: `name` was given as a bare flag, without `=<value>`.
  """
  value = variants.get(name, default)
  if not isinstance(value, str):
    raise ValueError(f"The variant {name!r} needs a value: {name}=<value>.")
  return value


# ----------------------------------------------------------------------------- sweeps
# A config file's `get_sweep(arg)` returns a list of override sets, {dotted field: value};
# `python launch.py --config=<file> --sweep` runs them (gen_jax/engine/sweep.py).


def product(*parts: dict[str, list] | list[dict[str, Any]]) -> list[dict[str, Any]]:
  """The cartesian product of sweep parts, each a {field: [values]} grid or a list of
  override sets: product({'a': [1, 2]}, [{'b': 3}, {'b': 4, 'c': 5}]) ->
  [{a:1,b:3}, {a:1,b:4,c:5}, {a:2,b:3}, {a:2,b:4,c:5}] (the first part varies slowest)."""
  sets: list[dict[str, Any]] = [{}]
  for part in parts:
    if isinstance(part, dict):
      options: list[dict[str, Any]] = [{}]
      for field, values in part.items():
        options = [{**o, field: v} for o in options for v in values]
    else:
      options = [dict(o) for o in part]
    sets = [{**s, **o} for s in sets for o in options]
  return sets


def zipped(axes: dict[str, list]) -> list[dict[str, Any]]:
  """Fields varied together: zipped({'a': [1, 2], 'b': [3, 4]}) -> [{a:1,b:3}, {a:2,b:4}]."""
  lengths = {field: len(values) for field, values in axes.items()}
  if len(set(lengths.values())) > 1:
    raise ValueError(f"zipped: every field needs as many values; got {lengths}.")
  return [dict(zip(axes, values, strict=True)) for values in zip(*axes.values(), strict=True)]


def base_config(method: str, dataset: str) -> ml_collections.ConfigDict:
  """Run identity, data and mesh groups, with one comment per field."""
  config = ml_collections.ConfigDict()
  # The config's version (CONFIG_VERSION above); a saved run's is migrated when it is read.
  config.version = CONFIG_VERSION
  # Which family trains: a key of gen_jax.methods.METHODS.
  config.method = method
  config.seed = 0
  # Compute dtype of the networks ('float32' or 'bfloat16'); params stay float32.
  config.dtype = "float32"
  # Another run's workdir (or checkpoints dir) to continue from (full state) ...
  config.resume_from = ""
  # ... or to take only the params from (fine-tuning). See docs/design.md, "Resume precedence".
  config.init_from = ""
  # Persistent XLA compilation cache of launch.py ('' disables): a rerun, a resume or
  # --mode=sample with the same shapes loads its compiled steps instead of compiling again.
  config.compilation_cache = "~/.cache/gen_jax/xla"
  config.export = ml_collections.ConfigDict()
  # What --mode=export writes: 'gen_jax' (safetensors of every leaf), 'hf_gpt2' (a GPT as
  # Hugging Face's GPT2LMHeadModel) or 'diffusers_vae' (an autoencoder as diffusers'
  # AutoencoderKL); docs/interop.md.
  config.export.format = "gen_jax"

  config.data = ml_collections.ConfigDict()
  # gen_jax builders: mnist_5k (embedded, no download), mnist, cifar10; image_folder and
  # text_files (your own files, below); or any TFDS dataset prepared in array_record form
  # in data_dir.
  config.data.dataset = dataset
  # TFDS data dir ('' = TFDS default, ~/tensorflow_datasets).
  config.data.data_dir = ""
  # Folder with the raw files (e.g. train-images-idx3-ubyte.gz); when set nothing is downloaded.
  config.data.manual_dir = ""
  config.data.train_split = "train"
  config.data.eval_split = "test"
  # Random horizontal flips (Ho et al. use them on CIFAR-10; not for digits).
  config.data.random_flip = False
  # grain worker processes (0 = in the main process).
  config.data.num_workers = 0
  # dataset='image_folder': a folder of PNG/JPEG files; class subfolders give the labels,
  # train/ and test/ subfolders the splits (else 1 image in 10 of each class is test) ...
  config.data.image_folder = ""
  # ... each image's shorter side resized to image_size, then its centre square cropped
  # (28: the size of MNIST, which the families' default models are shaped for) ...
  config.data.image_size = 28
  # ... with 1 (grey), 3 (RGB) or 4 (RGBA) channels; 0 = the files' own (all alike).
  config.data.channels = 3
  # dataset='text_files': a .txt file or a folder of them (train: first 90%, validation: rest).
  config.data.text_path = ""

  # Device mesh: batch over data x fsdp, params sharded over fsdp. -1 = all devices.
  config.mesh = ml_collections.ConfigDict()
  config.mesh.data = -1
  config.mesh.fsdp = 1
  # Tensor parallelism: the method's Megatron splits over this many devices (1 = none).
  config.mesh.model = 1
  return config


# Datasets the engine-trained feature extractor (configs/classifier.py) can embed.
CLASSIFIER_DATASETS = ("mnist_5k", "mnist")


def add_sample_metrics(eval_cfg: ml_collections.ConfigDict, dataset: str, num_samples: int,
                       sample_batch_size: int) -> None:
  """Sample-quality fields of an image generator's eval group (gen_jax/engine/sample_metrics.py).

  The metrics use the features of the classifier trained by
  `python launch.py --config=configs/classifier.py` (workdir runs/classifier).
  """
  # On by default for digits; other datasets need a classifier of their own.
  eval_cfg.sample_metrics = dataset in CLASSIFIER_DATASETS
  # Generated images per evaluation; in the metric names ('1k').
  eval_cfg.num_samples = num_samples
  # Images per compiled sampling call (bounds memory).
  eval_cfg.sample_batch_size = sample_batch_size
  # Workdir of the classifier whose penultimate features are compared ('mnist5kclf' when
  # it was trained on mnist_5k). Its reference statistics are cached there.
  eval_cfg.classifier_workdir = "runs/classifier"
  # The real images (all of this split of data.dataset) the samples are compared with.
  eval_cfg.reference_split = "test"
  # KID: number of subset pairs averaged (Bińkowski et al. 2018 use 100 of 1,000 images).
  eval_cfg.kid_subsets = 100
  # Class coverage counts classes predicted for at least this share of the samples.
  eval_cfg.coverage_min_share = 0.05
  # Whose features: 'classifier' (the run above) or 'inception' (the FID Inception-v3, with
  # the inception_* fields; configs/inception_eval.py switches an experiment to it).
  eval_cfg.feature_extractor = "classifier"
  inception_eval.add_inception_fields(eval_cfg)


def disable_sample_metrics_for_smoke(eval_cfg: ml_collections.ConfigDict) -> None:
  """Smoke runs have no classifier: the tests switch the metrics on with one of their own."""
  eval_cfg.sample_metrics = False
  eval_cfg.num_samples = 32
  eval_cfg.sample_batch_size = 16
  eval_cfg.kid_subsets = 10


def _group(fields: dict[str, Any]) -> ml_collections.ConfigDict:
  """A config group of `fields`; a field whose value is None is left out."""
  return ml_collections.ConfigDict({k: v for k, v in fields.items() if v is not None})


def train_group(
    *,
    # Global batch per update, split over the mesh (data x fsdp).
    batch_size: int,
    # Optimizer updates in all.
    num_steps: int,
    # Peak learning rate (after warmup).
    lr: float,
    # EMA of the params (sample.use_ema samples with it; evaluations report ema/ and raw/);
    # 0 = no EMA: ema_params are the params and evaluations report raw/ only.
    ema_decay: float,
    # Steps between periodic samples (image grids, text); 0 disables (a family that cannot
    # sample keeps 0).
    sample_every: int = 0,
    # The batch is split into this many micro-batches whose gradients are averaged before
    # one update (the same update as the whole batch; activations of one micro-batch in
    # memory). None: the family does not accumulate and has no such field.
    grad_accum_steps: int | None = 1,
    # Updates fused into one compiled call (lax.scan): > 1 helps a small model whose step
    # costs less than its dispatch; keep 1 for conv nets on CPU (XLA:CPU runs convolutions
    # in loops far slower). Step intervals (num_steps, *_every) must be multiples of it.
    steps_per_call: int = 1,
    # 'adam', 'adamw' (decoupled weight decay) or 'adagrad' (Kingma & Welling 2014, §5).
    optimizer: str = "adam",
    # 'constant', 'cosine', 'linear' (after warmup_steps) or 'cooldown' (constant, then
    # linear over the last cooldown_steps).
    lr_decay: str = "constant",
    # cosine and linear decay to lr * min_lr_ratio ...
    min_lr_ratio: float = 0.1,
    # ... at this step (0 = num_steps; nanoGPT's lr_decay_iters): a fixed value keeps the
    # schedule when a run is extended.
    decay_steps: int = 0,
    # lr_decay='cooldown': the last this many of num_steps decay linearly to lr * min_lr_ratio.
    cooldown_steps: int = 0,
    # Linear warmup from 0 to lr over this many steps (0 = none).
    warmup_steps: int = 0,
    # Adam beta1, beta2 and epsilon.
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    # adamw: decoupled, on matrices only (not biases, norms); adagrad: L2; muon: decoupled,
    # on the hidden matrices only.
    weight_decay: float = 0.0,
    # optimizer='muon' (gen_jax/core/muon.py): Muon at `lr` for the hidden matrices, with
    # Nesterov momentum muon_momentum, warmed up linearly from muon_momentum_start over the
    # first muon_momentum_warmup updates (0 = none), and muon_ns_steps Newton-Schulz steps ...
    muon_momentum: float = 0.95,
    muon_momentum_start: float = 0.85,
    muon_momentum_warmup: int = 0,
    muon_ns_steps: int = 5,
    # ... and Adam (b1, b2, eps) at these peak rates for the token embedding, the output
    # head and every other parameter (vectors, scalars), on the same schedule as lr.
    adam_lr_embedding: float = 0.6,
    adam_lr_head: float = 0.008,
    adam_lr_other: float = 0.04,
    # Global-norm gradient clipping; 0 disables.
    grad_clip: float = 0.0,
    # EMA decay = min(ema_decay, (1 + step) / (10 + step)).
    ema_warmup: bool = True,
    # Steps between train-metric logs, between checkpoints, and checkpoints kept.
    log_every: int = 50,
    checkpoint_every: int = 500,
    max_checkpoints: int = 3,
    # Write checkpoints in the background while training goes on.
    async_checkpointing: bool = True,
) -> ml_collections.ConfigDict:
  """`config.train`: batch, optimizer, schedule, EMA and cadences, with a family's values."""
  return _group(dict(locals()))


def eval_group(
    *,
    # Steps between periodic evaluations; 0 disables.
    every: int,
    # Images (or text windows) per eval batch.
    batch_size: int,
    # Eval batches per evaluation; 0 = the whole eval split.
    num_batches: int,
    # Checkpoint that --mode=eval/sample restore (-1 = newest).
    step: int = -1,
    # --mode=sample/eval restore this run's checkpoint instead of --workdir's ('' = none): a
    # sampler-only run, e.g. a sweep over sampler settings (experiments/song2021_ddim).
    checkpoint_from: str = "",
    # Sample-quality metrics (FID, KID, precision/recall, classifier confidence, class
    # coverage) in --mode=eval; an image generator's config adds their fields
    # (`add_sample_metrics`), any other family keeps False.
    sample_metrics: bool = False,
    # ... and every this many training steps (0 = never; needs the classifier before training).
    sample_metrics_every: int = 0,
) -> ml_collections.ConfigDict:
  """`config.eval`; a family adds its own metrics' fields to it."""
  return _group(dict(locals()))


def sample_group(
    *,
    # Samples per periodic grid (train.sample_every) and per --mode=sample call.
    num: int,
    # Sample with the EMA params (train.ema_decay) rather than the raw ones.
    use_ema: bool = True,
    # Seed of --mode=sample.
    seed: int = 0,
    # What --mode=sample writes: 'grid' (one PNG), or 'npz', 'png', 'npz,png': `num` uint8
    # images in resumable shards for external tools (gen_jax/engine/sample_dump.py).
    format: str = "grid",   # pylint: disable=redefined-builtin
    # Images per compiled sample call of a dump; 0 = eval.sample_batch_size.
    batch_size: int = 0,
    # Images per shard of a dump (a multiple of batch_size); 0 = about 1,000.
    shard_size: int = 0,
) -> ml_collections.ConfigDict:
  """`config.sample`; a family adds its sampler's fields to it."""
  return _group(dict(locals()))


# What every family's `smoke` variant sets (seconds on a CPU: a few updates, checkpoints, an
# evaluation and a sample); a field a family does not have is skipped.
SMOKE_TRAIN = dict(batch_size=16, num_steps=4, log_every=1, checkpoint_every=2,
                   sample_every=4, async_checkpointing=False)
SMOKE_EVAL = dict(every=4, batch_size=16, num_batches=2)
SMOKE_SAMPLE = dict(num=4)
# Warmup is shortened to at most this many steps (a family without warmup keeps none).
SMOKE_MAX_WARMUP = 2


def apply_smoke(config: ml_collections.ConfigDict, *, train: dict[str, Any] | None = None,
                eval: dict[str, Any] | None = None,   # pylint: disable=redefined-builtin
                sample: dict[str, Any] | None = None) -> None:
  """The smoke-mode overrides of `config.train`, `config.eval` and `config.sample`.

  `train`, `eval` and `sample` are the family's own smoke values (fields of its groups);
  they win over the shared ones. Sample-quality metrics are switched off
  (`disable_sample_metrics_for_smoke`) where the eval group has their fields.
  """
  own = {"train": train or {}, "eval": eval or {}, "sample": sample or {}}
  for name, fields in own.items():
    group = config.get(name)
    unknown = [k for k in fields if group is None or k not in group]
    if unknown:
      raise KeyError(f"apply_smoke: {name}.{unknown} are not fields of the config.")
  config.train.warmup_steps = min(config.train.warmup_steps, SMOKE_MAX_WARMUP)
  for name, shared in (("train", SMOKE_TRAIN), ("eval", SMOKE_EVAL), ("sample", SMOKE_SAMPLE)):
    if name in config:
      config[name].update({k: v for k, v in shared.items() if k in config[name]})
  if "num_samples" in config.eval:   # an image generator's sample-metric fields
    disable_sample_metrics_for_smoke(config.eval)
  for name, fields in own.items():
    if fields:
      config[name].update(fields)
