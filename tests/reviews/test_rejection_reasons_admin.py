"""Retiring a rejection reason in admin: reasons reviewers gave before stay with their decisions,
and reviewers are never left without a reason to reject with."""
from __future__ import annotations

import pytest

from reviews.models import Approval, RejectionReason
from reviews.services import approval_decide

pytestmark = pytest.mark.django_db

REASONS = "/admin/reviews/rejectionreason/"


@pytest.fixture
def rejected(make_task, make_approval, reviewer_finance) -> Approval:
    """Alice rejected an invoice as "Amount is wrong"."""
    approval = make_approval(make_task(status="awaiting_approval", current_step="act"), "finance_director")
    return approval_decide(approval_id=approval.pk, user=reviewer_finance, decision="reject", reason="wrong-amount")


def test_a_reason_reviewers_gave_cannot_be_deleted_and_the_page_says_to_retire_it(rejected, admin_user, client_for):
    """Before: "your account doesn't have permission to delete the following types of objects:
    approval", as if another admin could, and nothing about what to do instead."""
    reason = RejectionReason.objects.get(code="wrong-amount")
    client = client_for(admin_user)

    page = client.get(f"{REASONS}{reason.pk}/delete/").text
    client.post(f"{REASONS}{reason.pk}/delete/", {"post": "yes"})

    assert "permission" not in page
    assert f"Approval {rejected.pk} (rejected) for task {rejected.task_id}" in page
    assert "To retire it, untick Active on its page: reviewers no longer see it, and past decisions keep it." in page
    assert RejectionReason.objects.filter(pk=reason.pk).exists()
    # Nor from the list, several at once.
    bulk = client.post(REASONS, {"action": "delete_selected", "_selected_action": [reason.pk], "post": "yes"}).text
    assert "permission" not in bulk and f"Approval {rejected.pk} (rejected)" in bulk
    assert RejectionReason.objects.filter(pk=reason.pk).exists()


def test_a_retired_reason_stays_on_the_decisions_that_gave_it(rejected, admin_user, client_for, reviewer_finance):
    reason = RejectionReason.objects.get(code="wrong-amount")
    client = client_for(admin_user)

    response = client.post(f"{REASONS}{reason.pk}/change/", {"code": reason.code, "label": reason.label})

    assert response.status_code == 302
    assert not RejectionReason.objects.get(pk=reason.pk).active
    task_page = client_for(reviewer_finance).get(f"/tasks/{rejected.task_id}/").text
    assert "Amount is wrong" in task_page


def test_the_last_active_reason_cannot_be_retired(admin_user, client_for):
    """With none active, reviewers could not reject anything: a rejection needs a reason."""
    RejectionReason.objects.exclude(code="other").update(active=False)
    other = RejectionReason.objects.get(code="other")

    response = client_for(admin_user).post(f"{REASONS}{other.pk}/change/", {"code": "other", "label": other.label})

    assert response.status_code == 200
    assert ("This is the only active reason: with none, reviewers could not reject anything. "
            "Add or reactivate another first.") in response.text
    assert RejectionReason.objects.get(pk=other.pk).active


def test_the_reason_fields_say_what_they_do(admin_user, client_for):
    page = client_for(admin_user).get(f"{REASONS}add/").text

    assert "Unticked: retired. Reviewers no longer see it; past decisions keep it." in page
    assert "What the API returns for decisions with this reason" in page


def test_a_reason_reviewers_gave_keeps_its_code(rejected, admin_user, client_for):
    """The code is what the API answers for past decisions: renaming it after use rewrote them
    (a decision read as "wrong-amount" yesterday read as "bad-total" today)."""
    reason = RejectionReason.objects.get(code="wrong-amount")
    client = client_for(admin_user)

    page = client.get(f"{REASONS}{reason.pk}/change/").text
    client.post(f"{REASONS}{reason.pk}/change/", {"code": "bad-total", "label": "Total is wrong", "active": "on"})

    assert 'name="code"' not in page  # shown, not editable
    assert RejectionReason.objects.get(pk=reason.pk).code == "wrong-amount"
    assert RejectionReason.objects.get(pk=reason.pk).label == "Total is wrong"  # the label still can change
    # An unused reason's code can still be corrected.
    unused = RejectionReason.objects.exclude(pk=reason.pk).first()
    assert 'name="code"' in client.get(f"{REASONS}{unused.pk}/change/").text
