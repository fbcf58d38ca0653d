"""Evaluation of persona conditioning (card text, soft prompts, both) on held-out personas and user turns.

`config` (EvalConfig) -> `data` (held-out personas, turns, reference lines) -> `conditioning` (one prompt
recipe per mode) -> `metrics` (fidelity, identification, drift, break rate, prompt tokens) -> `run`
(`evaluate` hands a JSON-ready dict to `format_table`, `plot` and `save_json`).
"""
