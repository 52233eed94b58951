"""ckpt-guard: keep training baggage out of shipped PyTorch weights, without executing them."""

__version__ = "0.1.0"
