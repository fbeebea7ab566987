"""A stand-in for the model: an OpenAI-compatible chat-completions server on loopback.

Why it exists: the demo, the tests and the benchmarks need a model that is free, fast, answers the
same way every time, and fails on demand. It speaks the wire format of the official `openai`
client (plain and Azure URL forms, JSON mode, tool calls, usage with cached and reasoning tokens),
answers from heuristics over the document text, and injects faults (timeouts, 429 with
Retry-After, 500/503, broken or schema-invalid JSON, endless tool loops) either at random with a
reproducible seed or forced by markers in the document. Every answer is SIMULATED.

Stdlib only, and no Django: it runs inside tests, the `llm_sim` command and benchmarks alike.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import random
import re
import socket
import socketserver
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote, urlsplit

from orchestrator.amounts import parse_total

FAULT_KINDS = ("timeout", "rate_limit", "server_error", "unavailable", "malformed_json", "invalid_schema", "tool_loop")
SYSTEM_FINGERPRINT = "steward-simulator"
MARKER_ONLY_KINDS = ("content_filter",)  # never drawn at random: it would look like a real policy hit

_JSON_WORKERS = ("classify", "extract")
_HTTP_ERRORS = {  # kind -> (status, error type, code, message)
    "rate_limit": (429, "rate_limit_exceeded", "rate_limit_exceeded", "Rate limit reached (simulated)."),
    "server_error": (500, "server_error", "server_error", "The server had an error (simulated)."),
    "unavailable": (503, "service_unavailable", "service_unavailable", "The engine is overloaded (simulated)."),
    "timeout": (504, "timeout", "timeout", "The model did not answer in time (simulated)."),
    "content_filter": (400, "invalid_request_error", "content_filter",
                       "The prompt was filtered by the content management policy (simulated)."),
}


# ---------------------------------------------------------------- text helpers

_MARKER = re.compile(r"\[\[\s*sim-fault\s*:\s*([a-z_]+)\s*(?:x\s*(\d+))?\s*\]\]", re.I)
_CONTROL_LINE = re.compile(  # marker and override lines: instructions to us, not document text
    r"^[ \t]*(?:\[\[\s*sim-fault\s*:[^\]]*\]\]|Simulated-Confidence\s*:.*)[ \t]*$\n?", re.I | re.M)
_CONFIDENCE = re.compile(r"^[ \t]*Simulated-Confidence\s*:\s*([01](?:\.\d+)?)\s*$", re.I | re.M)
_ISO_DATE = re.compile(r"\b(\d{4}-\d{2}-\d{2})\b")
_INJECTION = re.compile(r"(?i)report (?:the )?(?:total |amount )+as \$?([\d,]+(?:\.\d+)?)")
_INVOICE_NO = re.compile(r"(?i:invoice\s*(?:No\.?|Number|#))\s*[:#]?\s*([A-Z0-9][A-Z0-9-]+)")
_CURRENCY = re.compile(r"[$€£]|\b(?:USD|EUR|GBP)\b")
_CURRENCY_CODES = {"$": "USD", "€": "EUR", "£": "GBP", "USD": "USD", "EUR": "EUR", "GBP": "GBP"}
_NUMBER = r"[$€£]?\s?\d[\d,]*(?:\.\d+)?"
_LINE_ITEM = re.compile(
    rf"^\s*(?:[-*•]\s*)?(?P<desc>\S.*?)\s+(?P<qty>\d+(?:\.\d+)?)\s*[x×]\s*(?P<unit>{_NUMBER})"
    rf"(?:\s*[A-Z]{{3}})?\s*=\s*(?P<amount>{_NUMBER})", re.M)
_HEADER_LINE = re.compile(
    r"^(?:from|to|cc|bcc|reply-to|subject|date|sent|author|prepared by|period)\s*:", re.I)
_PERIOD = re.compile(
    r"\b(Q[1-4]\s*(?:FY\s?)?\d{4}|H[12]\s*\d{4}|FY\s?\d{2,4}|(?:January|February|March|April|May|June|July"
    r"|August|September|October|November|December)\s+\d{4})\b")
_BETWEEN = re.compile(r"\bbetween\s+(?P<a>[^,;(\n]+?)\s+and\s+(?P<b>[^,;(\n]+?)(?=\s*(?:[,;(\n]|\.(?:\s|$)|$))", re.I)
_EFFECTIVE = re.compile(r"effective\s+(?:as of|on|from)\s+(\d{4}-\d{2}-\d{2}|[A-Z][a-z]+ \d{1,2}, \d{4})", re.I)
_PARTY_LINE = re.compile(r"^\s*Party\s+[A-Z0-9]+\s*:\s*(.+?)\s*$", re.I | re.M)
_TYPE_KEYWORDS = (
    ("Invoice", ("invoice",)),
    ("Contract", ("agreement", "contract", "hereby", "parties")),
    ("Report", ("report", "quarterly", "findings", "summary")),
)


def _digest(*parts: str | bytes) -> str:
    """A stable key for texts and bodies (Python's hash() is salted per process)."""
    return hashlib.sha256(b"\x00".join(p.encode() if isinstance(p, str) else p for p in parts)).hexdigest()


def message_text(content: Any) -> str:
    """The text of a message `content`: a string, a list of content parts, or None."""
    if isinstance(content, list):
        return "".join(p.get("text") or "" for p in content if isinstance(p, dict))
    return content if isinstance(content, str) else ""


def _between_tags(text: str, tag: str) -> str | None:
    """The text between a line `<tag>` and a line `</tag>` (how the workers frame their input)."""
    match = re.search(rf"^[ \t]*<{tag}>[ \t]*$\n?(.*?)^[ \t]*</{tag}>[ \t]*$", text, re.M | re.S)
    return match.group(1).rstrip("\n") if match else None


def _lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip()]


