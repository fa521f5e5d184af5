"""Helpers for tests and benchmarks that code outside tests/ imports too (like `torch.testing`).

- `testing.tiny_models`: tiny random GLM-4V / Qwen2.5-VL checkpoints (`python -m testing.tiny_models glm4v /tmp/tiny`)
- `testing.images`: TIFFs that are cheap to send and dear to decode (decompression bombs, large ramp scenes)

Nothing here is imported by the product at run time; tests/ and bench/ build on it. Nothing here imports `tests`.
"""
