"""Tables that scroll sideways on a 320 px phone (chart data, line items, corrections, a dead
letter's edits and attempts, the admin's impact and history tables), and the long text blocks that
scroll down inside a page (a step's input, output and transcript, a traceback, the document), can
be scrolled with the keyboard: each scrolling box is reached by Tab, shows where the focus is, and
is a region named after what it holds, so a screen reader says what the stop is.

A box that scrolls but holds nothing focusable is not reached by the Tab key in Safari or Firefox:
its hidden columns, or lines, are out of a keyboard user's reach (WCAG 2.1.1, axe's
scrollable-region-focusable). Screenshots go to test-artifacts/scroll-*.png.
"""
from __future__ import annotations

import re

import pytest
from django.urls import reverse
from django.utils import timezone

from orchestrator.models import DeadLetter, RoutingRule, Step
from orchestrator.services import dead_letter_create

from .conftest import ARTIFACTS, log_in, triage_objects
from .test_charts import seed_history

pytestmark = pytest.mark.browser

NARROW = {"width": 320, "height": 640}

# Every element that scrolls now, sideways or down (a scroll box, not the page), marked so that
# Python can find it again; returns how many. Closed <details> (the charts' data tables, a step's
# input and output) are opened first. Not a textarea or select: a labelled control, Tab reaches it.
MARK_SCROLLERS = """() => {
  document.querySelectorAll("details").forEach(d => { d.open = true; });
  const scrolls = overflow => ["auto", "scroll"].includes(overflow);
  let n = 0;
  for (const e of document.querySelectorAll("body *:not(textarea, select)")) {
    const s = getComputedStyle(e);
    if ((scrolls(s.overflowX) && e.scrollWidth > e.clientWidth + 1)
        || (scrolls(s.overflowY) && e.scrollHeight > e.clientHeight + 1)) {
      e.dataset.scrollTest = String(n++);
    }
  }
  return n;
}"""
# The element the Tab key just reached: which scroller it is, if one, its tabindex attribute, and
# whether its focus shows.
FOCUSED_SCROLLER = """() => {
  const e = document.activeElement, s = getComputedStyle(e);
  return {body: e === document.body, scroller: e.dataset.scrollTest ?? null, tabindex: e.getAttribute("tabindex"),
          seen: (s.outlineStyle !== "none" && parseFloat(s.outlineWidth) > 0) || s.boxShadow !== "none"};
}"""


def scroller_names(page) -> dict[str, tuple[str, str]]:
    """(role, accessible name) of each marked scroller, as the browser's accessibility tree has them."""
    cdp = page.context.new_cdp_session(page)
    root = cdp.send("DOM.getDocument", {"depth": 0})["root"]["nodeId"]
    found = {}
    for node_id in cdp.send("DOM.querySelectorAll", {"nodeId": root, "selector": "[data-scroll-test]"})["nodeIds"]:
        attributes = cdp.send("DOM.getAttributes", {"nodeId": node_id})["attributes"]
        mark = dict(zip(attributes[::2], attributes[1::2]))["data-scroll-test"]
        ax = cdp.send("Accessibility.getPartialAXTree", {"nodeId": node_id, "fetchRelatives": False})["nodes"][0]
        found[mark] = (ax.get("role", {}).get("value", ""), ax.get("name", {}).get("value", "").strip())
    cdp.detach()
    return found


def check_scrollers(page, url: str, screenshot: str = "") -> tuple[int, list[str]]:
    """How many boxes scroll on the page now, and what is wrong with any of them."""
    if url:
        page.goto(url)
    page.wait_for_load_state("networkidle")
    where = url or page.url
    count = page.evaluate(MARK_SCROLLERS)
    if screenshot:
        page.screenshot(path=ARTIFACTS / f"scroll-{screenshot}.png", full_page=True)
    problems = []
    for mark, (role, name) in scroller_names(page).items():
        what = page.locator(f"[data-scroll-test='{mark}']").evaluate(
            "e => `${e.tagName.toLowerCase()}.${e.className} (${e.innerText.trim().slice(0, 30)})`")
        if role != "region" or not name:
            problems.append(f"{where}: {what} scrolls but is not a named region (role {role!r}, name {name!r})")
    # Tab through the whole page: every scroller must be reached, its focus seen.
    page.evaluate("() => { document.activeElement?.blur(); window.scrollTo(0, 0); }")
    reached = set()
    for _ in range(300):
        page.keyboard.press("Tab")
        focus = page.evaluate(FOCUSED_SCROLLER)
        if focus["body"]:
            break
        if focus["scroller"] is not None:
            reached.add(focus["scroller"])
            # Chromium lets Tab reach any scroller; Safari and Firefox only one with a tabindex.
            if focus["tabindex"] != "0":
                problems.append(f"{where}: scroller {focus['scroller']} has tabindex {focus['tabindex']!r}, not '0'")
            if not focus["seen"]:
                problems.append(f"{where}: no focus ring on scroller {focus['scroller']}")
    for mark in sorted({str(n) for n in range(count)} - reached):
        what = page.locator(f"[data-scroll-test='{mark}']").evaluate(
            "e => `${e.tagName.toLowerCase()}.${e.className} (${e.innerText.trim().slice(0, 30)})`")
        problems.append(f"{where}: {what} scrolls but the Tab key does not reach it")
    return count, problems


