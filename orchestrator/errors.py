"""The error taxonomy. A step fails with a StepError that says whether trying again can help.

Transient (timeouts, connection errors, 429, 5xx) are retried with backoff, never before the
server's Retry-After. Permanent ones (other 4xx, content filter, an answer still invalid after the
re-asks, a budget exceeded, a tool loop) go straight to the dead-letter queue.
"""
from __future__ import annotations

import hashlib
import re


class StepError(Exception):
    permanent = False
    error_type = "StepError"

    def __init__(
        self,
        message: str,
        *,
        error_type: str | None = None,
        permanent: bool | None = None,
        retry_after: float | None = None,
        evidence: dict | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if error_type:
            self.error_type = error_type
        if permanent is not None:
            self.permanent = permanent
        self.retry_after = retry_after
        self.evidence = evidence or {}


class TransientError(StepError):
    permanent = False
    error_type = "Transient"


class PermanentError(StepError):
    permanent = True
    error_type = "Permanent"


class InvalidAnswer(PermanentError):
    """The model's answer still failed its schema after the bounded re-asks."""

    error_type = "InvalidAnswer"


class BudgetExceeded(PermanentError):
    """A per-task ceiling was hit before a model call: treated as a suspected loop."""

    error_type = "BudgetExceeded"


class ToolLoop(PermanentError):
    """The verifier kept asking for tools past its bound: a suspected loop."""

    error_type = "ToolLoop"


class LoopDetected(PermanentError):
    """Loop detection stopped the step: the same tool call repeated, or far more tool calls than
    the worker's recent p95 (metrics/loops.py). The evidence says which rule and why."""

    error_type = "LoopDetected"


class LeaseLost(Exception):
    """Another worker took this task over (our lease ran out); stop without writing anything."""


_NORMALISERS = [
    (re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.I), "<uuid>"),
    (re.compile(r"\b[0-9a-f]{16,}\b", re.I), "<hex>"),
    (re.compile(r"https?://\S+"), "<url>"),
    (re.compile(r"'[^']*'|\"[^\"]*\""), "<str>"),
    (re.compile(r"\d+(\.\d+)?"), "<n>"),
    (re.compile(r"\s+"), " "),
]


def normalise_message(message: str) -> str:
    """Strip what varies between occurrences of one failure (ids, numbers, quoted values, URLs)."""
    text = message[:500]
    for pattern, replacement in _NORMALISERS:
        text = pattern.sub(replacement, text)
    return text.strip()


def error_fingerprint(worker: str, error_type: str, message: str) -> str:
    """Groups dead letters of the same failure: same worker, same error type, same message shape."""
    key = f"{worker}|{error_type}|{normalise_message(message)}"
    return hashlib.sha256(key.encode()).hexdigest()[:32]
