"""Edit-and-retry, discard, requeue: what the pipeline does afterwards, and invariant 2."""
from __future__ import annotations

import pytest
from django.utils import timezone

from orchestrator.models import DeadLetter, OperatorAction, Step, Task
from orchestrator.services import (
    NotAllowed, dead_letter_create, dead_letter_discard, dead_letter_edit_retry, dead_letter_requeue,
    dead_letter_retry, task_submit,
)

pytestmark = pytest.mark.django_db

INVOICE = """INVOICE
Invoice Number: INV-7
From: Acme Supplies Ltd
Date: 2024-11-02
- Paper  10 x $5.00 = $50.00
Total: $50.00
"""


def failed_at(step_name: str, *, content: str = INVOICE, **task_fields) -> DeadLetter:
    """A task whose steps before `step_name` succeeded and which was dead-lettered at it."""
    task = task_submit(content=content, filename="inv.txt")[0]
    now = timezone.now()
    order = ["classify", "extract", "verify", "route", "act"]
    for name in order[: order.index(step_name)]:
        Step.objects.create(task=task, worker=name, attempt=1, status="succeeded", started_at=now)
    failing = Step.objects.create(task=task, worker=step_name, attempt=1, status="dead_lettered", started_at=now,
                                  error_type="InvalidAnswer", error_message="still invalid")
    Task.objects.filter(pk=task.pk).update(status="dead_lettered", current_step=step_name, step_attempts=3,
                                           **task_fields)
    task.refresh_from_db()
    return dead_letter_create(task=task, step=failing, error_type="InvalidAnswer", message="still invalid")


def test_dead_letters_carry_doc_type_and_queue_for_triage(make_task):
    task = make_task(doc_type="Invoice", routed_to="finance_director", status="dead_lettered")
    letter = dead_letter_create(task=task, step=None, error_type="Orphaned", message="lost 5 times")
    assert (letter.doc_type, letter.queue) == ("Invoice", "finance_director")


def test_extract_given_by_a_person_counts_as_the_step_and_is_never_run_by_the_model(operator, run_pipeline,
                                                                                      simulator):
    letter = failed_at("extract", doc_type="Invoice", confidence=0.97)
    fields = {"invoice_number": "INV-7", "counterparty": "Acme Supplies Ltd", "amount": 50.0,
              "date": "2024-11-02", "currency": "USD", "line_items": []}
    dead_letter_edit_retry(dead_letter_id=letter.pk, user=operator, fields=fields)
    task = Task.objects.get(pk=letter.task_id)
    assert task.status == "queued" and task.current_step == "verify" and task.fields["amount"] == 50.0

    task = run_pipeline(task)
    assert task.status in ("completed", "awaiting_approval")
    extract = list(task.steps.filter(worker="extract").values_list("attempt", "status", "prompt_version"))
    assert extract == [(1, "dead_lettered", ""), (2, "succeeded", "operator")]
    # The model was never asked to extract again; verify checked the person's fields.
    assert "extract" not in simulator.stats()["by_worker"]
    assert task.steps.get(worker="route").input["fields"]["amount"] == 50.0
    letter.refresh_from_db()
    assert letter.status == "retried" and letter.edits["by"] == "olga" and letter.edits["step"] == "extract"
    assert letter.edits["fields"]["amount"] == {"from": None, "to": 50.0}


def test_extract_fields_must_fit_the_schema(operator):
    letter = failed_at("extract", doc_type="Invoice")
    with pytest.raises(NotAllowed, match="do not fit the Invoice schema"):
        dead_letter_edit_retry(dead_letter_id=letter.pk, user=operator, fields={"amount": -3})
    letter.refresh_from_db()
    assert letter.status == "open" and Task.objects.get().status == "dead_lettered"


def test_classify_given_by_a_person_moves_on_to_extract(operator):
    letter = failed_at("classify")
    with pytest.raises(NotAllowed, match="Choose the document type"):
        dead_letter_edit_retry(dead_letter_id=letter.pk, user=operator, doc_type="Nonsense")
    dead_letter_edit_retry(dead_letter_id=letter.pk, user=operator, doc_type="Contract")
    task = Task.objects.get()
    assert (task.doc_type, task.current_step, task.status) == ("Contract", "extract", "queued")
    assert task.steps.get(worker="classify", status="succeeded").output["provided_by"] == "olga"


