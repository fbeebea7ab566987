"""What the server log shows for a refused request: one line, as Django words it, no traceback.
Server errors keep their traceback."""
from __future__ import annotations

import io
import logging

import pytest

pytestmark = pytest.mark.django_db


@pytest.fixture(params=[True, False], ids=["debug", "production"])
def server_log(request, settings, monkeypatch) -> io.StringIO:
    """Every console handler a django.request record reaches, writing here instead of to stderr
    (pytest's own capturing handlers left alone). With DEBUG on, as under runserver, Django's
    console handler is active too."""
    settings.DEBUG = request.param
    out = io.StringIO()
    logger: logging.Logger | None = logging.getLogger("django.request")
    while logger is not None:
        for handler in logger.handlers:
            if type(handler) is logging.StreamHandler:
                monkeypatch.setattr(handler, "stream", out)
        logger = logger.parent if logger.propagate else None
    return out


def test_a_403_is_one_line(server_log, outsider, client_for):
    assert client_for(outsider).get("/charts/").status_code == 403
    lines = server_log.getvalue().splitlines()
    assert len(lines) == 1, server_log.getvalue()
    assert lines[0].endswith("WARNING django.request: Forbidden (Permission denied): /charts/")


def test_a_500_keeps_its_traceback(server_log, operator, client_for, monkeypatch):
    def broken(params):
        raise RuntimeError("the charts broke")

    monkeypatch.setattr("metrics.views.chart_filters", broken)
    client = client_for(operator)
    client.raise_request_exception = False
    assert client.get("/charts/").status_code == 500
    text = server_log.getvalue()
    assert text.count("ERROR django.request: Internal Server Error: /charts/") == 1
    assert text.count("Traceback (most recent call last)") == 1 and "RuntimeError: the charts broke" in text


def test_a_request_for_another_host_is_one_line(server_log, client):
    """Scanners send any Host header: each one refused (400) is a line, not a traceback."""
    response = client.get("/healthz", HTTP_HOST="scanner.example")
    assert response.status_code == 400
    lines = server_log.getvalue().splitlines()
    assert len(lines) == 1, server_log.getvalue()
    assert lines[0].endswith("ERROR django.security.DisallowedHost: Invalid HTTP_HOST header: 'scanner.example'. "
                             "You may need to add 'scanner.example' to ALLOWED_HOSTS.")
