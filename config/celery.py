"""The Celery app. Configuration lives in Django settings under the CELERY_ prefix."""
import ctypes
import os

from celery import Celery
from celery.signals import celeryd_after_setup, celeryd_init

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


@celeryd_after_setup.connect
def _consume_the_control_queue(sender, instance, **kwargs) -> None:
    """Every worker takes the control messages (STEWARD_CONTROL_QUEUE: the sweeps, bulk retries'
    ticks) besides the queues it was given, with -Q too: a worker set up for one kind of work
    keeps the sweeper running, and nobody has to remember to name the control queue."""
    from django.conf import settings

    instance.app.amqp.queues.select_add(settings.STEWARD_CONTROL_QUEUE)
