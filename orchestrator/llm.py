"""LLM access: one place that talks to the model through the official `openai` client.

The provider is chosen from the environment (DESIGN.md):
  AZURE_OPENAI_ENDPOINT + AZURE_OPENAI_API_KEY (+ OPENAI_API_VERSION) -> Azure OpenAI
  OPENAI_API_KEY (+ OPENAI_BASE_URL)                                 -> OpenAI or a compatible server
  neither                                                            -> the built-in simulator

Every call goes through `Meter.chat`, which checks the task's budget first, then records tokens
(input, cached input, output, reasoning), latency, model and cost, and turns the client's
exceptions into transient or permanent StepErrors. The client's own retries are off: retries are
the orchestrator's, durable and visible in the timeline.
"""
from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections import Counter
from dataclasses import dataclass, field, fields
from datetime import date
from decimal import Decimal
from typing import Any, Callable

import openai
from django.conf import settings

from .errors import BudgetExceeded, LoopDetected, PermanentError, TransientError

SIMULATOR_FINGERPRINT = "steward-simulator"

log = logging.getLogger(__name__)


def provider() -> str:
    if os.environ.get("AZURE_OPENAI_ENDPOINT") and os.environ.get("AZURE_OPENAI_API_KEY"):
        return "azure"
    if os.environ.get("OPENAI_API_KEY"):
        return "openai"
    return "simulator"


_clients: dict[tuple, openai.OpenAI] = {}
_clients_lock = threading.Lock()


def get_client() -> openai.OpenAI:
    """One client per process and configuration: it keeps its HTTP connections alive."""
    kind = provider()
    key = (kind, os.environ.get("OPENAI_BASE_URL"), os.environ.get("AZURE_OPENAI_ENDPOINT"),
           settings.STEWARD_SIMULATOR_URL, settings.STEWARD_LLM_TIMEOUT_S)
    with _clients_lock:
        client = _clients.get(key)
        if client is None:
            common = {"max_retries": 0, "timeout": settings.STEWARD_LLM_TIMEOUT_S}
            if kind == "azure":
                client = openai.AzureOpenAI(
                    azure_endpoint=os.environ["AZURE_OPENAI_ENDPOINT"],
                    api_key=os.environ["AZURE_OPENAI_API_KEY"],
                    api_version=os.environ.get("OPENAI_API_VERSION", "2024-10-21"),
                    **common,
                )
            elif kind == "openai":
                client = openai.OpenAI(**common)  # reads OPENAI_API_KEY and OPENAI_BASE_URL
            else:
                half_set = [name for name in ("OPENAI_BASE_URL", "AZURE_OPENAI_ENDPOINT") if os.environ.get(name)]
                if half_set:
                    # Someone meant a real server; answers from the simulator would look like one's.
                    log.warning("%s is set without its API key (%s): using the built-in simulator at %s",
                                half_set[0], "AZURE_OPENAI_API_KEY" if half_set[0].startswith("AZURE")
                                else "OPENAI_API_KEY", settings.STEWARD_SIMULATOR_URL)
                client = openai.OpenAI(
                    api_key="simulator", base_url=settings.STEWARD_SIMULATOR_URL, **common
                )
            _clients[key] = client
        return client


def chat_completion(body: dict[str, Any], *, timeout: float) -> Any:
    """POST /chat/completions through the client: the same request, URL (Azure deployments too),
    auth, timeout and error types as `client.chat.completions.create`. Returns the answer's JSON as
    the server sent it (a dict from any well-behaved server; `Meter` reads it defensively).

    Why not `create`: it first walks every parameter through the client's TypedDict transform, a
    no-op for the plain JSON we send that cost 0.4 ms of CPU per call here (40% of the client's
    time; measured in bench/README.md). `client.post` is the client's documented way to send a
    body as it is. Why `cast_to=object`: building a `ChatCompletion` from the JSON (nested
    models, without validation) cost another 0.1-0.2 ms per call (an eighth of the client's time,
    bench/README.md), to read seven values.
    """
    return get_client().post("/chat/completions", body=body, cast_to=object, options={"timeout": timeout})


# --- Prices ---------------------------------------------------------------------------------

_price_cache: dict[str, tuple[float, tuple[Decimal, Decimal, Decimal] | None]] = {}
PRICE_CACHE_S = 60.0


