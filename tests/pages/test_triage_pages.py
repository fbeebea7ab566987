"""The triage pages: groups, filters, search, paging, detail and every action, by role."""
from __future__ import annotations

from django.utils import timezone

from orchestrator.models import BulkRetry, DeadLetter, OperatorAction, Step, SweepAction, SweepRun, Task

HX = {"HTTP_HX_REQUEST": "true"}


def test_only_operators_and_admins_get_in(operator, admin_user, reviewer_finance, outsider, client, client_for,
                                          make_task, make_dead_letter):
    letter = make_dead_letter(make_task())
    for url in ("/dead-letters/", f"/dead-letters/{letter.pk}/", "/stuck/"):
        assert client_for(operator).get(url).status_code == 200, url
        assert client_for(admin_user).get(url).status_code == 200, url
        assert client_for(reviewer_finance).get(url).status_code == 403, url
        assert client_for(outsider).get(url).status_code == 403, url
        assert client.get(url)["Location"].startswith("/login/"), url
    for action in ("retry", "edit-retry", "discard", "requeue"):
        assert client_for(reviewer_finance).post(f"/dead-letters/{letter.pk}/{action}").status_code == 403
        assert client_for(operator).get(f"/dead-letters/{letter.pk}/{action}").status_code == 405
        assert client_for(operator).post(f"/dead-letters/999999/{action}").status_code == 404
    assert Task.objects.get().status == "dead_lettered"


def test_groups_by_fingerprint_with_counts_and_first_and_last_seen(operator, client_for, make_task, make_dead_letter):
    for n in range(3):
        make_dead_letter(make_task(), fingerprint="a" * 32, error_type="Timeout", worker="verify",
                         message=f"Gave up after 5 attempts: timed out after {n}s")
    make_dead_letter(make_task(), fingerprint="b" * 32, error_type="BudgetExceeded", worker="verify",
                     message="Budget exceeded, suspected loop: tool calls 41 > 40")
    make_dead_letter(make_task(), status="discarded", fingerprint="c" * 32, error_type="Gone")
    full = client_for(operator).get("/dead-letters/").text
    page = full[full.index('aria-label="Failure groups"'):]
    assert '"open-total">4</span> open' in full and "2 groups of failures" in page
    # The largest group first, with its count and an example message.
    assert page.index("Timeout") < page.index("BudgetExceeded")
    assert '<span class="n">3</span> open' in page and '<span class="n">1</span> open' in page
    assert "timed out after 2s" in page and "First seen" in page and "last seen" in page
    assert "Gone" not in page


def test_a_group_and_filters_narrow_the_list(operator, client_for, make_task, make_dead_letter):
    make_dead_letter(make_task(filename="slow.txt"), fingerprint="a" * 32, error_type="Timeout", worker="verify",
                     doc_type="Invoice", message="timed out")
    make_dead_letter(make_task(filename="loop.txt"), fingerprint="b" * 32, error_type="BudgetExceeded",
                     worker="verify", doc_type="Contract", message="suspected loop")
    client = client_for(operator)
    page = client.get("/dead-letters/", {"fingerprint": "a" * 32}).text
    assert "slow.txt" in page and "loop.txt" not in page and "in this group" in page
    assert "loop.txt" in client.get("/dead-letters/", {"doc_type": "Contract"}).text
    assert "slow.txt" not in client.get("/dead-letters/", {"doc_type": "Contract"}).text
    assert "slow.txt" not in client.get("/dead-letters/", {"error_type": "BudgetExceeded"}).text
    assert "No open dead letters match" in client.get("/dead-letters/", {"queue": "legal_team"}).text


def test_search_is_server_side_and_case_insensitive(operator, client_for, make_task, make_dead_letter):
    make_dead_letter(make_task(filename="a.txt"), message="Connection RESET by peer", fingerprint="a" * 32)
    make_dead_letter(make_task(filename="b.txt"), message="schema still invalid", fingerprint="b" * 32)
    page = client_for(operator).get("/dead-letters/", {"q": "reset"}).text
    assert "a.txt" in page and "b.txt" not in page and '"open-total">1</span> open matching' in page
    partial = client_for(operator).get("/dead-letters/", {"q": "schema"}, **HX).text
    assert "<html" not in partial and 'id="triage-results"' in partial and "b.txt" in partial


