"""manage.py submit, add_user and create_api_token, as an integrator or admin runs them."""
from __future__ import annotations

from io import StringIO

import pytest
from django.contrib.auth.models import User
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import Client

from orchestrator.models import Task
from reviews.models import Queue


def run(*args) -> tuple[str, str]:
    out, err = StringIO(), StringIO()
    call_command(*args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


# --- submit ---------------------------------------------------------------------------------


def test_submit_files(db, tmp_path):
    (tmp_path / "a.txt").write_text("INVOICE A\nTotal: $5.00")
    (tmp_path / "b.md").write_text("# Report\nAll good.")

    out, _ = run("submit", str(tmp_path / "a.txt"), str(tmp_path / "b.md"))

    tasks = {t.filename: t for t in Task.objects.all()}
    assert set(tasks) == {"a.txt", "b.md"}
    assert {t.source for t in tasks.values()} == {"cli"}
    assert {t.status for t in tasks.values()} == {"queued"}
    assert f"task {tasks['a.txt'].pk} queued" in out
    assert tasks["a.txt"].content == "INVOICE A\nTotal: $5.00"


def test_submit_refuses_a_bad_file_and_still_submits_the_good_ones(db, tmp_path):
    (tmp_path / "good.txt").write_text("INVOICE G\nTotal: $5.00")
    (tmp_path / "empty.txt").write_text("   ")
    (tmp_path / "word.docx").write_bytes(b"PK\x03\x04")
    err = StringIO()

    with pytest.raises(CommandError) as caught:
        call_command("submit", str(tmp_path / "empty.txt"), str(tmp_path / "good.txt"),
                     str(tmp_path / "word.docx"), stdout=StringIO(), stderr=err)

    assert caught.value.returncode != 0
    message = str(caught.value)
    assert message.startswith("2 of 3 file(s) refused")
    assert "empty.txt" in message and "word.docx" in message and "good.txt" not in message
    assert "empty.txt: refused: The file is empty." in err.getvalue()
    assert "not supported" in err.getvalue()
    assert list(Task.objects.values_list("filename", flat=True)) == ["good.txt"]


def test_submit_expands_folders(db, tmp_path):
    folder = tmp_path / "inbox"
    folder.mkdir()
    (folder / "one.txt").write_text("INVOICE 1\nTotal: $1.00")
    (folder / "two.txt").write_text("INVOICE 2\nTotal: $2.00")
    (folder / ".hidden").write_text("editor swap file")
    (folder / "nested").mkdir()

    run("submit", str(folder))

    assert sorted(Task.objects.values_list("filename", flat=True)) == ["one.txt", "two.txt"]


def test_submit_notes_an_exact_duplicate(db, tmp_path):
    (tmp_path / "a.txt").write_text("INVOICE A\nTotal: $5.00")
    (tmp_path / "copy.txt").write_text("INVOICE A\nTotal: $5.00")

    out, _ = run("submit", str(tmp_path / "a.txt"), str(tmp_path / "copy.txt"))

    first = Task.objects.get(filename="a.txt")
    assert f"(exact duplicate of task {first.pk})" in out
    assert Task.objects.get(filename="copy.txt").duplicate_of == first


def test_submit_a_missing_path_is_an_error(db, tmp_path):
    with pytest.raises(CommandError, match="nope.txt: no such file or folder"):
        run("submit", str(tmp_path / "nope.txt"))
    assert Task.objects.count() == 0


def test_submit_wait_gives_up_at_the_timeout_naming_the_tasks(db, tmp_path):
    (tmp_path / "a.txt").write_text("INVOICE A\nTotal: $5.00")

    with pytest.raises(CommandError) as refused:
        run("submit", str(tmp_path / "a.txt"), "--wait", "--timeout", "0.1")
    # No worker here: the task is still queued, which is said, with where a worker should be.
    task = Task.objects.get()
    assert str(refused.value).startswith(f"Timed out after 0.1 s; not finished: {task.pk} (queued). "
                                         "Queued tasks wait for a Celery worker reading ")


@pytest.mark.worker
def test_submit_wait_says_why_a_document_failed_and_exits_non_zero(start_worker, simulator, tmp_path):
    (tmp_path / "good.txt").write_text("INVOICE G-1\nFrom: Good Supplier\nTotal: $5.00\n")
    (tmp_path / "bad.txt").write_text("INVOICE B-1\nFrom: Bad Supplier\nTotal: $5.00\n[[sim-fault: content_filter]]\n")
    start_worker(simulator)
    out = StringIO()
    # A script running `submit --wait && ...` must not carry on as if all went through.
    with pytest.raises(CommandError, match=r"1 of 2 tasks failed \(dead-lettered: \d+\)"):
        call_command("submit", str(tmp_path / "good.txt"), str(tmp_path / "bad.txt"), "--wait", "--timeout", "60",
                     stdout=out)
    bad = Task.objects.get(filename="bad.txt")
    assert bad.status == "dead_lettered"
    assert (f"task {bad.pk}: dead_lettered at classify: ContentFilter: Blocked by the content filter"
            in out.getvalue())
    good = Task.objects.get(filename="good.txt")
    assert f"task {good.pk}: {good.status}" in out.getvalue() and good.status != "dead_lettered"


# --- add_user -------------------------------------------------------------------------------


def test_add_user_creates_a_reviewer_of_a_queue_with_a_generated_password(db):
    out, _ = run("add_user", "dora", "--role", "reviewer", "--queue", "legal_team")

    user = User.objects.get(username="dora")
    assert list(user.groups.values_list("name", flat=True)) == ["reviewer"]
    assert Queue.objects.get(name="legal_team").reviewers.filter(pk=user.pk).exists()
    assert out.startswith("Created dora (reviewer, queues: legal_team) with password ")
    password = out.strip().rsplit(" ", 1)[1]
    assert user.check_password(password)
    assert user.email == "dora@example.com"
    assert not user.is_staff and not user.is_superuser


def test_add_user_updates_the_role_replacing_the_old_one(reviewer_finance):
    out, _ = run("add_user", "alice", "--role", "operator", "--password", "new-secret")

    reviewer_finance.refresh_from_db()
    assert list(reviewer_finance.groups.values_list("name", flat=True)) == ["operator"]
    assert reviewer_finance.check_password("new-secret")
    assert out.strip() == "Updated alice (operator)"


def test_add_user_keeps_the_password_when_none_is_given(reviewer_finance):
    run("add_user", "alice", "--role", "reviewer", "--queue", "legal_team")

    reviewer_finance.refresh_from_db()
    assert reviewer_finance.check_password("pw-alice")
    assert set(reviewer_finance.review_queues.values_list("name", flat=True)) == {"finance_director", "legal_team"}


def test_add_user_admin_gets_the_admin_site(db):
    run("add_user", "ada", "--role", "admin", "--password", "ada-at-the-engine")

    user = User.objects.get(username="ada")
    assert user.is_staff and user.is_superuser


def test_add_user_demoting_an_admin_removes_admin_site_access(admin_user):
    run("add_user", "adam", "--role", "reviewer")

    admin_user.refresh_from_db()
    assert not admin_user.is_staff and not admin_user.is_superuser
    assert list(admin_user.groups.values_list("name", flat=True)) == ["reviewer"]


def test_add_user_unknown_queue_is_an_error_and_changes_nothing(db):
    with pytest.raises(CommandError, match='Unknown queue "treasury"') as caught:
        run("add_user", "dora", "--role", "reviewer", "--queue", "treasury")

    assert "finance_director" in str(caught.value)  # the known queues are listed
    assert not User.objects.filter(username="dora").exists()


# --- create_api_token -----------------------------------------------------------------------


def test_create_api_token_prints_a_token_that_authenticates(operator):
    out, _ = run("create_api_token", "olga")
    token = out.strip()

    response = Client().get("/api/v1/tasks", HTTP_AUTHORIZATION=f"Bearer {token}")

    assert response.status_code == 200
    assert response.json() == {"results": [], "next": None}


def test_create_api_token_for_a_user_without_a_role_warns(outsider):
    out, err = run("create_api_token", "charlie")

    assert "has no role yet" in err
    response = Client().get("/api/v1/tasks", HTTP_AUTHORIZATION=f"Bearer {out.strip()}")
    assert response.status_code == 403


def test_create_api_token_unknown_user_is_an_error(db):
    with pytest.raises(CommandError, match='No user "nobody"'):
        run("create_api_token", "nobody")


def test_add_user_a_reviewer_turned_operator_leaves_the_queues(reviewer_finance):
    run("add_user", "alice", "--role", "operator")

    assert not reviewer_finance.review_queues.exists()


def test_add_user_an_operator_cannot_be_given_queues(db):
    with pytest.raises(CommandError, match="--queue is for reviewers"):
        run("add_user", "otto", "--role", "operator", "--queue", "legal_team")
    assert not User.objects.filter(username="otto").exists()
