"""The Content-Security-Policy in a real browser: every page, as each role that sees it, with the
HTMX swaps people use (approving from the inbox, an upload clearing its form, the charts' range),
Django's admin and the error pages, runs without one violation of the policy; and a script
injected into a page (inline, an event handler, a data: URL) does not run.

The policy is what makes a missed escape harmless; a page that needs an exception to it breaks the
day the policy is tightened, so any violation fails here, not only a broken page.
Screenshots go to test-artifacts/csp-*.png.
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest
from django.contrib import admin
from django.test import RequestFactory
from django.urls import reverse

from orchestrator.models import RoutingRule, Source
from orchestrator.services import task_submit
from reviews.links import email_link_create
from reviews.models import Approval

from .conftest import ARTIFACTS, DESKTOP, log_in, settle, track_requests, triage_objects, watch_csp
from .test_charts import seed_history
from .test_keyboard import northwind_approvals

pytestmark = pytest.mark.browser

BIG_INVOICE = ("INVOICE\nInvoice Number: INV-7001\nFrom: Contoso Ltd\nDate: 2024-11-05\n"
               "- Servers 2 x $9,000.00 = $18,000.00\nTotal: $18,000.00\n")
CONTRACT = (Path(__file__).resolve().parents[2] / "orchestrator/samples/contract-globex-services.txt").read_text()


def visit(page, url: str, screenshot: str = "") -> None:
    response = page.goto(url)
    assert "default-src 'self'" in response.headers.get("content-security-policy", ""), f"{url}: no policy"
    settle(page)
    if screenshot:
        page.screenshot(path=ARTIFACTS / f"csp-{screenshot}.png", full_page=True)


def admin_pages(live_server, user) -> list[str]:
    """Every model's list, its add form where there is one, and the change form and history of
    its first row; the admin's own pages."""
    request = RequestFactory().get("/admin/")
    request.user = user
    urls = [reverse("admin:index"), reverse("admin:password_change"),
            reverse("admin:auth_user_password_change", args=[user.pk])]
    for model, model_admin in admin.site._registry.items():
        info = model._meta.app_label, model._meta.model_name
        urls.append(reverse("admin:%s_%s_changelist" % info))
        urls.append(reverse("admin:app_list", args=[info[0]]))
        if model_admin.has_add_permission(request):
            urls.append(reverse("admin:%s_%s_add" % info))
        first = model._default_manager.order_by("pk").first()
        if first is not None:
            urls.append(reverse("admin:%s_%s_change" % info, args=[first.pk]))
            urls.append(reverse("admin:%s_%s_history" % info, args=[first.pk]))
    return [live_server.url + url for url in dict.fromkeys(urls)]


