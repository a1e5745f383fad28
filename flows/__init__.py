"""Prefect wiring and the `scratchlm` CLI. Thin: it wires stages from `pipeline/`, it does not compute."""
