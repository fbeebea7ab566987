"""act: the approved action runs once, with the approval's Idempotency-Key, or fails clearly."""
from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from io import StringIO
from pathlib import Path

import pytest
from django.core import mail
from django.core.management import call_command

from orchestrator.errors import PermanentError, TransientError
from orchestrator.llm import Meter, Usage
from orchestrator.pipeline import worker_config
from orchestrator.workers import act
from orchestrator.workers.base import StepContext
from reviews.models import Queue
from tests.conftest import LoopbackServer, save_changes


def run_act(task) -> dict:
    ctx = StepContext(task=task, config=worker_config("act"),
                      meter=Meter(task_totals=Usage(), budget=None, timeout_s=1))
    return act.run(ctx)


@pytest.fixture
def approved(make_task, make_approval, reviewer_finance):
    task = make_task(doc_type="Invoice", status="running", current_step="act")
    return make_approval(task, "finance_director", status="approved", decided_by=reviewer_finance,
                         action_data={"amount": "15400.00"})


class WebhookTarget(LoopbackServer):
    """A webhook receiver answering with the status the test sets; it records what it got."""

    status = 200

    def __init__(self) -> None:
        super().__init__(lambda path, body: (self.status, "text/plain", b""))
        self.url += "/hook"

    @property
    def received(self) -> list[dict]:
        return [{"key": post["headers"].get("Idempotency-Key"), "body": post["body"]} for post in self.posts]


@pytest.fixture
def target():
    server = WebhookTarget()
    yield server
    server.stop()


def test_webhook_reaches_the_target_with_the_idempotency_key(simulator, approved):
    result = run_act(approved.task)

    deliveries = simulator.webhook_deliveries()
    assert deliveries["by_key"] == {approved.idempotency_key: 1}
    body = deliveries["last"][0]
    assert body["approval_id"] == approved.pk
    assert body["task_id"] == approved.task_id
    assert body["decision"] == "approved"
    assert body["decided_by"] == "alice"
    assert body["idempotency_key"] == approved.idempotency_key
    assert result["status_code"] == 200
    assert result["target"] == f"http://127.0.0.1:{simulator.port}/…"  # the host only: see below
    approved.refresh_from_db()
    assert approved.action_status == "done"
    assert approved.action_sent_at is not None


def test_running_act_twice_sends_once(simulator, approved):
    run_act(approved.task)
    second = run_act(approved.task)

    assert second["skipped"] == "already sent"
    assert simulator.webhook_deliveries()["deliveries"] == 1


def test_the_queue_webhook_overrides_the_default_target(simulator, approved, target):
    save_changes(Queue.objects.filter(name="finance_director"), webhook_url=target.url)

    run_act(approved.task)

    assert [r["key"] for r in target.received] == [approved.idempotency_key]
    assert simulator.webhook_deliveries()["deliveries"] == 0


def test_a_4xx_answer_is_permanent(settings, approved, target):
    settings.STEWARD_WEBHOOK_URL = target.url
    target.status = 400

    with pytest.raises(PermanentError) as caught:
        run_act(approved.task)

    assert caught.value.error_type == "Webhook400"
    assert len(target.received) == 1


def test_a_5xx_answer_is_transient_and_resent_with_the_same_key(settings, approved, target):
    settings.STEWARD_WEBHOOK_URL = target.url
    target.status = 503
    with pytest.raises(TransientError) as caught:
        run_act(approved.task)
    assert caught.value.error_type == "Webhook503"

    target.status = 200
    run_act(approved.task)

    assert [r["key"] for r in target.received] == [approved.idempotency_key] * 2


class MovedTarget:
    """A webhook address that moved, as one does behind an http -> https or a trailing-slash
    redirect: a POST is answered 301 to /moved, where a GET is answered 200. Records every request."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str]] = []
        target = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                target.requests.append(("POST", self.path))
                self.send_response(301)
                self.send_header("Location", "/moved")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def do_GET(self):  # noqa: N802
                target.requests.append(("GET", self.path))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()


def readme_verify():
    """The receiver's check as README.md's "Receiving actions" gives it to integrators, run as written."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme.split("### Receiving actions", 1)[1]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    scope: dict = {}
    exec(code, scope)  # noqa: S102  (our own README)
    return scope["verify"]