def price_for(model: str) -> tuple[Decimal, Decimal, Decimal] | None:
    """(input, cached input, output) USD per 1M tokens in force today, cached for a minute."""
    from .models import ModelPrice

    hit = _price_cache.get(model)
    if hit and time.monotonic() - hit[0] < PRICE_CACHE_S:
        return hit[1]
    row = (
        ModelPrice.objects.filter(model=model, effective_from__lte=date.today())
        .order_by("-effective_from")
        .values_list("input_per_1m", "cached_input_per_1m", "output_per_1m")
        .first()
    )
    _price_cache[model] = (time.monotonic(), row)
    return row


def cost_of(model: str, input_tokens: int, cached_tokens: int, output_tokens: int) -> Decimal:
    """Cached input is priced separately; reasoning tokens are part of output tokens already."""
    price = price_for(model)
    if price is None:
        return Decimal("0")
    per_input, per_cached, per_output = price
    uncached = max(input_tokens - cached_tokens, 0)
    total = uncached * per_input + cached_tokens * per_cached + output_tokens * per_output
    return (total / Decimal(1_000_000)).quantize(Decimal("0.00000001"))


# --- Errors ---------------------------------------------------------------------------------


def _retry_after(response: Any) -> float | None:
    """Seconds the server asked us to wait, from Retry-After (or retry-after-ms)."""
    if response is None:
        return None
    headers = response.headers
    try:
        if headers.get("retry-after-ms"):
            return float(headers["retry-after-ms"]) / 1000
        if headers.get("retry-after"):
            return float(headers["retry-after"])
    except ValueError:
        return None
    return None


def _called_url(exc: Exception) -> str:
    """The URL the failed call went to, without its query (Azure's api-version): which endpoint
    or deployment an operator must look at. The openai client's own message never says."""
    url = getattr(getattr(exc, "request", None), "url", None)
    return str(url.copy_with(query=None)) if url is not None else "the model server"


def classify_error(exc: Exception, timeout_s: float | None = None) -> Exception:
    """Map an `openai` exception to a TransientError or PermanentError. `timeout_s`: how long the
    call was allowed, for the message of a timeout."""
    name = type(exc).__name__
    # What happened before where (a long Azure URL): pages shorten long messages at the end.
    if isinstance(exc, openai.APITimeoutError):
        waited = f" within {timeout_s:g} s" if timeout_s else ""
        return TransientError(f"Model call timed out: no answer{waited} ({_called_url(exc)})", error_type="Timeout")
    if isinstance(exc, openai.APIConnectionError):
        # The cause says what went wrong (refused, unknown host, TLS...); the client's own
        # message is only "Connection error."
        return TransientError(f"Could not reach the model: {exc.__cause__ or exc} ({_called_url(exc)})",
                              error_type="ConnectionError")
    if isinstance(exc, openai.RateLimitError):
        return TransientError(
            f"Rate limited (429): {exc.message}",
            error_type="RateLimited",
            retry_after=_retry_after(exc.response),
        )
    if isinstance(exc, openai.APIStatusError):
        status = exc.status_code
        if status >= 500:
            return TransientError(
                f"Model server error ({status}): {exc.message}",
                error_type=f"ServerError{status}",
                retry_after=_retry_after(exc.response),
            )
        code = getattr(exc, "code", None) or ""
        if code == "content_filter" or "content_filter" in str(exc.body or ""):
            return PermanentError(f"Blocked by the content filter: {exc.message}", error_type="ContentFilter")
        return PermanentError(f"Model refused the request ({status}): {exc.message}", error_type=f"ClientError{status}")
    return PermanentError(f"{name}: {exc}", error_type=name)


# --- The meter ------------------------------------------------------------------------------


@dataclass
class Usage:
    llm_calls: int = 0
    tool_calls: int = 0
    input_tokens: int = 0
    cached_tokens: int = 0
    output_tokens: int = 0
    reasoning_tokens: int = 0
    cost_usd: Decimal = Decimal("0")
    latency_ms: int = 0

    def add(self, other: "Usage") -> None:
        for item in fields(self):
            setattr(self, item.name, getattr(self, item.name) + getattr(other, item.name))

    @property
    def tokens(self) -> int:
        return self.input_tokens + self.output_tokens


@dataclass
class Answer:
    content: str | None
    tool_calls: list[dict]
    message: dict  # the assistant message, ready to append to the conversation
    model: str
    simulated: bool


