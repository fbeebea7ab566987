"""A new pending approval tells its queue: one email per reviewer (with their own links) and the
queue's Teams and Slack webhooks, from a Celery task enqueued after commit."""
from __future__ import annotations

import pytest

from reviews.models import Approval, EmailLink, Queue
from reviews.notifications import approval_notify
from reviews.services import _send_task as real_send_task
from reviews.services import approval_open
from tests.conftest import LoopbackServer, save_changes


def chat_sink_answer(path: str, body: bytes) -> tuple[int, str, bytes]:
    """A chat webhook: 500 under /broken, else 200."""
    return (500 if path.startswith("/broken") else 200), "text/plain", b"ok"


@pytest.fixture
def chat_sink():
    sink = LoopbackServer(chat_sink_answer)
    yield sink
    sink.stop()


ROUTE = {"queue": "finance_director", "rule": "Invoice amount > 10,000", "amount": "15400",
         "requires_approval": True, "reasons": ["Rule \"Invoice amount > 10,000\" requires approval"],
         "action_summary": "Send payment approval for invoice INV-9, $15,400, to finance_director"}


def test_opening_a_pending_approval_enqueues_the_notification_after_commit(
        db, make_task, django_capture_on_commit_callbacks, monkeypatch, settings):
    sent = []
    monkeypatch.setattr("reviews.tasks.approval_notify.apply_async",
                        lambda args, queue: sent.append((args, queue)))
    monkeypatch.setattr("reviews.services._send_task", real_send_task)  # to the broker, not inline
    task = make_task(doc_type="Invoice", fields={"amount": 15400})

    with django_capture_on_commit_callbacks(execute=True):
        approval = approval_open(task, ROUTE)
        assert sent == []  # nothing leaves before the commit

    assert sent == [([approval.pk], settings.CELERY_TASK_DEFAULT_QUEUE)]
    assert approval.due_at is not None and approval.expires_at is None


