"""GET /api/v1/dead-letters and POST /api/v1/dead-letters/{id}/retry, for operators."""
from __future__ import annotations

import pytest
from django.test import Client

from orchestrator.roles import api_token_create


def api(user) -> Client:
    return Client(HTTP_AUTHORIZATION=f"Bearer {api_token_create(user=user)}")


@pytest.fixture
def dead(make_task, run_pipeline):
    """A task the content filter blocked at classify: dead-lettered at once (permanent)."""
    task = run_pipeline(make_task(content="INVOICE 9\nTotal: $9.00\n[[sim-fault: content_filter]]"))
    assert task.status == "dead_lettered"
    return task.dead_letters.get()


def test_operator_lists_open_dead_letters(operator, dead):
    response = api(operator).get("/api/v1/dead-letters")

    assert response.status_code == 200
    [item] = response.json()["results"]
    assert item["id"] == dead.pk
    assert item["task_id"] == dead.task_id
    assert item["worker"] == "classify"
    assert item["error_type"] == "ContentFilter"
    assert item["status"] == "open"
    assert item["attempts"] == 1
    assert item["fingerprint"]


def test_list_filters_by_error_type_and_status(operator, dead):
    client = api(operator)
    assert client.get("/api/v1/dead-letters?error_type=Timeout").json()["results"] == []
    assert client.get("/api/v1/dead-letters?status=retried").json()["results"] == []
    assert client.get("/api/v1/dead-letters?status=gone").status_code == 400


def test_reviewer_cannot_see_dead_letters(reviewer_finance, dead):
    assert api(reviewer_finance).get("/api/v1/dead-letters").status_code == 403
    assert api(reviewer_finance).post(f"/api/v1/dead-letters/{dead.pk}/retry").status_code == 403


def test_retry_queues_the_task_again_from_the_failed_step(operator, dead):
    response = api(operator).post(f"/api/v1/dead-letters/{dead.pk}/retry")

    assert response.status_code == 200
    body = response.json()
    assert body["dead_letter"]["status"] == "retried"
    assert body["task"]["status"] == "queued"
    dead.task.refresh_from_db()
    assert (dead.task.status, dead.task.current_step) == ("queued", "classify")
    assert api(operator).get("/api/v1/dead-letters").json()["results"] == []


def test_retry_twice_is_409(operator, dead):
    client = api(operator)
    client.post(f"/api/v1/dead-letters/{dead.pk}/retry")

    response = client.post(f"/api/v1/dead-letters/{dead.pk}/retry")

    assert response.status_code == 409
    assert response.json()["error"] == f"Dead letter {dead.pk} is already retried"


def test_retry_unknown_dead_letter_is_404(operator):
    assert api(operator).post("/api/v1/dead-letters/999999/retry").status_code == 404


def test_retry_needs_post(operator, dead):
    assert api(operator).get(f"/api/v1/dead-letters/{dead.pk}/retry").status_code == 405


def test_dead_letter_shows_its_doc_type_and_queue(db, operator, make_task):
    from django.test import Client

    from orchestrator.models import DeadLetter
    from orchestrator.roles import api_token_create

    task = make_task(status="dead_lettered", doc_type="Invoice", routed_to="finance_director")
    DeadLetter.objects.create(task=task, worker="verify", error_type="ToolLoop", message="loop", fingerprint="f" * 32,
                              doc_type="Invoice", queue="finance_director")

    body = Client().get("/api/v1/dead-letters", HTTP_AUTHORIZATION=f"Bearer {api_token_create(user=operator)}").json()

    assert body["results"][0]["doc_type"] == "Invoice"
    assert body["results"][0]["queue"] == "finance_director"
    assert body["results"][0]["edits"] == {}