def _header(text: str, *names: str) -> str | None:
    """The value of the first `Name: value` line for any of the names."""
    alternatives = "|".join(re.escape(n) for n in names)
    match = re.search(rf"^[ \t]*(?:{alternatives})[ \t]*:[ \t]*(\S.*?)[ \t]*$", text, re.I | re.M)
    return match.group(1) if match else None


def _body(lines: list[str]) -> str:
    """The prose after any leading `Key: value` header lines, whitespace collapsed."""
    index = 0
    while index < len(lines) and _HEADER_LINE.match(lines[index]):
        index += 1
    return " ".join(" ".join(lines[index:]).split())


def _find(pattern: re.Pattern[str] | str, text: str) -> str | None:
    """Group 1 of the first match, stripped, or None."""
    match = re.search(pattern, text, re.I) if isinstance(pattern, str) else pattern.search(text)
    return match.group(1).strip() if match else None


def _number(raw: str) -> float:
    return float(re.sub(r"[^\d.]", "", raw) or 0)


def _injected_amount(text: str) -> float | None:
    """Gullible on purpose: obey "report the total as $X" so the product's cross-checks have work."""
    value = _find(_INJECTION, text)
    return float(value.replace(",", "")) if value else None


def _first_date(text: str) -> str | None:
    return _find(_ISO_DATE, text) or _header(text, "date")


def fault_markers(document: str) -> list[tuple[str, int | None]]:
    """`[[sim-fault: KIND]]` / `[[sim-fault: KIND x N]]` markers, in order; unknown kinds ignored."""
    known = FAULT_KINDS + MARKER_ONLY_KINDS
    return [(m.group(1).lower(), int(m.group(2)) if m.group(2) else None)
            for m in _MARKER.finditer(document) if m.group(1).lower() in known]


def fault_applies(kind: str, worker: str) -> bool:
    """tool_loop needs a tool conversation; broken/invalid JSON needs a JSON-mode answer."""
    needs = {"tool_loop": ("verify",), "malformed_json": _JSON_WORKERS, "invalid_schema": _JSON_WORKERS}
    return worker in needs.get(kind, (worker,))


# ---------------------------------------------------------------- answers, one per worker kind

def classify_document(text: str) -> dict[str, Any]:
    """Keyword heuristics; the confidence says how early the evidence appears."""
    clean = _CONTROL_LINE.sub("", text)
    lines = _lines(clean)

    def has_email_headers(head: list[str]) -> bool:
        return all(any(line.lower().startswith(h) for line in head) for h in ("from:", "subject:"))

    if has_email_headers(lines[:8]):
        doc_type, early, reason = "Email", has_email_headers(lines[:3]), "From: and Subject: headers"
        confidence = 0.97 if early else 0.80
    else:
        doc_type, confidence, reason = "Other", 0.55, "no known document keywords"
        for candidate, words in _TYPE_KEYWORDS:
            pattern = re.compile(r"\b(" + "|".join(words) + ")", re.I)
            match = pattern.search(clean)
            if match:
                early = any(pattern.search(line) for line in lines[:3])
                where = "in the opening lines" if early else "in the body"
                doc_type, confidence = candidate, 0.97 if early else 0.80
                reason = f"the word '{match.group(1).lower()}' {where}"
                break
    override = _CONFIDENCE.search(text)
    if override:
        confidence = float(override.group(1))
    return {"doc_type": doc_type, "confidence": confidence,
            "rationale": f"Looks like {doc_type}: {reason} (simulated)"}


