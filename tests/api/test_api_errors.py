"""Every answer under /api/v1/ is JSON {"error": ...}, whatever went wrong: an integrator's client
parses one shape, never Django's HTML pages."""
from __future__ import annotations

import pytest
from django.test import Client

from orchestrator.roles import api_token_create


def api(user) -> Client:
    return Client(HTTP_AUTHORIZATION=f"Bearer {api_token_create(user=user)}")


@pytest.mark.parametrize("path", [
    "/api/v1/nope",
    "/api/v1/tasks/abc",
    "/api/v1/approvals/1/decide",
    "/api/v1/",
])
def test_an_unknown_api_path_is_a_json_404(operator, path):
    response = api(operator).get(path)

    assert response.status_code == 404
    assert response["Content-Type"] == "application/json"
    assert response.json() == {"error": f"No API endpoint at {path}; see /api/v1/openapi.json"}


@pytest.mark.parametrize("path", ["/api/v1/tasks/", "/api/v1/tasks/7/", "/api/v1/approvals/3/decision/"])
def test_a_trailing_slash_is_a_404_that_names_the_route(operator, path):
    """Django's own URLs end in a slash, so integrators add one; the answer says to drop it."""
    response = api(operator).get(path)

    assert response.status_code == 404
    assert response.json() == {
        "error": f"No API endpoint at {path}; did you mean {path[:-1]} (no trailing slash)? "
                 "See /api/v1/openapi.json"}


def test_pages_outside_the_api_keep_their_html_404(operator, client_for):
    response = client_for(operator).get("/no-such-page/")
    assert response.status_code == 404
    assert response["Content-Type"].startswith("text/html")


def test_json_nested_too_deeply_to_parse_is_a_400(operator):
    body = "[" * 100_000 + "]" * 100_000

    response = api(operator).post("/api/v1/tasks", data=body, content_type="application/json")

    assert response.status_code == 400
    assert response.json()["error"] == "The body is not valid JSON: it is nested too deeply"


def test_decision_body_nested_too_deeply_is_a_400(reviewer_finance, make_task, make_approval):
    approval = make_approval(make_task(status="awaiting_approval"), "finance_director")

    response = api(reviewer_finance).post(f"/api/v1/approvals/{approval.pk}/decision",
                                          data='{"decision": "approve", "fields": ' + "[" * 100_000 + "}",
                                          content_type="application/json")

    assert response.status_code == 400
    assert response.json()["error"] == "The body is not valid JSON: it is nested too deeply"
    approval.refresh_from_db()
    assert approval.status == "pending"


def test_a_multipart_body_that_cannot_be_parsed_is_a_json_400(operator):
    response = api(operator).generic("POST", "/api/v1/tasks", b"not multipart at all",
                                     content_type="multipart/form-data")

    assert response.status_code == 400
    assert response["Content-Type"] == "application/json"
    assert response.json()["error"].startswith("The multipart body could not be read: ")


def test_a_server_error_in_the_api_is_a_json_500(operator, monkeypatch):
    from orchestrator import api as api_module

    def broken(user):
        raise RuntimeError("a bug")

    monkeypatch.setattr(api_module, "visible_tasks", broken)  # stands for any bug in a view
    client = Client(HTTP_AUTHORIZATION=f"Bearer {api_token_create(user=operator)}", raise_request_exception=False)

    response = client.get("/api/v1/tasks")

    assert response.status_code == 500
    assert response["Content-Type"] == "application/json"
    assert response.json() == {"error": "Internal server error; it has been logged"}


def test_a_request_django_refuses_as_suspicious_is_a_json_400(operator, settings):
    from django.core.files.uploadedfile import SimpleUploadedFile

    settings.DATA_UPLOAD_MAX_NUMBER_FILES = 2
    files = [SimpleUploadedFile(f"doc-{n}.txt", b"INVOICE") for n in range(3)]

    response = api(operator).post("/api/v1/tasks", {"file": files})

    assert response.status_code == 400
    assert response["Content-Type"] == "application/json"
    assert "DATA_UPLOAD_MAX_NUMBER_FILES" in response.json()["error"]