def test_a_webhook_is_signed_so_the_receiver_can_check_who_sent_it(settings, approved, target):
    settings.STEWARD_WEBHOOK_URL = target.url
    settings.STEWARD_WEBHOOK_SECRET = "shared-with-the-receiver"
    target.status = 503  # the first try fails: the retry is signed too, with the same key

    with pytest.raises(TransientError):
        run_act(approved.task)
    target.status = 200
    run_act(approved.task)

    verify = readme_verify()
    assert len(target.posts) == 2
    for post in target.posts:
        header = post["headers"]["Steward-Signature"]
        assert verify(post["body"], header, "shared-with-the-receiver"), header
        timestamp = int(header.split(",")[0].removeprefix("t="))
        assert abs(time.time() - timestamp) < 60
        assert post["headers"]["Idempotency-Key"] == approved.idempotency_key
    body, header = target.posts[1]["body"], target.posts[1]["headers"]["Steward-Signature"]
    # Someone who changed the amount, signed with another secret, or replays the POST an hour later, fails.
    assert not verify(body.replace(b"15400.00", b"95400.00"), header, "shared-with-the-receiver")
    assert not verify(body, header, "another-secret")
    assert not verify(body, header.replace(header.split(",")[0], f"t={int(time.time()) - 3600}"),
                      "shared-with-the-receiver")
    assert not verify(body, "v1=abc", "shared-with-the-receiver")


def test_without_a_secret_the_webhook_is_not_signed_and_the_deploy_check_says_so(settings, approved, target):
    settings.STEWARD_WEBHOOK_URL = target.url
    settings.STEWARD_WEBHOOK_SECRET = ""
    run_act(approved.task)
    assert "Steward-Signature" not in target.posts[0]["headers"]

    out = StringIO()
    call_command("check", "--deploy", stdout=out, stderr=out, fail_level="CRITICAL")
    assert "steward.W001" in out.getvalue() and "STEWARD_WEBHOOK_SECRET is not set" in out.getvalue()
    settings.STEWARD_WEBHOOK_SECRET = "set"
    out = StringIO()
    call_command("check", "--deploy", stdout=out, stderr=out, fail_level="CRITICAL")
    assert "steward.W001" not in out.getvalue()


def test_a_redirect_is_permanent_and_never_followed(settings, approved):
    # Following it, urllib turned the POST into a GET without the body: the receiver never got the
    # action, and the action was recorded as done.
    moved = MovedTarget()
    settings.STEWARD_WEBHOOK_URL = moved.url
    try:
        with pytest.raises(PermanentError) as caught:
            run_act(approved.task)
    finally:
        moved.server.shutdown()
        moved.server.server_close()

    assert caught.value.error_type == "Webhook301"
    # The new address is named as the target is on pages (scheme and host): it may be a credential too.
    assert caught.value.message == (f"Webhook answered 301, a redirect to {moved.url[:-len('/hook')]}/…: "
                                    "an action is not re-sent to another address; make that the target")
    assert moved.requests == [("POST", "/hook")]
    approved.refresh_from_db()
    assert approved.action_status != "done"


def test_an_unreachable_target_is_transient(settings, approved, target):
    settings.STEWARD_WEBHOOK_URL = target.url
    target.stop()

    with pytest.raises(TransientError) as caught:
        run_act(approved.task)

    assert caught.value.error_type == "WebhookUnreachable"


