"""The family-agnostic engine: the only layer that knows devices, meshes and files, and it
names no family (what a family offers beyond its four functions is a `Method` hook).

experiment (config -> mesh, method, shapes, shardings), train (the loop and the compiled
update), evaluation, samples, sample_metrics, modes (sample, eval, summary, compile),
method_modes (a family's own modes), export, checkpoint, workdir (run identity and status),
sweep, report, outputs, sharding, preemption, cli (what launch.py runs).
"""
