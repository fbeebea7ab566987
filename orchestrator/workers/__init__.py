"""Worker agents. Each is one module with one prompt, one schema and a `run(ctx)` function.

The pipeline runs them in PIPELINE order; `run` returns the step's output (a JSON-able dict) and
`apply(task, output)` copies the results onto the task as part of the step's checkpoint.
"""
from __future__ import annotations

from . import act, classify, extract, route, verify

PIPELINE = ("classify", "extract", "verify", "route", "act")
WORKERS = {module.NAME: module for module in (classify, extract, verify, route, act)}


def next_step(worker: str) -> str:
    index = PIPELINE.index(worker)
    return PIPELINE[index + 1] if index + 1 < len(PIPELINE) else ""