def test_email_action_sends_one_mail_with_the_idempotency_key(make_task, make_approval, reviewer_finance):
    save_changes(Queue.objects.filter(name="finance_director"), action_kind="email", action_email="ap@example.com")
    task = make_task(status="running", current_step="act")
    approval = make_approval(task, "finance_director", action_kind="email", status="approved",
                             decided_by=reviewer_finance)

    run_act(task)
    run_act(task)

    # django.core.mail.outbox, not pytest-django's mailoutbox: Django 6 replaces the list when the
    # test database is set up, which can happen after that fixture ran.
    assert len(mail.outbox) == 1
    sent = mail.outbox[0]
    assert sent.to == ["ap@example.com"]
    assert sent.extra_headers["Idempotency-Key"] == approval.idempotency_key
    assert approval.action_summary in sent.subject


def test_an_email_action_about_a_summary_with_line_breaks_is_sent(make_task, make_approval, reviewer_finance):
    """A summary carries what the document says; a line break in it (a model's field) must not stop
    the approved action (Django refuses a subject header with a line break)."""
    save_changes(Queue.objects.filter(name="finance_director"), action_kind="email", action_email="ap@example.com")
    task = make_task(status="running", current_step="act")
    make_approval(task, "finance_director", action_kind="email", status="approved", decided_by=reviewer_finance,
                  action_summary="Pay Acme\r\nBcc: everyone@example.com\n now")

    run_act(task)

    assert [m.subject for m in mail.outbox] == ["[Steward] Approved: Pay Acme Bcc: everyone@example.com now"]
    assert mail.outbox[0].recipients() == ["ap@example.com"]


def test_email_action_goes_to_the_queue_reviewers_without_an_address(make_task, make_approval, reviewer_finance):
    task = make_task(status="running", current_step="act")
    make_approval(task, "finance_director", action_kind="email", status="approved", decided_by=reviewer_finance)

    run_act(task)

    assert [m.to for m in mail.outbox] == [["alice@example.com"]]


def test_no_webhook_target_is_permanent(settings, approved):
    settings.STEWARD_WEBHOOK_URL = ""

    with pytest.raises(PermanentError) as caught:
        run_act(approved.task)

    assert caught.value.error_type == "NoActionTarget"
    assert "STEWARD_WEBHOOK_URL" in caught.value.message


def test_no_email_address_is_permanent(make_task, make_approval):
    task = make_task(status="running", current_step="act")
    make_approval(task, "legal_team", action_kind="email", status="approved")

    with pytest.raises(PermanentError) as caught:
        run_act(task)

    assert caught.value.error_type == "NoActionTarget"


def test_nothing_is_sent_without_an_approved_action(simulator, make_task, make_approval):
    task = make_task(status="running", current_step="act")
    make_approval(task, "finance_director", status="rejected")

    with pytest.raises(PermanentError) as caught:
        run_act(task)

    assert caught.value.error_type == "NoApproval"
    assert simulator.webhook_deliveries()["deliveries"] == 0


def test_the_webhook_address_is_not_shown_to_reviewers(run_pipeline, approved, target, reviewer_finance, client_for):
    """A webhook address often is the receiver's credential (a token in its path or query): whoever
    has it can post approvals to the ERP past Steward. The act step's output, on the task page and in
    the API, names the target's host only."""
    from django.test import Client

    from orchestrator.models import Task
    from orchestrator.roles import api_token_create

    save_changes(Queue.objects.filter(name="finance_director"),
                 webhook_url=target.url + "/T01/B02/s3cr3tpath?token=t0ken")
    Task.objects.filter(pk=approved.task_id).update(status="queued")
    assert run_pipeline(approved.task).status == "completed"

    page = client_for(reviewer_finance).get(f"/tasks/{approved.task_id}/").content.decode()
    api = Client(HTTP_AUTHORIZATION=f"Bearer {api_token_create(user=reviewer_finance)}")
    body = api.get(f"/api/v1/tasks/{approved.task_id}").content.decode()

    assert [post["path"] for post in target.posts] == ["/hook/T01/B02/s3cr3tpath?token=t0ken"]
    host = target.url.removeprefix("http://").split("/")[0]
    for shown in (page, body):
        assert host in shown
        assert "s3cr3tpath" not in shown and "t0ken" not in shown
