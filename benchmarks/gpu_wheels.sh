#!/bin/sh
# The wheels gen_jax needs that the lent GPU machines' image lacks (it has jax with its CUDA
# plugin, flax, optax, orbax-checkpoint, numpy, scipy, ...; nothing can be downloaded
# there), for CPython 3.12 on x86-64 Linux, into .gpu_wheels/ (ignored by git; ~11 MB).
# Versions: constraints.txt's. Run from the repository root; see benchmarks/gpu_suite.py.
set -e
mkdir -p .gpu_wheels
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
  --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64 \
  -d .gpu_wheels \
  array_record==0.8.6 dm-tree==0.1.10 dm_pix==0.4.5 docstring_parser==0.18.0 \
  googleapis-common-protos==1.76.0 grain==0.2.18 immutabledict==4.3.1 \
  importlib_resources==7.1.0 ml_collections==1.1.0 portpicker==1.6.0 simple-parsing==0.1.9 \
  tensorboardX==2.6.5 tensorflow-datasets==4.9.10 tensorflow-metadata==1.21.0 \
  termcolor==3.3.0 toml==0.10.2
# promise is published as a source archive only (pure Python): built into a wheel here.
python3 -m pip wheel -q --no-deps promise==2.3 -w .gpu_wheels
ls .gpu_wheels
