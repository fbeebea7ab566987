"""Logging in: a wrong password is said where the person is, and a password cannot be guessed at
the speed of the network."""
from __future__ import annotations

import re
import time

import pytest
from django.core.cache import cache
from django.test import Client


@pytest.fixture(autouse=True)
def no_earlier_failures():
    cache.clear()
    yield
    cache.clear()


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
