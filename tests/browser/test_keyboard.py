"""The keyboard alone, in a real browser: a reviewer's and an operator's work without a mouse.

Where the focus is after each key press is what a keyboard or screen-reader user lives by: a
focus lost to <body> sends them back to the top of the page, in silence.
Screenshots go to test-artifacts/keyboard-*.png.
"""
from __future__ import annotations

import pytest

from .conftest import ARTIFACTS, log_in

pytestmark = pytest.mark.browser


# What has the focus: enough to say where a keyboard user is.
FOCUSED = """() => {
  const e = document.activeElement;
  if (!e || e === document.body) return {tag: "BODY", text: "", id: "", row: "", in_main: false};
  const r = e.getBoundingClientRect();
  return {tag: e.tagName, id: e.id, text: (e.innerText || e.value || "").trim(),
          row: (e.closest("tr") || {}).id || "", in_main: !!e.closest("main"),
          on_screen: r.width > 1 && r.height > 1 && r.top >= 0 && r.left >= 0 && r.bottom <= innerHeight};
}"""


def focused(page) -> dict:
    return page.evaluate(FOCUSED)


def test_a_skip_link_leads_past_the_menu_on_every_page(plain_http, live_server, reviewer_finance, operator,
                                                       browser):
    """The first Tab shows "Skip to content"; Enter on it puts the next Tab inside the page's own
    content, not on the six links of the menu again."""
    for username, paths in (("alice", ["/reviews/", "/tasks/"]),
                            ("olga", ["/upload/", "/dead-letters/", "/stuck/", "/charts/"])):
        page = log_in(browser, live_server, username)
        for path in paths:
            page.goto(f"{live_server.url}{path}")
            page.keyboard.press("Tab")
            first = focused(page)
            assert (first["tag"], first["text"]) == ("A", "Skip to content"), (path, first)
            assert first["on_screen"], f"{path}: the skip link has the focus but cannot be seen"
            if path == "/reviews/":
                page.screenshot(path=ARTIFACTS / "keyboard-skip-link.png", clip={"x": 0, "y": 0, "width": 1280,
                                                                                   "height": 200})
            page.keyboard.press("Enter")
            page.keyboard.press("Tab")
            after = focused(page)
            assert after["in_main"], (path, after)
        page.close()


def northwind_approvals(make_task, make_approval, count: int = 3) -> list:
    approvals = []
    for n in range(1, count + 1):
        task = make_task(doc_type="Invoice", status="awaiting_approval", routed_to="finance_director",
                         fields={"invoice_number": f"INV-100{n}", "counterparty": "Northwind Traders",
                                 "amount": 14000.0 + n})
        approvals.append(make_approval(task, "finance_director",
                                       action_summary=f"Pay {14000 + n:,} USD to Northwind Traders (INV-100{n})",
                                       action_data={"amount": 14000 + n}, reasons=["Above the threshold"]))
    return approvals


def test_approving_from_the_inbox_keeps_alices_place(plain_http, live_server, reviewer_finance, make_task,
                                                     make_approval, browser):
    """a then Enter approves the selected row: the focus stays on that row, on the answer (which a
    screen reader then reads), and j goes on to the next row, not back to the first."""
    first, second, _ = northwind_approvals(make_task, make_approval)
    page = log_in(browser, live_server, "alice")
    page.keyboard.press("j")
    page.keyboard.press("a")
    assert focused(page)["text"] == "Approve"
    page.keyboard.press("Enter")
    page.wait_for_selector(f"#approval-{first.pk}.decided")
    now = focused(page)
    assert now["row"] == f"approval-{first.pk}", now
    assert f"Approved action for task {first.task_id}" in now["text"]
    page.screenshot(path=ARTIFACTS / "keyboard-inbox-approved.png")

    page.keyboard.press("j")
    now = focused(page)
    assert (now["row"], now["tag"]) == (f"approval-{second.pk}", "A"), now
    page.close()


def wait_for_swap(page, selector: str, timeout: float = 15_000) -> None:
    """Until HTMX has swapped `selector` with a fresh copy from the server (its own polling)."""
    page.evaluate("sel => { window.swapped = false; document.addEventListener('htmx:afterSettle', e => {"
                  " if (e.target.matches(sel)) window.swapped = true; }); }", selector)
    page.wait_for_function("() => window.swapped === true", timeout=timeout)