def _line_items(text: str) -> list[dict[str, Any]]:
    return [{"description": m.group("desc").strip(), "quantity": float(m.group("qty")),
             "unit_price": _number(m.group("unit")), "amount": _number(m.group("amount"))}
            for m in _LINE_ITEM.finditer(text)]


def extract_invoice(text: str) -> dict[str, Any]:
    lines = _lines(text)
    currency = _CURRENCY.search(text)
    total = parse_total(text)
    return {
        "invoice_number": _find(_INVOICE_NO, text),
        "counterparty": _header(text, "from", "vendor", "supplier", "bill from") or (lines[0] if lines else None),
        "date": _first_date(text),
        "currency": _CURRENCY_CODES[currency.group(0)] if currency else "USD",
        "amount": float(total) if total is not None else 0.0,
        "line_items": _line_items(text),
    }


def _contract_parties(text: str) -> list[str]:
    """`Party A:` lines, else "between X and Y"."""
    found = _PARTY_LINE.findall(text)
    if not found and (match := _BETWEEN.search(text)):
        found = list(match.group("a", "b"))
    cleaned = (party.strip().strip("\"'“”").rstrip(".").strip() for party in found)
    return list(dict.fromkeys(party for party in cleaned if party))  # unique, in order


def extract_contract(text: str) -> dict[str, Any]:
    parties = _contract_parties(text)
    others = [p for p in parties if not re.search(r"\bsteward\b", p, re.I) and p.lower() not in ("us", "we")]
    total = parse_total(text)
    return {
        "counterparty": (others or parties or [None])[0],
        "parties": parties,
        "effective_date": _header(text, "effective date") or _find(_EFFECTIVE, text) or _first_date(text),
        "term": _header(text, "term") or _find(r"\b(?:term|period) of\s+([^.,;\n]+)", text),
        "amount": float(total) if total is not None else None,
    }


def extract_report(text: str) -> dict[str, Any]:
    lines = _lines(text)
    return {
        "title": lines[0] if lines else None,
        "period": _header(text, "period") or _find(_PERIOD, text),
        "author": _header(text, "author", "prepared by"),
        "summary": _body(lines[1:])[:200],
    }


def extract_email(text: str) -> dict[str, Any]:
    body = _body(_lines(text))
    sentences = re.split(r"(?<=[.!?])\s+", body)
    return {
        "counterparty": _header(text, "from"),
        "subject": _header(text, "subject"),
        "date": _header(text, "date") or _first_date(text),
        "summary": body[:200],
        "requested_action": next((s.strip() for s in sentences if re.search(r"\bplease\b", s, re.I)), None),
    }


_EXTRACTORS = {"Invoice": extract_invoice, "Contract": extract_contract, "Report": extract_report,
               "Email": extract_email, "Other": lambda text: {"summary": " ".join(text.split())[:200]}}


def extract_document(text: str, doc_type: str | None) -> dict[str, Any]:
    """Fields for the doc type named by the worker (or the one we would classify it as)."""
    clean = _CONTROL_LINE.sub("", text)
    if doc_type not in _EXTRACTORS:
        doc_type = classify_document(clean)["doc_type"]
    fields = _EXTRACTORS[doc_type](clean)
    injected = _injected_amount(clean)
    if injected is not None and "amount" in fields:
        fields["amount"] = injected
    return fields


def tool_arguments(name: str, fields: dict[str, Any]) -> dict[str, Any]:
    """The arguments the verifier passes to each tool, straight from the extracted fields."""
    return {
        "find_duplicates": {"invoice_number": fields.get("invoice_number"), "counterparty": fields.get("counterparty"),
                            "amount": fields.get("amount")},
        "counterparty_history": {"counterparty": fields.get("counterparty")},
        "check_line_items": {"line_items": fields.get("line_items") or [], "total": fields.get("amount")},
    }.get(name, {})


