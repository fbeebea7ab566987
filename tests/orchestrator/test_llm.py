"""LLM access: provider choice, the Azure client, prices and cost, the meter, error taxonomy, budgets.

Every model call goes over HTTP to the real simulator through the official `openai` client.
"""
from __future__ import annotations

from datetime import date, timedelta
from decimal import Decimal

import pytest

from orchestrator import llm
from orchestrator.errors import BudgetExceeded, PermanentError, TransientError
from orchestrator.llm import BudgetLimits, Meter, Usage, cost_of, provider
from orchestrator.models import ModelPrice
from tests.conftest import LoopbackServer

SYSTEM = "You classify business documents. Answer with one JSON object."


def doc(text: str) -> list[dict]:
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": f"<document>\n{text}\n</document>"}]


def meter(**kwargs) -> Meter:
    return Meter(task_totals=kwargs.pop("task_totals", Usage()), budget=kwargs.pop("budget", None),
                 timeout_s=kwargs.pop("timeout_s", 5.0), **kwargs)


@pytest.fixture(autouse=True)
def _fresh_caches():
    """Clients and prices are cached per process; each test sees its own configuration."""
    llm._clients.clear()
    llm._price_cache.clear()
    yield
    llm._clients.clear()
    llm._price_cache.clear()


# --- Provider -------------------------------------------------------------------------------


def test_azure_is_chosen_when_endpoint_and_key_are_set(monkeypatch):
    monkeypatch.setenv("AZURE_OPENAI_ENDPOINT", "https://example.openai.azure.com")
    monkeypatch.setenv("AZURE_OPENAI_API_KEY", "azure-key")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-also-set")
    assert provider() == "azure"


def test_azure_endpoint_without_key_falls_back_to_openai(monkeypatch):
    monkeypatch.setenv("AZURE_OPENAI_ENDPOINT", "https://example.openai.azure.com")
    monkeypatch.setenv("AZURE_OPENAI_API_KEY", "")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    assert provider() == "openai"


def test_openai_is_chosen_with_only_an_openai_key(monkeypatch):
    monkeypatch.delenv("AZURE_OPENAI_ENDPOINT", raising=False)
    monkeypatch.delenv("AZURE_OPENAI_API_KEY", raising=False)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    assert provider() == "openai"


