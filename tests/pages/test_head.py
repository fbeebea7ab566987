"""HEAD, which uptime monitors and link checkers send, is answered like GET on every page."""
from __future__ import annotations

import pytest

from orchestrator.models import BulkRetry


@pytest.fixture
def pages(make_task, make_dead_letter, operator) -> list[str]:
    task = make_task(status="dead_lettered")
    letter = make_dead_letter(task)
    bulk = BulkRetry.objects.create(created_by=operator, description="Group: SchemaInvalid at extract")
    return ["/tasks/", f"/tasks/{task.pk}/", "/dead-letters/", f"/dead-letters/{letter.pk}/",
            f"/dead-letters/bulk/{bulk.pk}/", "/stuck/", "/charts/", "/charts/completion.csv"]


def test_an_operator_can_head_every_page_they_can_get(operator, client_for, pages):
    client = client_for(operator)
    for url in pages:
        got, headed = client.get(url), client.head(url)
        assert got.status_code == 200, url
        assert (headed.status_code, headed["Content-Type"], headed.content) == (200, got["Content-Type"], b""), url


def test_head_still_needs_the_role(outsider, client_for, pages):
    client = client_for(outsider)
    for url in pages[2:]:
        assert client.head(url).status_code in (403, 404), url