def test_a_server_error_on_a_page_keeps_the_html_500(client_for, operator, monkeypatch):
    from orchestrator import views

    def broken(*args, **kwargs):
        raise RuntimeError("a bug")

    monkeypatch.setattr(views, "visible_tasks", broken)
    client = client_for(operator)
    client.raise_request_exception = False

    response = client.get("/tasks/")

    assert response.status_code == 500
    assert response["Content-Type"].startswith("text/html")
    # Steward's own page, not Django's bare "Server Error (500)".
    assert "Something went wrong" in response.text and "steward.css" in response.text


@pytest.mark.parametrize("content_type, body", [
    ("text/plain", '{"content": "INVOICE 5"}'),
    ("application/x-www-form-urlencoded", "content=INVOICE+5"),
    ("application/xml", "<content>INVOICE 5</content>"),
])
def test_submitting_neither_json_nor_multipart_is_a_415(operator, content_type, body):
    from orchestrator.models import Task

    response = api(operator).post("/api/v1/tasks", data=body, content_type=content_type)

    assert response.status_code == 415
    assert response.json() == {
        "error": f"Content-Type {content_type} is not accepted; send application/json, or multipart/form-data "
                 "with the document in the field \"file\""}
    assert Task.objects.count() == 0


def test_a_json_body_without_a_content_type_is_still_read(operator):
    response = api(operator).generic("POST", "/api/v1/tasks", b'{"content": "INVOICE 6"}', content_type="")
    assert response.status_code == 201


def test_a_decision_that_is_not_json_is_a_415_and_decides_nothing(reviewer_finance, make_task, make_approval):
    approval = make_approval(make_task(status="awaiting_approval"), "finance_director")

    response = api(reviewer_finance).post(f"/api/v1/approvals/{approval.pk}/decision", data="decision=approve",
                                          content_type="application/x-www-form-urlencoded")

    assert response.status_code == 415
    assert response.json() == {
        "error": "Content-Type application/x-www-form-urlencoded is not accepted; send application/json"}
    approval.refresh_from_db()
    assert approval.status == "pending"


HUGE = "9" * 25  # past any integer column


@pytest.mark.parametrize("method, path", [
    ("get", f"/api/v1/tasks/{HUGE}"),
    ("post", f"/api/v1/approvals/{HUGE}/decision"),
    ("post", f"/api/v1/dead-letters/{HUGE}/retry"),
])
def test_an_id_past_any_integer_column_is_a_404(admin_user, method, path):
    client = api(admin_user)
    response = client.get(path) if method == "get" else client.post(path, data="{}", content_type="application/json")
    assert response.status_code == 404
    assert response.json()["error"].endswith(f"{HUGE} not found")


def test_a_cursor_past_any_integer_column_pages_normally(operator, make_task):
    task = make_task()
    response = api(operator).get(f"/api/v1/tasks?before={HUGE}")
    assert response.status_code == 200
    assert [t["id"] for t in response.json()["results"]] == [task.pk]


def test_a_session_cookie_cannot_post_to_the_api(operator, client_for):
    """The API takes bearer tokens only, so a cross-site form riding a logged-in session gets 401."""
    from orchestrator.models import Task

    client = client_for(operator)
    client.handler.enforce_csrf_checks = True

    response = client.post("/api/v1/tasks", data='{"content": "INVOICE 7"}', content_type="application/json")

    assert response.status_code == 401
    assert Task.objects.count() == 0


def test_a_decision_with_a_misspelt_key_decides_nothing(reviewer_finance, make_task, make_approval):
    """"field" for "fields": ignoring it would approve the model's amount, not the corrected one,
    and run the payment on it."""
    task = make_task(status="awaiting_approval", doc_type="Invoice",
                     fields={"invoice_number": "INV-1", "counterparty": "Acme", "amount": 15400.0})
    approval = make_approval(task, "finance_director")

    response = api(reviewer_finance).post(f"/api/v1/approvals/{approval.pk}/decision",
                                          data='{"decision": "approve", "field": {"amount": 1540.0}}',
                                          content_type="application/json")

    assert response.status_code == 400
    assert response.json() == {
        "error": "Unknown key \"field\" in the body; it takes decision, reason, comment, fields",
        "allowed": ["decision", "reason", "comment", "fields"]}
    approval.refresh_from_db()
    assert approval.status == "pending"


