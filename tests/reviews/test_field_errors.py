"""A refused decision points at the inputs at fault: each one is marked invalid, described by its own
problem, and the first one has the focus, so a screen-reader user hears what to fix where they are
(not only in a message at the top of the page that nothing reads out)."""
from __future__ import annotations

import re
from html.parser import HTMLParser

from orchestrator.models import Task

from .conftest import HX


class Elements(HTMLParser):
    """Each element with an id: its attributes and its text."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.by_id: dict[str, dict] = {}
        self.open: list[tuple[str, dict]] = []
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        attrs = {name: value if value is not None else "" for name, value in attrs}
        element = {"tag": tag, "attrs": attrs, "text": ""}
        if "id" in attrs:
            self.by_id[attrs["id"]] = element
        if tag not in ("input", "br", "meta", "link", "img"):
            self.open.append((tag, element))

    def handle_endtag(self, tag):
        while self.open:
            if self.open.pop()[0] == tag:
                break

    def handle_data(self, data):
        for _, element in self.open:
            element["text"] += data


def assert_tied(html: str, input_id: str, problem: str) -> None:
    """The input is marked invalid and described by an element that says `problem`."""
    page = Elements(html)
    attrs = page.by_id[input_id]["attrs"]
    assert attrs.get("aria-invalid") == "true", attrs
    described = [page.by_id[i]["text"] for i in attrs.get("aria-describedby", "").split() if i in page.by_id]
    assert any(problem in " ".join(text.split()) for text in described), (attrs, described)


def autofocused(html: str) -> list[str]:
    return [i for i, e in Elements(html).by_id.items() if "autofocus" in e["attrs"]]


def test_a_refused_correction_marks_each_field_at_fault(reviewer_finance, client_for, pending):
    approval = pending()
    Task.objects.filter(pk=approval.task_id).update(fields={
        "invoice_number": "INV-9", "counterparty": "Northwind", "date": "2024-11-05", "amount": 15400.0})
    client = client_for(reviewer_finance)
    form = {"decision": "approve", "field__amount": "-5", "field__date": "31/12/2024",
            "field__invoice_number": "INV-9", "field__counterparty": "Northwind"}

    for headers in ({}, HX):  # without JavaScript: the page again; with HTMX: the item swapped
        response = client.post(f"/reviews/approvals/{approval.pk}/decide", form, **headers)

        assert response.status_code == 400
        assert_tied(response.text, "field-amount", "Amount must be 0 or more")
        assert_tied(response.text, "field-date", 'Date must be a date written as YYYY-MM-DD, not "31/12/2024"')
        assert 'aria-invalid' not in re.search(r'<input[^>]*id="field-counterparty"[^>]*>', response.text).group()
        assert autofocused(response.text) == ["field-date"]  # the first of them, in the form's order
    approval.refresh_from_db()
    assert approval.status == "pending"


def test_a_number_that_is_not_one_is_tied_to_its_field(reviewer_finance, client_for, pending):
    approval = pending()

    response = client_for(reviewer_finance).post(f"/reviews/approvals/{approval.pk}/decide",
                                                 {"decision": "approve", "field__amount": "lots"}, **HX)

    assert response.status_code == 400
    assert_tied(response.text, "field-amount", 'Amount must be a number, not "lots"')


def test_a_rejection_without_a_reason_marks_the_reason(reviewer_finance, client_for, pending):
    approval = pending()

    response = client_for(reviewer_finance).post(f"/reviews/approvals/{approval.pk}/decide",
                                                 {"decision": "reject", "reason": ""}, **HX)

    assert response.status_code == 400
    assert_tied(response.text, "reject-reason", "A rejection needs a reason")
    assert autofocused(response.text) == ["reject-reason"]


def test_the_task_page_ties_its_refusals_to_fields_too(reviewer_finance, client_for, pending):
    approval = pending()
    client = client_for(reviewer_finance)

    refused = client.post(f"/approvals/{approval.pk}/decide", {"decision": "approve", "field__amount": "-5"})
    assert refused.status_code == 400
    assert_tied(refused.text, f"field-{approval.pk}-amount", "Amount must be 0 or more")
    assert autofocused(refused.text) == [f"field-{approval.pk}-amount"]

    no_reason = client.post(f"/approvals/{approval.pk}/decide", {"decision": "reject"}, **HX)
    assert no_reason.status_code == 400
    assert_tied(no_reason.text, f"reject-reason-{approval.pk}", "A rejection needs a reason")


def test_the_email_link_ties_a_missing_reason_to_its_field(reviewer_finance, pending, mailoutbox):
    from django.test import Client

    from reviews.notifications import approval_notify

    approval = pending(notified=False)
    approval_notify(approval_id=approval.pk)
    path = re.search(r"Approve:\n(\S+)", mailoutbox[0].body).group(1).removeprefix("http://127.0.0.1:8000")

    refused = Client().post(path, {"decision": "reject", "reason": ""})

    assert refused.status_code == 400
    assert_tied(refused.text, "link-reason", "A rejection needs a reason")
    assert autofocused(refused.text) == ["link-reason"]
