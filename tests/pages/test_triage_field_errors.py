"""Edit-and-retry and discard refused: the page comes back with what Olga typed, the problem next to
the input at fault (marked invalid, described by it) and the focus there; not a redirect to a page
that starts over from the original fields with the reason in a message at the top."""
from __future__ import annotations

from tests.reviews.test_field_errors import Elements, assert_tied, autofocused


def test_fields_that_are_not_json_come_back_as_typed_and_tied(operator, client_for, make_task, make_dead_letter):
    task = make_task(current_step="verify", doc_type="Invoice", fields={"amount": 5.0, "counterparty": "Acme"})
    letter = make_dead_letter(task, worker="verify")
    typed = '{"amount": 50.0, "counterparty": "Acme" '  # the closing brace forgotten

    response = client_for(operator).post(f"/dead-letters/{letter.pk}/edit-retry", {"fields": typed})

    assert response.status_code == 400
    assert_tied(response.text, "id_fields", "The fields are not valid JSON")
    assert Elements(response.text).by_id["id_fields"]["text"] == typed
    assert autofocused(response.text) == ["id_fields"]
    letter.refresh_from_db()
    assert letter.status == "open"


def test_fields_that_do_not_fit_the_schema_are_tied_too(operator, client_for, make_task, make_dead_letter):
    task = make_task(current_step="extract", doc_type="Invoice")  # extract failed: Olga gives the fields
    letter = make_dead_letter(task, worker="extract")

    response = client_for(operator).post(f"/dead-letters/{letter.pk}/edit-retry",
                                         {"fields": '{"amount": -1, "counterparty": "Acme"}'})

    assert response.status_code == 400
    assert_tied(response.text, "id_fields", "Amount must be 0 or more")


def test_a_missing_document_type_is_tied_to_its_select(operator, client_for, make_task, make_dead_letter):
    letter = make_dead_letter(make_task(current_step="classify"), worker="classify")

    response = client_for(operator).post(f"/dead-letters/{letter.pk}/edit-retry", {"doc_type": ""})

    assert response.status_code == 400
    assert_tied(response.text, "id_doc_type", "Choose the document type")
    assert autofocused(response.text) == ["id_doc_type"]


def test_a_discard_without_a_reason_is_tied_to_the_reason(operator, client_for, make_task, make_dead_letter):
    letter = make_dead_letter(make_task())

    response = client_for(operator).post(f"/dead-letters/{letter.pk}/discard", {"reason": " "})

    assert response.status_code == 400
    assert_tied(response.text, "id_reason", "A reason is required to discard a task")
    assert autofocused(response.text) == ["id_reason"]
    letter.refresh_from_db()
    assert letter.status == "open"
