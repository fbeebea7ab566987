"""Fixed histogram bounds, shared by the rollups, /metrics and the charts.

Bounds never change for a metric once data exist (the stored bins are indexes into them); add a
new metric name instead. The GenAI ones follow the OpenTelemetry semantic conventions' advice.
"""
from __future__ import annotations

import bisect
import math

TOKEN_USAGE = "gen_ai_token_usage"          # per model call, label = token type
OPERATION_DURATION = "gen_ai_duration"      # per model call, seconds
AGENT_TOOL_CALLS = "agent_tool_calls"       # per step (one agent invocation)
TASK_TOOL_CALLS = "task_tool_calls"         # per task outcome, label = outcome ("retried": withdrawn)
TASK_TOKENS = "task_tokens"                 # per task outcome, label = outcome
TASK_COST = "task_cost_usd"                 # per task outcome, label = outcome
APPROVAL_WAIT = "approval_wait"             # per decided approval, seconds, label = decision

BOUNDS: dict[str, tuple[float, ...]] = {
    TOKEN_USAGE: (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304,
                  16777216, 67108864),
    OPERATION_DURATION: (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48,
                         40.96, 81.92),
    AGENT_TOOL_CALLS: (0, 1, 2, 3, 4, 5, 6, 8, 10, 12, 15, 20, 30, 40, 60, 100),
    TASK_TOOL_CALLS: (0, 1, 2, 3, 4, 5, 6, 8, 10, 12, 15, 20, 30, 40, 60, 100),
    TASK_TOKENS: (500, 1000, 2000, 4000, 8000, 16000, 32000, 64000, 128000, 256000, 512000),
    TASK_COST: (0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5),
    APPROVAL_WAIT: (60, 300, 900, 1800, 3600, 7200, 14400, 28800, 86400, 172800, 604800),
}


def bin_of(metric: str, value: float) -> int:
    """Index of the bin holding `value`: the first bound >= value (len(bounds) = overflow)."""
    return bisect.bisect_left(BOUNDS[metric], value)


def bin_label(metric: str, index: int) -> str:
    """A person's label for one bin, e.g. "4" for integer bins or "<= 0.5" for others."""
    bounds = BOUNDS[metric]
    if index >= len(bounds):
        return f"> {_fmt(bounds[-1])}"
    upper = bounds[index]
    lower = bounds[index - 1] if index else None
    integral = all(float(b).is_integer() for b in bounds)
    if integral and (lower is None or upper - lower == 1):
        return _fmt(upper)
    if integral and lower is not None:
        return f"{_fmt(lower + 1)}-{_fmt(upper)}"
    return f"<= {_fmt(upper)}"


def quantile(metric: str, counts: dict[int, int], q: float) -> float | None:
    """The upper bound of the bin where the q-quantile falls (None without observations)."""
    total = sum(counts.values())
    if not total:
        return None
    rank = math.ceil(q * total)
    seen = 0
    bounds = BOUNDS[metric]
    for index in sorted(counts):
        seen += counts[index]
        if seen >= rank:
            return float(bounds[index]) if index < len(bounds) else math.inf
    return math.inf


def _fmt(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"
