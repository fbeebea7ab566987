"""The review inbox: a reviewer's pending approvals, oldest first, counts that refresh themselves,
keyset pages in a constant number of queries, and a quick approve from the row."""
from __future__ import annotations

from datetime import timedelta

from django.test.utils import CaptureQueriesContext
from django.db import connection

from reviews.models import Approval
from reviews.selectors import Cursor

from .conftest import HX


def test_alice_sees_her_queue_oldest_first_and_not_bobs(reviewer_finance, reviewer_legal, client_for, pending):
    newer = pending(number="INV-NEW", age=timedelta(minutes=5))
    older = pending(number="INV-OLD", age=timedelta(hours=2))
    contract = pending("legal_team", number="CONTRACT-1")

    page = client_for(reviewer_finance).get("/reviews/")

    assert page.status_code == 200
    text = page.text
    assert text.index("INV-OLD") < text.index("INV-NEW")
    assert "CONTRACT-1" not in text
    assert f'id="approval-{older.pk}"' in text and f'id="approval-{newer.pk}"' in text
    assert f'id="approval-{contract.pk}"' not in text
    assert 'id="pending-total">2<' in text


def test_counts_show_past_sla_and_escalated(reviewer_finance, client_for, pending):
    pending(number="INV-LATE", age=timedelta(hours=5))  # finance SLA is 240 minutes
    escalated = pending(number="INV-ESC", age=timedelta(hours=6))
    Approval.objects.filter(pk=escalated.pk).update(escalated_at=escalated.due_at)
    pending(number="INV-FRESH")

    text = client_for(reviewer_finance).get("/reviews/").text

    assert '<span class="overdue-n">2</span> past SLA' in text
    assert "escalated</span>" in text
    assert text.count('class="badge overdue">past SLA') == 1


def test_counts_partial_refreshes_every_10_s_and_after_a_decision(reviewer_finance, client_for, pending):
    pending()
    client = client_for(reviewer_finance)
    page = client.get("/reviews/").text
    assert 'hx-trigger="every 10s, approval-decided from:body"' in page

    partial = client.get("/reviews/", HTTP_HX_TARGET="inbox-counts", **HX)

    assert partial.text.lstrip().startswith('<nav id="inbox-counts"')
    assert "<html" not in partial.text and "inbox-rows" not in partial.text


def test_keyset_pages_oldest_first_in_constant_queries(reviewer_finance, client_for, pending):
    approvals = [pending(number=f"INV-{n:03}", age=timedelta(minutes=200 - n)) for n in range(120)]
    client = client_for(reviewer_finance)

    first = client.get("/reviews/")
    assert first.text.count('class="inbox-row') == 50
    assert "INV-000" in first.text and "INV-049" in first.text and "INV-050" not in first.text
    cursor = Cursor.of(approvals[49]).encode()
    assert f"after={cursor}" in first.text

    with CaptureQueriesContext(connection) as second_queries:
        second = client.get(f"/reviews/?after={cursor}", **HX)
    assert "INV-050" in second.text and "INV-099" in second.text and "INV-049" not in second.text
    assert "<html" not in second.text

    with CaptureQueriesContext(connection) as third_queries:
        third = client.get(f"/reviews/?after={Cursor.of(approvals[99]).encode()}")
    assert third.text.count('class="inbox-row') == 20 and "Load more" not in third.text
    assert len(third_queries) <= 8, [q["sql"] for q in third_queries]
    assert len(second_queries) <= 8


def test_a_queue_filter_narrows_the_rows_not_the_counts(admin_user, client_for, pending):
    pending(number="INV-1")
    pending("legal_team", number="CONTRACT-1")

    text = client_for(admin_user).get("/reviews/?queue=legal_team").text

    assert "CONTRACT-1" in text and "INV-1" not in text
    assert 'data-queue="finance_director"' in text


def test_quick_approve_from_a_row_returns_the_row_and_tells_the_page(reviewer_finance, client_for, pending):
    approval = pending()
    response = client_for(reviewer_finance).post(
        f"/reviews/approvals/{approval.pk}/decide", {"decision": "approve", "row": "1"}, **HX)

    assert response.status_code == 200
    assert response.text.lstrip().startswith(f'<tr id="approval-{approval.pk}"')
    assert "approval-decided" in response["HX-Trigger"]
    assert f"Approved action for task {approval.task_id}." in response.text
    approval.refresh_from_db()
    assert approval.status == "approved" and approval.decided_by == reviewer_finance


def test_operators_and_charlie_have_no_inbox(operator, outsider, client, client_for):
    assert client_for(operator).get("/reviews/").status_code == 403
    assert client_for(outsider).get("/reviews/").status_code == 403
    assert client.get("/reviews/")["Location"].startswith("/login/")


def test_the_inbox_says_when_nothing_waits(reviewer_finance, client_for):
    text = client_for(reviewer_finance).get("/reviews/").text
    assert "Nothing is waiting for you" in text


def test_counts_stop_at_the_cap(reviewer_finance, client_for, pending, monkeypatch):
    monkeypatch.setattr("reviews.selectors.COUNT_CAP", 3)
    monkeypatch.setattr("reviews.views.COUNT_CAP", 3)
    for n in range(5):
        pending(number=f"INV-{n}")

    text = client_for(reviewer_finance).get("/reviews/").text

    assert 'id="pending-total">3+<' in text
    assert text.count('class="inbox-row') == 5  # the rows are all there
