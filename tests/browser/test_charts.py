"""The charts page in a real browser: HTMX range switch, data tables, and how it looks on a phone.

Screenshots go to test-artifacts/ (charts-desktop.png, charts-phone.png, charts-phone-full.png).
"""
from __future__ import annotations

import random
import re
from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone
from playwright.sync_api import expect

from metrics.rollups import Accumulator, add_approval, add_step, add_task, hour
from reviews.models import RejectionReason

from .conftest import ARTIFACTS, log_in

pytestmark = pytest.mark.browser


def seed_history() -> None:
    """A day of plausible work, written into the rollups as the pipeline would."""
    rng = random.Random(5)
    acc = Accumulator()
    now = hour(timezone.now())
    for hours_ago in range(1, 24 * 8, 3):
        at = now - timedelta(hours=hours_ago)
        for _ in range(rng.randint(3, 9)):
            doc_type, queue = rng.choice([("Invoice", "standard_queue"), ("Invoice", "finance_director"),
                                          ("Contract", "legal_team"), ("Report", "standard_queue")])
            tools = max(0, int(rng.gauss(3, 1)))
            task = {"doc_type": doc_type, "routed_to": queue, "tool_calls": tools, "input_tokens": rng.randint(900, 3000),
                    "output_tokens": rng.randint(100, 600), "cost_usd": Decimal("0.0021")}
            outcome = rng.choices(["completed", "rejected", "dead_lettered"], [8, 1, 1])[0]
            add_task(acc, task, outcome=outcome, at=at, human=rng.random() < 0.3, work_cost=Decimal("0.0015"))
            for worker, version in (("classify", "v1"), ("extract", rng.choice(["v2", "v3"])), ("verify", "v1")):
                failed = rng.random() < (0.2 if version == "v2" else 0.05)
                add_step(acc, {"worker": worker, "model": "gpt-4o-mini" if worker != "extract" else "gpt-4o",
                               "prompt_version": version, "status": "failed" if failed else "succeeded",
                               "error_type": "InvalidAnswer" if failed else "", "input": {"doc_type": doc_type},
                               "output": {"doc_type": doc_type}, "transcript": [], "llm_calls": 1,
                               "tool_calls": tools if worker == "verify" else 0, "input_tokens": 800,
                               "cached_tokens": 200, "output_tokens": 120, "reasoning_tokens": 0,
                               "cost_usd": Decimal("0.0007"), "latency_ms": 600, "started_at": at, "finished_at": at})
            if outcome == "rejected":
                add_approval(acc, {"status": "rejected", "created_at": at - timedelta(minutes=rng.randint(5, 240)),
                                   "decided_at": at, "queue_name": queue, "doc_type": doc_type,
                                   "reason": rng.choice(["duplicate", "wrong_amount", "not_ours"])})
            elif outcome == "dead_lettered":
                add_step(acc, {"worker": "verify", "model": "gpt-4o-mini", "prompt_version": "v1",
                               "status": "dead_lettered", "error_type": rng.choice(["LoopDetected", "ContentFilter"]),
                               "input": {"doc_type": doc_type}, "output": {}, "transcript": [], "llm_calls": 3,
                               "tool_calls": 3, "input_tokens": 2400, "cached_tokens": 0, "output_tokens": 90,
                               "reasoning_tokens": 0, "cost_usd": Decimal("0.0012"), "latency_ms": 900,
                               "started_at": at, "finished_at": at})
    acc.apply()
    for code, label in (("wrong_amount", "Wrong amount"), ("not_ours", "Not addressed to us")):
        RejectionReason.objects.get_or_create(code=code, defaults={"label": label})


def test_operator_reads_the_charts_on_desktop_and_phone(plain_http, live_server, operator, browser):
    seed_history()
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.set_default_timeout(15_000)
    page.goto(f"{live_server.url}/login/?next=/charts/")
    page.fill("#id_username", "olga")
    page.fill("#id_password", "pw-olga")
    page.click("button[type=submit]")
    page.wait_for_url(re.compile(r"/charts/$"))
    assert page.locator("section.chart").count() == 10
    assert page.locator("#chart-completion svg[role=img]").count() == 1
    first_rows = page.locator("#chart-completion table.chart-data tbody tr").count()

    # Switching the range is an HTMX swap that also updates the address bar.
    page.check("input[name=range][value='7d']")
    page.wait_for_url(re.compile(r"range=7d"))
    page.wait_for_function("() => document.querySelector('#charts-body .hint').textContent"
                           ".includes('periods of 1 day')")
    assert page.locator("section.chart").count() == 10
    assert page.locator("#chart-completion table.chart-data tbody tr").count() != first_rows

    # The data table opens under its chart; the CSV link carries the same filters.
    page.locator("#chart-rejections details summary").click()
    assert page.locator("#chart-rejections table.chart-data").is_visible()
    assert "Wrong amount" in page.locator("#chart-rejections table.chart-data").inner_text()
    assert page.locator("#chart-rejections a:has-text('Download CSV')").get_attribute("href") == \
        "/charts/rejections.csv?range=7d"
    page.screenshot(path=ARTIFACTS / "charts-desktop.png", full_page=True)

    # On a phone: nothing wider than the screen, the charts scale down.
    page.set_viewport_size({"width": 390, "height": 844})
    page.reload()
    page.evaluate("window.scrollTo(0, 0)")
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    width = page.locator("#chart-completion svg").bounding_box()["width"]
    assert 300 <= width <= 390
    page.screenshot(path=ARTIFACTS / "charts-phone.png")
    page.screenshot(path=ARTIFACTS / "charts-phone-full.png", full_page=True)
    for slug in ("completion", "tool-calls", "wasted"):
        page.locator(f"#chart-{slug}").screenshot(path=ARTIFACTS / f"charts-phone-{slug}.png")
    page.close()


def test_a_screen_reader_names_each_chart_by_its_title(plain_http, live_server, operator, browser):
    """Each chart is a picture named by its short title; its figures are its description (and all
    of them are in the data table under it), not a paragraph of numbers read out as its name."""
    seed_history()
    page = log_in(browser, live_server, "olga")
    page.goto(f"{live_server.url}/charts/?range=7d")
    charts = page.locator("section.chart")
    assert charts.count() == 10
    for chart in charts.all():
        title = chart.locator("svg > title").text_content()
        assert 0 < len(title) <= 60
        picture = chart.get_by_role("img", name=title, exact=True)
        expect(picture).to_have_count(1)
        expect(picture).to_have_accessible_description(re.compile(r"\w: \S"))
        assert chart.locator("table.chart-data tbody tr").count() > 0
    page.close()
