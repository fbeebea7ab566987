"""Settings of the Celery processes the tests start (CeleryProcess in tests/conftest.py):
Steward's own, except how often a worker looks for messages on the filesystem broker.

kombu's filesystem transport looks at its folder once a second, and also waits that second
whenever all of a worker's threads are busy before it takes the next message: a worker then
takes at most about one message per thread a second, however fast the steps run. Fine for `make
demo`; but the SQLite run sends thousands of messages through it (tests/integration/test_faults.py
took 157 s there, 70 s on Redis, which does not poll). Test workers look every 0.1 s. Redis,
the production broker, has no polling interval and is unaffected.
"""
from config import settings as steward

globals().update({name: value for name, value in vars(steward).items() if name.isupper()})

if steward.CELERY_BROKER_URL.startswith("filesystem://"):
    CELERY_BROKER_TRANSPORT_OPTIONS = {**steward.CELERY_BROKER_TRANSPORT_OPTIONS, "polling_interval": 0.1}
