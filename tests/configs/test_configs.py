"""Every config file and variant loads, locks, and keeps its values (no JAX compile).

The pinned values are there so that a refactor of configs/ (e.g. of the shared groups in
configs/common.py) that changes a resulting config fails here.
"""
import importlib

import ml_collections
import pytest

from gen_jax.configs import migration

# (module, arg) for every config file and the variants its docstring and get_config name.
CASES = [
    *[("configs.ddpm", a) for a in (None, "smoke", "dataset=mnist", "dataset=cifar10",
                                    "smoke,dataset=cifar10")],
    *[("configs.dit", a) for a in (None, "smoke", "unconditional", "vp", "edm", "flow", "sit",
                                   "gvp", "edm,smoke", "flow,smoke", "dataset=mnist")],
    *[("configs.dcgan", a) for a in (None, "smoke", "loss=hinge", "loss=wgan_gp",
                                     "dataset=cifar10", "dataset=mnist", "smoke,loss=wgan_gp",
                                     "dataset=cifar10,loss=wgan_gp")],
    *[("configs.vae", a) for a in (None, "smoke", "latent=2", "conv", "continuous",
                                   "continuous,conv", "smoke,conv", "dataset=mnist")],
    *[("configs.classifier", a) for a in (None, "smoke", "dataset=mnist")],
    *[("configs.autoencoder", a) for a in (None, "smoke", "sd", "dataset=mnist")],
    *[("configs.gpt", a) for a in (None, "baby", "shakespeare_char", "smoke", "tokenizer=byte",
                                   "smoke,tokenizer=byte", "dataset=lm1b")],
    *[("configs.lstm", a) for a in (None, "smoke", "tokenizer=byte")],
    ("experiments.gulrajani2017_wgan_gp.cifar10", None),
    ("experiments.gulrajani2017_wgan_gp.cifar10_resnet", None),
    ("experiments.miyato2018_sngan.cifar10", None),
    ("experiments.miyato2018_projection.cifar10", None),
    ("experiments.ho2020_ddpm.cifar10", None),
    ("experiments.radford2016_dcgan.mnist", None),
    ("experiments.radford2016_dcgan.cifar10", None),
    ("experiments.kingma2014_vae.mnist", None),
    ("experiments.kingma2014_vae.mnist", "latent=2"),
    ("experiments.radford2019_gpt2.openwebtext", None),
    ("experiments.burda2016_iwae.mnist", None),
    ("experiments.burda2016_iwae.mnist", "stages=4,objective=iwae,k=5"),
    ("experiments.huang2024_r3gan.cifar10", None),
    ("experiments.gan_objectives.mnist_5k", None),
]

FLOAT_TRAIN_FIELDS = ("lr", "min_lr_ratio", "b1", "b2", "eps", "weight_decay", "grad_clip",
                      "ema_decay")
INT_TRAIN_FIELDS = ("batch_size", "num_steps", "steps_per_call", "warmup_steps", "log_every",
                    "checkpoint_every", "max_checkpoints")


def load(module: str, arg: str | None = None) -> ml_collections.ConfigDict:
  return importlib.import_module(f"gen_jax.{module}").get_config(arg)


def _id(case):
  module, arg = case
  return f"{module.split('.', 1)[1]}:{arg or ''}"


@pytest.mark.parametrize("case", CASES, ids=[_id(c) for c in CASES])
def test_loads_locks_and_has_the_shared_fields(case):
  config = load(*case)
  config.to_json_best_effort()
  for name in FLOAT_TRAIN_FIELDS:
    assert isinstance(config.train[name], float), name
  for name in INT_TRAIN_FIELDS:
    assert type(config.train[name]) is int, name   # pylint: disable=unidiomatic-typecheck
  assert set(config.eval) >= {"every", "batch_size", "num_batches", "step", "checkpoint_from",
                              "sample_metrics", "sample_metrics_every"}
  assert config.version == migration.CONFIG_VERSION
  config.lock()
  config.train.lr = 1.0
  config.train.batch_size = 2
  with pytest.raises(AttributeError):
    config.train.lrr = 1.0
  with pytest.raises(AttributeError):
    config.not_a_group = 1


