"""The charts page: figures from the rollups, a data table and a CSV per chart, filters, roles."""
from __future__ import annotations

import csv
import io
from datetime import timedelta
from decimal import Decimal

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from metrics import svg
from metrics.charts import CHARTS, chart_filters
from metrics.rollups import Accumulator, add_approval, add_step, add_task, hour
from reviews.models import RejectionReason

pytestmark = pytest.mark.django_db

NOW = timezone.now()
RECENT = hour(NOW) - timedelta(hours=2)
LAST_WEEK = hour(NOW) - timedelta(days=5)


def task(doc_type="Invoice", queue="standard_queue", tool_calls=3, cost="0.002"):
    return {"doc_type": doc_type, "routed_to": queue, "tool_calls": tool_calls, "input_tokens": 1000,
            "output_tokens": 200, "cost_usd": Decimal(cost)}


def step(worker="extract", status="succeeded", version="v1", model="gpt-4o-mini", at=RECENT, cost="0.001",
         error_type="", doc_type="Invoice", tool_calls=0):
    return {"worker": worker, "model": model, "prompt_version": version, "status": status, "error_type": error_type,
            "input": {"doc_type": doc_type}, "output": {"doc_type": doc_type}, "transcript": [], "llm_calls": 1, "tool_calls": tool_calls,
            "input_tokens": 500, "cached_tokens": 100, "output_tokens": 50, "reasoning_tokens": 0,
            "cost_usd": Decimal(cost), "latency_ms": 400, "started_at": at, "finished_at": at}


def approval(decision, wait_minutes, reason="", queue="finance_director", at=RECENT):
    return {"status": decision, "created_at": at - timedelta(minutes=wait_minutes), "decided_at": at,
            "queue_name": queue, "doc_type": "Invoice", "reason": reason}


@pytest.fixture
def history(db):
    """A known history, written as the pipeline would write it."""
    acc = Accumulator()
    for _ in range(3):
        add_task(acc, task(), outcome="completed", at=RECENT)
    add_task(acc, task(queue="finance_director"), outcome="completed", at=RECENT, human=True)
    add_task(acc, task(queue="finance_director", tool_calls=2), outcome="rejected", at=RECENT, work_cost=Decimal("0.003"))
    add_task(acc, task(doc_type="Contract", queue="legal_team", tool_calls=12), outcome="dead_lettered",
             at=LAST_WEEK, work_cost=Decimal("0.004"))
    add_approval(acc, approval("rejected", 10, reason="wrong_amount"))
    add_approval(acc, approval("approved", 30))
    add_approval(acc, approval("auto_approved", 0, queue="standard_queue"))
    add_step(acc, step(version="v2", status="failed", error_type="InvalidAnswer", cost="0.010"))
    add_step(acc, step(version="v2"))
    add_step(acc, step(version="v3"))
    add_step(acc, step(version="v3"))
    add_step(acc, step(worker="classify", model="gpt-4o", cost="0.020"))
    add_step(acc, step(worker="verify", status="dead_lettered", error_type="LoopDetected", tool_calls=3, at=LAST_WEEK))
    acc.apply()
    RejectionReason.objects.update_or_create(code="wrong_amount", defaults={"label": "<b>Wrong</b> amount"})


def rows(slug: str, **params) -> list:
    return CHARTS[slug](chart_filters({"range": "24h", **params})).rows


def test_completion_rate_with_and_without_a_person(history):
    assert rows("completion") == [[RECENT.isoformat(), 5, 3, 1, 60.0, 80.0]]
    week = rows("completion", range="7d")  # day by day (UTC)
    assert week == [[LAST_WEEK.replace(hour=0).isoformat(), 1, 0, 0, 0.0, 0.0],
                    [RECENT.replace(hour=0).isoformat(), 5, 3, 1, 60.0, 80.0]]
    assert rows("completion", queue="finance_director") == [[RECENT.isoformat(), 2, 0, 1, 0.0, 50.0]]
    assert rows("completion", doc_type="Contract") == []