def test_keyset_pages_with_htmx_load_more(operator, client_for, make_task, make_dead_letter):
    letters = [make_dead_letter(make_task(filename=f"doc-{n:02}.txt")) for n in range(52)]
    client = client_for(operator)
    page = client.get("/dead-letters/").text
    assert "doc-51.txt" in page and "doc-02.txt" in page and "doc-01.txt" not in page
    assert f"before={letters[2].pk}" in page and "Load more" in page
    more = client.get("/dead-letters/", {"before": letters[2].pk}, **HX).text
    assert "<html" not in more and "doc-01.txt" in more and "doc-00.txt" in more and "doc-02.txt" not in more


def test_content_is_escaped(operator, client_for, make_task, make_dead_letter):
    letter = make_dead_letter(make_task(filename="<b>x</b>.txt"), message="<script>alert(1)</script>")
    client = client_for(operator)
    for url in ("/dead-letters/", f"/dead-letters/{letter.pk}/"):
        page = client.get(url).text
        assert "<script>alert(1)</script>" not in page and "&lt;script&gt;" in page


def test_retry_from_the_list_and_a_second_click(operator, admin_user, client_for, make_task, make_dead_letter):
    task = make_task(current_step="extract")
    letter = make_dead_letter(task)
    response = client_for(operator).post(f"/dead-letters/{letter.pk}/retry", follow=True)
    assert response.redirect_chain == [("/dead-letters/", 302)]
    assert f"Task {task.pk} sent back to its extract step." in response.text
    task.refresh_from_db()
    assert task.status == "queued"
    again = client_for(admin_user).post(f"/dead-letters/{letter.pk}/retry", follow=True)
    assert f"Dead letter {letter.pk} is already retried" in again.text
    letter.refresh_from_db()
    assert letter.resolved_by.username == "olga"
    assert list(OperatorAction.objects.values_list("action", "user__username")) == [("retry", "olga")]


def test_htmx_retry_swaps_the_row(operator, client_for, make_task, make_dead_letter):
    letter = make_dead_letter(make_task(filename="stuck.txt"))
    client = client_for(operator)
    response = client.post(f"/dead-letters/{letter.pk}/retry", **HX)
    assert response.text.lstrip().startswith(f'<tr id="dead-letter-{letter.pk}" class="dl-row dl-retried"')
    assert "sent back to its extract step" in response.text and "<form" not in response.text
    assert "already retried" in client.post(f"/dead-letters/{letter.pk}/retry", **HX).text


def test_retry_from_the_task_page_returns_there(operator, client_for, make_task, make_dead_letter):
    task = make_task()
    letter = make_dead_letter(task)
    response = client_for(operator).post(f"/dead-letters/{letter.pk}/retry", {"next": f"/tasks/{task.pk}/"})
    assert response["Location"] == f"/tasks/{task.pk}/"
    other = make_dead_letter(make_task())
    response = client_for(operator).post(f"/dead-letters/{other.pk}/retry", {"next": "https://evil.example/"})
    assert response["Location"] == "/dead-letters/"


def test_htmx_retry_on_the_task_page_refreshes_the_task(operator, client_for, make_task, make_dead_letter):
    letter = make_dead_letter(make_task())
    response = client_for(operator).post(f"/dead-letters/{letter.pk}/retry", HTTP_HX_TARGET="task-live", **HX)
    assert response.text.lstrip().startswith('<div id="task-live" hx-get=')
    assert "sent back to its extract step" in response.text