@pytest.mark.parametrize("module", ["configs.ddpm", "configs.dit", "configs.dcgan", "configs.vae",
                                    "configs.classifier", "configs.gpt", "configs.lstm",
                                    "configs.autoencoder"])
def test_unknown_variant_fails(module):
  with pytest.raises(ValueError, match="unknown variant"):
    load(module, "smoke,nonsense")


@pytest.mark.parametrize("module", ["experiments.kingma2014_vae.mnist",
                                    "experiments.burda2016_iwae.mnist"])
def test_experiment_variants_are_parsed_by_common(module):
  with pytest.raises(ValueError, match="experiments/.*unknown variant.*'nonsense'"):
    load(module, "nonsense=1")


FAMILIES = ("ddpm", "dcgan", "vae", "classifier", "gpt", "lstm")
# Each family's default train and eval groups in full (None: the family has no such field).
TRAIN = {                 # ddpm    dcgan   vae     classifier gpt     lstm
    "batch_size":          (64,     32,     100,    128,      12,     12),
    "grad_accum_steps":    (1,      1,      1,      None,     1,      1),
    "num_steps":           (1500,   3000,   6000,   1000,     2000,   2000),
    "steps_per_call":      (1,      1,      100,    1,        10,     10),
    "optimizer":           ("adam", "adam", "adam", "adamw",  "adamw", "adamw"),
    "lr":                  (2e-3,   2e-4,   1e-3,   1e-3,     1e-3,   2e-3),
    "lr_decay":            ("constant", "constant", "constant", "cosine", "cosine", "cosine"),
    "min_lr_ratio":        (0.1,    0.1,    0.1,    0.05,     0.1,    0.1),
    "decay_steps":         (0,      0,      0,      0,        0,      0),
    "cooldown_steps":      (0,      0,      0,      0,        0,      0),
    "warmup_steps":        (100,    0,      0,      50,       100,    100),
    "b1":                  (0.9,    0.5,    0.9,    0.9,      0.9,    0.9),
    "b2":                  (0.999,  0.999,  0.999,  0.999,    0.99,   0.99),
    "eps":                 (1e-8,   1e-8,   1e-4,   1e-8,     1e-8,   1e-8),
    "weight_decay":        (0.0,    0.0,    0.0,    1e-4,     0.1,    0.1),
    "grad_clip":           (1.0,    0.0,    0.0,    0.0,      1.0,    1.0),
    "muon_momentum":       (0.95,   0.95,   0.95,   0.95,     0.95,   0.95),
    "muon_momentum_start": (0.85,   0.85,   0.85,   0.85,     0.85,   0.85),
    "muon_momentum_warmup": (0,     0,      0,      0,        0,      0),
    "muon_ns_steps":       (5,      5,      5,      5,        5,      5),
    "adam_lr_embedding":   (0.6,    0.6,    0.6,    0.6,      0.6,    0.6),
    "adam_lr_head":        (0.008,  0.008,  0.008,  0.008,    0.008,  0.008),
    "adam_lr_other":       (0.04,   0.04,   0.04,   0.04,     0.04,   0.04),
    "ema_decay":           (0.995,  0.999,  0.999,  0.99,     0.0,    0.0),
    "ema_warmup":          (True,   True,   True,   True,     False,  False),
    "log_every":           (50,     50,     500,    50,       50,     50),
    "checkpoint_every":    (500,    500,    2000,   500,      500,    500),
    "max_checkpoints":     (3,      3,      3,      1,        3,      3),
    "async_checkpointing": (True,   True,   True,   True,     True,   True),
    "sample_every":        (500,    250,    2000,   0,        1000,   1000),
}
EVAL = {
    "every":               (500,    500,    6000,   500,      250,    250),
    "batch_size":          (128,    100,    100,    100,      12,     12),
    "num_batches":         (4,      5,      0,      0,        20,     20),
    "step":                (-1,     -1,     -1,     -1,       -1,     -1),
    "checkpoint_from":     ("",     "",     "",     "",       "",     ""),
    "sample_metrics":      (True,   True,   False,  False,    False,  False),
    "sample_metrics_every": (0,     0,      0,      0,        0,      0),
}