def test_edited_fields_are_what_verify_and_route_see(operator, run_pipeline):
    letter = failed_at("verify", doc_type="Invoice", confidence=0.97,
                       fields={"invoice_number": "INV-7", "counterparty": "Acme Supplies Ltd", "amount": 5000.0,
                               "currency": "USD", "date": "2024-11-02", "line_items": []})
    dead_letter_edit_retry(dead_letter_id=letter.pk, user=operator,
                           fields={**Task.objects.get().fields, "amount": 50.0})
    task = run_pipeline(Task.objects.get())
    assert task.fields["amount"] == 50.0
    assert task.steps.get(worker="verify", status="succeeded").input["fields"]["amount"] == 50.0
    assert task.steps.get(worker="route").input["fields"]["amount"] == 50.0
    # The original is kept.
    assert DeadLetter.objects.get().edits["fields"]["amount"] == {"from": 5000.0, "to": 50.0}
    assert OperatorAction.objects.get().action == "edit_retry"


@pytest.mark.parametrize("step_name", ["route", "act"])
def test_no_edit_after_verify_passed(operator, step_name):
    letter = failed_at(step_name, doc_type="Invoice", fields={"amount": 5.0})
    with pytest.raises(NotAllowed, match="after verify has passed"):
        dead_letter_edit_retry(dead_letter_id=letter.pk, user=operator, fields={"amount": 1.0})
    assert Task.objects.get().fields == {"amount": 5.0}


def test_an_unchanged_edit_is_refused(operator):
    letter = failed_at("verify", fields={"amount": 5.0})
    with pytest.raises(NotAllowed, match="Nothing was changed"):
        dead_letter_edit_retry(dead_letter_id=letter.pk, user=operator, fields={"amount": 5.0})


def test_every_action_happens_once(operator, admin_user):
    letter = failed_at("verify", fields={"amount": 5.0})
    dead_letter_retry(dead_letter_id=letter.pk, user=operator)
    for action in (lambda: dead_letter_retry(dead_letter_id=letter.pk, user=admin_user),
                   lambda: dead_letter_edit_retry(dead_letter_id=letter.pk, user=admin_user, fields={"amount": 1.0}),
                   lambda: dead_letter_discard(dead_letter_id=letter.pk, user=admin_user, reason="x"),
                   lambda: dead_letter_requeue(dead_letter_id=letter.pk, user=admin_user)):
        with pytest.raises(NotAllowed):
            action()
    assert Task.objects.count() == 1 and Task.objects.get().fields == {"amount": 5.0}
    assert list(OperatorAction.objects.values_list("action", flat=True)) == ["retry"]


def test_requeue_starts_a_fresh_task_and_closes_the_old(operator):
    letter = failed_at("verify", fields={"amount": 5.0})
    letter, new = dead_letter_requeue(dead_letter_id=letter.pk, user=operator)
    assert letter.status == "discarded" and letter.resolution_note == f"Requeued as task {new.pk}"
    assert new.status == "queued" and new.current_step == "classify" and new.steps.count() == 0
    assert Task.objects.get(pk=letter.task_id).status == "discarded"


def test_group_counts_follow_every_change_and_match_a_recount(operator, make_task):
    from orchestrator.models import DeadLetterGroup
    from orchestrator.services import bulk_retry_advance, bulk_retry_create, dead_letter_groups_rebuild

    def letter(n: int) -> DeadLetter:
        task = make_task(status="dead_lettered", current_step="verify")
        return dead_letter_create(task=task, step=None, error_type="Timeout", message=f"timed out after {n} s")

    letters = [letter(n) for n in range(6)]
    group = DeadLetterGroup.objects.get()
    assert group.open_count == 6 and group.example_id == letters[-1].pk and group.message == "timed out after 5 s"
    assert group.first_seen == letters[0].created_at and group.last_seen == letters[-1].created_at
    dead_letter_retry(dead_letter_id=letters[0].pk, user=operator)
    dead_letter_discard(dead_letter_id=letters[1].pk, user=operator, reason="junk")
    dead_letter_requeue(dead_letter_id=letters[2].pk, user=operator)
    bulk = bulk_retry_create(user=operator, dead_letter_ids=[letters[3].pk, letters[4].pk], description="b",
                             selection={}, rate_per_minute=6000)
    bulk_retry_advance(bulk_id=bulk.pk)
    assert DeadLetterGroup.objects.get().open_count == 1
    dead_letter_groups_rebuild()
    assert DeadLetterGroup.objects.get().open_count == 1
