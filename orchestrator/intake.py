"""Turning what users send (text, Markdown, .eml, PDF) into document text, or a clear refusal."""
from __future__ import annotations

import email
import email.policy
import io
import unicodedata
from pathlib import PurePath

from django.conf import settings

TEXT_EXTENSIONS = {".txt", ".md", ".markdown", ".text", ".csv", ""}
SUPPORTED = ".txt, .md, .eml, .pdf"


class IntakeError(ValueError):
    """Bad input: the message says what is wrong in words a user can act on."""


class DocumentTooLarge(IntakeError):
    """Over STEWARD_MAX_DOCUMENT_BYTES (the API answers 413 Content Too Large)."""


def _limit() -> int:
    return settings.STEWARD_MAX_DOCUMENT_BYTES


def _human_size(size: int) -> str:
    return f"{size / (1024 * 1024):.1f} MB" if size >= 1024 * 1024 else f"{size / 1024:.0f} KB"


def check_size(size: int, what: str = "file") -> None:
    if size > _limit():
        raise DocumentTooLarge(f"The {what} is {_human_size(size)}; the limit is {_human_size(_limit())}.")


def check_text(text: str) -> str:
    """Refuse empty, binary-looking or oversized text; normalise newlines."""
    if "\x00" in text:
        raise IntakeError("The document looks binary (it contains NUL bytes); send text, .eml or PDF.")
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    if not text.strip():
        raise IntakeError("The document is empty.")
    check_size(len(text.encode("utf-8")), "document")
    controls = sum(1 for ch in text[:10000] if unicodedata.category(ch) == "Cc" and ch not in "\n\t\f")
    if controls > max(10, len(text[:10000]) // 100):
        raise IntakeError("The document looks binary (many control characters); send text, .eml or PDF.")
    return text


def decode_text(data: bytes) -> str:
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        try:
            return data.decode("utf-16")
        except UnicodeDecodeError as exc:
            raise IntakeError("The file starts like UTF-16 but could not be decoded.") from exc
    if b"\x00" in data[:8192]:
        raise IntakeError("The file looks binary (it contains NUL bytes); send text, .eml or PDF.")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise IntakeError(
            f"The file is not valid UTF-8 text (undecodable byte at position {exc.start}); "
            "save it as UTF-8 and try again."
        ) from exc


def eml_text(data: bytes) -> str:
    message = email.message_from_bytes(data, policy=email.policy.default)
    headers = [f"{name}: {message[name]}" for name in ("From", "To", "Cc", "Date", "Subject") if message[name]]
    if not headers:
        raise IntakeError("The .eml file has no e-mail headers (From, To, Subject...).")
    body = message.get_body(preferencelist=("plain", "html"))
    text = body.get_content() if body is not None else ""
    return "\n".join(headers) + "\n\n" + text


def pdf_text(data: bytes) -> str:
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    try:
        reader = PdfReader(io.BytesIO(data))
        pages = [page.extract_text() or "" for page in reader.pages]
    except (PdfReadError, ValueError, KeyError, TypeError) as exc:
        raise IntakeError(f"The PDF could not be read: {exc}") from exc
    except Exception as exc:  # noqa: BLE001 - pypdf fails in many ways on broken files (loops, limits...)
        raise IntakeError(f"The PDF could not be read ({type(exc).__name__}: {exc})") from exc
    text = "\n\n".join(pages)
    if not text.strip():
        raise IntakeError("The PDF has no text layer (a scanned image?); OCR is not supported yet.")
    return text


def document_text(data: bytes, filename: str = "") -> str:
    """The text of an uploaded file, chosen by its extension; IntakeError when it cannot be used."""
    check_size(len(data))
    if not data.strip():
        raise IntakeError("The file is empty.")
    extension = PurePath(filename).suffix.lower()
    if extension == ".pdf" or data.startswith(b"%PDF-"):
        text = pdf_text(data)
    elif extension == ".eml":
        text = eml_text(data)
    elif extension in TEXT_EXTENSIONS:
        text = decode_text(data)
    else:
        raise IntakeError(f"Files of type {extension} are not supported; send {SUPPORTED}.")
    return check_text(text)
