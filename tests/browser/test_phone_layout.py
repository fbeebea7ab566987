"""On a phone (390x844): the top bar keeps to two rows; the inbox's Approve and Reject, the
triage's Retry, a dead letter's errors and what became of each item of a bulk retry are on
screen, no page scrolls sideways, and the charts' axis text is legible.

Screenshots go to test-artifacts/phone-*.png.
"""
from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from orchestrator.models import Step, Task
from orchestrator.services import bulk_retry_advance, bulk_retry_create, dead_letter_create
from reviews.models import RejectionReason

from .conftest import ARTIFACTS, log_in
from .test_charts import seed_history

pytestmark = pytest.mark.browser

PHONE = {"width": 390, "height": 844}
LEGIBLE_PX = 12

# The rendered size of each piece of small chart text in CSS px: its font size, in viewBox units,
# times the scale the SVG is drawn at.
TEXT_SIZES = """sel => [...document.querySelectorAll(sel)].map(
    t => parseFloat(getComputedStyle(t).fontSize) * t.ownerSVGElement.getScreenCTM().a)"""
# Pairs of labels of one chart whose boxes overlap.
OVERLAPS = """sel => {
  const boxes = [...document.querySelectorAll(sel)].map(t => [t.textContent, t.getBoundingClientRect()]);
  const hits = [];
  boxes.forEach(([a, p], i) => boxes.slice(i + 1).forEach(([b, q]) => {
    if (p.left < q.right && q.left < p.right && p.top < q.bottom && q.top < p.bottom) hits.push([a, b]);
  }));
  return hits;
}"""


# Texts of a chart drawn (partly) outside it, where the SVG cuts them off.
OUTSIDE = """sel => {
  const svg = document.querySelector(sel), box = svg.getBoundingClientRect();
  return [...svg.querySelectorAll("text")].filter(t => { const r = t.getBoundingClientRect();
    return r.left < box.left - 0.5 || r.right > box.right + 0.5 || r.top < box.top - 0.5 || r.bottom > box.bottom + 0.5;
  }).map(t => t.textContent);
}"""


def assert_fits(page) -> None:
    """Nothing wider than the screen: the page does not scroll sideways."""
    assert page.evaluate("document.documentElement.scrollWidth") <= page.evaluate("window.innerWidth")


def assert_on_screen(locator) -> None:
    box = locator.bounding_box()
    assert box is not None and box["width"] > 0, "not displayed"
    assert 0 <= box["x"] and box["x"] + box["width"] <= PHONE["width"], f"off-screen: {box}"


def test_alice_decides_from_her_inbox_on_a_phone(plain_http, live_server, reviewer_finance, make_task,
                                                 make_approval, browser):
    for n, amount in enumerate((14000, 15250.5), start=1):
        task = make_task(doc_type="Invoice", status="awaiting_approval", routed_to="finance_director",
                         filename=f"northwind-traders-invoice-{n}.txt")
        make_approval(task, "finance_director",
                      action_summary=f"Pay {amount:,.2f} USD to Northwind Traders (invoice INV-100{n}) by webhook "
                                     "to accounts-payable",
                      action_data={"amount": amount, "fields": {"counterparty": "Northwind Traders Ltd"}},
                      reasons=[f"Amount {amount:,.2f} is above the queue's threshold", "New counterparty"])

    page = log_in(browser, live_server, "alice", PHONE)
    first = page.locator("#inbox-rows tr.inbox-row").first
    for part in ("Pay 14,000.00 USD", "14,000.00", "finance_director", "minutes"):
        assert part in first.inner_text()
    assert_on_screen(first.locator("button.approve"))
    assert_on_screen(first.get_by_role("link", name="Reject…"))
    assert_on_screen(first.locator("td.title a.open"))
    assert_on_screen(first.locator("td.amount"))
    assert_on_screen(first.locator("td.queue"))
    assert_on_screen(first.locator("td.when"))
    assert_fits(page)
    page.screenshot(path=ARTIFACTS / "phone-inbox.png", full_page=True)

    first.locator("button.approve").click()
    page.wait_for_selector("#inbox-rows tr.inbox-row.decided")
    assert_fits(page)
    page.close()


