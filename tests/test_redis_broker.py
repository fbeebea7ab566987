"""The Redis broker (config/broker.py RedisTransport): kombu's transport with one client object per
channel. Messages published and acknowledged through it arrive and leave as with kombu's own, the
channel builds one client for all of them, and after its pool is rebuilt (a fork, a reconnect) it
stops using the old pool's client."""
from __future__ import annotations

import uuid

import pytest
from django.conf import settings
from kombu import Connection

from config.broker import RedisChannel

pytestmark = pytest.mark.skipif(not settings.CELERY_BROKER_URL.startswith("redis"),
                                reason="needs CELERY_BROKER_URL=redis://")
TRANSPORT = "config.broker:RedisTransport"


@pytest.fixture
def connection():
    with Connection(settings.CELERY_BROKER_URL, transport=TRANSPORT) as conn:
        yield conn


@pytest.fixture
def built(monkeypatch) -> list:
    """Every client object a RedisChannel builds (a spy: the real method still runs)."""
    clients: list = []
    original = RedisChannel._create_client

    def spy(self, asynchronous=False):
        client = original(self, asynchronous=asynchronous)
        clients.append((asynchronous, client))
        return client

    monkeypatch.setattr(RedisChannel, "_create_client", spy)
    return clients


def test_the_settings_use_it_for_a_redis_url():
    assert settings.CELERY_BROKER_TRANSPORT == TRANSPORT


def test_published_and_acknowledged_messages_go_through_one_client(connection, built):
    queue = connection.SimpleQueue(f"steward-test-{uuid.uuid4().hex[:8]}")
    try:
        for number in range(50):
            queue.put({"number": number})
        received, tags = [], []
        for _ in range(50):
            message = queue.get(timeout=5)
            received.append(message.payload["number"])
            tags.append(message.delivery_tag)
            message.ack()
        channel = queue.channel
        with channel.conn_or_acquire() as client:
            # The hash of unacknowledged messages is shared by every queue of the Redis database.
            unacked = [tag for tag, kept in zip(tags, client.hmget(channel.unacked_key, tags)) if kept]

        assert sorted(received) == list(range(50))
        assert unacked == []  # every acknowledgement reached Redis
        assert len([client for asynchronous, client in built if not asynchronous]) == 1
    finally:
        queue.clear()
        queue.close()


def test_a_rebuilt_pool_gets_a_new_client(connection, built):
    queue = connection.SimpleQueue(f"steward-test-{uuid.uuid4().hex[:8]}")
    try:
        queue.put({"before": True})
        channel = queue.channel
        old_pool = channel.pool
        channel._disconnect_pools()  # what kombu does after a fork
        queue.put({"after": True})
        with channel.conn_or_acquire() as client:
            pool = client.connection_pool

        assert [queue.get(timeout=5).payload for _ in range(2)] == [{"before": True}, {"after": True}]
        assert pool is channel.pool and pool is not old_pool
        assert len([client for asynchronous, client in built if not asynchronous]) == 2
    finally:
        queue.clear()
        queue.close()
