"""POST and GET /api/v1/tasks with a bearer token, as an integrator would."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client

from orchestrator.models import Task
from orchestrator.roles import api_token_create
from reviews.models import Queue

SAMPLES = Path(__file__).resolve().parents[2] / "orchestrator" / "samples"


def api(user) -> Client:
    return Client(HTTP_AUTHORIZATION=f"Bearer {api_token_create(user=user)}")


def post_json(client: Client, body, **headers):
    return client.post("/api/v1/tasks", data=json.dumps(body), content_type="application/json", headers=headers)


# --- Submitting -----------------------------------------------------------------------------


def test_submit_json_creates_a_queued_task(operator):
    response = post_json(api(operator), {"content": "INVOICE 1\nTotal: $5.00", "filename": "inv.txt",
                                         "external_ref": "erp-1"})

    assert response.status_code == 201
    body = response.json()
    task = Task.objects.get()
    assert body["id"] == task.pk
    assert body["status"] == "queued"
    assert body["url"] == f"http://testserver/api/v1/tasks/{task.pk}"
    assert (task.filename, task.external_ref, task.source, task.submitted_by) == ("inv.txt", "erp-1", "api", operator)


def test_a_created_task_is_named_in_the_location_header(operator):
    """The usual answer to a 201: a client that follows Location polls the task without parsing the body."""
    client = api(operator)
    first = post_json(client, {"content": "INVOICE 3"}, **{"Idempotency-Key": "order-18"})
    again = post_json(client, {"content": "INVOICE 3"}, **{"Idempotency-Key": "order-18"})

    task = Task.objects.get()
    assert first["Location"] == again["Location"] == f"http://testserver/api/v1/tasks/{task.pk}"
    assert client.get(first["Location"]).json()["id"] == task.pk


def test_submit_a_file_as_multipart(admin_user):
    upload = SimpleUploadedFile("mail.eml", (SAMPLES / "email-vendor-bank-change.eml").read_bytes())

    response = api(admin_user).post("/api/v1/tasks", {"file": upload, "external_ref": "mailbox-7"})

    assert response.status_code == 201
    task = Task.objects.get(pk=response.json()["id"])
    assert task.filename == "mail.eml"
    assert task.external_ref == "mailbox-7"
    assert task.content.startswith("From: Maria Lopez")


def test_multipart_without_a_file_is_refused(operator):
    response = api(operator).post("/api/v1/tasks", {"external_ref": "x"})
    assert response.status_code == 400
    assert response.json()["error"] == 'Send the document as the multipart field "file"'


def test_idempotency_key_replay_returns_the_same_task(operator):
    client = api(operator)
    first = post_json(client, {"content": "INVOICE 2"}, **{"Idempotency-Key": "order-17"})
    again = post_json(client, {"content": "INVOICE 2"}, **{"Idempotency-Key": "order-17"})

    assert first.status_code == again.status_code == 201
    assert again.json()["id"] == first.json()["id"]
    assert again["Idempotent-Replayed"] == "true"
    assert "Idempotent-Replayed" not in first
    assert Task.objects.count() == 1


def test_exact_duplicate_is_accepted_and_flagged(operator):
    client = api(operator)
    first = post_json(client, {"content": "INVOICE 3"}).json()
    again = post_json(client, {"content": "INVOICE 3"}).json()

    assert again["id"] != first["id"]
    assert again["duplicate_of"] == first["id"]


@pytest.mark.parametrize("body, error", [
    ({"content": ""}, "The document is empty."),
    ({"content": "  \n "}, "The document is empty."),
    ({}, '"content" (a string) is required'),
    ({"content": 42}, '"content" (a string) is required'),
    ({"content": "x", "filename": 7}, '"filename" and "external_ref" must be strings'),
    ({"content": "x", "filename": 0}, '"filename" and "external_ref" must be strings'),
    ({"content": "x", "filename": False}, '"filename" and "external_ref" must be strings'),
    ({"content": "x", "external_ref": []}, '"filename" and "external_ref" must be strings'),
    ({"content": "x", "external_ref": 0}, '"filename" and "external_ref" must be strings'),
    ([1, 2], "The body must be a JSON object"),
])
def test_bad_submissions_are_refused_with_a_clear_error(operator, body, error):
    response = post_json(api(operator), body)

    assert response.status_code == 400
    assert response.json()["error"] == error
    assert Task.objects.count() == 0


def test_body_that_is_not_json_is_refused(operator):
    response = api(operator).post("/api/v1/tasks", data=b"{not json", content_type="application/json")
    assert response.status_code == 400
    assert response.json()["error"].startswith("The body is not valid JSON")


def test_unreadable_upload_is_refused(operator):
    upload = SimpleUploadedFile("contract.docx", b"PK\x03\x04")
    response = api(operator).post("/api/v1/tasks", {"file": upload})
    assert response.status_code == 400
    assert "not supported" in response.json()["error"]


def test_no_token_is_401_with_a_challenge(db):
    response = Client().post("/api/v1/tasks", data="{}", content_type="application/json")

    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Bearer")
    assert response.json()["error"] == "Missing or invalid bearer token"


def test_wrong_token_is_401(operator):
    response = Client(HTTP_AUTHORIZATION="Bearer stw_not-a-real-token").get("/api/v1/tasks")
    assert response.status_code == 401


def test_a_session_is_not_enough_for_the_api(operator, client_for):
    assert client_for(operator).get("/api/v1/tasks").status_code == 401


def test_reviewer_cannot_submit(reviewer_finance):
    response = post_json(api(reviewer_finance), {"content": "INVOICE 4"})

    assert response.status_code == 403
    assert Task.objects.count() == 0


def test_user_without_a_role_is_refused(outsider):
    assert api(outsider).get("/api/v1/tasks").status_code == 403


def test_wrong_method_is_405(operator):
    response = api(operator).delete("/api/v1/tasks")
    assert response.status_code == 405
    assert response["Allow"] == "GET, HEAD, POST, OPTIONS"


# --- Reading results ------------------------------------------------------------------------


def test_task_detail_after_the_pipeline_shows_results_totals_and_steps(operator, make_task, run_pipeline):
    task = run_pipeline(make_task(content=(SAMPLES / "invoice-northwind-large.txt").read_text()))

    response = api(operator).get(f"/api/v1/tasks/{task.pk}")

    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "awaiting_approval"
    assert body["doc_type"] == "Invoice"
    assert body["confidence"] == pytest.approx(0.97)
    assert body["routed_to"] == "finance_director"
    assert body["fields"]["invoice_number"] == "INV-2024-0892"
    assert body["fields"]["amount"] == 15400.0
    totals = body["totals"]
    assert totals["llm_calls"] == 4  # classify, extract, verify x2
    assert totals["tool_calls"] == 3
    assert totals["input_tokens"] > 0 and totals["output_tokens"] > 0
    assert totals["cached_tokens"] > 0  # verify's second turn reuses its system prompt
    assert float(totals["cost_usd"]) > 0
    assert [s["worker"] for s in body["steps"]] == ["classify", "extract", "verify", "route"]
    assert {s["status"] for s in body["steps"]} == {"succeeded"}
    assert body["steps"][0]["simulated"] is True
    assert sum(s["llm_calls"] for s in body["steps"]) == totals["llm_calls"]
    assert body["approval"]["status"] == "pending"
    assert body["approval"]["queue"] == "finance_director"
    assert body["dead_letter"] is None


def test_unknown_task_is_404(operator):
    response = api(operator).get("/api/v1/tasks/999999")
    assert response.status_code == 404
    assert response.json()["error"] == "Task 999999 not found"


def test_list_filters_by_status(operator, make_task):
    queued = make_task()
    make_task(status="completed")

    response = api(operator).get("/api/v1/tasks?status=queued")

    assert response.status_code == 200
    assert [t["id"] for t in response.json()["results"]] == [queued.pk]


def test_list_with_an_unknown_status_is_400(operator):
    response = api(operator).get("/api/v1/tasks?status=lost")

    assert response.status_code == 400
    assert response.json()["error"].startswith('Unknown status "lost"; it is one of queued, ')
    assert "queued" in response.json()["allowed"]


def test_list_filters_by_doc_type_and_queue(operator, make_task):
    wanted = make_task(doc_type="Invoice", routed_to="finance_director")
    make_task(doc_type="Contract", routed_to="finance_director")
    make_task(doc_type="Invoice", routed_to="legal_team")

    response = api(operator).get("/api/v1/tasks?doc_type=Invoice&queue=finance_director")

    assert [t["id"] for t in response.json()["results"]] == [wanted.pk]


def test_list_with_an_unknown_doc_type_is_400_naming_the_types(operator, make_task):
    make_task(doc_type="Invoice")

    response = api(operator).get("/api/v1/tasks?doc_type=invoice")

    assert response.status_code == 400
    assert response.json() == {"error": 'Unknown doc_type "invoice"; it is one of Invoice, Contract, Report, Email, Other',
                               "allowed": ["Invoice", "Contract", "Report", "Email", "Other"]}


def test_list_with_an_unknown_queue_is_400_naming_every_queue_to_staff(operator):
    response = api(operator).get("/api/v1/tasks?queue=finance")

    assert response.status_code == 400
    assert response.json()["allowed"] == sorted(Queue.objects.values_list("name", flat=True))
    assert response.json()["error"].startswith('Unknown queue "finance"; the queues you may see are ')


def test_a_reviewer_asking_for_another_queue_learns_only_their_own(reviewer_finance):
    """legal_team exists, but not for Alice: she is told what a queue that does not exist gets."""
    client = api(reviewer_finance)

    other, missing = client.get("/api/v1/tasks?queue=legal_team"), client.get("/api/v1/tasks?queue=nowhere")

    assert (other.status_code, missing.status_code) == (400, 400)
    assert other.json() == {"error": 'Unknown queue "legal_team"; the queues you may see are finance_director',
                            "allowed": ["finance_director"]}
    assert missing.json()["allowed"] == ["finance_director"]


def test_list_pages_with_keyset_links_without_gaps_or_repeats(operator, make_task):
    ids = [make_task().pk for _ in range(5)]
    client = api(operator)

    seen, pages = [], 0
    url = "/api/v1/tasks?limit=2"
    while url:
        body = client.get(url).json()
        seen += [t["id"] for t in body["results"]]
        pages += 1
        url = body["next"]
        if url:
            assert url.startswith("http://testserver/api/v1/tasks?")
            assert "limit=2" in url

    assert pages == 3
    assert seen == sorted(ids, reverse=True)  # newest first, each once


def test_pagination_keeps_the_filter(operator, make_task):
    done = [make_task(status="completed").pk for _ in range(3)]
    make_task(status="queued")
    client = api(operator)

    first = client.get("/api/v1/tasks?status=completed&limit=2").json()
    second = client.get(first["next"]).json()

    assert [t["id"] for t in first["results"] + second["results"]] == sorted(done, reverse=True)
    assert second["next"] is None


def test_bad_page_parameters_are_400(operator):
    response = api(operator).get("/api/v1/tasks?limit=many")
    assert response.status_code == 400
    assert response.json()["error"] == "before and limit must be integers"


def test_reviewer_sees_only_tasks_waiting_in_their_queues(reviewer_finance, reviewer_legal, make_task,
                                                          make_approval):
    finance = make_task(status="awaiting_approval")
    make_approval(finance, "finance_director")
    legal = make_task(status="awaiting_approval")
    make_approval(legal, "legal_team")
    unrouted = make_task()
    alice = api(reviewer_finance)

    assert [t["id"] for t in alice.get("/api/v1/tasks").json()["results"]] == [finance.pk]
    assert alice.get(f"/api/v1/tasks/{finance.pk}").status_code == 200
    assert alice.get(f"/api/v1/tasks/{legal.pk}").status_code == 404
    assert alice.get(f"/api/v1/tasks/{unrouted.pk}").status_code == 404
    assert api(reviewer_legal).get(f"/api/v1/tasks/{finance.pk}").status_code == 404


def test_a_body_over_the_size_limit_gets_a_json_413(db, operator, settings):
    import json as _json

    from django.test import Client

    from orchestrator.models import Task
    from orchestrator.roles import api_token_create

    settings.STEWARD_MAX_DOCUMENT_BYTES = 1024
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 2048
    client = Client()
    token = api_token_create(user=operator)

    response = client.post("/api/v1/tasks", data=_json.dumps({"content": "x" * 5000}),
                           content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {token}")

    assert response.status_code == 413
    assert "at most" in response.json()["error"]
    assert Task.objects.count() == 0


def test_a_file_over_the_size_limit_gets_a_413(operator, settings):
    settings.STEWARD_MAX_DOCUMENT_BYTES = 1024
    upload = SimpleUploadedFile("big.txt", b"INVOICE\n" + b"x" * 3000)

    response = api(operator).post("/api/v1/tasks", {"file": upload})

    assert response.status_code == 413
    assert response.json()["error"] == "The file is 3 KB; the limit is 1 KB."
    assert Task.objects.count() == 0


def test_json_content_over_the_document_limit_gets_a_413(operator, settings):
    # The body fits Django's request limit; the document in it does not fit Steward's.
    settings.STEWARD_MAX_DOCUMENT_BYTES = 1024

    response = post_json(api(operator), {"content": "INVOICE\n" + "x" * 3000})

    assert response.status_code == 413
    assert response.json()["error"] == "The document is 3 KB; the limit is 1 KB."
    assert Task.objects.count() == 0


def test_idempotency_key_replay_of_a_multipart_upload(operator):
    client = api(operator)
    data = (SAMPLES / "invoice-acme-small.txt").read_bytes()
    first = client.post("/api/v1/tasks", {"file": SimpleUploadedFile("acme.txt", data)},
                        headers={"Idempotency-Key": "mail-3"})
    again = client.post("/api/v1/tasks", {"file": SimpleUploadedFile("acme.txt", data)},
                        headers={"Idempotency-Key": "mail-3"})

    assert (first.status_code, again.status_code) == (201, 201)
    assert again.json()["id"] == first.json()["id"]
    assert again["Idempotent-Replayed"] == "true"


def test_an_idempotency_key_is_the_submitters_own(operator, admin_user):
    mine = post_json(api(operator), {"content": "INVOICE 11"}, **{"Idempotency-Key": "shared"})
    theirs = post_json(api(admin_user), {"content": "INVOICE 12"}, **{"Idempotency-Key": "shared"})

    assert (mine.status_code, theirs.status_code) == (201, 201)
    assert mine.json()["id"] != theirs.json()["id"]


def test_an_idempotency_key_longer_than_255_characters_is_400(operator):
    # It used to be cut to 255 characters: two long keys sharing those became "the same key",
    # and the second document was silently answered with the first task.
    client = api(operator)
    long_key = "k" * 255

    first = post_json(client, {"content": "INVOICE 13"}, **{"Idempotency-Key": long_key + "-a"})
    second = post_json(client, {"content": "INVOICE 14"}, **{"Idempotency-Key": long_key + "-b"})

    assert (first.status_code, second.status_code) == (400, 400)
    assert first.json()["error"] == "Idempotency-Key is 257 characters long; at most 255 are allowed"
    assert Task.objects.count() == 0
    assert post_json(client, {"content": "INVOICE 15"}, **{"Idempotency-Key": long_key}).status_code == 201


def test_idempotency_key_reused_for_another_document_is_422_and_keeps_both_apart(operator):
    client = api(operator)
    first = post_json(client, {"content": "INVOICE 8", "filename": "inv-8.txt"}, **{"Idempotency-Key": "order-18"})

    other = post_json(client, {"content": "INVOICE 9", "filename": "inv-9.txt"}, **{"Idempotency-Key": "order-18"})

    assert other.status_code == 422
    assert other.json() == {
        "error": 'Idempotency-Key "order-18" was already used for a different document (task '
                 f'{first.json()["id"]}); send a new key with a new document',
        "task_id": first.json()["id"]}
    assert list(Task.objects.values_list("content", flat=True)) == ["INVOICE 8"]


@pytest.mark.parametrize("change", [{"filename": "other.txt"}, {"external_ref": "erp-other"}])
def test_idempotency_key_reused_with_other_metadata_is_422(operator, change):
    client = api(operator)
    body = {"content": "INVOICE 10", "filename": "inv-10.txt", "external_ref": "erp-10"}
    post_json(client, body, **{"Idempotency-Key": "order-19"})

    assert post_json(client, body | change, **{"Idempotency-Key": "order-19"}).status_code == 422
    assert Task.objects.count() == 1



@pytest.mark.parametrize("scheme", ["bearer", "BEARER"])
def test_the_bearer_scheme_is_case_insensitive(operator, scheme):
    # RFC 9110 (11.1): the authentication scheme is case-insensitive; some HTTP clients send "bearer".
    client = Client(HTTP_AUTHORIZATION=f"{scheme} {api_token_create(user=operator)}")
    assert client.get("/api/v1/tasks").status_code == 200


@pytest.mark.parametrize("name", ["filename", "external_ref"])
def test_a_filename_or_external_ref_over_255_characters_is_400_not_cut(operator, name):
    # It used to be cut to 255 characters: an integrator looking its document up by external_ref
    # would not find it.
    response = post_json(api(operator), {"content": "INVOICE 16", name: "r" * 256})

    assert response.status_code == 400
    assert response.json()["error"] == f'"{name}" is 256 characters long; at most 255 are allowed'
    assert Task.objects.count() == 0


def test_a_multipart_external_ref_over_255_characters_is_400(operator):
    upload = SimpleUploadedFile("inv.txt", b"INVOICE 17")
    response = api(operator).post("/api/v1/tasks", {"file": upload, "external_ref": "r" * 300})

    assert response.status_code == 400
    assert response.json()["error"] == '"external_ref" is 300 characters long; at most 255 are allowed'
    assert Task.objects.count() == 0