def test_rejection_reasons_approval_wait_and_wasted_spend(history):
    assert rows("rejections") == [["wrong_amount", "<b>Wrong</b> amount", 1, 100.0]]
    wait = CHARTS["approval-wait"](chart_filters({"range": "24h"}))
    assert wait.rows == [[RECENT.isoformat(), 2, 1200.0]]  # (10 + 30) / 2 minutes; auto-approvals left out
    assert "Half were decided within 15 minutes, nine in ten within 30 minutes." == wait.note
    wasted = {r[0]: r[1] for r in rows("wasted")}
    assert wasted["Failed step attempts"] == pytest.approx(0.010)
    assert wasted["Work on rejected tasks"] == pytest.approx(0.003)
    assert wasted["Work on dead-lettered tasks"] == 0  # last week: outside the range
    assert wasted["All model spend"] == pytest.approx(0.010 + 0.001 * 3 + 0.020)
    assert {r[0]: r[1] for r in rows("wasted", range="7d")}["Work on dead-lettered tasks"] == pytest.approx(0.004)


def test_spend_by_model_worker_and_doc_type(history):
    by_model = {r[0]: r for r in rows("spend-model")}
    assert by_model["gpt-4o"][1:] == [1, 500, 100, 50, 0, 550, 0.02]
    assert by_model["gpt-4o-mini"][1] == 4
    assert [r[0] for r in rows("spend-worker")] == ["classify", "extract"]  # by cost, highest first
    assert [r[0] for r in rows("spend-worker", worker="extract")] == ["extract"]
    assert rows("spend-doc-type")[0][0] == "Invoice"


def test_prompt_versions_compared(history):
    versions = {(r[0], r[1]): r for r in rows("prompt-versions")}
    assert versions[("extract", "v2")][2:4] == [2, 50.0]
    assert versions[("extract", "v3")][2:4] == [2, 100.0]  # v3 improved


def test_tool_calls_per_task_and_dead_letters(history):
    tool_rows = dict((label, n) for label, n in rows("tool-calls", range="7d"))
    assert tool_rows["3"] == 4 and tool_rows["2"] == 1 and tool_rows["11-12"] == 1
    assert rows("dead-letters", range="7d") == [["LoopDetected", "verify", 1, "yes"]]
    assert rows("dead-letters") == []


def test_a_year_day_by_day_is_described_in_whole_figures_up_to_a_pointer_to_the_table():
    days = [f"2025-{n // 28 + 1:02}-{n % 28 + 1:02}" for n in range(366)]
    markup = svg.lines("chart-c", "Completion rate", days, [("completed", [50.5] * 366), ("in all", [75.25] * 366)])
    description = markup.split("<desc id=\"chart-c-d\">")[1].split("</desc>")[0]
    assert len(description) <= 2000
    figures, rest = description.split("…")
    assert figures.startswith("completed: 2025-01-01 50.5, ") and figures.endswith(" 50.5")
    assert rest == " and more: every figure is in the data table under the chart."


def test_the_page_shows_every_chart_with_a_table_and_a_csv_link(history, operator, client_for):
    response = client_for(operator).get("/charts/?range=7d")
    assert response.status_code == 200
    html = response.content.decode()
    for slug, build in CHARTS.items():
        assert f'id="chart-{slug}"' in html
        assert f'href="/charts/{slug}.csv?range=7d"' in html
    assert html.count('role="img"') == len(CHARTS)
    assert html.count('<table class="chart-data">') == len(CHARTS)
    assert "&lt;b&gt;Wrong&lt;/b&gt; amount" in html and "<b>Wrong</b>" not in html
    assert "cdn" not in html.lower() and "https://" not in html


def test_htmx_gets_only_the_charts(history, operator, client_for):
    response = client_for(operator).get("/charts/?range=24h&queue=finance_director", HTTP_HX_REQUEST="true")
    html = response.content.decode()
    assert html.lstrip().startswith('<div id="charts-body">')
    assert "<html" not in html
    assert "HX-Request" in response["Vary"]


def test_csv_download(history, operator, client_for):
    response = client_for(operator).get("/charts/rejections.csv?range=24h")
    assert response["Content-Type"].startswith("text/csv")
    assert "attachment" in response["Content-Disposition"]
    table = list(csv.reader(io.StringIO(response.content.decode())))
    assert table == [["reason", "label", "rejections", "percent"], ["wrong_amount", "<b>Wrong</b> amount", "1", "100.0"]]
    assert client_for(operator).get("/charts/nope.csv").status_code == 404