@pytest.mark.parametrize("family", FAMILIES)
def test_default_train_and_eval_groups(family):
  config = load(f"configs.{family}")
  column = FAMILIES.index(family)
  for group, table in (("train", TRAIN), ("eval", EVAL)):
    expected = {k: v[column] for k, v in table.items() if v[column] is not None}
    actual = {k: v for k, v in config[group].items() if k in table}
    assert actual == expected, group
  assert set(config.train) == {k for k, v in TRAIN.items() if v[column] is not None}


def test_ddpm_values():
  c = load("configs.ddpm")
  t = c.train
  assert (t.optimizer, t.lr, t.batch_size, t.num_steps, t.warmup_steps) == ("adam", 2e-3, 64,
                                                                             1500, 100)
  assert (t.grad_clip, t.ema_decay, t.ema_warmup, t.sample_every) == (1.0, 0.995, True, 500)
  assert (t.grad_accum_steps, t.steps_per_call, t.checkpoint_every, t.log_every) == (1, 1, 500, 50)
  assert (c.eval.every, c.eval.batch_size, c.eval.num_batches) == (500, 128, 4)
  assert c.eval.sample_metrics and c.eval.num_samples == 1000
  assert (c.sample.sampler, c.sample.steps, c.sample.eta, c.sample.num) == ("ddim", 100, 1.0, 64)
  s = load("configs.ddpm", "smoke")
  assert (s.train.batch_size, s.train.num_steps, s.train.warmup_steps) == (16, 4, 2)
  assert (s.train.log_every, s.train.checkpoint_every, s.train.sample_every) == (1, 2, 4)
  assert not s.train.async_checkpointing
  assert (s.eval.every, s.eval.batch_size, s.eval.num_batches, s.eval.bpd_num_images) == (4, 16,
                                                                                         2, 0)
  assert not s.eval.sample_metrics and s.eval.kid_subsets == 10
  assert (s.sample.steps, s.sample.num, s.diffusion.num_timesteps) == (5, 4, 20)
  assert load("configs.ddpm", "dataset=cifar10").model.attn_resolutions == (8,)


def test_dit_values():
  c = load("configs.dit")
  assert c.model.architecture == "dit" and c.model.num_classes == 10
  assert (c.model.patch_size, c.model.hidden_size, c.model.depth, c.model.num_heads) == (4, 128,
                                                                                        4, 4)
  assert (c.diffusion.process, c.diffusion.variance, c.diffusion.loss) == ("ddpm",
                                                                          "learned_range",
                                                                          "hybrid")
  assert (c.diffusion.p_uncond, c.sample.guidance, c.sample.ddim_sigma) == (0.1, 1.0, "model")
  t = c.train
  assert (t.optimizer, t.lr, t.batch_size, t.num_steps, t.warmup_steps) == ("adam", 1e-3, 64,
                                                                             2500, 100)
  # The continuous processes learn no variance (their objective is the prediction's error).
  e = load("configs.dit", "edm")
  assert (e.diffusion.process, e.diffusion.prediction, e.diffusion.variance,
          e.sample.sampler) == ("edm", "edm", "fixed", "edm_heun")
  assert load("configs.dit", "flow").diffusion.process == "linear"
  assert load("configs.dit", "unconditional").model.num_classes == 0
  s = load("configs.dit", "smoke")
  assert (s.train.num_steps, s.diffusion.num_timesteps, s.model.hidden_size) == (4, 20, 16)


