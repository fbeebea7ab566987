"""The dead-letter list and its Retry button."""
from __future__ import annotations

from orchestrator.models import DeadLetter, Task

HX = {"HTTP_HX_REQUEST": "true"}


def test_only_operators_and_admins_see_dead_letters(operator, admin_user, reviewer_finance, outsider, client,
                                                    client_for):
    assert client_for(operator).get("/dead-letters/").status_code == 200
    assert client_for(admin_user).get("/dead-letters/").status_code == 200
    assert client_for(reviewer_finance).get("/dead-letters/").status_code == 403
    assert client_for(outsider).get("/dead-letters/").status_code == 403
    assert client.get("/dead-letters/")["Location"].startswith("/login/")


def test_the_list_shows_open_dead_letters_newest_first(operator, client_for, make_task, make_dead_letter):
    old = make_dead_letter(make_task(filename="old.txt"), error_type="Timeout", message="timed out 5 times")
    new = make_dead_letter(make_task(filename="new.txt"), error_type="BudgetExceeded",
                           message="Budget exceeded, suspected loop: tool calls 41 > 40", worker="verify")
    make_dead_letter(make_task(filename="gone.txt"), status="discarded")
    page = client_for(operator).get("/dead-letters/").text
    assert page.index("new.txt") < page.index("old.txt")
    assert "gone.txt" not in page
    for text in ("BudgetExceeded", "suspected loop", "verify", "Timeout", "2 open",
                 f'href="/tasks/{new.task_id}/"', f'action="/dead-letters/{old.pk}/retry"'):
        assert text in page, text
    assert f'id="dead-letter-{new.pk}"' in page


def test_the_list_pages_with_htmx_load_more(operator, client_for, make_task, make_dead_letter):
    letters = [make_dead_letter(make_task(filename=f"doc-{n:02}.txt")) for n in range(52)]
    client = client_for(operator)
    page = client.get("/dead-letters/").text
    assert "doc-51.txt" in page and "doc-02.txt" in page and "doc-01.txt" not in page
    assert f"before={letters[2].pk}" in page and "Load more" in page
    more = client.get("/dead-letters/", {"before": letters[2].pk}, **HX).text
    assert "<html" not in more and "doc-01.txt" in more and "doc-00.txt" in more and "doc-02.txt" not in more


def test_retry_sends_the_task_back_and_says_so(operator, client_for, make_task, make_dead_letter):
    task = make_task(current_step="extract")
    dead_letter = make_dead_letter(task)
    client = client_for(operator)
    response = client.post(f"/dead-letters/{dead_letter.pk}/retry", follow=True)
    assert response.redirect_chain == [("/dead-letters/", 302)]
    assert f"Task {task.pk} sent back to its extract step." in response.text
    task.refresh_from_db()
    dead_letter.refresh_from_db()
    assert task.status == "queued" and dead_letter.status == "retried"
    assert dead_letter.resolved_by.username == "olga"


def test_a_second_retry_says_already_retried(operator, admin_user, client_for, make_task, make_dead_letter):
    dead_letter = make_dead_letter(make_task())
    client_for(operator).post(f"/dead-letters/{dead_letter.pk}/retry")
    response = client_for(admin_user).post(f"/dead-letters/{dead_letter.pk}/retry", follow=True)
    assert response.status_code == 200
    assert f"Dead letter {dead_letter.pk} is already retried" in response.text
    assert DeadLetter.objects.get().resolved_by.username == "olga"


def test_retry_from_the_task_page_returns_there(operator, client_for, make_task, make_dead_letter):
    task = make_task()
    dead_letter = make_dead_letter(task)
    response = client_for(operator).post(f"/dead-letters/{dead_letter.pk}/retry",
                                         {"next": f"/tasks/{task.pk}/"})
    assert response["Location"] == f"/tasks/{task.pk}/"
    # Never redirect off the site.
    response = client_for(operator).post(f"/dead-letters/{dead_letter.pk}/retry", {"next": "https://evil.example/"})
    assert response["Location"] == "/dead-letters/"


def test_htmx_retry_swaps_the_row(operator, client_for, make_task, make_dead_letter):
    dead_letter = make_dead_letter(make_task(filename="stuck.txt"))
    client = client_for(operator)
    response = client.post(f"/dead-letters/{dead_letter.pk}/retry", **HX)
    assert response.status_code == 200
    assert response.text.lstrip().startswith(f'<tr id="dead-letter-{dead_letter.pk}" class="dl-row dl-retried"')
    assert "sent back to its extract step" in response.text
    assert "Retried" in response.text and "<form" not in response.text
    again = client.post(f"/dead-letters/{dead_letter.pk}/retry", **HX)
    assert again.status_code == 200 and "already retried" in again.text


def test_htmx_retry_on_the_task_page_refreshes_the_task(operator, client_for, make_task, make_dead_letter):
    task = make_task()
    dead_letter = make_dead_letter(task)
    response = client_for(operator).post(f"/dead-letters/{dead_letter.pk}/retry", HTTP_HX_TARGET="task-live", **HX)
    assert response.text.lstrip().startswith('<div id="task-live" hx-get=')  # queued again: polling
    assert "sent back to its extract step" in response.text


def test_retry_is_post_only_and_for_operators(operator, reviewer_finance, client_for, make_task, make_dead_letter):
    dead_letter = make_dead_letter(make_task())
    assert client_for(operator).get(f"/dead-letters/{dead_letter.pk}/retry").status_code == 405
    assert client_for(reviewer_finance).post(f"/dead-letters/{dead_letter.pk}/retry").status_code == 403
    assert client_for(operator).post("/dead-letters/999999/retry").status_code == 404
    assert Task.objects.get().status == "dead_lettered"