def test_a_submission_with_a_misspelt_key_is_refused(operator):
    """"externalRef" for "external_ref": the task could never be looked up by it."""
    from orchestrator.models import Task

    response = api(operator).post("/api/v1/tasks", data='{"content": "INVOICE 8", "externalRef": "ERP-8", '
                                                        '"file_name": "8.txt"}', content_type="application/json")

    assert response.status_code == 400
    assert response.json() == {
        "error": "Unknown keys \"externalRef\", \"file_name\" in the body; it takes content, filename, external_ref",
        "allowed": ["content", "filename", "external_ref"]}
    assert Task.objects.count() == 0


def test_a_multipart_submission_with_an_unknown_field_is_refused(operator):
    from django.core.files.uploadedfile import SimpleUploadedFile

    from orchestrator.models import Task

    response = api(operator).post("/api/v1/tasks", {"file": SimpleUploadedFile("8.txt", b"INVOICE 8"),
                                                    "externalref": "ERP-8"})

    assert response.status_code == 400
    assert response.json() == {
        "error": "Unknown field \"externalref\" in the multipart body; it takes file, filename, external_ref",
        "allowed": ["file", "filename", "external_ref"]}
    assert Task.objects.count() == 0


def test_a_multipart_filename_field_names_the_document(operator):
    """As the JSON body's "filename" does; the file is still read as what it is (its own name)."""
    from django.core.files.uploadedfile import SimpleUploadedFile

    response = api(operator).post("/api/v1/tasks", {"file": SimpleUploadedFile("upload.txt", b"INVOICE 9"),
                                                    "filename": "ERP-export-9.txt"})

    assert response.status_code == 201, response.content
    task = api(operator).get(response["Location"]).json()
    assert task["filename"] == "ERP-export-9.txt"


def test_a_retry_with_edits_in_its_body_retries_nothing(operator, make_task):
    """The API retries as is; edits sent along would be dropped without a word."""
    from orchestrator.models import DeadLetter

    task = make_task(status="dead_lettered", current_step="extract")
    dead_letter = DeadLetter.objects.create(task=task, worker="extract", error_type="SchemaInvalid", message="bad")

    response = api(operator).post(f"/api/v1/dead-letters/{dead_letter.pk}/retry",
                                  data='{"fields": {"amount": 3}}', content_type="application/json")

    assert response.status_code == 400
    assert response.json() == {
        "error": "Unknown key \"fields\" in the body; a retry takes no body: it retries the failed step as it is "
                 "(edit and retry on the dead letter's page)",
        "allowed": []}
    dead_letter.refresh_from_db()
    assert dead_letter.status == "open"


@pytest.mark.parametrize("body", [b"", b"{}"])
def test_a_retry_with_an_empty_body_still_retries(operator, make_task, body):
    from orchestrator.models import DeadLetter

    task = make_task(status="dead_lettered", current_step="extract")
    dead_letter = DeadLetter.objects.create(task=task, worker="extract", error_type="SchemaInvalid", message="bad")

    response = api(operator).generic("POST", f"/api/v1/dead-letters/{dead_letter.pk}/retry", body,
                                     content_type="application/json")

    assert response.status_code == 200
    assert response.json()["dead_letter"]["status"] == "retried"


def test_paging_by_page_number_is_refused_with_how_to_page(operator, make_task):
    """?page=2 used to answer the first page again, for every page: a client paging until an empty
    page never stopped."""
    make_task()

    response = api(operator).get("/api/v1/tasks?page=2")

    assert response.status_code == 400
    assert response.json() == {
        "error": "Unknown query parameter \"page\"; this list takes status, doc_type, queue, before, limit "
                 "(it pages by id: follow the \"next\" URL of each answer until it is null)",
        "allowed": ["status", "doc_type", "queue", "before", "limit"]}


