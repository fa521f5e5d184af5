"""Translate Karpathy-format caption files into Chinese through any OpenAI-compatible endpoint.

Run `python -m translate --help`; modules: config (settings), captions (units and writers), prompts (prompt files,
numbered lines), client (requests, retries, budget), cache (SQLite), validate (checks), runner (the run).
"""