@dataclass
class BudgetLimits:
    max_llm_calls: int
    max_tool_calls: int
    max_tokens: int
    max_cost_usd: Decimal


@dataclass
class Meter:
    """Counts one step's model and tool usage on top of the task's totals, and enforces the budget.

    `before_call` runs before every model call (the pipeline uses it to renew the task's lease).
    """

    task_totals: Usage
    budget: BudgetLimits | None
    timeout_s: float
    step: Usage = field(default_factory=Usage)
    transcript: list[dict] = field(default_factory=list)
    model: str = ""
    simulated: bool = False
    before_call: Callable[[], None] | None = None
    # Loop detection's p95 rule for this step's worker (metrics.loops.Ceiling), or None.
    tool_call_ceiling: Any = None
    # How often each (tool, canonical arguments) was called in this step.
    call_counts: Counter = field(default_factory=Counter)

    def total(self) -> Usage:
        combined = Usage()
        combined.add(self.task_totals)
        combined.add(self.step)
        return combined

    def check_budget(self) -> None:
        if self.budget is None:
            return
        spent = self.total()
        over = []
        if spent.llm_calls >= self.budget.max_llm_calls:
            over.append(f"LLM calls {spent.llm_calls} >= {self.budget.max_llm_calls}")
        if spent.tool_calls > self.budget.max_tool_calls:
            over.append(f"tool calls {spent.tool_calls} > {self.budget.max_tool_calls}")
        if spent.tokens >= self.budget.max_tokens:
            over.append(f"tokens {spent.tokens} >= {self.budget.max_tokens}")
        if spent.cost_usd >= self.budget.max_cost_usd:
            over.append(f"cost ${spent.cost_usd} >= ${self.budget.max_cost_usd}")
        if over:
            raise BudgetExceeded(
                "Budget exceeded, suspected loop: " + "; ".join(over),
                evidence={
                    "exceeded": over,
                    "llm_calls": spent.llm_calls,
                    "tool_calls": spent.tool_calls,
                    "tokens": spent.tokens,
                    "cost_usd": str(spent.cost_usd),
                    "recent_tool_calls": self.recent_tool_calls(),
                },
            )

    def recent_tool_calls(self, count: int = 10) -> list[dict]:
        """The step's last tool calls with arguments and results: the evidence of a loop."""
        return [entry for entry in self.transcript if entry.get("kind") == "tool_call"][-count:]

    def count_tool_call(self, name: str, arguments: Any, result: Any) -> None:
        self.step.tool_calls += 1
        self.transcript.append({"kind": "tool_call", "tool": name, "arguments": arguments, "result": result})
        self.check_loop(name, arguments)

    def check_loop(self, name: str, arguments: Any) -> None:
        """Stop a looping agent before the budget does: the same tool with the same arguments
        STEWARD_LOOP_REPEAT_LIMIT times, or more tool calls than its worker's loop ceiling."""
        key = (name, _canonical_arguments(arguments))
        self.call_counts[key] += 1
        limit = settings.STEWARD_LOOP_REPEAT_LIMIT
        if limit:
            same = self.call_counts[key]
            if same >= limit:
                raise LoopDetected(
                    f"Loop detected, suspected loop: {name} called {same} times with the same arguments",
                    evidence={"rule": "repeated_call", "tool": name, "arguments": arguments, "times": same,
                              "limit": limit, "tool_calls": self.step.tool_calls,
                              "recent_tool_calls": self.recent_tool_calls()},
                )
        ceiling = self.tool_call_ceiling
        if ceiling is not None and self.step.tool_calls > ceiling.limit:
            raise LoopDetected(
                f"Loop detected, suspected loop: {self.step.tool_calls} tool calls in one step, above the "
                f"ceiling of {ceiling.limit} (recent p95 of {ceiling.worker}: {ceiling.p95:g})",
                evidence={"rule": "above_p95", **ceiling.as_evidence(), "tool_calls": self.step.tool_calls,
                          "recent_tool_calls": self.recent_tool_calls()},
            )

    def chat(
        self,
        *,
        model: str,
        messages: list[dict],
        json_mode: bool = False,
        tools: list[dict] | None = None,
    ) -> Answer:
        self.check_budget()
        if self.before_call:
            self.before_call()
        body: dict[str, Any] = {"model": model, "messages": messages}
        if json_mode:
            body["response_format"] = {"type": "json_object"}
        if tools:
            body["tools"] = tools
        self.transcript.append({"kind": "request", "model": model, "messages": messages[-2:] if len(self.transcript) else messages})
        started = time.perf_counter()
        try:
            completion = chat_completion(body, timeout=self.timeout_s)
        except openai.OpenAIError as exc:
            self.step.latency_ms += int((time.perf_counter() - started) * 1000)
            self.step.llm_calls += 1
            raise classify_error(exc, self.timeout_s) from exc
        elapsed_ms = int((time.perf_counter() - started) * 1000)
        return self._record(completion, model, elapsed_ms)

    def _record(self, completion: Any, model: str, elapsed_ms: int) -> Answer:
        """Count the call and its usage, then read the assistant's message (content, tool calls)."""
        self.step.llm_calls += 1
        self.step.latency_ms += elapsed_ms
        if not isinstance(completion, dict):
            # A proxy's error page with status 200, say: worth a retry, then a dead letter that says so.
            raise TransientError(f"The model server's answer is not a chat completion: {str(completion)[:200]!r}",
                                 error_type="MalformedAnswer")
        usage = _object(completion.get("usage"))
        input_tokens = _count(usage.get("prompt_tokens"))
        output_tokens = _count(usage.get("completion_tokens"))
        cached = _count(_object(usage.get("prompt_tokens_details")).get("cached_tokens"))
        reasoning = _count(_object(usage.get("completion_tokens_details")).get("reasoning_tokens"))
        answered_model = completion.get("model")
        if not isinstance(answered_model, str) or not answered_model:
            answered_model = model
        self.model = answered_model
        self.simulated = self.simulated or completion.get("system_fingerprint") == SIMULATOR_FINGERPRINT
        self.step.input_tokens += input_tokens
        self.step.cached_tokens += cached
        self.step.output_tokens += output_tokens
        self.step.reasoning_tokens += reasoning
        # Price by the name we asked for: on Azure that is the deployment the admin priced.
        self.step.cost_usd += cost_of(model, input_tokens, cached, output_tokens)

        choices = completion.get("choices")
        if not choices:
            raise PermanentError("The model returned no choices", error_type="EmptyAnswer")
        first = choices[0] if isinstance(choices, list) else None
        message = _object(_object(first).get("message"))
        content = message.get("content")
        if content is not None and not isinstance(content, str):
            content = json.dumps(content)
        try:
            tool_calls = [
                {"id": call.get("id"), "type": "function",
                 "function": {"name": call["function"]["name"], "arguments": call["function"].get("arguments")}}
                for call in (message.get("tool_calls") or [])
            ]
        except (AttributeError, KeyError, TypeError) as exc:
            raise TransientError(f"The model's tool calls are not well formed: {str(message.get('tool_calls'))[:200]}",
                                 error_type="MalformedAnswer") from exc
        assistant: dict[str, Any] = {"role": "assistant", "content": content}
        if tool_calls:
            assistant["tool_calls"] = tool_calls
        self.transcript.append({
            "kind": "response", "model": answered_model, "content": content,
            "tool_calls": tool_calls, "latency_ms": elapsed_ms,
            "usage": {"input": input_tokens, "cached": cached, "output": output_tokens, "reasoning": reasoning},
        })
        return Answer(content, tool_calls, assistant, answered_model, self.simulated)


def _object(value: Any) -> dict:
    """A JSON object of the answer, or {} where the server sent null or something else."""
    return value if isinstance(value, dict) else {}


def _count(value: Any) -> int:
    """A token count of the answer: 0 where the server left it out (or sent something else)."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def _canonical_arguments(arguments: Any) -> str:
    """The same arguments spelled differently (key order, spacing) are the same call."""
    try:
        value = json.loads(arguments) if isinstance(arguments, str) else arguments
        return json.dumps(value, sort_keys=True)
    except (TypeError, ValueError):
        return str(arguments)


def parse_json_object(text: str | None) -> dict:
    """Parse the model's JSON answer; raise ValueError with a message the model can act on."""
    if not text:
        raise ValueError("The answer was empty; reply with one JSON object.")
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        # Some of json's messages end in "at" ("Unterminated string starting at"): a colon, not a
        # second "at". Counted from 1, as a person (or the model, re-asked with this) counts.
        raise ValueError(f"The answer was not valid JSON ({exc.msg}: character {exc.pos + 1} of the answer).") from exc
    if not isinstance(value, dict):
        raise ValueError("The answer must be one JSON object.")
    return value
