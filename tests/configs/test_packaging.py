"""An install ships the config files inside gen_jax and adds no top-level `configs` or
`experiments` package to site-packages; `load_config` finds the packaged files from any
working directory."""
import os
import tomllib

import setuptools
from smoke import REPO_ROOT

import gen_jax


def test_an_install_ships_only_the_gen_jax_package():
  with open(os.path.join(REPO_ROOT, "pyproject.toml"), "rb") as f:
    find = tomllib.load(f)["tool"]["setuptools"]["packages"]["find"]
  packages = setuptools.find_namespace_packages(REPO_ROOT, include=find["include"])
  assert {p.split(".")[0] for p in packages} == {"gen_jax"}
  assert {"gen_jax.configs", "gen_jax.experiments.ho2020_ddpm"} <= set(packages)


def test_load_config_reads_the_packaged_files_outside_the_repository(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)   # no configs/ folder here
  assert gen_jax.load_config("configs/ddpm.py:smoke").method == "diffusion"
  assert gen_jax.load_config("experiments/ho2020_ddpm/cifar10.py").model.ch == 128
