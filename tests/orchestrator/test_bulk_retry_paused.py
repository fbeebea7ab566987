"""A bulk retry paused (by the circuit breaker or a person) or cancelled: the items it had already
sent back keep running, and what became of them must still show; and a resume after the cause
was fixed is not paused again by failures that happened before it.

The tasks really fail: the pipeline runs them against the simulator, which answers 500 to every
model call of a document marked `[[sim-fault: server_error]]`.
"""
from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.utils import timezone

from orchestrator.models import BulkRetry, DeadLetter, Task
from orchestrator.services import bulk_retry_advance, bulk_retry_control, bulk_retry_create, task_submit
from tests.integration.documents import document


@pytest.fixture
def failing(settings, simulator, run_pipeline):
    """Run tasks to their dead letter, each model call failing; returns the tasks."""
    settings.STEWARD_RETRY_BACKOFF_S = 0.005
    settings.STEWARD_RETRY_BACKOFF_MAX_S = 0.01

    def run(tasks: list[Task]) -> list[Task]:
        done = [run_pipeline(task) for task in tasks]
        assert {task.status for task in done} == {"dead_lettered"}
        return done

    return run


def letters_failing_at_classify(failing, n: int) -> list[DeadLetter]:
    tasks = [task_submit(content=f"{document(i)}[[sim-fault: server_error]]\n", filename=f"doc-{i}.txt")[0]
             for i in range(n)]
    return [task.dead_letters.get(status="open") for task in failing(tasks)]


def paused_with_items_in_flight(operator, failing) -> BulkRetry:
    """Ten dead letters sent back at once; five fail again and the breaker pauses the retry; then
    the other five, already running, fail again too, while it is paused."""
    letters = letters_failing_at_classify(failing, 10)
    bulk = bulk_retry_create(user=operator, dead_letter_ids=[dl.pk for dl in letters], description="ten",
                             selection={"scope": "selected"}, rate_per_minute=6000)
    assert bulk_retry_advance(bulk_id=bulk.pk) == "sent 10"
    tasks = [Task.objects.get(pk=dl.task_id) for dl in letters]
    failing(tasks[:5])
    assert bulk_retry_advance(bulk_id=bulk.pk, now=timezone.now() + timedelta(seconds=1)) == "paused"
    failing(tasks[5:])
    return bulk


def counters(page: str) -> dict[str, str]:
    return dict(re.findall(r"<dt>([^<]+)</dt><dd[^>]*>([^<]+)</dd>", page))


def test_a_paused_bulk_retry_shows_what_became_of_the_items_it_had_sent(operator, client_for, failing):
    bulk = paused_with_items_in_flight(operator, failing)
    client = client_for(operator)
    page = client.get(f"/dead-letters/bulk/{bulk.pk}/").text
    assert "Paused by the circuit breaker" in page
    assert counters(page) == {"Selected": "10", "Sent back": "10", "Went through": "0", "Failed again": "10",
                              "Skipped": "0", "Sending pace": counters(page)["Sending pace"]}
    items = page[page.index("<tbody>"):]
    assert items.count(">Failed again</span>") == 10 and "Sent back, running" not in items
    # Nothing is left running, so the page stops polling.
    assert 'hx-trigger="every 2s"' not in page
    assert "10/10 sent, 0 through, 10 failed again" in client.get("/dead-letters/").text


def test_a_cancelled_bulk_retry_shows_what_became_of_the_items_it_had_sent(operator, client_for, failing):
    letters = letters_failing_at_classify(failing, 2)
    bulk = bulk_retry_create(user=operator, dead_letter_ids=[dl.pk for dl in letters], description="two",
                             selection={"scope": "selected"}, rate_per_minute=6000)
    assert bulk_retry_advance(bulk_id=bulk.pk) == "sent 2"
    bulk_retry_control(bulk_id=bulk.pk, user=operator, action="cancel")
    failing([Task.objects.get(pk=dl.task_id) for dl in letters])
    page = client_for(operator).get(f"/dead-letters/bulk/{bulk.pk}/").text
    assert counters(page)["Failed again"] == "2"
    assert page[page.index("<tbody>"):].count(">Failed again</span>") == 2


def test_a_resume_is_not_paused_again_by_failures_from_before_it(operator, failing):
    bulk = paused_with_items_in_flight(operator, failing)
    # The operator fixes the cause (a model, a provider limit), then resumes: the breaker starts over.
    bulk_retry_control(bulk_id=bulk.pk, user=operator, action="resume")
    assert bulk_retry_advance(bulk_id=bulk.pk) == "completed"
    bulk.refresh_from_db()
    assert (bulk.status, bulk.paused_reason, bulk.succeeded, bulk.failed_again) == ("completed", "", 0, 10)