def test_detail_shows_traceback_failing_step_attempts_and_timeline(operator, client_for, make_task,
                                                                   make_dead_letter, make_step):
    task = make_task(current_step="extract", doc_type="Invoice")
    make_step(task, "classify", output={"doc_type": "Invoice", "confidence": 0.9})
    make_step(task, "extract", attempt=1, status="failed", error_type="InvalidAnswer", error_message="first try")
    failing = make_step(task, "extract", attempt=2, status="dead_lettered", error_type="InvalidAnswer",
                        error_message="still invalid", input={"doc_type": "Invoice"},
                        output={"raw": "not json {"}, transcript=[{"kind": "response", "content": "RAW ANSWER"}])
    letter = make_dead_letter(task, step=failing, traceback="Traceback: boom at line 7")
    page = client_for(operator).get(f"/dead-letters/{letter.pk}/").text
    for text in ("Traceback: boom at line 7", "The failing step: extract #2", "not json {", "RAW ANSWER",
                 "first try", "still invalid", "Task timeline", "classify", "Edit and retry", "Invoice fields",
                 "Reason (required)", "Requeue as new"):
        assert text in page, text


def test_edit_and_retry_keeps_and_shows_the_original(operator, client_for, make_task, make_dead_letter):
    task = make_task(current_step="verify", doc_type="Invoice", fields={"amount": 9000.0, "counterparty": "Acme"})
    letter = make_dead_letter(task, worker="verify")
    client = client_for(operator)
    response = client.post(f"/dead-letters/{letter.pk}/edit-retry",
                           {"fields": '{"amount": 900.0, "counterparty": "Acme"}'}, follow=True)
    assert f"Task {task.pk} edited and sent back to its verify step." in response.text
    task.refresh_from_db()
    assert task.status == "queued" and task.fields["amount"] == 900.0
    page = client.get(f"/dead-letters/{letter.pk}/").text
    assert "Edited before the retry, by olga" in page and "9000.0" in page and "900.0" in page
    assert "<strong>olga</strong> edit retry" in page  # the audit trail
    # A second submit (double click) changes nothing more.
    again = client.post(f"/dead-letters/{letter.pk}/edit-retry", {"fields": '{"amount": 1.0}'}, follow=True)
    assert "already retried" in again.text
    task.refresh_from_db()
    assert task.fields["amount"] == 900.0


def test_edit_with_bad_json_says_why_and_changes_nothing(operator, client_for, make_task, make_dead_letter):
    task = make_task(current_step="verify", fields={"amount": 5.0})
    letter = make_dead_letter(task, worker="verify")
    response = client_for(operator).post(f"/dead-letters/{letter.pk}/edit-retry", {"fields": "{amount: 1"},
                                         follow=True)
    assert "not valid JSON" in response.text
    letter.refresh_from_db()
    assert letter.status == "open"


def test_discard_needs_a_reason(operator, client_for, make_task, make_dead_letter):
    letter = make_dead_letter(make_task())
    client = client_for(operator)
    assert "A reason is required" in client.post(f"/dead-letters/{letter.pk}/discard", {"reason": " "},
                                                 follow=True).text
    response = client.post(f"/dead-letters/{letter.pk}/discard", {"reason": "test upload"}, follow=True)
    assert "discarded" in response.text and "test upload" in response.text
    letter.refresh_from_db()
    assert letter.status == "discarded" and letter.task.status == "discarded"
    assert OperatorAction.objects.get().detail == {"reason": "test upload"}


def test_requeue_as_new_task(operator, client_for, make_task, make_dead_letter):
    task = make_task(content="INVOICE\nTotal: $5")
    letter = make_dead_letter(task)
    response = client_for(operator).post(f"/dead-letters/{letter.pk}/requeue", follow=True)
    new = Task.objects.exclude(pk=task.pk).get()
    assert f"requeued as task {new.pk}" in response.text
    assert new.status == "queued" and new.content == task.content and new.current_step == "classify"
    task.refresh_from_db()
    assert task.status == "discarded"