def test_no_page_breaks_the_policy_for_any_role(plain_http, live_server, simulator, run_pipeline, reviewer_finance,
                                                operator, admin_user, outsider, make_task, make_approval, browser):
    seed_history()
    big, _ = task_submit(content=BIG_INVOICE, filename="contoso.txt", external_ref="erp-7001", source=Source.API,
                         submitted_by=operator)
    contract, _ = task_submit(content=CONTRACT, filename="globex.txt", source=Source.API, submitted_by=operator)
    big, contract = run_pipeline(big), run_pipeline(contract)
    pending = Approval.objects.get(task=big)
    first, second = northwind_approvals(make_task, make_approval, count=2)
    failed, letter, bulk = triage_objects(make_task, operator)
    violations = []

    # Nobody signed in: the login page, a page that does not exist, a stale CSRF token, an email link.
    page = browser.new_page(viewport=DESKTOP)
    page.set_default_timeout(15_000)
    violations.append(watch_csp(page))
    track_requests(page)
    visit(page, f"{live_server.url}/login/", screenshot="login")
    visit(page, f"{live_server.url}/no-such-page/")
    visit(page, f"{live_server.url}/login/")
    page.context.clear_cookies()
    page.fill("#id_username", "alice")
    page.fill("#id_password", "pw-alice")
    page.click("button[type=submit]")
    page.wait_for_load_state("networkidle")
    assert page.locator("h1").inner_text() == "This form has expired"
    token = email_link_create(approval=second, user=reviewer_finance)
    visit(page, f"{live_server.url}/reviews/link/{token}/?action=reject")
    visit(page, f"{live_server.url}/reviews/link/{token}/", screenshot="email-link")
    page.click("#link-approve")
    page.wait_for_load_state("networkidle")
    assert Approval.objects.get(pk=second.pk).status == "approved"
    page.close()

    # Charlie, signed in with no role: refused everywhere.
    page = log_in(browser, live_server, "charlie", lands=False)
    violations.append(page.csp_violations)
    for path in ("/tasks/", "/upload/", "/reviews/", "/admin/"):
        visit(page, live_server.url + path)
    page.close()

    # Alice reviews: the inbox (approving a row there), the item page, the task pages.
    page = log_in(browser, live_server, "alice")
    violations.append(page.csp_violations)
    visit(page, f"{live_server.url}/reviews/", screenshot="inbox")
    page.keyboard.press("?")
    page.keyboard.press("Escape")
    page.locator(f"#approval-{first.pk} button.approve").click()
    page.wait_for_selector(f"#approval-{first.pk}.decided")
    visit(page, f"{live_server.url}/reviews/approvals/{pending.pk}/", screenshot="item")
    page.click("#approve-button")  # with the comment empty: refused or approved, swapped in either way
    page.wait_for_load_state("networkidle")
    for path in (f"/tasks/{big.pk}/", "/tasks/"):
        visit(page, live_server.url + path)
    page.close()

    # Olga operates: tasks, upload, triage, bulk retries, stuck work, charts.
    page = log_in(browser, live_server, "olga")
    violations.append(page.csp_violations)
    visit(page, f"{live_server.url}/tasks/{big.pk}/", screenshot="task")
    for path in ("/tasks/", f"/tasks/{contract.pk}/", f"/tasks/{failed.pk}/", f"/dead-letters/{letter.pk}/",
                 f"/dead-letters/bulk/{bulk.pk}/", "/stuck/"):
        visit(page, live_server.url + path)
    visit(page, f"{live_server.url}/dead-letters/", screenshot="dead-letters")
    page.fill("#id_q", "invalid")  # the filter swaps the list in as one types
    page.wait_for_load_state("networkidle")
    page.locator(f"input[name=ids][value='{letter.pk}']").check()
    page.click("button:has-text('Retry selected')")
    page.wait_for_load_state("networkidle")
    visit(page, f"{live_server.url}/upload/")
    page.fill("#id_text", CONTRACT.replace("Globex", "Tailspin"))
    page.set_input_files("#id_files", files=[{"name": "note.txt", "mimeType": "text/plain",
                                               "buffer": b"REPORT\nPeriod: Q3\nAuthor: Olga\n"}])
    page.click("button.primary:has-text('Submit')")
    page.wait_for_selector("#upload-results li.ok")
    # A successful upload empties the form for the next one.
    page.wait_for_function("() => document.getElementById('id_text').value === ''")
    assert page.evaluate("document.getElementById('id_files').files.length") == 0
    page.screenshot(path=ARTIFACTS / "csp-upload.png", full_page=True)
    visit(page, f"{live_server.url}/charts/", screenshot="charts")
    page.check("input[name=range][value='7d']")
    page.wait_for_url(re.compile(r"range=7d"))
    page.wait_for_function("() => document.querySelector('#charts-body .hint').textContent"
                           ".includes('periods of 1 day')")
    page.locator("#chart-rejections details summary").click()
    page.close()

    # Adam administers: every admin page, the calendar widget, and a routing change's impact preview.
    page = log_in(browser, live_server, "adam")
    violations.append(page.csp_violations)
    for url in admin_pages(live_server, admin_user):
        visit(page, url)
    visit(page, f"{live_server.url}/admin/orchestrator/task/", screenshot="admin-tasks")
    visit(page, f"{live_server.url}/admin/orchestrator/modelprice/add/", screenshot="admin-price")
    page.locator(".datetimeshortcuts a").first.click()  # "Today": admin's JavaScript
    page.locator(".datetimeshortcuts a[id^=calendarlink]").click()  # the calendar, drawn by admin's JavaScript
    page.locator(".calendarbox").first.wait_for()
    visit(page, f"{live_server.url}/admin/reviews/rejectionreason/")
    page.locator("#action-toggle").check()
    page.select_option("select[name=action]", "delete_selected")
    page.click("button[name=index]")
    page.wait_for_load_state("networkidle")
    rule = RoutingRule.objects.get(name="Invoice amount > 10,000")
    visit(page, live_server.url + reverse("admin:orchestrator_routingrule_change", args=[rule.pk]))
    page.fill("#id_value", "5000")
    page.click("input[name=_save]")
    page.locator(".impact-sentences").wait_for()
    page.screenshot(path=ARTIFACTS / "csp-admin-impact.png", full_page=True)
    page.click("input[name=_impact_save]")
    page.wait_for_url(re.compile(r"/admin/orchestrator/routingrule/$"))
    page.close()

    assert [violation for each_page in violations for violation in each_page] == []


INJECTED = ('<script>window.__injected = "inline"</script>'
            '<img src="/static/favicon.svg?x" onload="window.__injected = \'handler\'" alt="">'
            '<script src="data:text/javascript,window.__injected=\'data-url\'"></script>'
            '<a id="injected-link" href="javascript:window.__injected=\'url\'">injected</a>')


def test_a_script_injected_into_a_page_does_not_run(plain_http, live_server, reviewer_finance, make_task,
                                                    make_approval, browser):
    """As if an escape were missed: the inbox arrives with an inline script, an event handler, a
    data: URL script and a javascript: link in it. None runs; Steward's own scripts still do."""
    northwind_approvals(make_task, make_approval, count=1)
    page = log_in(browser, live_server, "alice")

    def inject(route):
        response = route.fetch()
        route.fulfill(response=response, body=response.text().replace("</main>", INJECTED + "</main>"))

    page.route(re.compile(r".*/reviews/$"), inject)
    page.goto(f"{live_server.url}/reviews/")
    page.wait_for_load_state("networkidle")
    assert page.locator("#injected-link").count() == 1  # the injection is in the page
    page.click("#injected-link")
    page.wait_for_timeout(300)
    assert page.evaluate("window.__injected") is None
    # Each attempt was refused by the policy (and said so), not skipped for some other reason.
    assert len([v for v in page.csp_violations if "script-src" in v]) >= 4, page.csp_violations
    # Steward's own scripts (static files) still run: "?" opens the keyboard help.
    page.keyboard.press("?")
    assert page.locator("#keys-help").is_visible()


def test_htmx_is_told_not_to_run_code_written_in_attributes(plain_http, live_server, reviewer_finance, browser):
    """htmx runs code written in attributes (hx-on, hx-vars, js: in hx-vals, [filters] in
    hx-trigger) with eval, which the policy refuses: such code would fail, silently. With eval off
    in htmx's own configuration, it never tries (tests/pages/test_content_security_policy.py
    keeps such attributes out of the templates)."""
    page = browser.new_page(viewport=DESKTOP)
    page.goto(f"{live_server.url}/login/")
    assert page.evaluate("() => htmx.config.allowEval") is False
    page.close()

    page = log_in(browser, live_server, "alice")
    assert page.evaluate("() => [htmx.config.allowEval, htmx.config.includeIndicatorStyles]") == [False, False]