def test_olga_retries_a_dead_letter_on_a_phone(plain_http, live_server, operator, make_task, browser):
    now = timezone.now()
    for n in (1, 2):
        task = make_task(doc_type="Invoice", status="dead_lettered", current_step="verify",
                         filename=f"globex-services-invoice-{n}.txt")
        for attempt in (1, 2, 3):
            step = Step.objects.create(
                task=task, worker="verify", attempt=attempt, status="failed" if attempt < 3 else "dead_lettered",
                started_at=now, latency_ms=30012, error_type="Timeout",
                error_message="Request timed out after 30 s waiting for the model provider (upstream connect error)")
        letter = dead_letter_create(task=task, step=step, error_type="Timeout",
                                    message="Gave up after 3 attempts: Request timed out after 30 s")

    page = log_in(browser, live_server, "olga", PHONE)
    page.goto(f"{live_server.url}/dead-letters/")
    row = page.locator(f"#dead-letter-{letter.pk}")
    assert_on_screen(row.get_by_role("button", name="Retry"))
    assert_on_screen(row.locator("td.title a"))
    assert_on_screen(row.locator("td.message"))
    assert_fits(page)
    page.screenshot(path=ARTIFACTS / "phone-triage.png", full_page=True)

    page.goto(f"{live_server.url}/dead-letters/{letter.pk}/")
    errors = page.locator("table.attempts td.error")
    assert errors.count() == 3
    for i in range(3):
        assert "Request timed out" in errors.nth(i).inner_text()
        assert_on_screen(errors.nth(i))
    assert_on_screen(page.locator("#actions button.primary", has_text="Retry"))
    assert_fits(page)
    page.screenshot(path=ARTIFACTS / "phone-dead-letter.png", full_page=True)
    page.close()


def test_olga_follows_a_bulk_retry_on_a_phone(plain_http, live_server, operator, make_task, browser):
    letters = []
    for n in (1, 2, 3):
        task = make_task(doc_type="Invoice", status="dead_lettered", current_step="classify",
                         filename=f"northwind-traders-invoice-{n}.txt")
        letters.append(dead_letter_create(task=task, step=None, error_type="ConnectionError",
                                          message="Gave up after 5 attempts: Could not reach the model"))
    bulk = bulk_retry_create(user=operator, dead_letter_ids=[dl.pk for dl in letters], description="three",
                             selection={"scope": "selected"}, rate_per_minute=600)
    bulk_retry_advance(bulk_id=bulk.pk)
    # The first one fails again, for a reason the operator must be able to read.
    failed = Task.objects.get(pk=letters[0].task_id)
    Task.objects.filter(pk=failed.pk).update(status="dead_lettered")
    dead_letter_create(task=failed, step=None, error_type="ConnectionError",
                       message="Gave up after 5 attempts: Could not reach the model: [Errno -2] Name or service "
                               "not known (https://steward-prod.openai.azure.com/openai/deployments/gpt-4o-mini/"
                               "chat/completions)")
    bulk_retry_advance(bulk_id=bulk.pk, now=timezone.now() + timedelta(seconds=1))

    page = log_in(browser, live_server, "olga", PHONE)
    page.goto(f"{live_server.url}/dead-letters/bulk/{bulk.pk}/")
    row = page.locator("table.items tbody tr").first
    for n in (1, 2, 3, 4):  # task, outcome, when sent back, and what became of it
        assert_on_screen(row.locator(f"td:nth-child({n})"))
    assert "Failed again" in row.locator("td:nth-child(2)").inner_text()
    assert "Name or service not known" in row.locator("td:nth-child(4)").inner_text()
    # The file name on a line or two, not one letter column broken mid-word.
    name = row.locator("td:nth-child(1) a").bounding_box()
    assert name["width"] > 150, f"the file name is squeezed: {name}"
    assert_fits(page)
    page.screenshot(path=ARTIFACTS / "phone-bulk-retry.png", full_page=True)
    page.close()


def test_olga_reads_the_charts_on_a_phone(plain_http, live_server, operator, browser):
    """Every piece of chart text (axes, legends, markers, bar labels and values) at 12px or more on
    any screen from 320px up (the SVG scales down with its viewBox; charts.css steps its text up),
    none running into another or off its chart."""
    seed_history()
    # A reason an admin named at length: its bar's label is shortened to fit, not cut off.
    RejectionReason.objects.update_or_create(
        code="duplicate", defaults={"label": "Duplicate of an invoice another team already paid this quarter"})
    page = log_in(browser, live_server, "olga", PHONE)
    problems = []
    # Each side of charts.css's steps, and the page's wider padding from 700px.
    for width in (320, 360, 361, 390, 440, 441, 600, 601, 699, 700, 1280):
        page.set_viewport_size({"width": width, "height": 844})
        for query in ("", "?range=7d"):
            page.goto(f"{live_server.url}/charts/{query}")
            assert_fits(page)
            sizes = page.evaluate(TEXT_SIZES, "svg.chart-svg text")
            if min(sizes) < LEGIBLE_PX:
                problems.append(f"{width}px{query}: chart text drawn at {min(sizes):.1f}px")
            for slug in page.eval_on_selector_all("section.chart", "sections => sections.map(s => s.id)"):
                problems += [f"{width}px{query} {slug}: {a!r} runs into {b!r}"
                             for a, b in page.evaluate(OVERLAPS, f"#{slug} svg text")]
                problems += [f"{width}px{query} {slug}: {text!r} runs off the chart"
                             for text in page.evaluate(OUTSIDE, f"#{slug} svg")]
        if width in (320, 390, 1280):
            page.screenshot(path=ARTIFACTS / f"phone-charts-{width}.png", full_page=True)
    assert problems == [], "\n".join(problems)
    page.close()


