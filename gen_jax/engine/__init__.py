"""The family-agnostic engine: the only layer that knows devices, meshes and files.

experiment (config -> mesh, method, shapes, shardings), train (the loop and the compiled
update), evaluation, samples, sample_metrics, modes (sample, eval, summary, compile),
checkpoint, workdir (run identity and status), sweep, report, outputs, sharding, preemption.
"""