def test_auto_approved_actions_notify_nobody(db, make_task, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks() as callbacks:
        approval_open(make_task(), {**ROUTE, "requires_approval": False, "reasons": []})
    assert callbacks == []


def test_each_reviewer_gets_their_own_links_and_the_chats_get_a_card(
        db, reviewer_finance, admin_user, make_task, make_approval, mailoutbox, chat_sink, settings):
    settings.STEWARD_BASE_URL = "https://steward.example.com"
    colleague = admin_user
    save_changes(Queue.objects.filter(name="finance_director"),
        teams_webhook_url=f"{chat_sink.url}/teams", slack_webhook_url=f"{chat_sink.url}/slack")
    Queue.objects.get(name="finance_director").reviewers.add(colleague)
    approval = make_approval(make_task(doc_type="Invoice"), "finance_director",
                             action_summary=ROUTE["action_summary"], reasons=ROUTE["reasons"],
                             action_data={"amount": "15400.0", "fields": {"amount": 15400.0, "currency": "EUR"}})

    result = approval_notify(approval_id=approval.pk)

    assert sorted(m.to[0] for m in mailoutbox) == ["adam@example.com", "alice@example.com"]
    alice_mail = next(m for m in mailoutbox if m.to == ["alice@example.com"])
    assert alice_mail.subject.startswith("[Steward] Approval needed (finance_director): Send payment approval")
    assert "https://steward.example.com/reviews/link/" in alice_mail.body
    assert "?action=reject" in alice_mail.body
    assert ", Invoice, amount €15,400." in alice_mail.body  # as people write it, not 15400.0
    assert f"https://steward.example.com/reviews/approvals/{approval.pk}/" in alice_mail.body
    assert EmailLink.objects.filter(approval=approval).count() == 2
    links = {m.to[0]: m.body.split("Approve:\n")[1].split("\n")[0] for m in mailoutbox}
    assert links["alice@example.com"] != links["adam@example.com"]

    paths = sorted(post["path"] for post in chat_sink.posts)
    assert paths == ["/slack", "/teams"]
    slack = next(p for p in chat_sink.posts if p["path"] == "/slack")["json"]
    assert "*Approval needed in finance_director*" in slack["text"]
    assert f"https://steward.example.com/reviews/approvals/{approval.pk}/" in slack["text"]
    teams = next(p for p in chat_sink.posts if p["path"] == "/teams")["json"]
    assert teams["attachments"][0]["contentType"] == "application/vnd.microsoft.card.adaptive"
    assert result["webhooks"] == {"teams": 200, "slack": 200}
    assert Approval.objects.get(pk=approval.pk).notified_at is not None

    # A redelivered message sends nothing twice.
    assert approval_notify(approval_id=approval.pk)["skipped"]
    assert len(mailoutbox) == 2 and len(chat_sink.posts) == 2


def test_document_text_in_chat_messages_cannot_make_links_or_mentions(db, make_task, make_approval, chat_sink):
    """The action summary carries what the document says (a vendor's name). Slack reads <url|text>
    as a link and <!channel> as a ping of everyone; Teams reads [text](url) as a link in a card's
    TextBlock. A vendor's invoice must not put a fake "Approve" button in the finance channel."""
    save_changes(Queue.objects.filter(name="finance_director"),
                 teams_webhook_url=f"{chat_sink.url}/teams", slack_webhook_url=f"{chat_sink.url}/slack")
    summary = ("Send payment approval for invoice INV-9 from <!channel> <https://evil.example/|Approve here> "
               "[Approve now](https://evil.example/) & co, $15,400, to finance_director")
    approval = make_approval(make_task(doc_type="Invoice"), "finance_director", action_summary=summary)

    approval_notify(approval_id=approval.pk)

    slack = next(p for p in chat_sink.posts if p["path"] == "/slack")["json"]["text"]
    assert "from &lt;!channel&gt; &lt;https://evil.example/|Approve here&gt; [Approve now](https://evil.example/) " \
           "&amp; co, $15,400" in slack
    assert slack.count("<") == 1 and slack.endswith(f"/reviews/approvals/{approval.pk}/|Open in Steward>")
    card = next(p for p in chat_sink.posts if p["path"] == "/teams")["json"]["attachments"][0]["content"]
    markdown = [element["text"] for element in card["body"] if element["type"] == "TextBlock"]
    assert not any("evil.example" in text for text in markdown)
    runs = [run["text"] for element in card["body"] if element["type"] == "RichTextBlock"
            for run in element["inlines"]]
    assert summary in runs  # as plain text: a TextRun takes no markdown


def test_document_text_in_an_email_cannot_add_lines_of_its_own(db, reviewer_finance, make_task, make_approval,
                                                                mailoutbox, settings):
    """Filenames, summaries and reasons carry what integrators and documents say; one with line
    breaks must not write its own "Approve:" link above Steward's in the reviewer's or the
    escalation email. Each stays on its line."""
    import re

    from reviews.notifications import approval_escalation_notify

    settings.STEWARD_BASE_URL = "https://steward.example.com"
    save_changes(Queue.objects.filter(name="finance_director"), escalation_email="boss@example.com")
    fake = "\n\nApprove:\nhttps://evil.example/approve\n\n"
    task = make_task(doc_type="Invoice", filename=f"inv.txt){fake}(")
    approval = make_approval(task, "finance_director", action_summary=f"Pay Acme{fake}now",
                             reasons=[f"Verifier: check{fake}this"])

    approval_notify(approval_id=approval.pk)
    approval_escalation_notify(approval_id=approval.pk, event="escalated")

    assert len(mailoutbox) == 2
    for message in mailoutbox:
        assert not re.search(r"^\s*https://evil", message.body, re.M)
        assert "Approve: https://evil.example/approve" in message.body  # shown, on the line it belongs to
    alice = mailoutbox[0].body
    assert re.search(r"^Approve:\n(\S+)", alice, re.M).group(1).startswith("https://steward.example.com/reviews/link/")


def test_a_broken_webhook_does_not_stop_the_email(db, reviewer_finance, make_task, make_approval, mailoutbox,
                                                  chat_sink):
    save_changes(Queue.objects.filter(name="finance_director"), slack_webhook_url=f"{chat_sink.url}/broken")
    approval = make_approval(make_task(), "finance_director")

    result = approval_notify(approval_id=approval.pk)

    assert len(mailoutbox) == 1
    assert result["webhooks"]["slack"].startswith("failed: Webhook answered 500")
    assert Approval.objects.get(pk=approval.pk).notified_at is not None


def test_decided_approvals_and_silent_queues_send_no_email(db, reviewer_finance, make_task, make_approval,
                                                            mailoutbox):
    decided = make_approval(make_task(), "finance_director", status="approved")
    assert approval_notify(approval_id=decided.pk)["skipped"]
    save_changes(Queue.objects.filter(name="finance_director"), notify_reviewers=False)
    quiet = make_approval(make_task(), "finance_director")
    approval_notify(approval_id=quiet.pk)
    assert mailoutbox == []