def test_bulk_retry_of_a_group_asks_first_then_starts(operator, client_for, make_task, make_dead_letter):
    for _ in range(3):
        make_dead_letter(make_task(), fingerprint="a" * 32)
    other = make_dead_letter(make_task(), fingerprint="b" * 32)
    client = client_for(operator)
    confirm = client.post("/dead-letters/bulk/", {"scope": "group", "fingerprint": "a" * 32})
    assert confirm.status_code == 200 and "<strong>3</strong> open dead letters" in confirm.text
    assert not BulkRetry.objects.exists()
    response = client.post("/dead-letters/bulk/", {"scope": "group", "fingerprint": "a" * 32, "confirm": "1",
                                                   "rate_per_minute": "120"}, follow=True)
    bulk = BulkRetry.objects.get()
    assert response.redirect_chain[-1][0] == f"/dead-letters/bulk/{bulk.pk}/"
    assert bulk.total == 3 and bulk.rate_per_minute == 120 and bulk.created_by.username == "olga"
    assert "Bulk retry" in response.text and "Waiting its turn" in response.text
    other.refresh_from_db()
    assert other.status == "open"


def test_bulk_retry_of_selected_letters(operator, client_for, make_task, make_dead_letter):
    letters = [make_dead_letter(make_task()) for _ in range(3)]
    client = client_for(operator)
    client.post("/dead-letters/bulk/", {"scope": "selected", "ids": [letters[0].pk, letters[2].pk], "confirm": "1"})
    bulk = BulkRetry.objects.get()
    assert sorted(bulk.items.values_list("dead_letter_id", flat=True)) == [letters[0].pk, letters[2].pk]


def test_bulk_retry_refuses_a_pace_out_of_range_and_asks_again(operator, client_for, make_task, make_dead_letter):
    letter = make_dead_letter(make_task())
    client = client_for(operator)
    for pace in ("0", "-5", "100001", "fast"):
        response = client.post("/dead-letters/bulk/", {"scope": "selected", "ids": [letter.pk], "confirm": "1",
                                                       "rate_per_minute": pace})
        assert response.status_code == 400, pace
        assert "The pace must be a whole number of dead letters a minute, from 1 to 100,000." in response.text
        # The same confirmation again, with what was typed, so Olga can correct it.
        assert f'value="{pace}"' in response.text and f'name="ids" value="{letter.pk}"' in response.text
    assert not BulkRetry.objects.exists()


def test_bulk_retry_of_one_letter_speaks_of_one(operator, client_for, make_task, make_dead_letter):
    letter = make_dead_letter(make_task())
    client = client_for(operator)
    confirm = client.post("/dead-letters/bulk/", {"scope": "selected", "ids": [letter.pk]}).text
    assert "<strong>1</strong> open dead letter will be sent back from its failed step," in confirm
    assert "1 selected dead letter<" in confirm
    started = client.post("/dead-letters/bulk/", {"scope": "selected", "ids": [letter.pk], "confirm": "1",
                                                  "rate_per_minute": "60"}, follow=True).text
    assert "started: 1 dead letter at 60 a minute." in started
    assert "1 dead letters" not in started
    two = [make_dead_letter(make_task()) for _ in range(2)]
    confirm = client.post("/dead-letters/bulk/", {"scope": "selected", "ids": [dl.pk for dl in two]}).text
    assert "<strong>2</strong> open dead letters will be sent back from their failed steps," in confirm


def test_bulk_report_polls_while_running_and_controls_work(operator, client_for, make_task, make_dead_letter):
    letter = make_dead_letter(make_task())
    client = client_for(operator)
    client.post("/dead-letters/bulk/", {"scope": "selected", "ids": [letter.pk], "confirm": "1"})
    bulk = BulkRetry.objects.get()
    page = client.get(f"/dead-letters/bulk/{bulk.pk}/").text
    assert 'hx-trigger="every 2s"' in page
    live = client.get(f"/dead-letters/bulk/{bulk.pk}/", **HX).text
    assert live.lstrip().startswith('<div id="bulk-live"')
    assert "Paused" in client.post(f"/dead-letters/bulk/{bulk.pk}/control", {"action": "pause"}, follow=True).text
    twice = client.post(f"/dead-letters/bulk/{bulk.pk}/control", {"action": "pause"}, follow=True).text
    assert "is paused: cannot pause it" in twice
    client.post(f"/dead-letters/bulk/{bulk.pk}/control", {"action": "cancel"})
    bulk.refresh_from_db()
    assert bulk.status == "cancelled"
    assert 'hx-trigger="every 2s"' not in client.get(f"/dead-letters/bulk/{bulk.pk}/").text


