"""The Celery app. Configuration lives in Django settings under the CELERY_ prefix."""
import ctypes
import os

from celery import Celery
from celery.signals import celeryd_init

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

app = Celery("steward")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()

# mallopt(3)'s parameter number for the most arenas glibc may create.
M_ARENA_MAX = -8


def limit_malloc_arenas(arenas: int) -> bool:
    """Cap glibc's malloc arenas for this process (settings.STEWARD_WORKER_MALLOC_ARENAS: why).
    Only arenas created afterwards are affected, so call it before the pool's threads start.
    False where it does not apply: 0 asked for, or a C library without glibc's mallopt."""
    if arenas <= 0:
        return False
    mallopt = getattr(ctypes.CDLL(None), "mallopt", None)
    return bool(mallopt and mallopt(M_ARENA_MAX, arenas) == 1)


@celeryd_init.connect
def _before_the_pool_starts(**kwargs) -> None:
    from django.conf import settings

    limit_malloc_arenas(settings.STEWARD_WORKER_MALLOC_ARENAS)