LINE_ITEMS = [{"description": "Rack-mounted application servers, two sockets, 512 GB", "quantity": 2,
               "unit_price": 9000.0, "amount": 18000.0, "tax_code": "STANDARD-RATED"},
              {"description": "On-site installation and cabling", "quantity": 1, "unit_price": 1250.0,
               "amount": 1250.0, "tax_code": "STANDARD-RATED"}]


def test_every_table_that_scrolls_on_a_phone_is_reached_by_the_keyboard(
        plain_http, live_server, reviewer_finance, operator, admin_user, make_task, make_approval, browser):
    seed_history()
    invoice = make_task(doc_type="Invoice", status="awaiting_approval", routed_to="finance_director",
                        fields={"invoice_number": "INV-7001", "counterparty": "Contoso Pharmaceuticals International",
                                "amount": 19250.0, "line_items": LINE_ITEMS})
    # Routed when the rule's threshold was 10,000: a threshold of 5,000 would move it (the admin's impact table).
    smaller = make_task(doc_type="Invoice", status="completed", routed_to="standard_queue", fields={"amount": 7000.0})
    Step.objects.create(task=smaller, worker="route", attempt=1, status="succeeded", started_at=timezone.now(),
                        output={"queue": "standard_queue", "rule": "(fallback)", "amount": "7000"})
    approval = make_approval(invoice, "finance_director", action_summary="Pay 19,250 USD to Contoso",
                             corrections={"counterparty": {"from": "Contoso Pharma Intl (as the model read it)",
                                                           "to": "Contoso Pharmaceuticals International"}})
    failed, letter, bulk = triage_objects(make_task, operator)
    for attempt in (2, 3):
        Step.objects.create(task=failed, worker="extract", attempt=attempt, status="failed",
                            started_at=timezone.now(), error_type="InvalidAnswer",
                            error_message="amount: Input should be a valid number, unable to parse string as a number")
    edited = dead_letter_create(task=make_task(status="dead_lettered", current_step="extract"), step=None,
                                error_type="InvalidAnswer", message="still invalid")
    DeadLetter.objects.filter(pk=edited.pk).update(
        status="retried", resolved_by=operator, resolved_at=timezone.now(),
        edits={"by": "olga", "step": "extract", "fields": {"line_items": {"from": LINE_ITEMS[:1], "to": LINE_ITEMS}}})

    total, problems = 0, []
    page = log_in(browser, live_server, "alice", NARROW)
    for path in ("/reviews/", f"/reviews/approvals/{approval.pk}/", f"/tasks/{invoice.pk}/"):
        count, found = check_scrollers(page, live_server.url + path)
        total, problems = total + count, problems + found
    page.close()

    page = log_in(browser, live_server, "olga", NARROW)
    for path, shot in (("/tasks/", ""), (f"/tasks/{failed.pk}/", ""), ("/dead-letters/", ""),
                       (f"/dead-letters/{letter.pk}/", "attempts"), (f"/dead-letters/{edited.pk}/", ""),
                       (f"/dead-letters/bulk/{bulk.pk}/", ""), ("/stuck/", ""), ("/charts/", "charts")):
        count, found = check_scrollers(page, live_server.url + path, screenshot=shot)
        total, problems = total + count, problems + found
    page.close()

    # Adam changes a rule's threshold: the impact preview, then the rule's history.
    rule = RoutingRule.objects.get(name="Invoice amount > 10,000")
    page = log_in(browser, live_server, "adam", NARROW)
    page.goto(live_server.url + reverse("admin:orchestrator_routingrule_change", args=[rule.pk]))
    page.fill("#id_value", "5000")
    page.click("input[name=_save]")
    page.locator(".impact-sentences").wait_for()
    count, found = check_scrollers(page, "", screenshot="admin-impact")
    total, problems = total + count, problems + found
    page.click("input[name=_impact_save]")
    page.wait_for_url(re.compile(r"/admin/orchestrator/routingrule/$"))
    count, found = check_scrollers(
        page, live_server.url + reverse("admin:orchestrator_routingrule_history", args=[rule.pk]))
    total, problems = total + count, problems + found
    page.close()

    assert total >= 5, f"only {total} boxes scroll sideways at 320 px: the pages no longer test what they should"
    assert problems == [], "\n".join(problems)


