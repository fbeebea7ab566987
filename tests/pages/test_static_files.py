"""Static files with DEBUG off, as README's production setup serves them: collectstatic once per
deploy, then WhiteNoise serves what it collected (compressed for the browsers that accept it)."""
from __future__ import annotations

import gzip

from django.core.management import call_command
from django.test import Client

from tests.conftest import ROOT


def test_collected_files_are_served_compressed(settings, tmp_path):
    settings.STATIC_ROOT = tmp_path
    call_command("collectstatic", "--noinput", verbosity=0)
    assert (tmp_path / "steward.css.gz").exists()

    response = Client().get("/static/steward.css", HTTP_ACCEPT_ENCODING="gzip")

    assert response.status_code == 200
    assert response["Content-Encoding"] == "gzip"
    body = gzip.decompress(b"".join(response.streaming_content))
    assert body == (ROOT / "static" / "steward.css").read_bytes()


def test_files_not_collected_yet_are_served_from_the_source(settings, tmp_path):
    # A fresh clone, before any collectstatic.
    settings.STATIC_ROOT = tmp_path

    response = Client().get("/static/steward.css")

    assert response.status_code == 200
    assert b"".join(response.streaming_content) == (ROOT / "static" / "steward.css").read_bytes()
