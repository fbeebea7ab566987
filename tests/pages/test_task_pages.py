"""The task list and the task page, as each actor sees them."""
from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

from django.utils import timezone

from orchestrator.models import Task

HX = {"HTTP_HX_REQUEST": "true"}


def finance_task(make_task, make_approval, **fields) -> Task:
    task = make_task(status="awaiting_approval", doc_type="Invoice", routed_to="finance_director",
                     fields={"invoice_number": "INV-9", "counterparty": "Northwind", "amount": 15400.0}, **fields)
    make_approval(task, "finance_director")
    return task


# --- Who sees what ----------------------------------------------------------------------------


def test_anonymous_is_sent_to_login(client, make_task):
    task = make_task()
    for url in ("/", "/tasks/", f"/tasks/{task.pk}/"):
        response = client.get(url)
        assert response.status_code == 302
        assert response["Location"].startswith("/login/?next=")


def test_charlie_without_a_role_gets_403(outsider, client_for, make_task):
    task = make_task()
    client = client_for(outsider)
    for url in ("/", "/tasks/", f"/tasks/{task.pk}/"):
        response = client.get(url)
        assert response.status_code == 403
        assert "Not allowed" in response.text


def test_home_redirects_to_the_task_list(operator, client_for):
    response = client_for(operator).get("/")
    assert response.status_code == 302
    assert response["Location"] == "/tasks/"


def test_home_takes_a_reviewer_to_the_review_inbox(reviewer_finance, client_for):
    response = client_for(reviewer_finance).get("/")
    assert response.status_code == 302
    assert response["Location"] == "/reviews/"


def test_operator_sees_every_task(operator, client_for, make_task, make_approval):
    task = finance_task(make_task, make_approval, filename="northwind.txt")
    other = make_task(filename="unrouted.txt")
    page = client_for(operator).get("/tasks/").text
    assert "northwind.txt" in page and "unrouted.txt" in page
    assert f'href="/tasks/{task.pk}/"' in page and f'href="/tasks/{other.pk}/"' in page


def test_reviewer_sees_only_tasks_of_her_queues(reviewer_finance, client_for, make_task, make_approval):
    finance_task(make_task, make_approval, filename="northwind.txt")
    legal = make_task(filename="globex-contract.txt", doc_type="Contract")
    make_approval(legal, "legal_team")
    make_task(filename="unrouted.txt")
    page = client_for(reviewer_finance).get("/tasks/").text
    assert "northwind.txt" in page
    assert "globex-contract.txt" not in page
    assert "unrouted.txt" not in page


def test_legal_reviewer_gets_404_on_a_finance_task(reviewer_legal, reviewer_finance, client_for, make_task,
                                                   make_approval):
    task = finance_task(make_task, make_approval)
    assert client_for(reviewer_legal).get(f"/tasks/{task.pk}/").status_code == 404
    assert client_for(reviewer_finance).get(f"/tasks/{task.pk}/").status_code == 200


def test_missing_task_is_404(operator, client_for):
    response = client_for(operator).get("/tasks/999999/")
    assert response.status_code == 404
    assert "Not found" in response.text


def test_navigation_follows_the_role(reviewer_finance, operator, admin_user, client_for):
    reviewer_page = client_for(reviewer_finance).get("/tasks/").text
    assert 'href="/tasks/"' in reviewer_page
    assert 'href="/upload/"' not in reviewer_page and 'href="/dead-letters/"' not in reviewer_page
    assert 'href="/admin/"' not in reviewer_page
    operator_page = client_for(operator).get("/tasks/").text
    assert 'href="/upload/"' in operator_page and 'href="/dead-letters/"' in operator_page
    assert 'href="/admin/"' not in operator_page
    admin_page = client_for(admin_user).get("/tasks/").text
    assert 'href="/admin/"' in admin_page
    # Logout is a POST form (Django 6's LogoutView refuses GET).
    assert 'method="post" action="/logout/"' in admin_page
    assert "adam" in admin_page


def test_every_page_says_when_answers_come_from_the_simulator(client, operator, client_for):
    banner = "Simulated model: answers come from the built-in simulator"
    assert banner in client.get("/login/").text
    assert banner in client_for(operator).get("/tasks/").text


