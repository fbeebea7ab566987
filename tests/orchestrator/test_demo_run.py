"""`make demo`, run for real (DEBUG=1, no SECRET_KEY, a fresh var/): its web server shows
Steward's own pages, a wrong address included, serves the static files, and signs people in."""
from __future__ import annotations

import http.cookiejar
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from tests.orchestrator.test_demo import free_port

ROOT = Path(__file__).resolve().parents[2]
READY_S = 180  # a fresh SQLite database to migrate and four processes to start, on a busy machine


@pytest.fixture
def demo(tmp_path):
    """The demo as `make demo` runs it, on free ports, with its own var/ (SQLite, filesystem broker)."""
    port, sim_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items()
           if k not in {"DATABASE_URL", "CELERY_BROKER_URL", "SECRET_KEY", "DEBUG"} and not k.startswith("STEWARD_")}
    env.update(DEBUG="1", STEWARD_VAR_DIR=str(tmp_path / "var"))
    log = tmp_path / "demo.log"
    with open(log, "wb") as out:
        process = subprocess.Popen([sys.executable, "manage.py", "demo", "--port", str(port), "--sim-port",
                                    str(sim_port), "--no-samples"], cwd=ROOT, env=env, stdout=out,
                                   stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + READY_S
        while b"Steward is running at" not in log.read_bytes():
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the demo did not start:\n{log.read_text(errors='replace')[-5000:]}")
            time.sleep(0.5)
        yield f"http://127.0.0.1:{port}"
    finally:
        os.killpg(process.pid, signal.SIGINT)  # Ctrl-C: the demo stops its children
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


def test_the_demo_shows_steward_s_pages_serves_static_files_and_signs_in(demo):
    browser = urllib.request.build_opener(urllib.request.ProxyHandler({}),
                                          urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))

    with pytest.raises(urllib.error.HTTPError) as not_found:
        browser.open(f"{demo}/no-such-page/", timeout=10)
    page = not_found.value.read().decode()
    assert not_found.value.code == 404
    assert "There is nothing here, or nothing you may see." in page
    assert "Using the URLconf" not in page and "no-such-page" not in page  # Django's debug page lists the URLs

    login = browser.open(f"{demo}/login/", timeout=10).read().decode()
    stylesheet = re.search(r'href="(/static/[^"]+\.css)"', login).group(1)
    assert browser.open(f"{demo}{stylesheet}", timeout=10).status == 200

    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', login).group(1)
    form = urllib.parse.urlencode({"csrfmiddlewaretoken": token, "username": "operator",
                                   "password": "steward-operator"}).encode()
    tasks = browser.open(f"{demo}/login/?next=/tasks/", data=form, timeout=10)
    assert tasks.url == f"{demo}/tasks/" and "operator" in tasks.read().decode()
