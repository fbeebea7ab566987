"""Deciding from an email: a signed link bound to one reviewer, used once, that never decides on
GET (mail clients prefetch links); rejecting asks for the reason."""
from __future__ import annotations

import re
import time

import pytest
from django.contrib.auth.models import Group
from django.core import signing
from django.test import Client

from orchestrator.models import Task
from reviews.links import SALT, email_link_create
from reviews.models import Approval, AuditEvent, EmailLink, Queue
from reviews.notifications import approval_notify


@pytest.fixture
def emailed(reviewer_finance, pending, mailoutbox):
    """Alice's approve link (a path) for a pending approval, as her email has it."""
    approval = pending(notified=False)
    approval_notify(approval_id=approval.pk)
    url = re.search(r"Approve:\n(\S+)", mailoutbox[0].body).group(1)
    return approval, url.removeprefix("http://127.0.0.1:8000")


def test_opening_the_link_only_asks_to_confirm(emailed):
    approval, path = emailed
    client = Client()  # no session: Alice reads her email on her phone

    for _ in range(3):  # a mail scanner, a preview, Alice
        page = client.get(path)
        assert page.status_code == 200
        assert "Approve this action?" in page.text and "As</dt><dd>alice" in page.text
    assert Approval.objects.get(pk=approval.pk).status == "pending"


def test_approving_from_the_link_decides_as_alice_once(emailed):
    approval, path = emailed
    client = Client(enforce_csrf_checks=True)
    page = client.get(path)
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text).group(1)

    done = client.post(path, {"decision": "approve", "csrfmiddlewaretoken": token})

    assert done.status_code == 200
    assert f"Approved action for task {approval.task_id}." in done.text
    approval.refresh_from_db()
    assert approval.status == "approved" and approval.decided_by.username == "alice"
    assert Task.objects.get(pk=approval.task_id).status == "queued"
    assert AuditEvent.objects.get(action="approval.approved").data["via"] == "email link"

    again = client.post(path, {"decision": "approve", "csrfmiddlewaretoken": token})
    assert again.status_code == 410 and "already used" in again.text


def test_rejecting_from_the_link_asks_for_a_reason_and_keeps_the_link_until_given(emailed):
    approval, path = emailed
    client = Client()
    page = client.get(path + "?action=reject")
    assert "Reject this action?" in page.text and 'name="reason"' in page.text

    refused = client.post(path, {"decision": "reject", "reason": ""})
    assert refused.status_code == 400 and "A rejection needs a reason" in refused.text
    assert Approval.objects.get(pk=approval.pk).status == "pending"

    done = client.post(path, {"decision": "reject", "reason": "duplicate", "comment": "Paid last week"})
    assert done.status_code == 200
    approval.refresh_from_db()
    assert approval.status == "rejected" and approval.rejection_reason.code == "duplicate"
    assert approval.comment == "Paid last week"


def test_a_link_after_someone_else_decided_says_who(emailed, admin_user, client_for):
    approval, path = emailed
    client_for(admin_user).post(f"/reviews/approvals/{approval.pk}/decide", {"decision": "approve"})

    page = Client().get(path)

    assert page.status_code == 409 and "Already approved by adam at " in page.text


def test_tampered_forged_and_expired_links_are_refused(emailed, settings, reviewer_legal, pending):
    approval, path = emailed
    token = path.split("/")[3]
    assert Client().get(path.replace(token, token[:-2] + "xx")).status_code == 400
    # A token for Bob, signed with another key, is not accepted either.
    forged = signing.dumps({"a": approval.pk, "u": reviewer_legal.pk, "n": "x"}, salt=SALT, key="guess")
    assert Client().get(f"/reviews/link/{forged}/").status_code == 400

    settings.STEWARD_EMAIL_LINK_MAX_AGE_S = 1
    time.sleep(2)
    expired = Client().post(path, {"decision": "approve"})
    assert expired.status_code == 410 and "expired" in expired.text
    assert Approval.objects.get(pk=approval.pk).status == "pending"


def test_a_link_is_bound_to_its_reviewer_and_their_queue(reviewer_finance, pending):
    approval = pending()
    token = email_link_create(approval=approval, user=reviewer_finance)
    Queue.objects.get(name="finance_director").reviewers.remove(reviewer_finance)

    response = Client().post(f"/reviews/link/{token}/", {"decision": "approve"})

    assert response.status_code == 403 and "no longer a reviewer of finance_director" in response.text
    assert Approval.objects.get(pk=approval.pk).status == "pending"


def test_a_link_stops_working_when_its_reviewer_loses_the_reviewer_role(emailed, reviewer_finance):
    """Alice moved to another job: an admin took her reviewer role away but left her listed in the
    queue. The inbox, the task page and the API refuse her; her old email link must too."""
    approval, path = emailed
    reviewer_finance.groups.remove(Group.objects.get(name="reviewer"))

    page = Client().get(path)
    response = Client().post(path, {"decision": "approve"})

    assert page.status_code == 403 and "no longer a reviewer of finance_director" in page.text
    assert response.status_code == 403 and "no longer a reviewer of finance_director" in response.text
    assert Approval.objects.get(pk=approval.pk).status == "pending"


def test_a_queue_member_without_the_reviewer_role_is_sent_no_links(reviewer_finance, operator, pending, mailoutbox):
    """Olga (an operator) listed among the queue's reviewers by mistake cannot decide in Steward;
    she gets no email with links that would let her."""
    Queue.objects.get(name="finance_director").reviewers.add(operator)
    approval = pending(notified=False)

    result = approval_notify(approval_id=approval.pk)

    assert result["emails"] == ["alice@example.com"]
    assert [m.to for m in mailoutbox] == [["alice@example.com"]]
    assert not EmailLink.objects.filter(user=operator).exists()


def test_old_links_are_forgotten_by_the_review_sweep(emailed, settings):
    from datetime import timedelta

    from django.utils import timezone

    from reviews.models import EmailLink
    from reviews.services import approvals_sweep

    assert approvals_sweep()["links_purged"] == 0
    later = timezone.now() + timedelta(seconds=settings.STEWARD_EMAIL_LINK_MAX_AGE_S) + timedelta(days=2)
    assert approvals_sweep(now=later)["links_purged"] == 1
    assert not EmailLink.objects.exists()