def test_the_page_has_no_banner_with_a_real_provider(operator, client_for, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    assert "Simulated model" not in client_for(operator).get("/tasks/").text


# --- Task list --------------------------------------------------------------------------------


def test_task_list_filters_and_counts(operator, client_for, make_task):
    make_task(status="completed", doc_type="Invoice", filename="paid.txt")
    make_task(status="completed", doc_type="Report", filename="q3-report.txt")
    make_task(status="dead_lettered", doc_type="Invoice", filename="broken.txt")
    client = client_for(operator)

    page = client.get("/tasks/", {"status": "completed"}).text
    assert "paid.txt" in page and "q3-report.txt" in page and "broken.txt" not in page
    assert '<span class="n">2</span> completed' in page
    assert '<span class="n">1</span> dead-lettered' in page

    page = client.get("/tasks/", {"status": "completed", "doc_type": "Invoice"}).text
    assert "paid.txt" in page and "q3-report.txt" not in page

    page = client.get("/tasks/", {"queue": "legal_team"}).text
    assert "No tasks match these filters." in page


def test_task_list_pages_by_id_newest_first(operator, client_for, make_task):
    tasks = [make_task(filename=f"file-{n:02}.txt") for n in range(55)]
    client = client_for(operator)

    page = client.get("/tasks/").text
    assert page.index("file-54.txt") < page.index("file-53.txt")
    assert "file-05.txt" in page and "file-04.txt" not in page
    older = f"before={tasks[5].pk}"
    assert f'href="?{older}"' in page and "Load more" in page

    # With htmx, "Load more" fetches only the next rows, to be appended.
    more = client.get("/tasks/", {"before": tasks[5].pk}, **HX)
    assert more.status_code == 200
    assert "<html" not in more.text and "<table" not in more.text
    assert "file-04.txt" in more.text and "file-00.txt" in more.text and "file-05.txt" not in more.text
    assert "Load more" not in more.text

    # Without JavaScript, the same link is a full page of older tasks.
    full = client.get("/tasks/", {"before": tasks[5].pk}).text
    assert "<html" in full and "file-04.txt" in full and "Back to the newest" in full


def test_status_counts_refresh_as_a_partial(operator, client_for, make_task):
    make_task(status="running")
    response = client_for(operator).get("/tasks/", HTTP_HX_TARGET="status-counts", **HX)
    assert response.status_code == 200
    assert response.text.lstrip().startswith('<nav id="status-counts"')
    assert 'hx-trigger="every 5s"' in response.text
    assert '<span class="n">1</span> running' in response.text
    assert "<table" not in response.text


# --- Task page --------------------------------------------------------------------------------


def test_document_content_is_escaped(operator, client_for, make_task, make_step):
    evil = "<script>alert(1)</script>"
    task = make_task(content=f"INVOICE\n{evil}\nTotal: $10.00", filename="<b>x</b>.txt",
                     fields={"counterparty": evil}, findings=[{"kind": "other", "message": evil}],
                     route_reason=evil)
    make_step(task, "extract", output={"counterparty": evil},
              transcript=[{"kind": "request", "model": "m", "messages": [{"role": "user", "content": evil}]},
                          {"kind": "response", "model": "m", "content": evil, "tool_calls": []}])
    page = client_for(operator).get(f"/tasks/{task.pk}/").text
    assert evil not in page
    assert "<b>x</b>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert '<pre class="document" tabindex="0" role="region" aria-label="Document text">INVOICE\n&lt;script&gt;alert(1)&lt;/script&gt;' in page


def test_task_page_shows_results_totals_and_timeline(operator, client_for, make_task, make_step):
    earlier = make_task(filename="first.txt")
    task = make_task(
        status="queued", doc_type="Invoice", confidence=0.93, routed_to="finance_director",
        route_reason="Rule \"Invoice amount > 10,000\" requires approval", duplicate_of=earlier,
        fields={"invoice_number": "INV-1", "amount": 15400.0,
                "line_items": [{"description": "Widget", "quantity": 2, "unit_price": 5.0, "amount": 10.0}]},
        findings=[{"kind": "duplicate", "message": "Possible duplicate of task 1", "source": "check"}],
        llm_calls=4, tool_calls=3, input_tokens=1234, cached_tokens=512, output_tokens=321,
        reasoning_tokens=0, cost_usd=Decimal("0.00123400"), current_step="extract",
    )
    make_step(task, "classify", model="gpt-4o-mini", prompt_version="v1", simulated=True, llm_calls=1,
              input_tokens=600, output_tokens=20, latency_ms=42, output={"doc_type": "Invoice"},
              transcript=[{"kind": "tool_call", "tool": "find_duplicates",
                           "arguments": '{"invoice_number": "INV-1"}', "result": {"matches": []}}])
    make_step(task, "extract", status="failed", error_type="RateLimited", error_message="429 Too Many Requests",
              retry_after_s=2.0, next_attempt_at=timezone.now() + timedelta(seconds=30))
    page = client_for(operator).get(f"/tasks/{task.pk}/").text

    for text in ("Queued", "Invoice", "0.93", "finance_director", "requires approval",
                 f'href="/tasks/{earlier.pk}/"', "exact duplicate of", "1,234", "512", "321", "$0.001234",
                 "INV-1", "Widget", "Possible duplicate of task 1",
                 "classify", "gpt-4o-mini", "prompt v1", "SIMULATED", "42 ms",
                 "RateLimited", "429 Too Many Requests", "Next attempt at", "Retry-After 2 s",
                 "Tool call: find_duplicates", "&quot;invoice_number&quot;: &quot;INV-1&quot;"):
        assert text in page, text
    # Still moving: the live block polls every 2 s.
    assert 'id="task-live" hx-get="/tasks/%d/" hx-trigger="every 2s"' % task.pk in page


def test_task_page_stops_polling_when_a_person_must_act(reviewer_finance, client_for, make_task, make_approval):
    task = finance_task(make_task, make_approval)
    page = client_for(reviewer_finance).get(f"/tasks/{task.pk}/").text
    assert 'id="task-live"' in page
    assert "every 2s" not in page


def test_task_page_partial_for_htmx(operator, client_for, make_task):
    task = make_task(status="running", content="the body of the document")
    response = client_for(operator).get(f"/tasks/{task.pk}/", **HX)
    assert response.status_code == 200
    assert response.text.lstrip().startswith('<div id="task-live"')
    assert "<html" not in response.text
    assert "the body of the document" not in response.text  # the document is not re-sent every 2 s
    assert "Running" in response.text


def test_task_page_shows_the_approval_and_its_forms(reviewer_finance, client_for, make_task, make_approval):
    task = finance_task(make_task, make_approval)
    approval = task.approvals.get()
    approval.reasons = ["Rule \"Invoice amount > 10,000\" requires approval"]
    approval.save()
    page = client_for(reviewer_finance).get(f"/tasks/{task.pk}/").text
    assert f"Act on task {task.pk}" in page
    assert "requires approval" in page
    assert f'action="/approvals/{approval.pk}/decide"' in page
    assert 'name="field__amount" value="15400.00"' in page
    assert 'name="field__counterparty" value="Northwind"' in page
    assert '<option value="wrong-amount">Amount is wrong</option>' in page
    assert 'name="reason" id="reject-reason-%d" required' % approval.pk in page


def test_operator_sees_the_approval_without_forms(operator, client_for, make_task, make_approval):
    task = finance_task(make_task, make_approval)
    page = client_for(operator).get(f"/tasks/{task.pk}/").text
    assert "Pending" in page
    assert "/decide" not in page


def test_decided_approval_shows_who_why_and_corrections(operator, reviewer_finance, client_for, make_task,
                                                        make_approval):
    from reviews.models import RejectionReason

    task = make_task(status="rejected", fields={"amount": 100.0})
    make_approval(task, "finance_director", status="rejected", decided_by=reviewer_finance,
                  decided_at=timezone.now(), rejection_reason=RejectionReason.objects.get(code="wrong-amount"),
                  comment="Amount does not match the PO", corrections={"amount": {"from": 120.0, "to": 100.0}})
    page = client_for(operator).get(f"/tasks/{task.pk}/").text
    for text in ("Rejected", "alice", "Amount is wrong", "Amount does not match the PO", "120.00", "100.00"):
        assert text in page, text


def test_task_page_shows_the_dead_letter_with_retry(operator, reviewer_finance, client_for, make_task,
                                                    make_approval, make_dead_letter):
    task = finance_task(make_task, make_approval)
    dead_letter = make_dead_letter(task, traceback="Traceback: <boom>")
    page = client_for(operator).get(f"/tasks/{task.pk}/").text
    for text in ("SchemaInvalid", "still invalid after 2 re-asks", "Traceback: &lt;boom&gt;", "Attempts",
                 f'action="/dead-letters/{dead_letter.pk}/retry"', "Retry from the extract step"):
        assert text in page, text
    # A reviewer sees what went wrong but has no retry button.
    page = client_for(reviewer_finance).get(f"/tasks/{task.pk}/").text
    assert "SchemaInvalid" in page
    assert "/retry" not in page