def test_dcgan_values():
  c = load("configs.dcgan")
  assert (c.train.b1, c.train.b2, c.train.lr, c.train.batch_size) == (0.5, 0.999, 2e-4, 32)
  assert (c.train.num_steps, c.train.ema_decay, c.train.sample_every) == (3000, 0.999, 250)
  assert (c.train.warmup_steps, c.train.grad_clip) == (0, 0.0)
  assert (c.eval.batch_size, c.eval.num_batches) == (100, 5)
  assert (c.sample.interpolation_steps, c.sample.interpolation) == (8, "slerp")
  w = load("configs.dcgan", "loss=wgan_gp")
  assert (w.gan.n_critic, w.train.batch_size, w.train.lr, w.train.b1, w.train.b2) == (
      5, 160, 1e-4, 0.0, 0.9)
  assert load("configs.dcgan", "smoke,loss=wgan_gp").train.batch_size == 40
  s = load("configs.dcgan", "smoke")
  assert (s.train.batch_size, s.train.warmup_steps, s.sample.interpolation_steps) == (8, 0, 2)
  assert not s.eval.sample_metrics


def test_vae_values():
  c = load("configs.vae")
  t = c.train
  assert (t.eps, t.lr, t.batch_size, t.num_steps, t.steps_per_call) == (1e-4, 1e-3, 100, 6000,
                                                                        100)
  assert (t.log_every, t.checkpoint_every, t.sample_every, t.ema_decay) == (500, 2000, 2000, 0.999)
  assert (c.eval.every, c.eval.num_batches, c.sample.num) == (6000, 0, 64)
  s = load("configs.vae", "smoke")
  assert (s.train.steps_per_call, s.train.batch_size, s.train.warmup_steps) == (1, 16, 0)
  assert s.model.latent_dim == 2 and not s.eval.sample_metrics and "num_samples" not in s.eval
  assert load("configs.vae", "latent=2").model.latent_dim == 2


def test_autoencoder_values():
  c = load("configs.autoencoder")
  assert c.method == "autoencoder" and c.data.dataset == "mnist_5k"
  m, t = c.model, c.train
  assert (m.block_out_channels, m.layers_per_block, m.latent_channels, m.norm_num_groups) == (
      (16, 32, 32), 1, 4, 8)
  assert (c.autoencoder.recon_loss, c.autoencoder.kl_weight) == ("l1", 1e-3)
  assert (t.batch_size, t.num_steps, t.lr, t.b1, t.b2, t.warmup_steps, t.ema_decay) == (
      32, 600, 1e-3, 0.5, 0.9, 100, 0.999)
  assert (c.eval.every, c.eval.batch_size, c.eval.num_batches, c.sample.num) == (600, 100, 0, 64)
  sd = load("configs.autoencoder", "sd")
  assert (sd.model.block_out_channels, sd.model.layers_per_block, sd.model.norm_num_groups,
          sd.model.scaling_factor) == ((128, 256, 512, 512), 2, 32, 0.18215)
  assert (sd.autoencoder.kl_weight, sd.data.image_size, sd.train.batch_size, sd.train.lr) == (
      1e-6, 256, 4, 4.5e-6 * 4)
  s = load("configs.autoencoder", "smoke")
  assert (s.model.block_out_channels, s.model.latent_channels, s.train.num_steps) == ((8, 8), 2,
                                                                                      4)
  assert (s.train.warmup_steps, s.train.batch_size, s.eval.num_batches) == (2, 16, 2)


def test_classifier_values_and_no_sample_settings():
  c = load("configs.classifier")
  t = c.train
  assert (t.optimizer, t.lr_decay, t.min_lr_ratio, t.weight_decay) == ("adamw", "cosine", 0.05,
                                                                        1e-4)
  assert (t.ema_decay, t.max_checkpoints, t.warmup_steps, t.num_steps) == (0.99, 1, 50, 1000)
  assert load("configs.classifier", "dataset=mnist").train.num_steps == 3000
  s = load("configs.classifier", "smoke")
  assert (s.train.num_steps, s.train.checkpoint_every, s.train.warmup_steps) == (8, 8, 2)
  assert (s.eval.every, s.eval.batch_size, s.eval.num_batches) == (8, 100, 0)
  for config in (c, s):   # the classifier cannot sample: no sample settings at all
    assert "sample" not in config and config.train.sample_every == 0
    assert not config.eval.sample_metrics and "grad_accum_steps" not in config.train