def _tool_results(messages: list[dict[str, Any]]) -> dict[str, Any]:
    """Tool name -> parsed JSON result, matching tool messages to the calls that asked for them."""
    names = {call.get("id"): (call.get("function") or {}).get("name")
             for m in messages if m.get("role") == "assistant" for call in m.get("tool_calls") or []}
    results: dict[str, Any] = {}
    for message in (m for m in messages if m.get("role") == "tool"):
        name = names.get(message.get("tool_call_id")) or message.get("name")
        with contextlib.suppress(ValueError):
            results[name] = json.loads(message_text(message.get("content")))
    return results


def _as_float(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def verify_verdict(fields: dict[str, Any], results: dict[str, Any]) -> dict[str, Any]:
    """The final verifier answer: one finding per tool result that signals a problem."""
    findings = []
    duplicates = results.get("find_duplicates") or {}
    if isinstance(duplicates, dict) and duplicates.get("matches"):
        findings.append({"kind": "duplicate",
                         "message": f"{len(duplicates['matches'])} earlier document(s) match this one."})
    arithmetic = results.get("check_line_items") or {}
    if isinstance(arithmetic, dict) and arithmetic.get("ok") is False:
        problems = arithmetic.get("problems") or ["line items do not add up"]
        findings.append({"kind": "arithmetic", "message": "; ".join(str(p) for p in problems)})
    history = results.get("counterparty_history")
    if isinstance(history, dict) and (_as_float(history.get("count")) or 0) >= 2:
        amount, median = _as_float(fields.get("amount")), _as_float(history.get("median_amount"))
        if amount is not None and median is not None and amount > 3 * median:
            findings.append({"kind": "amount_anomaly",
                             "message": f"Amount {amount:g} is over 3x this counterparty's median of {median:g}."})
    return {"verdict": "needs_review" if findings else "ok", "findings": findings}


# ---------------------------------------------------------------- the request, as the simulator sees it

class SimRequest:
    """What a chat-completions body asks for: which worker, which document, which tools."""

    def __init__(self, payload: dict[str, Any], model: str | None = None) -> None:
        self.model: str = model or str(payload.get("model") or "simulated")
        self.messages: list[dict[str, Any]] = [m for m in payload.get("messages") or [] if isinstance(m, dict)]
        self.tools: list[str] = [(t.get("function") or {}).get("name") for t in payload.get("tools") or []
                                 if isinstance(t, dict)]
        self.json_mode = (payload.get("response_format") or {}).get("type") in ("json_object", "json_schema")
        first = self.messages[0] if self.messages else {}
        self.system = message_text(first.get("content")) if first.get("role") in ("system", "developer") else ""
        user = next((message_text(m.get("content")) for m in self.messages if m.get("role") == "user"), "")
        self.document: str = _between_tags(user, "document") or user
        try:
            fields = json.loads(_between_tags(user, "fields") or "{}")
        except ValueError:
            fields = {}
        self.fields: dict[str, Any] = fields if isinstance(fields, dict) else {}

        lowered = self.system.lower()
        self.worker = ("verify" if self.tools else "classify" if "classify" in lowered
                       else "extract" if "extract" in lowered else "other")
        doc_type = re.search(r"^[ \t]*Document type:\s*(\w+)", self.system, re.I | re.M)
        self.doc_type = doc_type.group(1).capitalize() if doc_type else None


# ---------------------------------------------------------------- the server

class _HTTPServer(ThreadingHTTPServer):
    """Tracks open client sockets so stop() can cut keep-alive and hanging connections at once."""

    daemon_threads = True
    block_on_close = False
    # socketserver listens with a backlog of 5: when a few dozen worker threads open their first
    # connections at once (every Celery worker start does), the accept queue overflowed and the
    # kernel reset some of them, a "Connection error." to the client before any request was read.
    request_queue_size = socket.SOMAXCONN

    def __init__(self, address: tuple[str, int], sim: "SimulatorServer") -> None:
        self.sim = sim
        self.connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind does a reverse DNS lookup (getfqdn) that can stall; we need none.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = str(self.server_address[0]), int(self.server_address[1])

    def process_request(self, request: Any, client_address: Any) -> None:
        with self.connections_lock:
            self.connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self.connections_lock:
            self.connections.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        with self.connections_lock:
            open_sockets = list(self.connections)
        for sock in open_sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


class SimulatorServer:
    """The simulator: state (counters, caches, webhook log) plus the HTTP server that exposes it."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, latency_ms: float = 0, fault_rate: float = 0.0,
                 seed: int = 0, faults: list[str] | None = None, hang_s: float = 60.0,
                 retry_after_s: float = 1.0) -> None:
        unknown = sorted(set(faults or ()) - set(FAULT_KINDS))
        if unknown:
            raise ValueError(f"unknown fault kinds {unknown}; choose from {', '.join(FAULT_KINDS)}")
        if not 0.0 <= fault_rate <= 1.0:
            raise ValueError("fault_rate must be between 0 and 1")
        self.latency_ms, self.fault_rate, self.seed = latency_ms, fault_rate, seed
        self.faults = tuple(k for k in FAULT_KINDS if faults is None or k in faults)
        self.hang_s, self.retry_after_s = hang_s, retry_after_s
        self.log_requests = False  # the command turns this on at verbosity >= 2
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._completions = 0
        self._by_worker: Counter[str] = Counter()
        self._fault_counts: Counter[str] = Counter()
        self._bodies_seen: Counter[str] = Counter()
        self._documents_seen: Counter[tuple[str, str]] = Counter()
        self._systems_seen: set[str] = set()
        self._webhook_keys: Counter[str] = Counter()
        self._webhook_count = 0
        self._webhook_bodies: list[Any] = []
        self._httpd = _HTTPServer((host, port), self)
        self.host, self.port = host, int(self._httpd.server_address[1])
        self.azure_endpoint = f"http://{host}:{self.port}"  # AzureOpenAI(azure_endpoint=...)
        self.url = f"{self.azure_endpoint}/v1"  # OpenAI(base_url=...)
        self.webhook_url = f"{self.azure_endpoint}/sim/webhook"
        self._thread: threading.Thread | None = None
        self._serving = False
        self._stopped = False

    # lifecycle
    def start(self) -> "SimulatorServer":
        self._serving = True  # set before the thread runs, so an early stop() still shuts it down
        self._thread = threading.Thread(target=self.serve_forever, name=f"llm-sim:{self.port}", daemon=True)
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        self._serving = True
        try:
            self._httpd.serve_forever(poll_interval=0.05)
        finally:
            self._serving = False

    def stop(self) -> None:
        """Stop at once: wake hanging handlers, cut open connections, close the socket."""
        if self._stopped:
            return
        self._stopped = True
        self._stopping.set()
        if self._serving and threading.current_thread() is not self._thread:
            self._httpd.shutdown()
        self._httpd.close_connections()
        self._httpd.server_close()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=2)

    def wait(self, seconds: float) -> bool:
        """Sleep that ends early on stop(); True if stopping."""
        return self._stopping.wait(seconds) if seconds > 0 else self._stopping.is_set()

    # observations
    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {"requests": self._completions, "by_worker": dict(self._by_worker),
                    "faults": dict(self._fault_counts)}

    def webhook_deliveries(self) -> dict[str, Any]:
        with self._lock:
            return {"deliveries": self._webhook_count, "unique_keys": len(self._webhook_keys),
                    "by_key": dict(self._webhook_keys), "last": list(self._webhook_bodies)}

    def record_webhook(self, key: str | None, body: Any) -> bool:
        """Log one delivery; True if its Idempotency-Key was seen before."""
        with self._lock:
            self._webhook_count += 1
            duplicate = bool(key) and self._webhook_keys[key] > 0
            if key:
                self._webhook_keys[key] += 1
            self._webhook_bodies = (self._webhook_bodies + [body])[-50:]
        return duplicate

    # faults
    def choose_fault(self, request: SimRequest, body: bytes) -> str | None:
        """Markers first (forced), then a per-request random draw, then the per-document tool loop."""
        fault = self._marker_fault(request) or self._random_fault(request, body) or self._document_loop_fault(request)
        if fault:
            with self._lock:
                self._fault_counts[fault] += 1
        return fault

    def _marker_fault(self, request: SimRequest) -> str | None:
        markers = [(k, n) for k, n in fault_markers(request.document) if fault_applies(k, request.worker)]
        if not markers:
            return None
        key = (request.worker, _digest(request.document))
        with self._lock:
            seen = self._documents_seen[key]
            self._documents_seen[key] += 1
        for kind, limit in markers:  # `x N` markers take turns: the first N requests, then the next...
            if limit is None or seen < limit:
                return kind
            seen -= limit
        return None

    def _applicable(self, worker: str) -> list[str]:
        return [k for k in self.faults if fault_applies(k, worker)]

    def _random_fault(self, request: SimRequest, body: bytes) -> str | None:
        """Seeded by (seed, body, times seen): retries get fresh draws, yet any run order replays the same."""
        digest = _digest(body)
        with self._lock:
            seen = self._bodies_seen[digest]
            self._bodies_seen[digest] += 1
        kinds = self._applicable(request.worker)
        if self.fault_rate <= 0 or not kinds:
            return None
        rng = random.Random(int(_digest(f"{self.seed}:{seen}:".encode(), body), 16))
        if rng.random() >= self.fault_rate:
            return None
        kind = rng.choice(kinds)
        return None if kind == "tool_loop" else kind  # loops belong to documents, see below

    def _document_loop_fault(self, request: SimRequest) -> str | None:
        """A looping model loops on every round of a conversation, so the draw is per document."""
        kinds = self._applicable(request.worker)
        if request.worker != "verify" or "tool_loop" not in kinds or self.fault_rate <= 0:
            return None
        rng = random.Random(int(_digest(f"{self.seed}:tool_loop:", request.document), 16))
        return "tool_loop" if rng.random() < self.fault_rate / len(kinds) else None

    # answers
    def count_request(self, worker: str) -> int:
        with self._lock:
            self._completions += 1
            self._by_worker[worker] += 1
            return self._completions

    def usage(self, request: SimRequest, answer_text: str) -> dict[str, Any]:
        """Token counts from text lengths (4 chars a token), with prompt caching and reasoning models."""
        def tokens(message: dict[str, Any]) -> int:
            text = message_text(message.get("content"))
            if message.get("role") == "assistant":
                calls = message.get("tool_calls") or []
                text += "".join((c.get("function") or {}).get("arguments") or "" for c in calls)
            return 4 + len(text) // 4

        prompt = 8 + sum(tokens(m) for m in request.messages)
        cached = 0
        if request.system:
            key = _digest(request.system)
            with self._lock:
                if key in self._systems_seen:
                    cached = 4 + len(request.system) // 4
                self._systems_seen.add(key)
        completion = 1 + len(answer_text) // 4
        reasoning = 2 * completion if re.match(r"o\d", request.model) or "reason" in request.model.lower() else 0
        completion += reasoning
        return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion,
                "prompt_tokens_details": {"cached_tokens": cached},
                "completion_tokens_details": {"reasoning_tokens": reasoning}}

    def answer(self, request: SimRequest, fault: str | None) -> tuple[str | None, list[dict[str, Any]] | None]:
        """(content, tool_calls) for a 200 answer, honouring the body-level faults."""
        if request.worker == "verify":
            return self._verify_answer(request, loop=fault == "tool_loop")
        if request.worker == "classify":
            payload: dict[str, Any] = classify_document(request.document)
            invalid: dict[str, Any] = {"type": "invoice?", "confidence": "high"}
        elif request.worker == "extract":
            payload = extract_document(request.document, request.doc_type)
            invalid = {"fields": "see document", "amount": "a lot (simulated)"}
        else:
            return (json.dumps({"answer": "simulated"}) if request.json_mode else "Simulated answer."), None
        if fault == "invalid_schema":
            return json.dumps(invalid), None
        text = json.dumps(payload)
        if fault == "malformed_json":
            return text[: max(2, len(text) * 2 // 5)], None  # a proper prefix of an object never parses
        return text, None

    def _verify_answer(self, request: SimRequest, *, loop: bool) -> tuple[str | None, list[dict[str, Any]] | None]:
        """First turn: parallel tool calls. With tool results: the verdict. Looping: the same call forever."""
        fields = request.fields
        prior_calls = sum(len(m.get("tool_calls") or []) for m in request.messages if m.get("role") == "assistant")
        has_results = any(m.get("role") == "tool" for m in request.messages)
        if loop:
            names = ["find_duplicates" if "find_duplicates" in request.tools else request.tools[0]]
        elif has_results:
            return json.dumps(verify_verdict(fields, _tool_results(request.messages))), None
        else:
            names = [n for n in ("find_duplicates", "counterparty_history") if n in request.tools]
            if fields.get("line_items") and "check_line_items" in request.tools:
                names.append("check_line_items")
        if not names:
            return json.dumps(verify_verdict(fields, {})), None
        calls = [{"id": f"call_{prior_calls + i + 1}", "type": "function",
                  "function": {"name": name, "arguments": json.dumps(tool_arguments(name, fields))}}
                 for i, name in enumerate(names)]
        return None, calls

    def completion(self, request: SimRequest, content: str | None, tool_calls: list[dict[str, Any]] | None,
                   number: int) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": content}
        if tool_calls:
            message["tool_calls"] = tool_calls
        answer_text = content if content is not None else json.dumps(tool_calls)
        return {
            "id": f"chatcmpl-sim-{number}", "object": "chat.completion", "created": int(time.time()),
            "model": request.model, "system_fingerprint": SYSTEM_FINGERPRINT,
            "choices": [{"index": 0, "message": message, "logprobs": None,
                         "finish_reason": "tool_calls" if tool_calls else "stop"}],
            "usage": self.usage(request, answer_text),
        }


_AZURE_PATH = re.compile(r"^/openai/deployments/([^/]+)/chat/completions/?$")


def error_body(kind: str, message: str, code: str | None = None, param: str | None = None) -> dict[str, Any]:
    """The OpenAI error shape, which the client turns into typed exceptions."""
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


class _Handler(BaseHTTPRequestHandler):
    """Routes HTTP requests to the SimulatorServer; keeps connections alive (HTTP/1.1)."""

    protocol_version = "HTTP/1.1"
    server_version = "StewardLLMSimulator/1.0"
    timeout = 120  # idle keep-alive connections are dropped after this
    disable_nagle_algorithm = True  # an answer goes out the moment it is flushed
    wbufsize = 64 * 1024  # headers and body are sent together, in one write, by the flush below
    server: _HTTPServer

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's name
        if self.server.sim.log_requests:
            super().log_message(format, *args)

    def _send_json(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(payload).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)
            self.wfile.flush()
        except OSError:  # the client gave up (e.g. after its own timeout)
            self.close_connection = True

    def do_GET(self) -> None:
        path = urlsplit(self.path).path.rstrip("/") or "/"
        sim = self.server.sim
        routes = {"/healthz": lambda: {"status": "ok", "simulated": True},
                  "/sim/stats": sim.stats, "/sim/webhook": sim.webhook_deliveries}
        if path in routes:
            self._send_json(200, routes[path]())
        else:
            self._send_json(404, error_body("not_found", f"No route for GET {path} (simulator)."))

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))  # drain: keeps keep-alive in step
        path = urlsplit(self.path).path
        azure = _AZURE_PATH.match(path)
        if path.rstrip("/") == "/v1/chat/completions" or azure:
            self._chat_completion(body, unquote(azure.group(1)) if azure else None)
        elif path.rstrip("/") == "/sim/webhook":
            self._webhook(body)
        else:
            self._send_json(404, error_body("not_found", f"No route for POST {path} (simulator)."))

    def _webhook(self, body: bytes) -> None:
        try:
            payload: Any = json.loads(body or b"null")
        except ValueError:
            payload = body.decode("utf-8", "replace")
        duplicate = self.server.sim.record_webhook(self.headers.get("Idempotency-Key"), payload)
        self._send_json(200, {"received": True, "duplicate": duplicate})

    def _chat_completion(self, body: bytes, deployment: str | None) -> None:
        sim = self.server.sim
        try:
            payload = json.loads(body)
            if not isinstance(payload, dict) or not isinstance(payload.get("messages"), list):
                raise ValueError("a JSON object with a `messages` list is required")
            if payload.get("stream"):
                raise ValueError("the simulator does not stream")
        except ValueError as exc:
            self._send_json(400, error_body("invalid_request_error", f"Bad request: {exc} (simulator)."))
            return
        request = SimRequest(payload, deployment)
        number = sim.count_request(request.worker)
        fault = None if sim.wait(sim.latency_ms / 1000) else sim.choose_fault(request, body)
        if sim.wait(0) or (fault == "timeout" and sim.wait(sim.hang_s)):
            self.close_connection = True  # stopping: nobody is waiting for this answer any more
        elif fault in _HTTP_ERRORS:
            status, kind, code, message = _HTTP_ERRORS[fault]
            headers = {"Retry-After": f"{sim.retry_after_s:g}"} if fault == "rate_limit" else None
            param = "prompt" if fault == "content_filter" else None
            self._send_json(status, error_body(kind, message, code, param), headers)
        else:
            content, tool_calls = sim.answer(request, fault)
            self._send_json(200, sim.completion(request, content, tool_calls, number))
