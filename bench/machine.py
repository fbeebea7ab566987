"""What the whole machine spent: the benchmarks compare CPU per document across stacks with it."""
from __future__ import annotations

import os
from pathlib import Path


def machine_cpu_s() -> float:
    """CPU time used by the whole machine so far (every process: workers, simulator, PostgreSQL...)."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    # user, nice, system, irq, softirq: not idle, iowait, nor steal (another guest's time on the host)
    busy = sum(int(value) for index, value in enumerate(fields[:8]) if index not in (3, 4, 7))
    return busy / os.sysconf("SC_CLK_TCK")
