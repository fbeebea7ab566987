"""manage.py rebuild_rollups: recompute the monitoring rollups from steps, tasks and approvals.

Useful after an upgrade that adds a figure, or to repair rollups after a failure was logged.
"""
from __future__ import annotations

import time

from django.core.management.base import BaseCommand

from metrics.rollups import rollups_rebuild


class Command(BaseCommand):
    help = "Recompute the monitoring rollups (charts, /metrics) from the raw rows."

    def handle(self, *args, **options) -> None:
        started = time.perf_counter()
        report = rollups_rebuild()
        self.stdout.write(
            f"Rebuilt rollups from {report['steps']:,} steps, {report['tasks']:,} tasks and "
            f"{report['approvals']:,} decided approvals: {report['rollup_rows']:,} rows in "
            f"{time.perf_counter() - started:.1f} s")
