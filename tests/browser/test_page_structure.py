"""What assistive technology finds on every page, as the browser builds it: the language, one h1,
the main and navigation landmarks, headings that go down one level at a time (a screen reader's
list of headings is the page's outline: an h3 straight under the h1 reads as if a section were
missing), an accessible name for every control (label, aria-label), and a visible focus ring on
each element the Tab key reaches.

These held when this file was written; they are here so that a new page or control keeps them.
"""
from __future__ import annotations

import pytest
from django.utils import timezone

from orchestrator.models import DeadLetter
from orchestrator.services import dead_letter_create
from reviews.links import email_link_create

from .conftest import log_in, settle, triage_objects
from .test_keyboard import northwind_approvals

pytestmark = pytest.mark.browser

STRUCTURE = """() => ({
  lang: document.documentElement.lang,
  h1: document.querySelectorAll("h1").length,
  main: document.querySelectorAll("main").length,
  nav: document.querySelectorAll("header nav").length,
})"""
# The element the Tab key just reached, and whether its focus can be seen. A date input draws its
# ring on the part being edited (month, day, year, the calendar button), inside the browser.
FOCUS = """() => {
  const e = document.activeElement, s = getComputedStyle(e);
  return {what: `${e.tagName.toLowerCase()} ${(e.innerText || e.name || e.id || "").trim().slice(0, 30)}`,
          body: e === document.body,
          seen: (s.outlineStyle !== "none" && parseFloat(s.outlineWidth) > 0) || s.boxShadow !== "none"
                || e.type === "date"};
}"""
# Every heading in the page's order, those in closed <details> too (they are read once opened).
HEADINGS = """() => [...document.querySelectorAll("h1, h2, h3, h4, h5, h6")].map(
  h => [Number(h.tagName[1]), h.textContent.trim().replace(/\\s+/g, " ").slice(0, 40)])"""
CONTROLS = {"textbox", "searchbox", "combobox", "listbox", "checkbox", "radio", "button", "link", "spinbutton",
            "slider", "dialog", "img"}


def unnamed_controls(page) -> list[str]:
    """Controls in the browser's accessibility tree with no accessible name."""
    tree = page.context.new_cdp_session(page).send("Accessibility.getFullAXTree")["nodes"]
    return [node["role"]["value"] for node in tree if not node.get("ignored")
            and node.get("role", {}).get("value") in CONTROLS and not node.get("name", {}).get("value", "").strip()]


def skipped_headings(page) -> list[str]:
    """Headings more than one level below the one before them (or a first heading that is not h1)."""
    problems, previous = [], (0, "the top of the page")
    for level, text in page.evaluate(HEADINGS):
        if level > previous[0] + 1:
            problems.append(f"h{level} '{text}' follows h{previous[0]} '{previous[1]}'")
        previous = (level, text)
    return problems


def check(page, url: str, tabs: int = 40) -> list[str]:
    page.goto(url)
    settle(page)
    problems = [f"{url}: {problem}" for problem in skipped_headings(page)]
    structure = page.evaluate(STRUCTURE)
    if structure != {"lang": "en", "h1": 1, "main": 1, "nav": 1}:
        problems.append(f"{url}: {structure}")
    problems += [f"{url}: a {role} without a name" for role in unnamed_controls(page)]
    for _ in range(tabs):
        page.keyboard.press("Tab")
        focus = page.evaluate(FOCUS)
        if focus["body"]:
            break  # past the last one
        if not focus["seen"]:
            problems.append(f"{url}: no focus ring on {focus['what']}")
    return problems


def test_every_page_is_labelled_and_shows_where_the_focus_is(plain_http, live_server, reviewer_finance, operator,
                                                             make_task, make_approval, browser):
    approval, _ = northwind_approvals(make_task, make_approval, count=2)
    failed, letter, bulk = triage_objects(make_task, operator)
    # One retried after an edit: its page says what was edited, under a heading of its own.
    edited = dead_letter_create(task=make_task(status="dead_lettered", current_step="classify"), step=None,
                                error_type="ConnectionError", message="Could not reach the model")
    DeadLetter.objects.filter(pk=edited.pk).update(
        status="retried", resolved_by=operator, resolved_at=timezone.now(), edits={"by": "olga", "step": "classify",
                                                       "doc_type": {"from": None, "to": "Invoice"}})

    problems = []
    page = log_in(browser, live_server, "alice")
    for path in ("/reviews/", f"/reviews/approvals/{approval.pk}/", f"/tasks/{approval.task_id}/"):
        problems += check(page, live_server.url + path)
    page.close()
    page = log_in(browser, live_server, "olga")
    for path in ("/tasks/", f"/tasks/{failed.pk}/", "/upload/", "/dead-letters/", f"/dead-letters/{letter.pk}/",
                 f"/dead-letters/{edited.pk}/", f"/dead-letters/bulk/{bulk.pk}/", "/stuck/", "/charts/"):
        problems += check(page, live_server.url + path, tabs=60)
    page.close()

    assert problems == [], "\n".join(problems)


def test_pages_without_a_session_keep_their_outline(plain_http, live_server, reviewer_finance, make_task,
                                                    make_approval, browser):
    """The login page, the signed email link (approve, reject, decided, used up) and a page not
    found: the same outline, with no menu to check (nobody is signed in)."""
    approval, _ = northwind_approvals(make_task, make_approval, count=2)
    token = email_link_create(approval=approval, user=reviewer_finance)
    page = browser.new_page()
    page.set_default_timeout(15_000)
    problems = []
    for path in ("/login/", f"/reviews/link/{token}/?action=reject", f"/reviews/link/{token}/", None,
                 f"/reviews/link/{token}/", "/no-such-page/"):
        if path is None:  # approve through the link, then open it again: used up
            page.click("#link-approve")
            page.wait_for_selector("#link-page .msg.success")
        else:
            page.goto(live_server.url + path)
        structure = page.evaluate(STRUCTURE)
        if (structure["lang"], structure["h1"], structure["main"]) != ("en", 1, 1):
            problems.append(f"{page.url}: {structure}")
        problems += [f"{page.url}: {problem}" for problem in skipped_headings(page)]
    page.close()
    assert problems == [], "\n".join(problems)