def test_simulator_is_chosen_without_any_key(monkeypatch):
    for name in ("AZURE_OPENAI_ENDPOINT", "AZURE_OPENAI_API_KEY", "OPENAI_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    assert provider() == "simulator"


@pytest.mark.parametrize("address, key", [("OPENAI_BASE_URL", "OPENAI_API_KEY"),
                                           ("AZURE_OPENAI_ENDPOINT", "AZURE_OPENAI_API_KEY")])
def test_an_address_without_its_key_says_the_simulator_answers(monkeypatch, caplog, address, key):
    """A server that needs no key (a local one) still needs OPENAI_API_KEY set to anything: without
    it the simulator answers, and the worker's log says so instead of passing it off as the server."""
    for name in ("AZURE_OPENAI_ENDPOINT", "AZURE_OPENAI_API_KEY", "OPENAI_API_KEY", "OPENAI_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv(address, "http://127.0.0.1:9/v1")
    monkeypatch.setattr("orchestrator.llm._clients", {})
    with caplog.at_level("WARNING", logger="orchestrator.llm"):
        llm.get_client()
    assert f"{address} is set without its API key ({key}): using the built-in simulator" in caplog.text


def test_azure_client_talks_to_the_deployment_url(db, simulator, monkeypatch):
    monkeypatch.setenv("AZURE_OPENAI_ENDPOINT", simulator.azure_endpoint)
    monkeypatch.setenv("AZURE_OPENAI_API_KEY", "azure-key")
    m = meter()

    answer = m.chat(model="my-deployment", messages=doc("INVOICE\nTotal: $10.00"), json_mode=True)

    assert isinstance(llm.get_client(), llm.openai.AzureOpenAI)
    assert answer.model == "my-deployment"  # the deployment name came back from the Azure URL form
    assert '"doc_type": "Invoice"' in answer.content
    assert answer.simulated is True
    assert simulator.stats()["requests"] == 1


def test_openai_client_follows_openai_base_url(db, simulator, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    monkeypatch.setenv("OPENAI_BASE_URL", simulator.url)

    answer = meter().chat(model="gpt-4o-mini", messages=doc("INVOICE\nTotal: $10.00"), json_mode=True)

    assert provider() == "openai"
    assert '"doc_type": "Invoice"' in answer.content
    assert simulator.stats()["requests"] == 1


def test_simulator_client_uses_the_configured_simulator(db, simulator):
    answer = meter().chat(model="gpt-4o-mini", messages=doc("INVOICE\nTotal: $10.00"), json_mode=True)

    assert llm.get_client().base_url.host == simulator.host
    assert answer.simulated is True
    assert simulator.stats()["requests"] == 1


# --- Prices and cost ------------------------------------------------------------------------


def test_cost_of_prices_input_and_output_per_million(db):
    assert cost_of("gpt-4o-mini", 1_000_000, 0, 1_000_000) == Decimal("0.75")


def test_cached_input_tokens_are_priced_at_the_cached_rate(db):
    # 600k uncached x 0.15 + 400k cached x 0.075 + 2k output x 0.60, per 1M
    assert cost_of("gpt-4o-mini", 1_000_000, 400_000, 2_000) == Decimal("0.12120000")


def test_unknown_model_costs_nothing(db):
    assert cost_of("no-such-model", 1_000_000, 0, 1_000_000) == Decimal("0")


def test_newer_price_row_wins(db):
    ModelPrice.objects.create(model="gpt-4o-mini", effective_from=date.today() - timedelta(days=1),
                              input_per_1m=Decimal("1.00"), cached_input_per_1m=Decimal("0.50"),
                              output_per_1m=Decimal("2.00"))
    assert cost_of("gpt-4o-mini", 1_000_000, 0, 1_000_000) == Decimal("3")


def test_future_dated_price_is_not_used_yet(db):
    ModelPrice.objects.create(model="gpt-4o-mini", effective_from=date.today() + timedelta(days=30),
                              input_per_1m=Decimal("100"), cached_input_per_1m=Decimal("100"),
                              output_per_1m=Decimal("100"))
    assert cost_of("gpt-4o-mini", 1_000_000, 0, 1_000_000) == Decimal("0.75")


# --- The meter ------------------------------------------------------------------------------


def test_meter_records_tokens_latency_cost_and_the_simulator(db, simulator):
    simulator.latency_ms = 30
    m = meter()

    m.chat(model="o3-mini", messages=doc("INVOICE\nTotal: $10.00"), json_mode=True)
    m.chat(model="o3-mini", messages=doc("INVOICE\nTotal: $20.00"), json_mode=True)  # same system prompt

    assert m.step.llm_calls == 2
    assert m.step.input_tokens > 0
    assert 0 < m.step.cached_tokens < m.step.input_tokens  # the second call reused the system prompt
    assert m.step.reasoning_tokens > 0  # a reasoning model
    assert m.step.output_tokens > m.step.reasoning_tokens  # reasoning is part of output
    assert m.step.latency_ms >= 60
    assert m.step.cost_usd == cost_of("o3-mini", m.step.input_tokens, m.step.cached_tokens, m.step.output_tokens)
    assert m.step.cost_usd > 0
    assert m.model == "o3-mini"
    assert m.simulated is True
    responses = [e for e in m.transcript if e["kind"] == "response"]
    assert [r["usage"]["reasoning"] > 0 for r in responses] == [True, True]


def test_non_reasoning_model_has_no_reasoning_tokens(db, simulator):
    m = meter()
    m.chat(model="gpt-4o-mini", messages=doc("INVOICE\nTotal: $10.00"), json_mode=True)
    assert m.step.reasoning_tokens == 0
    assert m.step.output_tokens > 0


# --- Errors, through real HTTP --------------------------------------------------------------


def failing_call(marker: str, **kwargs) -> Exception:
    m = meter(**kwargs)
    with pytest.raises((TransientError, PermanentError)) as caught:
        m.chat(model="gpt-4o-mini", messages=doc(f"INVOICE\n[[sim-fault: {marker}]]"), json_mode=True)
    assert m.step.llm_calls == 1  # a failed call is still counted
    return caught.value


def test_rate_limit_is_transient_and_honours_retry_after(db, simulator):
    error = failing_call("rate_limit")
    assert isinstance(error, TransientError) and not error.permanent
    assert error.error_type == "RateLimited"
    assert error.retry_after == 1.0


@pytest.mark.parametrize("marker, status", [("server_error", 500), ("unavailable", 503)])
def test_server_errors_are_transient(db, simulator, marker, status):
    error = failing_call(marker)
    assert isinstance(error, TransientError) and not error.permanent
    assert error.error_type == f"ServerError{status}"


def test_timeout_is_transient(db, simulator):
    error = failing_call("timeout", timeout_s=0.3)
    assert isinstance(error, TransientError)
    assert error.error_type == "Timeout"
    # Where, and how long Steward waited: the reason an operator reads on the dead letter.
    assert error.message == f"Model call timed out: no answer within 0.3 s ({llm.get_client().base_url}chat/completions)"


def test_content_filter_is_permanent(db, simulator):
    error = failing_call("content_filter")
    assert isinstance(error, PermanentError) and error.permanent
    assert error.error_type == "ContentFilter"
    assert "content filter" in error.message



# --- Answers from a compatible server that does not answer like OpenAI ----------------------


@pytest.fixture
def odd_server(settings):
    """A real HTTP server standing in for an OpenAI-compatible one; each test sets what it answers
    (status 200) to /v1/chat/completions."""
    import json

    answer = {"body": b"{}", "type": "application/json"}
    server = LoopbackServer(lambda path, body: (200, answer["type"], answer["body"]))
    settings.STEWARD_SIMULATOR_URL = f"{server.url}/v1"

    def answers(body, content_type="application/json"):
        answer["body"] = body if isinstance(body, bytes) else json.dumps(body).encode()
        answer["type"] = content_type

    yield answers
    server.stop()


def test_an_answer_with_only_a_message_is_read_and_counted(db, odd_server):
    odd_server({"choices": [{"message": {"role": "assistant", "content": '{"doc_type": "Invoice"}'}}]})
    m = meter()

    answer = m.chat(model="gpt-4o-mini", messages=doc("INVOICE"), json_mode=True)

    assert answer.content == '{"doc_type": "Invoice"}' and answer.tool_calls == []
    assert answer.model == "gpt-4o-mini" and answer.simulated is False  # no model or fingerprint sent
    assert (m.step.llm_calls, m.step.input_tokens, m.step.output_tokens) == (1, 0, 0)  # no usage sent


def test_tool_calls_and_usage_of_a_compatible_server_are_read(db, odd_server):
    odd_server({"model": "local-7b", "usage": {"prompt_tokens": 12, "completion_tokens": 5,
                                               "prompt_tokens_details": None},
                "choices": [{"message": {"content": None, "tool_calls": [
                    {"type": "function", "function": {"name": "find_duplicates", "arguments": "{}"}}]}}]})
    m = meter()

    answer = m.chat(model="gpt-4o-mini", messages=doc("INVOICE"), tools=[])

    assert answer.model == "local-7b"
    assert answer.tool_calls == [{"id": None, "type": "function",
                                  "function": {"name": "find_duplicates", "arguments": "{}"}}]
    assert (m.step.input_tokens, m.step.output_tokens, m.step.cached_tokens) == (12, 5, 0)


def test_an_answer_without_choices_is_a_permanent_error(db, odd_server):
    odd_server({"model": "gpt-4o-mini", "choices": []})
    m = meter()

    with pytest.raises(PermanentError) as caught:
        m.chat(model="gpt-4o-mini", messages=doc("INVOICE"), json_mode=True)

    assert caught.value.error_type == "EmptyAnswer"
    assert m.step.llm_calls == 1


@pytest.mark.parametrize("body, content_type", [
    (b"<html>Gateway says hello</html>", "text/html"),
    ([1, 2, 3], "application/json"),
    ({"choices": [{"message": {"tool_calls": [{"function": "find_duplicates"}]}}]}, "application/json"),
])
def test_an_answer_that_is_not_a_chat_completion_is_transient_and_says_so(db, odd_server, body, content_type):
    odd_server(body, content_type)
    m = meter()

    with pytest.raises(TransientError) as caught:
        m.chat(model="gpt-4o-mini", messages=doc("INVOICE"), json_mode=True)

    assert caught.value.error_type == "MalformedAnswer"
    assert "not" in caught.value.message
    assert m.step.llm_calls == 1

# --- Budgets --------------------------------------------------------------------------------

LIMITS = BudgetLimits(max_llm_calls=5, max_tool_calls=8, max_tokens=1_000, max_cost_usd=Decimal("0.01"))


@pytest.mark.parametrize("spent, what", [
    (Usage(llm_calls=5), "LLM calls 5 >= 5"),
    (Usage(input_tokens=900, output_tokens=100), "tokens 1000 >= 1000"),
    (Usage(cost_usd=Decimal("0.01")), "cost $0.01 >= $0.01"),
    (Usage(tool_calls=9), "tool calls 9 > 8"),
])
def test_budget_ceiling_stops_the_next_call_with_evidence(spent, what):
    m = meter(task_totals=spent, budget=LIMITS)
    with pytest.raises(BudgetExceeded) as caught:
        m.check_budget()
    error = caught.value
    assert error.permanent
    assert what in error.message
    assert error.evidence["exceeded"] == [what]
    assert error.evidence["llm_calls"] == spent.llm_calls
    assert error.evidence["tool_calls"] == spent.tool_calls


def test_budget_counts_the_step_on_top_of_the_task_totals():
    m = meter(task_totals=Usage(llm_calls=4), budget=LIMITS)
    m.check_budget()  # 4 of 5: one more call is allowed
    m.step.llm_calls = 1
    with pytest.raises(BudgetExceeded):
        m.check_budget()


def test_tool_calls_up_to_the_ceiling_are_allowed():
    meter(task_totals=Usage(tool_calls=8), budget=LIMITS).check_budget()


def test_budget_evidence_lists_the_recent_tool_calls(settings):
    settings.STEWARD_LOOP_REPEAT_LIMIT = 0  # the budget under test: loop detection (tests/metrics) off
    m = meter(budget=LIMITS)
    for _ in range(9):
        m.count_tool_call("find_duplicates", '{"invoice_number": "X"}', {"matches": []})
    with pytest.raises(BudgetExceeded) as caught:
        m.check_budget()
    recent = caught.value.evidence["recent_tool_calls"]
    assert len(recent) == 9
    assert {c["tool"] for c in recent} == {"find_duplicates"}


def test_over_budget_makes_no_model_call(db, simulator):
    m = meter(task_totals=Usage(llm_calls=5), budget=LIMITS)
    with pytest.raises(BudgetExceeded):
        m.chat(model="gpt-4o-mini", messages=doc("INVOICE"), json_mode=True)
    assert simulator.stats()["requests"] == 0
