"""Evaluation: sample-quality metrics from features (`sample_quality`) and likelihoods
(`diffusion_likelihood`: DDPM bits/dim from the variational bound)."""
