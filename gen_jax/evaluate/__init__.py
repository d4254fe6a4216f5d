"""Metric math on arrays, and the networks metrics need, beside `gen_jax.core`:
sample quality from features (`sample_quality`: FID, KID, precision/recall), classifier
scores (`classifier_scores`), the FID Inception-v3 with its weights file (`inception`,
`inception_weights`, `pickle_reader`) and the Inception score (`inception_metrics`), and
PSNR/SSIM over masked pixels (`masked_metrics`). Imports neither the methods nor the engine."""