def test_an_empty_chart_says_so_legibly_on_a_phone(plain_http, live_server, operator, browser):
    """No data in the range: each chart says so in words big enough to read, down to a 320px screen."""
    page = log_in(browser, live_server, "olga", PHONE)
    for width in (PHONE["width"], 441, 320):
        page.set_viewport_size({"width": width, "height": 844})
        page.goto(f"{live_server.url}/charts/")
        assert_fits(page)
        assert page.locator("svg.chart-svg text", has_text="No data in this range").count() == 10
        sizes = page.evaluate(TEXT_SIZES, "svg.chart-svg text")
        assert min(sizes) >= LEGIBLE_PX, f"{width}px: 'No data in this range' drawn at {min(sizes):.1f}px"
    page.locator("#chart-completion").screenshot(path=ARTIFACTS / "phone-chart-empty.png")
    page.close()


def test_olga_reads_every_column_of_the_task_list_and_stuck_work_on_a_small_phone(plain_http, live_server, operator,
                                                                                   make_task, browser):
    """At 320px each task is a card with all of it on screen: the tables showed #, Document and
    Status, and their five other columns sat off to the side, reached only by scrolling the table
    (with the keyboard: arrow keys on one of its links, which nothing says)."""
    done = make_task(doc_type="Invoice", status="completed", routed_to="finance_director", confidence=0.93,
                     cost_usd="0.0042", filename="northwind-traders-invoice-1.txt")
    # Created a while ago, so that its Created column reads "... ago" (a second-old task's says "now").
    Task.objects.filter(pk=done.pk).update(created_at=timezone.now() - timedelta(minutes=5))
    make_task(doc_type="Invoice", status="running", current_step="verify", filename="globex-services-invoice-2.txt",
              lease_owner="celery@worker-1:4242", lease_expires_at=timezone.now() - timedelta(minutes=5),
              enqueued_at=timezone.now() - timedelta(minutes=20))
    page = log_in(browser, live_server, "olga", {"width": 320, "height": 700})
    problems = []
    for path, row, parts in (("/tasks/", "#task-rows tr", ("northwind", "Completed", "Invoice", "finance_director",
                                                           "0.93", "$0.0042", "ago")),
                             ("/stuck/", "table.stuck tbody tr", ("globex", "Running", "verify", "celery@worker-1:4242",
                                                                  "expired"))):
        page.goto(live_server.url + path)
        assert_fits(page)
        task = page.locator(row).filter(has_text=parts[0])
        assert all(part in task.inner_text() for part in parts), task.inner_text()
        cells = task.locator("td")
        assert cells.count() == 8
        for n in range(8):
            box = cells.nth(n).bounding_box()
            if not box or box["x"] < 0 or box["x"] + box["width"] > 320:
                problems.append(f"{path}: {cells.nth(n).inner_text()!r} not on screen ({box})")
        page.screenshot(path=ARTIFACTS / f"phone-320-{path.strip('/')}.png", full_page=True)
    page.close()
    assert problems == [], "\n".join(problems)


def test_the_top_bar_leaves_the_screen_to_the_page_on_a_phone(plain_http, live_server, admin_user, browser):
    """The admin's menu is the longest (seven links). On a phone the bar took three rows, 140 px of
    844: the name and Log out now share the first row, every link still shown under them."""
    page = log_in(browser, live_server, "adam", PHONE)
    bar = page.locator("header.topbar")
    assert bar.bounding_box()["height"] <= 110
    brand, logout = page.locator(".brand").bounding_box(), page.get_by_role("button", name="Log out").bounding_box()
    assert abs(brand["y"] - logout["y"]) < brand["height"], (brand, logout)
    for name in ("Inbox", "Tasks", "Upload", "Dead letters", "Stuck work", "Charts", "Admin"):
        assert_on_screen(bar.get_by_role("link", name=name, exact=True))
    assert_fits(page)
    page.screenshot(path=str(ARTIFACTS / "phone-top-bar.png"))
