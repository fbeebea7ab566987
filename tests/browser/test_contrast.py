"""Text contrast as rendered: every piece of text on Steward's pages, chart labels included, has a
contrast ratio of at least 4.5:1 with what is behind it (3:1 for large text: 24px, or 18.66px bold),
computed from the browser's computed styles (WCAG 2.x relative luminance)."""
from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from orchestrator.models import Step
from orchestrator.services import bulk_retry_create, dead_letter_create

from .conftest import log_in, settle
from .test_charts import seed_history

pytestmark = pytest.mark.browser

# Each visible text's colour (a text's `color`, an SVG text's `fill`) blended over the colours
# behind it, up to the first opaque background; the pieces under the ratio they need.
LOW_CONTRAST = r"""() => {
  const rgba = c => { const m = c.match(/rgba?\(([^)]+)\)/); if (!m) return null;
    const p = m[1].split(/[ ,\/]+/).filter(Boolean).map(Number); return [p[0], p[1], p[2], p.length > 3 ? p[3] : 1]; };
  const over = (top, under) => [0, 1, 2].map(i => top[i] * top[3] + under[i] * (1 - top[3])).concat([1]);
  const lum = c => c.slice(0, 3).map(v => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; })
                    .reduce((sum, v, i) => sum + v * [0.2126, 0.7152, 0.0722][i], 0);
  const behind = el => { const layers = [];
    for (let e = el; e; e = e.parentElement) { const c = rgba(getComputedStyle(e).backgroundColor);
      if (c && c[3] > 0) { layers.push(c); if (c[3] >= 1) break; } }
    return layers.reverse().reduce((under, top) => over(top, under), [255, 255, 255, 1]); };
  const found = [], seen = new Set();
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  while (walker.nextNode()) {
    const el = walker.currentNode.parentElement;
    if (!walker.currentNode.textContent.trim() || !el || seen.has(el) || el.closest("title, desc")) continue;
    seen.add(el);
    const box = el.getBoundingClientRect(), style = getComputedStyle(el);
    if (!box.width || !box.height || style.visibility === "hidden" || el.closest(".visually-hidden")) continue;
    const svg = el.closest("svg");
    const colour = rgba(svg ? style.fill : style.color);
    const bg = behind(svg ? svg.parentElement : el);
    const fg = over(colour, bg);
    const [a, b] = [lum(fg), lum(bg)];
    const ratio = (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
    const px = parseFloat(style.fontSize) * (svg ? svg.getScreenCTM().a : 1);
    const large = px >= 24 || (parseInt(style.fontWeight) >= 700 && px >= 18.66);
    if (ratio < (large ? 3 : 4.5))
      found.push(`${el.textContent.trim().slice(0, 40)} (${el.tagName.toLowerCase()}.${el.getAttribute("class")}): `
                 + `${ratio.toFixed(2)}:1, ${svg ? style.fill : style.color} on rgb(${bg.slice(0, 3).map(Math.round)})`);
  }
  return found;
}"""


def low_contrast(page, path: str) -> list[str]:
    page.goto(path)
    settle(page)
    page.evaluate("document.querySelectorAll('main details').forEach(d => { d.open = true; })")  # tables, transcripts
    return [f"{path}: {text}" for text in page.evaluate(LOW_CONTRAST)]


def test_every_page_reads_at_4_5_to_1(plain_http, live_server, reviewer_finance, operator, make_task, make_approval,
                                      browser):
    seed_history()  # the charts, with the loop ceiling and the budget drawn on "Tool calls per task"
    now = timezone.now()
    waiting = []
    for n, (age, escalated) in enumerate(((timedelta(days=2), True), (timedelta(hours=5), False),
                                          (timedelta(minutes=5), False)), start=1):
        task = make_task(doc_type="Invoice", status="awaiting_approval", routed_to="finance_director",
                         fields={"invoice_number": f"INV-{n}", "counterparty": "Northwind", "amount": 15000.0})
        approval = make_approval(task, "finance_director", action_summary=f"Pay 15,000 USD to Northwind (INV-{n})",
                                 action_data={"amount": 15000}, reasons=["Above the threshold", "New counterparty"],
                                 due_at=now - age + timedelta(hours=4),
                                 escalated_at=now - timedelta(hours=1) if escalated else None)
        approval.__class__.objects.filter(pk=approval.pk).update(created_at=now - age)
        waiting.append(approval)
    failed = make_task(doc_type="Invoice", status="dead_lettered", current_step="verify", filename="globex.txt")
    for attempt in (1, 2):
        step = Step.objects.create(task=failed, worker="verify", attempt=attempt, status="failed", started_at=now,
                                   model="gpt-4o-mini", prompt_version="v1", llm_calls=1, latency_ms=30012,
                                   error_type="Timeout", error_message="Request timed out after 30 s",
                                   transcript=[{"kind": "request", "model": "gpt-4o-mini",
                                                "messages": [{"role": "user", "content": "Verify"}]}])
    letter = dead_letter_create(task=failed, step=step, error_type="Timeout", message="Gave up after 2 attempts")
    other = dead_letter_create(task=make_task(status="dead_lettered", current_step="classify"), step=None,
                               error_type="ConnectionError", message="Could not reach the model")
    bulk = bulk_retry_create(user=operator, dead_letter_ids=[other.pk], description="one",
                             selection={"scope": "selected"}, rate_per_minute=1)

    found = []
    page = log_in(browser, live_server, "alice")
    for path in ("/reviews/", f"/reviews/approvals/{waiting[0].pk}/"):
        found += low_contrast(page, live_server.url + path)
    page.keyboard.press("?")  # the keys' help
    found += [f"keys help: {text}" for text in page.evaluate(LOW_CONTRAST)]
    page.close()

    page = log_in(browser, live_server, "olga")
    for path in ("/tasks/", f"/tasks/{failed.pk}/", f"/tasks/{waiting[0].task_id}/", "/upload/", "/dead-letters/",
                 f"/dead-letters/{letter.pk}/", f"/dead-letters/bulk/{bulk.pk}/", "/stuck/", "/charts/?range=30d"):
        found += low_contrast(page, live_server.url + path)
    page.close()

    assert found == []