def test_stuck_work_shows_owners_and_the_sweepers_actions(operator, client_for, make_task, settings):
    settings.STEWARD_STUCK_AFTER_S = 60
    old = timezone.now() - timezone.timedelta(minutes=10)
    held = make_task(filename="held.txt", status="running", lease_owner="host-a:123:worker",
                     lease_expires_at=timezone.now() - timezone.timedelta(seconds=5), recoveries=2)
    Task.objects.filter(pk=held.pk).update(updated_at=old)
    waiting = make_task(filename="waiting.txt", status="queued", enqueued_at=old)
    make_task(filename="fresh.txt", status="queued", enqueued_at=timezone.now())
    run = SweepRun.objects.create(started_at=timezone.now(), actions_count=1)
    SweepAction.objects.create(sweep=run, task=waiting, action="requeued", reason="no worker picked up its message",
                               step="classify")
    page = client_for(operator).get("/stuck/").text
    assert "held.txt" in page and "waiting.txt" in page and "fresh.txt" not in page
    assert "host-a:123:worker" in page and "expired" in page and "a broker message" in page
    assert "no worker picked up its message" in page and "requeued" in page and "It last ran" in page
    assert Step.objects.count() == 0 and DeadLetter.objects.count() == 0


def test_stuck_work_says_when_the_sweeper_stopped_running(operator, client_for, settings):
    # Beat (or every worker) stopped 20 minutes ago: nothing recovers lost work any more.
    settings.STEWARD_SWEEP_INTERVAL_S = 30
    SweepRun.objects.create(started_at=timezone.now() - timezone.timedelta(minutes=20), actions_count=0)
    page = client_for(operator).get("/stuck/").text
    assert "The sweeper has not run for 20" in page and "every 30 s" in page
    assert "Start <code>celery -A config beat</code>" in page
    SweepRun.objects.create(started_at=timezone.now(), actions_count=0)
    page = client_for(operator).get("/stuck/").text
    assert "has not run" not in page and "It last ran" in page


def test_the_task_page_links_operators_to_triage(operator, reviewer_finance, client_for, make_task, make_dead_letter,
                                                 make_approval):
    task = make_task()
    letter = make_dead_letter(task)
    make_approval(task, "finance_director")
    assert f'href="/dead-letters/{letter.pk}/"' in client_for(operator).get(f"/tasks/{task.pk}/").text
    assert f'href="/dead-letters/{letter.pk}/"' not in client_for(reviewer_finance).get(f"/tasks/{task.pk}/").text


def test_a_retried_letter_says_what_became_of_the_retry(operator, client_for, make_task, make_dead_letter):
    """After a retry the operator comes back to the letter to see whether it worked: the letter
    says where the task is now, or, if it failed again, which dead letter holds it."""
    task = make_task(current_step="classify")
    first = make_dead_letter(task, worker="classify", error_type="ServerError500")
    client = client_for(operator)
    client.post(f"/dead-letters/{first.pk}/retry")
    page = client.get(f"/dead-letters/{first.pk}/").text
    assert "The task now: <strong>Queued</strong>" in page
    second = make_dead_letter(task, worker="classify", error_type="ServerError500")
    page = client.get(f"/dead-letters/{first.pk}/").text
    assert f'It failed again: <a href="/dead-letters/{second.pk}/">dead letter {second.pk}</a>' in page
    assert "Later dead letter <a" in page and "Earlier dead letter" not in page
    page = client.get(f"/dead-letters/{second.pk}/").text
    assert f'Earlier dead letter <a href="/dead-letters/{first.pk}/">{first.pk}</a>' in page
    assert "It failed again" not in page and "Later dead letter" not in page


