"""Logging in: a wrong password is said where the person is, and a password cannot be guessed at
the speed of the network, however many web processes answer."""
from __future__ import annotations

import os
import re
import subprocess
import sys
import time

import pytest
from django.core.cache import cache
from django.test import Client

from tests.conftest import ROOT, database_url

WRONG = "Please enter a correct username and password"
THROTTLED = "Too many failed logins for this user name: try again in a few minutes."


def log_in(path: str, username: str, password: str):
    client = Client()
    response = client.post(path, {"username": username, "password": password})
    return response, client


@pytest.mark.parametrize("path", ["/login/", "/admin/login/"])
def test_after_ten_wrong_passwords_even_the_right_one_waits(path, admin_user, reviewer_finance, settings):
    settings.STEWARD_LOGIN_LOCKOUT_S = 2
    for _ in range(10):
        response, _ = log_in(path, "adam", "not-the-password")
        assert response.status_code == 200 and "correct username and password" in response.text

    response, client = log_in(path, "adam", "pw-adam")
    assert response.status_code == 200
    assert "Too many failed logins for this user name: try again in a few minutes." in response.text
    assert "_auth_user_id" not in client.session

    # Another user logs in as usual; Adam again once the wait is over.
    assert log_in(path if path == "/login/" else "/login/", "alice", "pw-alice")[0].status_code == 302
    time.sleep(2.1)
    response, client = log_in(path, "adam", "pw-adam")
    assert response.status_code == 302 and client.session["_auth_user_id"] == str(admin_user.pk)


def test_a_user_name_that_does_not_exist_is_counted_the_same(db):
    for _ in range(10):
        log_in("/login/", "nobody", "guess")
    response, _ = log_in("/login/", "NOBODY", "guess")
    assert "Too many failed logins for this user name" in response.text


def test_a_wrong_password_is_tied_to_the_fields_and_announced(reviewer_finance):
    page = Client().post("/login/", {"username": "alice", "password": "not her password"})

    assert page.status_code == 200
    error = re.search(r'<p[^>]*id="login-error"[^>]*>(.*?)</p>', page.text, re.S)
    assert error and "Please enter a correct username and password" in error.group(1)
    assert 'role="alert"' in error.group(0)
    for field in ("id_username", "id_password"):
        tag = re.search(rf'<input[^>]*id="{field}"[^>]*>', page.text).group(0)
        assert 'aria-invalid="true"' in tag and 'aria-describedby="login-error"' in tag, tag
    # What Alice typed stays, and the focus is where she corrects it.
    assert re.search(r'<input[^>]*id="id_username"[^>]*autofocus[^>]*value="alice"', page.text)


def test_the_first_visit_has_no_error_marks(db):
    page = Client().get("/login/")

    assert "aria-invalid" not in page.text and "login-error" not in page.text


def test_the_count_outlives_a_process_memory(admin_user):
    for _ in range(10):
        log_in("/login/", "adam", "not-the-password")
    cache.clear()  # what another web process (or this one, restarted) starts with

    response, client = log_in("/login/", "adam", "pw-adam")
    assert THROTTLED in response.text
    assert "_auth_user_id" not in client.session


def test_an_empty_password_does_not_wipe_the_count(admin_user):
    # A form sent without a password checks none: it must not count as a success.
    for _ in range(9):
        log_in("/login/", "adam", "not-the-password")
    response, _ = log_in("/login/", "adam", "")
    assert response.status_code == 200 and "Please correct the errors below." in response.text
    log_in("/login/", "adam", "not-the-password")

    response, _ = log_in("/login/", "adam", "pw-adam")
    assert THROTTLED in response.text


# Another web process (as under gunicorn, or on another machine): ten wrong passwords for Adam,
# once it is ready, so that its tries and this process's come in together.
OTHER_PROCESS = ("import django; django.setup(); from django.test import Client; Client().get('/login/'); "
                 "print('ready', flush=True); "
                 "answers = [Client().post('/login/', {'username': 'adam', 'password': 'guess'}).text "
                 "for _ in range(10)]; "
                 f"print(sum({WRONG!r} in a for a in answers), sum({THROTTLED!r} in a for a in answers))")


def test_two_web_processes_together_check_no_more_passwords_than_the_limit(transactional_db, admin_user):
    env = dict(os.environ, DJANGO_SETTINGS_MODULE="config.settings", DATABASE_URL=database_url(),
               ALLOWED_HOSTS="testserver", DEBUG="0")
    other = subprocess.Popen([sys.executable, "-c", OTHER_PROCESS], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    assert other.stdout.readline() == "ready\n", other.communicate(timeout=60)[1]
    here = [log_in("/login/", "adam", "not-the-password")[0].text for _ in range(10)]
    out, err = other.communicate(timeout=120)
    assert other.returncode == 0, err
    checked_there, refused_there = map(int, out.split())  # each answer from that process

    checked_here = sum(WRONG in page for page in here)
    assert checked_here + checked_there == 10
    assert sum(THROTTLED in page for page in here) + refused_there == 10
    response, client = log_in("/login/", "adam", "pw-adam")
    assert THROTTLED in response.text and "_auth_user_id" not in client.session


def test_the_sweeper_deletes_the_counts_whose_wait_is_over(admin_user, reviewer_finance, settings):
    from datetime import timedelta

    from orchestrator.models import LoginFailure
    from orchestrator.sweeper import sweep

    settings.STEWARD_LOGIN_LOCKOUT_S = 60
    log_in("/login/", "adam", "not-the-password")
    log_in("/login/", "alice", "not-her-password")
    adams, alices = LoginFailure.objects.order_by("id")
    adams.first_failure_at -= timedelta(seconds=61)
    adams.save()

    sweep()

    assert list(LoginFailure.objects.all()) == [alices]


def test_the_sweeper_deletes_the_sessions_that_expired(admin_user, reviewer_finance):
    from datetime import timedelta

    from django.contrib.sessions.models import Session
    from django.utils import timezone

    from orchestrator.sweeper import sweep

    _, adams = log_in("/login/", "adam", "pw-adam")
    _, alices = log_in("/login/", "alice", "pw-alice")
    Session.objects.filter(session_key=adams.session.session_key).update(
        expire_date=timezone.now() - timedelta(minutes=1))

    sweep()

    assert list(Session.objects.values_list("session_key", flat=True)) == [alices.session.session_key]
    assert alices.get("/reviews/").status_code == 200


def test_expired_sessions_are_looked_for_once_an_hour_per_process(admin_user, reviewer_finance):
    from datetime import timedelta

    from django.contrib.sessions.models import Session
    from django.utils import timezone

    from orchestrator.sweeper import sweep

    sweep()
    _, adams = log_in("/login/", "adam", "pw-adam")
    Session.objects.update(expire_date=timezone.now() - timedelta(minutes=1))

    sweep()  # a sweep every STEWARD_SWEEP_INTERVAL_S (30 s): the session table is not searched each time

    assert Session.objects.filter(session_key=adams.session.session_key).exists()


def test_a_session_lasts_a_working_day_not_two_weeks(reviewer_finance):
    from datetime import timedelta

    from django.contrib.sessions.models import Session
    from django.utils import timezone

    response, client = log_in("/login/", "alice", "pw-alice")

    assert response.status_code == 302
    assert response.cookies["sessionid"]["max-age"] == 12 * 3600
    stored = Session.objects.get(session_key=client.session.session_key)
    assert abs(stored.expire_date - (timezone.now() + timedelta(hours=12))) < timedelta(minutes=1)
    # Not a cookie for this browser run only: reviewers open approvals from their emails in new windows.
    assert response.cookies["sessionid"]["expires"]
