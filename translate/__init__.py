"""Translate Karpathy-format caption files into Chinese through any OpenAI-compatible endpoint (python -m translate --help)."""
