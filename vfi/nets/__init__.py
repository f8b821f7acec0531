"""Networks: the bidirectional flow estimator and the conditional U-Net denoiser."""
