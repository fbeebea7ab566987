"""Intake: what users send becomes document text, or a refusal that says what is wrong."""
from __future__ import annotations

import random

import pytest

from orchestrator.intake import IntakeError, document_text
from orchestrator.models import Source, Task
from orchestrator.services import IdempotencyKeyReused, task_submit


def pdf(*page_streams: bytes | None) -> bytes:
    """A minimal valid PDF, one page per stream (None: a page without any content), xref computed."""
    font = len(page_streams) * 2 + 3
    objects = [b"<< /Type /Catalog /Pages 2 0 R >>"]
    kids = " ".join(f"{3 + 2 * i} 0 R" for i in range(len(page_streams)))
    objects.append(f"<< /Type /Pages /Kids [{kids}] /Count {len(page_streams)} >>".encode())
    for i, stream in enumerate(page_streams):
        contents = f" /Contents {4 + 2 * i} 0 R" if stream is not None else ""
        objects.append(f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792]{contents}"
                       f" /Resources << /Font << /F1 {font} 0 R >> >> >>".encode())
        data = stream or b""
        objects.append(b"<< /Length %d >>\nstream\n" % len(data) + data + b"\nendstream")
    objects.append(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>")
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(out)


def text_stream(*lines: str) -> bytes:
    shown = b" ".join(b"(%s) Tj 0 -16 Td" % line.encode() for line in lines)
    return b"BT /F1 12 Tf 72 720 Td " + shown + b" ET"


# --- Formats --------------------------------------------------------------------------------


def test_utf8_text():
    assert document_text("Invoice for Zoë: €40\r\nTotal".encode(), "a.txt") == "Invoice for Zoë: €40\nTotal"


def test_utf8_text_with_a_byte_order_mark():
    assert document_text(b"\xef\xbb\xbfInvoice 7", "a.txt") == "Invoice 7"


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-be"])
def test_utf16_text_with_a_byte_order_mark(encoding):
    data = ("\ufeff" if encoding == "utf-16-be" else "") + "Rechnung für Zoë"
    assert document_text(data.encode(encoding), "a.txt") == "Rechnung für Zoë"


def test_markdown():
    assert document_text(b"# Invoice\n\n* Total: $5", "notes.md") == "# Invoice\n\n* Total: $5"


def test_eml_gives_headers_and_body():
    message = (b"From: Dana <dana@initech.example>\r\nTo: ap@steward.example\r\nSubject: Overdue payment\r\n"
               b"Date: Mon, 04 Nov 2024 09:12:33 +0000\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
               b"Please pay invoice 17 by Friday.\r\n")

    text = document_text(message, "mail.eml")

    assert text.splitlines()[:4] == ["From: Dana <dana@initech.example>", "To: ap@steward.example",
                                     "Date: Mon, 04 Nov 2024 09:12:33 +0000", "Subject: Overdue payment"]
    assert "Please pay invoice 17 by Friday." in text


def test_eml_without_headers_is_refused():
    with pytest.raises(IntakeError, match="no e-mail headers"):
        document_text(b"just some words", "mail.eml")


def test_pdf_text_is_extracted():
    data = pdf(text_stream("INVOICE INV-42", "Total: $99.00"))

    text = document_text(data, "scan.pdf")

    assert "INVOICE INV-42" in text
    assert "Total: $99.00" in text


def test_pdf_is_recognised_by_its_header_whatever_the_name():
    assert "INVOICE INV-43" in document_text(pdf(text_stream("INVOICE INV-43")), "upload.bin")


def test_pdf_pages_are_joined():
    text = document_text(pdf(text_stream("Page one"), text_stream("Page two")), "two.pdf")
    assert text.index("Page one") < text.index("Page two")


def test_pdf_without_text_is_refused_clearly():
    with pytest.raises(IntakeError, match="no text layer"):
        document_text(pdf(None), "scan.pdf")


@pytest.mark.parametrize("data", [
    b"%PDF-1.4\nthis is not really a pdf",
    pdf(text_stream("INVOICE")).replace(b"trailer\n<<", b"trailer\n2<"),  # pypdf: AttributeError
])
def test_broken_pdf_is_refused_clearly(data):
    with pytest.raises(IntakeError, match="PDF could not be read"):
        document_text(data, "broken.pdf")


# --- Refusals -------------------------------------------------------------------------------


@pytest.mark.parametrize("data", [b"", b"   \n\t\r\n  "])
def test_empty_or_whitespace_is_refused(data):
    with pytest.raises(IntakeError, match="empty"):
        document_text(data, "a.txt")


def test_nul_bytes_are_refused_as_binary():
    with pytest.raises(IntakeError, match="binary"):
        document_text(b"Invoice\x00\x00\x01total", "a.txt")


def test_random_bytes_are_refused_as_binary():
    with pytest.raises(IntakeError, match="binary"):
        document_text(random.Random(7).randbytes(4096), "a.txt")


def test_control_characters_without_nul_are_refused_as_binary():
    with pytest.raises(IntakeError, match="control characters"):
        document_text(bytes(range(1, 9)) * 50, "a.txt")


def test_invalid_utf8_is_refused_with_the_encoding_named():
    with pytest.raises(IntakeError, match="not valid UTF-8") as caught:
        document_text("Rechnung für".encode("latin-1"), "a.txt")
    assert "position 10" in str(caught.value)  # the ü, counting from 0


def test_unsupported_extension_is_refused():
    with pytest.raises(IntakeError) as caught:
        document_text(b"PK\x03\x04 word document", "contract.docx")
    assert str(caught.value) == "Files of type .docx are not supported; send .txt, .md, .eml, .pdf."


def test_file_over_the_size_limit_is_refused(settings):
    settings.STEWARD_MAX_DOCUMENT_BYTES = 2048
    with pytest.raises(IntakeError) as caught:
        document_text(b"a" * 4096, "a.txt")
    assert str(caught.value) == "The file is 4 KB; the limit is 2 KB."


def test_text_over_the_size_limit_is_refused(settings, db):
    settings.STEWARD_MAX_DOCUMENT_BYTES = 2048
    with pytest.raises(IntakeError, match="the limit is 2 KB"):
        task_submit(content="a" * 4096)


# --- Submitting ------------------------------------------------------------------------------


def test_exact_duplicate_content_becomes_a_new_task_pointing_at_the_first(db):
    first, _ = task_submit(content="INVOICE 1\nTotal: $5.00", filename="a.txt")
    again, created = task_submit(content="INVOICE 1\nTotal: $5.00", filename="b.txt")

    assert created is True
    assert again.pk != first.pk
    assert again.duplicate_of_id == first.pk
    assert again.status == "queued"
    assert first.duplicate_of_id is None


def test_same_idempotency_key_from_the_same_user_returns_the_same_task(operator):
    first, created_first = task_submit(content="INVOICE 2\nTotal: $2", idempotency_key="k-1", submitted_by=operator)
    # The same document, its newlines as another client sends them: the same request.
    again, created_again = task_submit(content="INVOICE 2\r\nTotal: $2", idempotency_key="k-1",
                                       submitted_by=operator)

    assert (created_first, created_again) == (True, False)
    assert again.pk == first.pk
    assert Task.objects.count() == 1


def test_same_idempotency_key_with_another_document_is_refused(operator):
    first, _ = task_submit(content="INVOICE 2", idempotency_key="k-1", submitted_by=operator)

    with pytest.raises(IdempotencyKeyReused) as refused:
        task_submit(content="INVOICE 2 (changed)", idempotency_key="k-1", submitted_by=operator)

    assert refused.value.task == first
    assert Task.objects.count() == 1


def test_same_idempotency_key_from_another_user_is_another_task(operator, admin_user):
    first, _ = task_submit(content="INVOICE 3", idempotency_key="k-1", submitted_by=operator)
    other, created = task_submit(content="INVOICE 3", idempotency_key="k-1", submitted_by=admin_user)

    assert created is True
    assert other.pk != first.pk


@pytest.mark.parametrize("content", ["", "   \n", "binary\x00data"])
def test_bad_input_stores_nothing(db, content):
    with pytest.raises(IntakeError):
        task_submit(content=content, source=Source.API)
    assert Task.objects.count() == 0


def test_submitted_task_records_where_it_came_from(operator):
    task, _ = task_submit(content="INVOICE 4\r\nTotal: $1.00", filename="inv.txt", source=Source.CLI,
                          external_ref="erp-17", submitted_by=operator)
    task.refresh_from_db()
    assert (task.filename, task.source, task.external_ref, task.submitted_by) == ("inv.txt", "cli", "erp-17", operator)
    assert task.content == "INVOICE 4\nTotal: $1.00"
    assert task.current_step == "classify"
