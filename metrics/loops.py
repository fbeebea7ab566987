"""Loop detection's second rule: a step far above its worker's recent tool-call p95 is a loop.

The p95 comes from the rollups (tool calls per agent invocation, per worker, over the last
STEWARD_LOOP_WINDOW_DAYS), cached per process for STEWARD_LOOP_CACHE_S so that a tool call never
costs a query. Until a worker has STEWARD_LOOP_MIN_SAMPLES steps in the window there is no
ceiling (a new worker has no "normal" yet; the budget still applies).
"""
from __future__ import annotations

import math
import threading
import time
from datetime import timedelta

from django.conf import settings
from django.db.models import Sum
from django.utils import timezone

from . import histograms as h

_cache: dict[str, tuple[float, "Ceiling | None"]] = {}
_lock = threading.Lock()


class Ceiling:
    def __init__(self, worker: str, p95: float, limit: int, samples: int) -> None:
        self.worker, self.p95, self.limit, self.samples = worker, p95, limit, samples

    def as_evidence(self) -> dict:
        return {"worker": self.worker, "p95": self.p95, "ceiling": self.limit, "samples": self.samples,
                "window_days": settings.STEWARD_LOOP_WINDOW_DAYS}

    def __repr__(self) -> str:
        return f"Ceiling({self.worker}: p95={self.p95}, limit={self.limit}, samples={self.samples})"


def compute_ceiling(worker: str, now=None) -> Ceiling | None:
    """p95 x STEWARD_LOOP_P95_FACTOR (at least p95 + STEWARD_LOOP_MIN_MARGIN), from the rollups."""
    from .models import HistogramRollup, Period

    now = now or timezone.now()
    since = now - timedelta(days=settings.STEWARD_LOOP_WINDOW_DAYS)
    counts = dict(
        HistogramRollup.objects.filter(metric=h.AGENT_TOOL_CALLS, period=Period.HOUR, worker=worker, bucket__gte=since)
        .values("bin").annotate(n=Sum("count")).values_list("bin", "n")
    )
    samples = sum(counts.values())
    if samples < settings.STEWARD_LOOP_MIN_SAMPLES:
        return None
    p95 = h.quantile(h.AGENT_TOOL_CALLS, counts, 0.95)
    if p95 is None or math.isinf(p95):
        return None
    limit = max(math.ceil(p95 * settings.STEWARD_LOOP_P95_FACTOR), math.ceil(p95) + settings.STEWARD_LOOP_MIN_MARGIN)
    return Ceiling(worker, p95, limit, samples)


def tool_call_ceiling(worker: str) -> Ceiling | None:
    """The cached ceiling for `worker` (None: no rule yet)."""
    now = time.monotonic()
    with _lock:
        hit = _cache.get(worker)
        if hit and now - hit[0] < settings.STEWARD_LOOP_CACHE_S:
            return hit[1]
    ceiling = compute_ceiling(worker)
    with _lock:
        _cache[worker] = (now, ceiling)
    return ceiling


def clear_cache() -> None:
    with _lock:
        _cache.clear()
