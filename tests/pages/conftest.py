"""Page-test helpers on top of the named actors in tests/conftest.py."""
from __future__ import annotations

import pytest
from django.utils import timezone

from orchestrator.models import DeadLetter, Step, Task


@pytest.fixture(autouse=True)
def simulator_provider(monkeypatch):
    """Pages label model output from the simulator; make sure no real provider is configured."""
    for name in ("AZURE_OPENAI_ENDPOINT", "AZURE_OPENAI_API_KEY", "OPENAI_API_KEY"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def make_step(db):
    def make(task: Task, worker: str = "classify", **fields) -> Step:
        defaults = dict(attempt=1, status="succeeded", started_at=timezone.now(), finished_at=timezone.now())
        defaults.update(fields)
        return Step.objects.create(task=task, worker=worker, **defaults)

    return make


@pytest.fixture
def make_dead_letter(db):
    def make(task: Task, **fields) -> DeadLetter:
        defaults = dict(worker="extract", error_type="SchemaInvalid", message="still invalid after 2 re-asks",
                        traceback="Traceback (most recent call last):\n  ...", attempts=3, fingerprint="f" * 64)
        defaults.update(fields)
        Task.objects.filter(pk=task.pk).update(status="dead_lettered")
        letter = DeadLetter.objects.create(task=task, **defaults)
        # Made directly, not through dead_letter_create: recount the triage groups it belongs to.
        from orchestrator.services import dead_letter_groups_rebuild

        dead_letter_groups_rebuild()
        return letter

    return make
