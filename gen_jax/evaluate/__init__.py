"""Metric math on arrays, beside `gen_jax.core`: sample quality from features
(`sample_quality`: FID, KID, precision/recall) and classifier scores (`classifier_scores`).
Imports neither the methods nor the engine."""
