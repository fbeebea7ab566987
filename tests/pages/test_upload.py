"""The upload page: every file becomes a task or says, in words, why it did not."""
from __future__ import annotations

from django.core.files.uploadedfile import SimpleUploadedFile

from orchestrator.models import Task

INVOICE = b"INVOICE\nInvoice Number: INV-1\nFrom: Acme Supplies Ltd\nTotal: $1,240.00\n"
REPORT = b"Q3 operations report\nAuthor: Ops team\nEverything went fine.\n"


def upload(client, *files, text: str = "", **extra):
    return client.post("/upload/", {"files": list(files), "text": text}, **extra)


def test_the_form_is_for_operators_and_admins(operator, admin_user, reviewer_finance, outsider, client, client_for):
    page = client_for(operator).get("/upload/").text
    assert 'type="file" name="files" id="id_files" multiple accept=".txt,.md,.eml,.pdf"' in page
    assert 'enctype="multipart/form-data"' in page and 'name="text"' in page
    assert client_for(admin_user).get("/upload/").status_code == 200
    assert client_for(reviewer_finance).get("/upload/").status_code == 403
    assert client_for(outsider).get("/upload/").status_code == 403
    assert client.get("/upload/")["Location"].startswith("/login/")


def test_two_good_files_make_two_tasks(operator, client_for):
    response = upload(client_for(operator), SimpleUploadedFile("acme.txt", INVOICE),
                      SimpleUploadedFile("q3.md", REPORT))
    assert response.status_code == 200
    tasks = list(Task.objects.order_by("id"))
    assert [t.filename for t in tasks] == ["acme.txt", "q3.md"]
    assert all(t.source == "upload" and t.submitted_by.username == "olga" and t.status == "queued" for t in tasks)
    for task in tasks:
        assert f'<strong>{task.filename}</strong>:' in response.text
        assert f'submitted as <a href="/tasks/{task.pk}/">task {task.pk}</a>' in response.text


def test_an_empty_and_a_binary_file_make_no_task(operator, client_for):
    response = upload(client_for(operator), SimpleUploadedFile("empty.txt", b""),
                      SimpleUploadedFile("image.txt", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256))))
    assert response.status_code == 200
    assert Task.objects.count() == 0
    assert "<strong>empty.txt</strong>" in response.text and "The file is empty." in response.text
    assert "<strong>image.txt</strong>" in response.text and "looks binary" in response.text
    assert "submitted as" not in response.text


def test_a_bad_file_does_not_stop_the_good_ones(operator, client_for):
    response = upload(client_for(operator), SimpleUploadedFile("scan.docx", b"PK\x03\x04 word"),
                      SimpleUploadedFile("acme.txt", INVOICE))
    assert Task.objects.count() == 1
    assert "Files of type .docx are not supported" in response.text
    assert "submitted as" in response.text


def test_pasted_text_becomes_a_task(operator, client_for):
    response = upload(client_for(operator), text="INVOICE\nTotal: $10.00")
    task = Task.objects.get()
    assert task.content == "INVOICE\nTotal: $10.00" and task.filename == ""
    assert f'href="/tasks/{task.pk}/"' in response.text and "Pasted text" in response.text


def test_nothing_to_submit_is_a_form_error(operator, client_for):
    response = upload(client_for(operator), text="   ")
    assert response.status_code == 200
    assert "Choose at least one file, or paste the text of a document." in response.text
    assert Task.objects.count() == 0
    # What a browser sends when no file was chosen: a file part without a name.
    boundary = "BoUnDaRy"
    body = (
        f"--{boundary}\r\n"
        'Content-Disposition: form-data; name="files"; filename=""\r\n'
        "Content-Type: application/octet-stream\r\n\r\n\r\n"
        f"--{boundary}\r\n"
        'Content-Disposition: form-data; name="text"\r\n\r\n\r\n'
        f"--{boundary}--\r\n"
    )
    response = client_for(operator).post("/upload/", body, content_type=f"multipart/form-data; boundary={boundary}")
    assert response.status_code == 200
    assert "Choose at least one file" in response.text
    assert Task.objects.count() == 0


def test_an_exact_duplicate_is_submitted_and_flagged(operator, client_for):
    client = client_for(operator)
    upload(client, SimpleUploadedFile("acme.txt", INVOICE))
    first = Task.objects.get()
    response = upload(client, SimpleUploadedFile("acme-again.txt", INVOICE))
    second = Task.objects.exclude(pk=first.pk).get()
    assert second.duplicate_of_id == first.pk
    assert f'exact duplicate of <a href="/tasks/{first.pk}/">task {first.pk}</a>' in response.text


def test_htmx_upload_returns_only_the_results(operator, client_for):
    response = upload(client_for(operator), SimpleUploadedFile("acme.txt", INVOICE), HTTP_HX_REQUEST="true")
    assert response.status_code == 200
    # What goes inside the page's results region (a live region that stays: see test_announcements).
    assert response.text.lstrip().startswith('<div class="card">')
    assert 'id="upload-results"' not in response.text
    assert "<html" not in response.text and 'type="file"' not in response.text
    assert "submitted as" in response.text
