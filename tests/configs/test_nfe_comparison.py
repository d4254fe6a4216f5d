"""experiments/nfe_comparison/mnist_5k.py: the NFE sweep samples the runs the training sweep
trains, every model at one training budget, on NFE grids that line up (no JAX compile)."""
from gen_jax.engine import sweep as sweep_lib
from gen_jax.experiments.nfe_comparison import mnist_5k
from gen_jax.methods.diffusion import samplers


def test_nfe_sweep_samples_the_trained_runs_on_matching_grids():
  trained = mnist_5k.get_sweep()
  names = {sweep_lib.run_name(o) for o in trained}
  assert len(trained) == 3
  # Only the process and its sampler differ between the training runs: one common budget.
  assert {k for o in trained for k in o} == {"diffusion.process", "diffusion.prediction",
                                             "sample.sampler"}
  members = mnist_5k.get_sweep("nfe")
  assert len(members) == 4 * len(mnist_5k.STEPS) - 1   # EDM's grid has no 1-step point
  for member in members:
    run = member["eval.checkpoint_from"]
    assert run.startswith(mnist_5k.TRAIN_WORKDIR + "/")
    assert run.split("/")[-1] in names, run
  # Heun's NFE (2 steps - 1: the last step, ending at t = 0, is Euler's) is within one of
  # the one-step samplers' at every grid point, for both Heun processes.
  for process, prediction, sampler, steps in (
      ("edm", "edm", "edm_heun", mnist_5k.EDM_HEUN_STEPS),
      ("linear", "velocity", "heun", mnist_5k.HEUN_STEPS)):
    assert sorted(o["sample.steps"] for o in members if o["sample.sampler"] == sampler) == steps
    nfe = [samplers.num_evaluations(sampler, samplers.time_grid(process, s, prediction, sampler))
           for s in steps]
    assert nfe == [2 * s - 1 for s in steps]
    assert all(abs(a - b) <= 1 for a, b in zip(nfe, mnist_5k.STEPS[-len(steps):], strict=True))
  quick = mnist_5k.get_sweep("nfe,quick")
  assert len(quick) == 4 * 3 - 1 and all(o in members for o in quick)
  # Coarse to fine: the first members are every sampler's first grid point.
  assert [o["sample.steps"] for o in members[:3]] == [1, 1, 1]