def test_pages_that_refresh_themselves_do_not_take_the_focus_away(plain_http, live_server, reviewer_finance,
                                                                  operator, make_task, make_approval, browser):
    """The counts of the task list (every 5 s) and of the inbox (every 10 s and after each
    decision) and a bulk retry's report (every 2 s) replace themselves: a keyboard user on one of
    their links or buttons stays on it."""
    from orchestrator.services import bulk_retry_create, dead_letter_create

    northwind_approvals(make_task, make_approval, count=1)
    page = log_in(browser, live_server, "alice")
    page.locator("#inbox-counts a[data-queue=finance_director]").focus()
    page.evaluate("htmx.trigger(document.body, 'approval-decided')")  # as after a decision
    wait_for_swap(page, "#inbox-counts")
    assert focused(page)["text"].endswith("finance_director"), focused(page)
    page.close()

    letters = [dead_letter_create(task=make_task(status="dead_lettered", current_step="classify"), step=None,
                                  error_type="ConnectionError", message="Could not reach the model")
               for _ in range(2)]
    bulk = bulk_retry_create(user=operator, dead_letter_ids=[dl.pk for dl in letters], description="two",
                             selection={"scope": "selected"}, rate_per_minute=1)
    page = log_in(browser, live_server, "olga")
    page.locator("#status-counts a", has_text="dead-lettered").focus()
    wait_for_swap(page, "#status-counts")
    assert focused(page)["text"] == "2 dead-lettered", focused(page)

    page.goto(f"{live_server.url}/dead-letters/bulk/{bulk.pk}/")
    page.get_by_role("button", name="Pause").focus()
    wait_for_swap(page, "#bulk-live")
    assert focused(page)["text"] == "Pause", focused(page)
    page.close()


def test_retrying_a_dead_letter_from_its_row_keeps_olgas_place(plain_http, live_server, operator, make_task,
                                                               browser):
    from orchestrator.services import dead_letter_create

    letter = dead_letter_create(task=make_task(status="dead_lettered", current_step="classify"), step=None,
                                error_type="ConnectionError", message="Could not reach the model")
    page = log_in(browser, live_server, "olga")
    page.goto(f"{live_server.url}/dead-letters/")
    page.locator(f"#dead-letter-{letter.pk}").get_by_role("button", name="Retry").focus()
    page.keyboard.press("Enter")
    page.wait_for_selector(f"#dead-letter-{letter.pk}.dl-retried")
    now = focused(page)
    assert now["row"] == f"dead-letter-{letter.pk}" and "sent back" in now["text"].lower(), now
    page.close()


def test_a_refused_correction_puts_alice_on_the_field_at_fault(plain_http, live_server, reviewer_finance,
                                                               make_task, make_approval, browser):
    approval, = northwind_approvals(make_task, make_approval, count=1)
    page = log_in(browser, live_server, "alice")
    page.goto(f"{live_server.url}/reviews/approvals/{approval.pk}/")
    page.fill("#field-amount", "-5")
    page.keyboard.press("a")  # from the field: typed into it, not a shortcut
    assert page.input_value("#field-amount") == "-5a"
    page.fill("#field-amount", "-5")
    page.locator("#approve-button").focus()
    page.keyboard.press("Enter")
    page.wait_for_selector("#review-item .msg.error")
    now = focused(page)
    assert now["id"] == "field-amount", now
    assert page.evaluate("document.activeElement.getAttribute('aria-invalid')") == "true"
    page.screenshot(path=ARTIFACTS / "keyboard-refused-correction.png")
    page.close()


def test_the_keys_help_holds_the_keys_until_escape_closes_it(plain_http, live_server, reviewer_finance, make_task,
                                                            make_approval, browser):
    """While the help is open, the page behind it does not move: o, j, a act on nothing. Escape
    closes it and puts Alice back where she was."""
    first, second = northwind_approvals(make_task, make_approval, count=2)
    page = log_in(browser, live_server, "alice")
    page.keyboard.press("j")
    page.keyboard.press("?")
    assert page.evaluate("document.getElementById('keys-help').open")
    for key in ("j", "a", "o"):
        page.keyboard.press(key)
    assert page.url == f"{live_server.url}/reviews/"
    assert page.evaluate("document.getElementById('keys-help').open")
    assert page.locator("tr.inbox-row.selected").get_attribute("id") == f"approval-{first.pk}"

    page.keyboard.press("Escape")
    assert not page.evaluate("document.getElementById('keys-help').open")
    assert focused(page)["row"] == f"approval-{first.pk}"

    page.goto(f"{live_server.url}/reviews/approvals/{first.pk}/")
    page.keyboard.press("?")
    page.keyboard.press("j")  # would go to the next approval
    assert page.url == f"{live_server.url}/reviews/approvals/{first.pk}/"
    page.keyboard.press("?")  # ? closes it too
    assert not page.evaluate("document.getElementById('keys-help').open")
    page.close()