@pytest.mark.parametrize("user, path, allowed", [
    ("reviewer_finance", "/api/v1/approvals?stauts=approved", ["status", "queue", "before", "limit"]),
    ("operator", "/api/v1/dead-letters?error=Timeout", ["status", "error_type", "before", "limit"]),
])
def test_a_misspelt_filter_is_refused_not_ignored(db, request, user, path, allowed):
    """?stauts=approved answered the pending approvals as if they were the approved ones."""
    response = api(request.getfixturevalue(user)).get(path)

    assert response.status_code == 400
    unknown = path.split("?")[1].split("=")[0]
    assert response.json() == {
        "error": f"Unknown query parameter \"{unknown}\"; this list takes {', '.join(allowed)}", "allowed": allowed}


@pytest.mark.parametrize("limit", ["0", "-5"])
def test_a_limit_below_one_is_refused(operator, make_task, limit):
    make_task()

    response = api(operator).get(f"/api/v1/tasks?limit={limit}")

    assert response.status_code == 400
    assert response.json() == {"error": f"limit must be 1 or more (at most 200 are sent), not {limit}"}


@pytest.mark.parametrize("user, method, path, error", [
    ("reviewer_finance", "post", "/api/v1/dead-letters/1/retry",
     "This needs the operator or admin role; the token's user (alice) has reviewer"),
    ("reviewer_finance", "get", "/api/v1/dead-letters",
     "This needs the operator or admin role; the token's user (alice) has reviewer"),
    ("operator", "get", "/api/v1/approvals",
     "This needs the reviewer or admin role; the token's user (olga) has operator"),
    ("outsider", "get", "/api/v1/tasks",
     "This needs the operator, admin or reviewer role; the token's user (charlie) has no role"),
])
def test_a_403_names_the_role_it_needs_and_the_callers(db, request, user, method, path, error):
    """"Your role does not allow this" left an integrator guessing which token to ask for."""
    response = getattr(api(request.getfixturevalue(user)), method)(path)

    assert response.status_code == 403
    assert response.json() == {"error": error}


@pytest.mark.parametrize("body", ['{"content": "INVOICE \\ud800 5"}', '{"content": "INVOICE", "filename": "\\udfff.txt"}'])
def test_half_a_surrogate_pair_is_a_400_that_says_how_to_send_it(operator, body):
    """JSON may escape half a UTF-16 pair, which is no character: the answer was Python's
    "'utf-8' codec can't encode character '\\ud800' in position 8: surrogates not allowed"."""
    from orchestrator.models import Task

    response = api(operator).post("/api/v1/tasks", data=body, content_type="application/json")

    assert response.status_code == 400
    half = "\\ud800" if "ud800" in body else "\\udfff"
    assert response.json() == {
        "error": f"The body is not valid JSON text: \"{half}\" is half of a UTF-16 surrogate pair, no character; "
                 "escape both halves (\"\\ud83d\\ude00\") or send the character itself in UTF-8"}
    assert Task.objects.count() == 0


@pytest.mark.parametrize("path", ["/api/v1/tasks", "/api/v1/tasks/999", "/api/v1/approvals",
                                  "/api/v1/dead-letters", "/api/v1/openapi.json", "/metrics"])
def test_head_answers_as_get_does_without_a_body(admin_user, path):
    """HTTP: a server that serves GET serves HEAD (monitors and some clients send it)."""
    client = api(admin_user)
    get, head = client.get(path), client.head(path)

    assert head.status_code == get.status_code
    assert head["Content-Type"] == get["Content-Type"]
    assert head.content == b""


@pytest.mark.parametrize("path, allow", [
    ("/api/v1/tasks", "GET, HEAD, POST, OPTIONS"),
    ("/api/v1/tasks/1", "GET, HEAD, OPTIONS"),
    ("/api/v1/approvals/1/decision", "POST, OPTIONS"),
    ("/api/v1/openapi.json", "GET, HEAD, OPTIONS"),
])
def test_options_and_a_wrong_method_name_every_method_there_is(admin_user, path, allow):
    client = api(admin_user)

    options, delete = client.options(path), client.delete(path)

    assert (options.status_code, options["Allow"], options.content) == (204, allow, b"")
    assert (delete.status_code, delete["Allow"]) == (405, allow)


def test_options_needs_a_token_as_every_other_method_does(db):
    assert Client().options("/api/v1/tasks").status_code == 401