def test_csv_cells_are_not_run_as_spreadsheet_formulas(history, operator, client_for):
    RejectionReason.objects.filter(code="wrong_amount").update(label="=HYPERLINK(\"http://x\")")
    text = client_for(operator).get("/charts/rejections.csv").content.decode()
    assert "'=HYPERLINK" in text


def test_custom_range(history, operator, client_for):
    day = RECENT.date().isoformat()
    assert rows("completion", range="custom", **{"from": day, "to": day})[0][1:] == [5, 3, 1, 60.0, 80.0]
    html = client_for(operator).get("/charts/?range=custom&from=2024-05-02&to=2024-05-01").content.decode()
    assert "The end date is before the start date." in html
    html = client_for(operator).get("/charts/?range=custom&from=yesterday").content.decode()
    assert "Give both dates as YYYY-MM-DD." in html


def test_charts_never_read_the_steps_table(history, operator, client_for):
    with CaptureQueriesContext(connection) as queries:
        assert client_for(operator).get("/charts/?range=30d").status_code == 200
    # Only the catch-up looks at steps, and only at the ones not counted yet (a partial index).
    reading_steps = [q["sql"] for q in queries.captured_queries if "orchestrator_step" in q["sql"]]
    assert len(reading_steps) == 1 and '"counted"' in reading_steps[0]
    assert not any("orchestrator_task" in q["sql"] for q in queries.captured_queries)


def test_reviewers_and_outsiders_are_kept_out(history, reviewer_finance, outsider, client_for):
    for user in (reviewer_finance, outsider):
        assert client_for(user).get("/charts/").status_code == 403
        assert client_for(user).get("/charts/completion.csv").status_code == 403


@pytest.mark.parametrize("dates, message", [
    (("9999-12-30", "9999-12-31"), "Choose dates between 1970-01-01 and "),
    (("0001-01-01", "0001-01-02"), "Choose dates between 1970-01-01 and "),
    (("2024-02-30", "2024-03-01"), "Give both dates as YYYY-MM-DD."),
    (("2024-01-01", ""), "Give both dates as YYYY-MM-DD."),
])
def test_an_impossible_custom_range_is_refused_with_a_message(history, operator, client_for, dates, message):
    query = {"range": "custom", "from": dates[0], "to": dates[1]}
    response = client_for(operator).get("/charts/", query)
    assert response.status_code == 200
    html = response.content.decode()
    assert message in html and "Showing the last 24 hours." in html
    # The page's own CSV links download what it shows: the last 24 hours.
    assert 'href="/charts/completion.csv?range=24h"' in html
    download = client_for(operator).get("/charts/completion.csv?range=24h")
    assert list(csv.reader(io.StringIO(download.content.decode())))[1][1:] == ["5", "3", "1", "60.0", "80.0"]


@pytest.mark.parametrize("dates, message", [
    (("2024-05-02", "2024-05-01"), "The end date is before the start date."),
    (("9999-12-30", "9999-12-31"), "Choose dates between 1970-01-01 and "),
    (("2024-02-30", "2024-03-01"), "Give both dates as YYYY-MM-DD."),
])
def test_a_csv_of_a_refused_range_is_refused_not_another_range(history, operator, client_for, dates, message):
    """A CSV asked for with a range the page refuses says why, instead of the last 24 hours under
    the asked-for name: a script or a bookmark would otherwise file the wrong figures."""
    download = client_for(operator).get("/charts/completion.csv", {"range": "custom", "from": dates[0],
                                                                    "to": dates[1]})
    assert download.status_code == 400
    assert download["Content-Type"] == "text/plain; charset=utf-8"
    assert "attachment" not in download.get("Content-Disposition", "")
    assert download.content.decode().startswith(message)


def test_an_unknown_range_is_said_not_silently_replaced(history, operator, client_for):
    """range=1y (a hand-edited or outdated link) shows the last 24 hours and says so; its CSV is
    refused with the same words."""
    client = client_for(operator)
    html = client.get("/charts/", {"range": "1y"}).content.decode()
    message = "There is no range &#x27;1y&#x27;: choose 24h, 7d, 30d or custom dates."
    assert message in html and "Showing the last 24 hours." in html
    download = client.get("/charts/completion.csv", {"range": "1y"})
    assert download.status_code == 400
    assert download.content.decode().startswith("There is no range '1y'")
