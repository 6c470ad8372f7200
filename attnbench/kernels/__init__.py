"""Hand-written GPU kernels (Triton), each optional: imported lazily, with a PyTorch fallback."""