def test_a_finished_bulk_retry_whose_letters_failed_again_says_so(operator, client_for, make_task, make_dead_letter):
    """All sent back before the first one failed, so the circuit breaker had nothing left to
    pause: the report must not leave a green "Completed" alone over letters that all came back."""
    letters = [make_dead_letter(make_task(), fingerprint="a" * 32) for _ in range(2)]
    client = client_for(operator)
    client.post("/dead-letters/bulk/", {"scope": "selected", "ids": [x.pk for x in letters], "confirm": "1"})
    bulk = BulkRetry.objects.get()
    # What the ticks record once both tasks were dead-lettered again.
    bulk.items.update(status="failed_again")
    BulkRetry.objects.filter(pk=bulk.pk).update(status="completed", enqueued=2, failed_again=2)
    page = client.get(f"/dead-letters/bulk/{bulk.pk}/").text
    assert "None of the 2 sent back went through: all 2 failed again" in page
    assert "open dead letters again" in page
    BulkRetry.objects.filter(pk=bulk.pk).update(succeeded=1, failed_again=1)
    page = client.get(f"/dead-letters/bulk/{bulk.pk}/").text
    assert "1 of the 2 sent back failed again, and is an open dead letter again" in page and "None of" not in page
    BulkRetry.objects.filter(pk=bulk.pk).update(succeeded=2, failed_again=0)
    assert "sent back failed again" not in client.get(f"/dead-letters/bulk/{bulk.pk}/").text



def test_a_bulk_retry_of_a_group_is_named_after_its_failure(operator, client_for, make_task, make_dead_letter):
    """The report's heading said "Group 0469450eb358", a hash nobody recognises."""
    make_dead_letter(make_task(), fingerprint="a" * 32, error_type="RateLimited", worker="classify")
    client = client_for(operator)
    client.post("/dead-letters/bulk/", {"scope": "group", "fingerprint": "a" * 32, "confirm": "1"})
    page = client.get(f"/dead-letters/bulk/{BulkRetry.objects.get().pk}/").text
    assert "<small>Group: RateLimited at classify</small>" in page and "a" * 12 not in page


def test_the_bulk_retry_confirmation_promises_what_the_circuit_breaker_does(operator, client_for, make_task,
                                                                            make_dead_letter):
    """It said "if half of the retried ones fail again, the circuit breaker pauses the retry": a
    small batch is all sent back before the breaker has the outcomes it waits for."""
    make_dead_letter(make_task(), fingerprint="b" * 32, error_type="RateLimited", worker="classify")
    page = client_for(operator).post("/dead-letters/bulk/", {"scope": "group", "fingerprint": "b" * 32}).text
    assert ("Once 5 or more have an outcome, if 50% of the latest 20 failed again, the circuit breaker pauses "
            "what still waits its turn") in page


def test_each_letter_of_a_task_that_failed_twice_lists_only_its_own_attempts(operator, client_for, make_task,
                                                                              make_step, make_dead_letter):
    """Retried, the task failed again at classify: the first letter lists the attempts before the
    retry, the second those after it, not both lists on both pages."""
    task = make_task(current_step="classify")
    before = [make_step(task, "classify", attempt=n, status="failed", error_type="ServerError500",
                        error_message=f"before the retry, try {n}") for n in (1, 2)]
    first = make_dead_letter(task, worker="classify", error_type="ServerError500", step=before[-1])
    client = client_for(operator)
    client.post(f"/dead-letters/{first.pk}/retry")
    after = [make_step(task, "classify", attempt=n, status="failed", error_type="RateLimited",
                       error_message=f"after the retry, try {n}") for n in (3, 4, 5)]
    second = make_dead_letter(task, worker="classify", error_type="RateLimited", step=after[-1])

    def attempts_card(letter) -> str:  # the task's whole timeline stays on the page below it
        return client.get(f"/dead-letters/{letter.pk}/").text.split('aria-label="Attempts"', 1)[1].split("</section>")[0]

    card = attempts_card(first)
    assert "The attempts of classify that led to this dead letter" in card
    assert "before the retry, try 1" in card and "before the retry, try 2" in card
    assert "after the retry" not in card
    card = attempts_card(second)
    assert all(f"after the retry, try {n}" in card for n in (3, 4, 5))
    assert "before the retry" not in card