def test_language_model_values():
  g = load("configs.gpt")
  t = g.train
  assert (t.optimizer, t.lr, t.batch_size, t.num_steps, t.b2, t.weight_decay) == (
      "adamw", 1e-3, 12, 2000, 0.99, 0.1)
  assert (t.decay_steps, t.steps_per_call, t.ema_decay, t.ema_warmup) == (0, 10, 0.0, False)
  assert (g.eval.every, g.eval.batch_size, g.eval.num_batches) == (250, 12, 20)
  assert (g.sample.num, g.sample.max_new_tokens, g.sample.top_k) == (4, 500, 200)
  sc = load("configs.gpt", "shakespeare_char")
  assert (sc.train.batch_size, sc.train.num_steps, sc.eval.num_batches) == (64, 5000, 200)
  s = load("configs.gpt", "smoke")
  assert (s.train.batch_size, s.train.steps_per_call, s.train.log_every) == (8, 2, 2)
  assert (s.train.warmup_steps, s.eval.batch_size, s.sample.num, s.sample.max_new_tokens) == (
      2, 8, 2, 24)
  lstm = load("configs.lstm")
  assert lstm.train.lr == 2e-3 and lstm.train.decay_steps == 0
  assert load("configs.lstm", "smoke").data.seq_len == 16


@pytest.mark.parametrize("case", [("configs.gpt", None), ("configs.gpt", "smoke"),
                                  ("configs.gpt", "shakespeare_char"),
                                  ("experiments.radford2019_gpt2.openwebtext", None)])
def test_gpt_seq_len_follows_block_size(case):
  config = load(*case)
  assert config.data.seq_len == config.model.block_size
  config.model.block_size = 32
  assert config.data.seq_len == 32
  config.data.seq_len = 48
  assert config.model.block_size == 48


def test_experiment_values():
  assert load("experiments.ho2020_ddpm.cifar10").train.ema_decay == 0.9999
  assert load("experiments.gulrajani2017_wgan_gp.cifar10").train.batch_size == 320
  assert load("experiments.kingma2014_vae.mnist").train.optimizer == "adagrad"
  assert load("experiments.kingma2014_vae.mnist", "latent=2").model.latent_dim == 2
  burda = load("experiments.burda2016_iwae.mnist", "stages=4,objective=iwae,k=5")
  assert (burda.train.num_steps, burda.vae.objective, burda.vae.train_k) == (120_000, "iwae", 5)
  gpt2 = load("experiments.radford2019_gpt2.openwebtext")
  assert (gpt2.model.block_size, gpt2.data.seq_len, gpt2.train.batch_size) == (1024, 1024, 480)


def test_apply_smoke_rejects_a_field_the_config_does_not_have():
  from gen_jax.configs import common
  with pytest.raises(KeyError, match="sample"):
    common.apply_smoke(load("configs.classifier"), sample=dict(num=2))
  with pytest.raises(KeyError, match="lrr"):
    common.apply_smoke(load("configs.ddpm"), train=dict(lrr=1.0))


def test_config_files_load_by_path_outside_the_repository(tmp_path, monkeypatch):
  # The configs and experiments packages ship with gen_jax (pyproject's packages.find), so
  # the paths of the README work from any directory once gen_jax is installed.
  import gen_jax
  monkeypatch.chdir(tmp_path)
  assert gen_jax.load_config("configs/ddpm.py:smoke").method == "diffusion"
  assert gen_jax.load_config("experiments/ho2020_ddpm/cifar10.py").data.dataset == "cifar10"
  with pytest.raises(FileNotFoundError, match="configs/nope.py"):
    gen_jax.load_config("configs/nope.py")
