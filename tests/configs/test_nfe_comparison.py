"""experiments/nfe_comparison/mnist_5k.py: the NFE sweeps sample the runs the training sweep
trains, every model at one training budget, on NFE grids that line up (no JAX compile)."""
from gen_jax.engine import sweep as sweep_lib
from gen_jax.experiments.nfe_comparison import mnist_5k
from gen_jax.methods.diffusion import samplers


def test_nfe_sweeps_sample_the_trained_runs_on_matching_grids():
  trained = mnist_5k.get_sweep()
  # Only the process and its sampler differ between the training runs: one common budget.
  assert len(trained) == 3 and {k for o in trained for k in o} == {
      "diffusion.process", "diffusion.prediction", "sample.sampler"}
  names = {f"{mnist_5k.TRAIN_WORKDIR}/{sweep_lib.run_name(o)}" for o in trained}
  nfe_by_sampler = {}
  for model in mnist_5k.TRAINED:
    config = mnist_5k.get_config(f"nfe={model}")
    assert config.eval.checkpoint_from in names
    members = mnist_5k.get_sweep(f"nfe={model}")
    # A read mode may only override sample.* and eval.*.
    assert all(k.startswith("sample.") for o in members for k in o)
    for o in members:
      sampler, steps = str(o["sample.sampler"]), int(o["sample.steps"])
      process, prediction = config.diffusion.process, config.diffusion.prediction
      nfe = steps if process == "ddpm" else samplers.num_evaluations(
          sampler, samplers.time_grid(process, steps, prediction, sampler))
      nfe_by_sampler.setdefault(sampler, []).append(nfe)
    quick = mnist_5k.get_sweep(f"nfe={model},quick")
    assert all(o in members for o in quick)
  # Heun's NFE (2 steps - 1: the last step, ending at t = 0, is Euler's) is within one of the
  # one-step samplers' at every grid point; EDM's grid starts at NFE 3.
  one_step = sorted(nfe_by_sampler["ddim"])
  assert one_step == sorted(nfe_by_sampler["euler"]) == mnist_5k.STEPS
  heun, edm = sorted(nfe_by_sampler["heun"]), sorted(nfe_by_sampler["edm_heun"])
  assert heun == [1, 3, 5, 9, 17, 33, 65, 99] and edm == heun[1:]
  # Coarse to fine: the first members are the grid's ends.
  assert [o["sample.steps"] for o in mnist_5k.get_sweep("nfe=ddpm")[:3]] == [1, 8, 100]
