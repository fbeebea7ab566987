"""The keyboard alone, in a real browser: a reviewer's and an operator's work without a mouse.

Where the focus is after each key press is what a keyboard or screen-reader user lives by: a
focus lost to <body> sends them back to the top of the page, in silence.
Screenshots go to test-artifacts/keyboard-*.png.
"""
from __future__ import annotations

import re

import pytest

from .conftest import ARTIFACTS

pytestmark = pytest.mark.browser

DESKTOP = {"width": 1280, "height": 900}

# What has the focus: enough to say where a keyboard user is.
FOCUSED = """() => {
  const e = document.activeElement;
  if (!e || e === document.body) return {tag: "BODY", text: "", id: "", row: "", in_main: false};
  const r = e.getBoundingClientRect();
  return {tag: e.tagName, id: e.id, text: (e.innerText || e.value || "").trim(),
          row: (e.closest("tr") || {}).id || "", in_main: !!e.closest("main"),
          on_screen: r.width > 1 && r.height > 1 && r.top >= 0 && r.left >= 0 && r.bottom <= innerHeight};
}"""


def log_in(browser, live_server, username: str | None, viewport=DESKTOP):
    page = browser.new_page(viewport=viewport)
    page.set_default_timeout(15_000)
    if username:
        page.goto(f"{live_server.url}/login/")
        page.fill("#id_username", username)
        page.fill("#id_password", f"pw-{username}")
        page.click("button[type=submit]")
        page.wait_for_url(re.compile(r"/(tasks|reviews)/$"))
    return page


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
