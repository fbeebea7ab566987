"""Passwords follow Django's usual rules wherever one is set: at least 8 characters, not one of
the common ones, not all digits, not like the user's name or address. manage.py add_user refuses
one in Django's words with a failing exit status; the admin's user forms and the password change
page refuse it next to the field; make demo's printed passwords pass."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
from django.contrib.auth.models import User
from django.contrib.auth.password_validation import validate_password
from django.urls import reverse

from orchestrator.management.commands.demo import DEMO_USERS

from .conftest import ROOT, database_url
from .orchestrator.test_commands import run

GOOD = "correct horse battery staple"


def add_user(*args: str) -> subprocess.CompletedProcess:
    """manage.py add_user as an admin runs it, against the test database."""
    env = {**os.environ, "DATABASE_URL": database_url()}
    return subprocess.run([sys.executable, "manage.py", "add_user", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("password, words", [
    ("password", "This password is too common."),
    ("12345678", "This password is entirely numeric."),
    ("dorothea", "The password is too similar to the username."),
    ("pw", "This password is too short. It must contain at least 8 characters."),
])
def test_add_user_refuses_a_weak_password_in_djangos_words(transactional_db, password, words):
    done = add_user("dorothea", "--role", "reviewer", "--queue", "legal_team", "--password", password)

    assert done.returncode != 0
    assert words in done.stderr
    assert not User.objects.filter(username="dorothea").exists()


def test_add_user_keeps_the_old_password_when_the_new_one_is_refused(reviewer_finance):
    with pytest.raises(Exception, match="too common"):
        run("add_user", "alice", "--role", "reviewer", "--password", "password")

    reviewer_finance.refresh_from_db()
    assert reviewer_finance.check_password("pw-alice")


def test_add_user_refuses_a_password_like_the_email_address(db):
    with pytest.raises(Exception, match="too similar to the email address"):
        run("add_user", "dora", "--role", "operator", "--email", "grace.hopper@example.com", "--password",
            "grace.hopper@example.com")


def test_add_user_accepts_a_good_password(db):
    out, _ = run("add_user", "dorothea", "--role", "reviewer", "--queue", "legal_team", "--password", GOOD)

    assert out.startswith("Created dorothea")
    assert User.objects.get(username="dorothea").check_password(GOOD)


def test_the_demo_users_passwords_pass(db):
    for username, _, _, password in DEMO_USERS:
        validate_password(password, User(username=username, email=f"{username}@example.com"))


def test_admin_refuses_a_weak_password_for_a_new_user(admin_user, client_for):
    client = client_for(admin_user)
    page = client.post(reverse("admin:auth_user_add"), {"username": "dorothea", "usable_password": "true",
                                                        "password1": "password", "password2": "password"})

    assert page.status_code == 200 and "This password is too common." in page.text
    assert not User.objects.filter(username="dorothea").exists()


def test_admin_refuses_a_weak_password_when_setting_one(admin_user, reviewer_finance, client_for):
    client = client_for(admin_user)
    page = client.post(reverse("admin:auth_user_password_change", args=[reviewer_finance.pk]),
                       {"usable_password": "true", "password1": "12345678", "password2": "12345678"})

    assert page.status_code == 200 and "This password is entirely numeric." in page.text
    reviewer_finance.refresh_from_db()
    assert reviewer_finance.check_password("pw-alice")


def test_changing_ones_own_password_refuses_a_weak_one(admin_user, client_for):
    client = client_for(admin_user)
    page = client.post(reverse("admin:password_change"), {"old_password": "pw-adam", "new_password1": "adam@example.com",
                                                          "new_password2": "adam@example.com"})

    assert page.status_code == 200 and "The password is too similar to the email address." in page.text
    admin_user.refresh_from_db()
    assert admin_user.check_password("pw-adam")