def test_every_long_text_block_that_scrolls_is_reached_by_the_keyboard(
        plain_http, live_server, reviewer_finance, operator, make_task, make_approval, browser):
    """A step's input, output and transcript, an extracted list, a dead letter's evidence and
    traceback, and the document scroll down inside their boxes once longer than the box."""
    lines = "\n".join(f"Line {n}: 1 x consulting services, March, 1,250.00 USD" for n in range(120))
    long = {f"line_{n}": f"consulting services {n}" for n in range(80)}
    task = make_task(doc_type="Invoice", status="dead_lettered", current_step="extract", content=lines,
                     routed_to="finance_director", fields={"amount": 1250.0, "notes": [f"note {n}" for n in range(80)]})
    step = Step.objects.create(task=task, worker="extract", attempt=1, status="failed", started_at=timezone.now(),
                               input=long, output=long, error_type="InvalidAnswer", error_message="invalid",
                               transcript=[{"kind": "request", "model": "m", "messages": [{"role": "user", "content": lines}]},
                                           {"kind": "response", "content": lines}])
    letter = dead_letter_create(task=task, step=step, error_type="InvalidAnswer", message="invalid",
                                traceback=lines, evidence=long)
    approval = make_approval(make_task(doc_type="Invoice", status="awaiting_approval", content=lines,
                                       routed_to="finance_director", fields={"notes": [f"note {n}" for n in range(80)]}),
                             "finance_director", action_summary="Pay 1,250 USD")

    total, problems = 0, []
    page = log_in(browser, live_server, "alice")
    count, found = check_scrollers(page, live_server.url + f"/reviews/approvals/{approval.pk}/")
    total, problems = total + count, problems + found
    page.close()
    page = log_in(browser, live_server, "olga")
    for path, shot in ((f"/tasks/{task.pk}/", "task-blocks"), (f"/dead-letters/{letter.pk}/", "")):
        count, found = check_scrollers(page, live_server.url + path, screenshot=shot)
        total, problems = total + count, problems + found
    page.close()

    # The task page alone: input, output, two transcript blocks, notes, evidence, traceback, document.
    assert total >= 10, f"only {total} boxes scroll: the pages no longer test what they should"
    assert problems == [], "\n".join(problems)


# Every Tab stop of the page, in order: the region's name for a region, else the element's tag.
TAB_STOPS = """() => Array.from(document.querySelectorAll("[role=region][tabindex]"))
  .map(e => ({name: e.getAttribute("aria-label"), tabindex: e.getAttribute("tabindex")}))"""


def regions_in_tab_order(page) -> dict[str, str]:
    page.evaluate("() => new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")
    return {r["name"]: r["tabindex"] for r in page.evaluate(TAB_STOPS)}


def tabbed_regions(page) -> list[str]:
    """The named regions the Tab key stops at, crossing the whole page."""
    page.evaluate("() => { document.activeElement?.blur(); window.scrollTo(0, 0); }")
    reached = []
    for _ in range(300):
        page.keyboard.press("Tab")
        focus = page.evaluate("() => ({body: document.activeElement === document.body, "
                              "region: document.activeElement.getAttribute('role') === 'region' "
                              "? document.activeElement.getAttribute('aria-label') : null})")
        if focus["body"]:
            break
        if focus["region"]:
            reached.append(focus["region"])
    return reached


def test_a_box_that_does_not_scroll_is_not_a_tab_stop(plain_http, live_server, operator, make_task, browser):
    """On a wide screen a task's short step inputs and outputs fit their boxes: a keyboard user
    does not have to press Tab past each of them. The same boxes become Tab stops once they
    overflow: the line-items table on a phone, a long traceback once its <details> is opened."""
    lines = "\n".join(f"Line {n}: 1 x consulting services, March, 1,250.00 USD" for n in range(120))
    task = make_task(doc_type="Invoice", status="dead_lettered", current_step="extract", content="Invoice 7",
                     fields={"amount": 19250.0, "line_items": LINE_ITEMS})
    step = Step.objects.create(task=task, worker="extract", attempt=1, status="failed", started_at=timezone.now(),
                               input={"text": "Invoice 7"}, output={"amount": 1}, error_type="InvalidAnswer",
                               error_message="invalid")
    dead_letter_create(task=task, step=step, error_type="InvalidAnswer", message="invalid", traceback=lines)

    page = log_in(browser, live_server, "olga")
    page.goto(f"{live_server.url}/tasks/{task.pk}/")
    page.wait_for_load_state("networkidle")
    page.evaluate("() => document.querySelectorAll('details').forEach(d => { if (!d.querySelector('[aria-label=Traceback]')) d.open = true; })")
    regions = regions_in_tab_order(page)
    assert regions["extract attempt 1 input"] == "-1", regions
    assert regions["extract attempt 1 output"] == "-1", regions
    assert regions["Traceback"] == "-1", regions  # closed: nothing to scroll
    assert regions["Document text"] == "-1", regions
    reached = tabbed_regions(page)
    assert reached == [], f"Tab stops at boxes that do not scroll: {reached}"

    page.locator("details:has([aria-label=Traceback]) > summary").click()
    assert regions_in_tab_order(page)["Traceback"] == "0"
    assert tabbed_regions(page) == ["Traceback"]

    page.set_viewport_size(NARROW)
    regions = regions_in_tab_order(page)
    wide = [name for name, tabindex in regions.items() if tabindex == "0"]
    assert "Traceback" in wide and any("line_items" in name or "Line items" in name for name in wide), regions
    page.close()
