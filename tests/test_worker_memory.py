"""A worker caps glibc's malloc arenas as it starts, so a threads pool does not creep up in memory."""
from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# In a fresh process: what a Celery worker does as it starts (the celeryd_init signal), then eight
# threads allocating at once, as a busy threads pool does; prints the arenas glibc ended up with.
PROBE = """
import ctypes, tempfile, threading
import django
django.setup()
from celery.signals import celeryd_init
import config.celery
celeryd_init.send(sender="probe@host", instance=None, conf=config.celery.app.conf, options={})
together = threading.Barrier(8)
def busy():
    together.wait()
    kept = [bytearray(4096) for _ in range(200)]  # above pymalloc's limit: glibc's malloc
    together.wait()
threads = [threading.Thread(target=busy) for _ in range(8)]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
libc = ctypes.CDLL(None)
libc.fopen.restype = ctypes.c_void_p
with tempfile.NamedTemporaryFile(suffix=".xml") as report:
    stream = ctypes.c_void_p(libc.fopen(report.name.encode(), b"w"))
    libc.malloc_info(0, stream)
    libc.fclose(stream)
    print(open(report.name).read().count("<heap nr="))
"""

pytestmark = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="malloc arenas are glibc's")


def arenas_in_a_started_worker(**env: str) -> int:
    result = subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, capture_output=True, text=True, timeout=60,
                            env={**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings", **env})
    assert result.returncode == 0, result.stderr
    return int(result.stdout.split()[-1])


def test_a_worker_allocates_from_at_most_two_arenas():
    assert arenas_in_a_started_worker() <= 2


def test_zero_leaves_glibc_an_arena_per_busy_thread():
    assert arenas_in_a_started_worker(STEWARD_WORKER_MALLOC_ARENAS="0") > 2
