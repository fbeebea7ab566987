"""What admins tune, read once per change instead of on every step.

Worker configs, the budget, the routing rules, the review queues and the auto-approve policy are
needed by every task. Each process keeps them in memory as one immutable snapshot tagged with the
tuning version: a single row that any save or delete of those models bumps in the same
transaction (the signals below). A worker reads the version in the statement that claims its
task (orchestrator.pipeline.claim), so a task claimed after an admin saves a change runs with it,
and otherwise the reads cost nothing. Other callers (the web process) pass no version and pay
one small query.

A change made around the ORM's signals (raw SQL, QuerySet.update) does not bump the version;
call `tuning_changed()` after one. Snapshots are also reloaded after STEWARD_TUNING_MAX_AGE_S
whatever the version says, which bounds how long such a change can go unseen.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from django.conf import settings
from django.db.models import F
from django.db.models.signals import post_delete, post_save

from .llm import BudgetLimits
from .workers import WORKERS
from .workers.base import Config


@dataclass(frozen=True)
class Tuning:
    version: int
    loaded_at: float
    configs: dict  # worker name -> Config
    budget: BudgetLimits | None
    rules: tuple  # active RoutingRule rows (with their queue), in the order they are tried
    queues: dict  # name -> reviews.Queue
    policy: object  # reviews.AutoApprovePolicy in force

    def config(self, worker: str) -> Config:
        found = self.configs.get(worker)
        if found is not None:
            return found
        module = WORKERS[worker]
        return Config(model="gpt-4o-mini", prompt=module.PROMPT, version=module.VERSION, max_retries=4,
                      timeout_s=settings.STEWARD_LLM_TIMEOUT_S, max_reasks=2, max_tool_rounds=6)


_snapshot: Tuning | None = None
_lock = threading.Lock()


def current_version() -> int:
    from .models import TuningVersion

    return TuningVersion.objects.filter(pk=1).values_list("version", flat=True).first() or 0


def tuning(version: int | None = None) -> Tuning:
    """The snapshot for `version` (read from the database when not given), loaded if needed."""
    global _snapshot
    if version is None:
        version = current_version()
    snapshot = _snapshot
    if _fresh(snapshot, version):
        return snapshot
    with _lock:
        if not _fresh(_snapshot, version):  # else another thread loaded it while this one waited
            _snapshot = _load(version)
        return _snapshot


def _fresh(snapshot: Tuning | None, version: int) -> bool:
    return snapshot is not None and snapshot.version == version and \
        time.monotonic() - snapshot.loaded_at < settings.STEWARD_TUNING_MAX_AGE_S


def forget() -> None:
    """Drop this process's snapshot (tests; the next read loads afresh)."""
    global _snapshot
    _snapshot = None


def tuning_changed(**_ignored) -> None:
    """Bump the version: every process reloads its snapshot before the next task it claims."""
    from .models import TuningVersion

    if not TuningVersion.objects.filter(pk=1).update(version=F("version") + 1):
        TuningVersion.objects.get_or_create(pk=1, defaults={"version": 1})
    forget()


def _load(version: int) -> Tuning:
    from reviews.models import AutoApprovePolicy, Queue

    from .models import Budget, RoutingRule, WorkerConfig

    configs = {
        row.worker: Config(model=row.model, prompt=row.prompt, version=row.version, max_retries=row.max_retries,
                           timeout_s=row.timeout_s, max_reasks=row.max_reasks, max_tool_rounds=row.max_tool_rounds)
        for row in WorkerConfig.objects.all()
    }
    budget_row = Budget.objects.filter(active=True).order_by("id").first()
    budget = None if budget_row is None else BudgetLimits(
        budget_row.max_llm_calls, budget_row.max_tool_calls, budget_row.max_tokens, budget_row.max_cost_usd)
    return Tuning(
        version=version,
        loaded_at=time.monotonic(),
        configs=configs,
        budget=budget,
        rules=tuple(RoutingRule.objects.filter(active=True).select_related("queue").order_by("priority", "id")),
        queues={queue.name: queue for queue in Queue.objects.all()},
        policy=AutoApprovePolicy.current(),
    )


def connect_signals() -> None:
    """Called from OrchestratorConfig.ready: any save or delete of a tuned model bumps the version."""
    from reviews.models import AutoApprovePolicy, Queue

    from .models import Budget, RoutingRule, WorkerConfig

    for model in (WorkerConfig, Budget, RoutingRule, Queue, AutoApprovePolicy):
        post_save.connect(tuning_changed, sender=model, dispatch_uid=f"tuning-save-{model.__name__}")
        post_delete.connect(tuning_changed, sender=model, dispatch_uid=f"tuning-delete-{model.__name__}")
