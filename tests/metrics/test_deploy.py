"""The Prometheus alert rules and the Grafana dashboard: valid, tested, and about real metrics."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from django.utils import timezone

from metrics.loops import clear_cache
from orchestrator.models import SweepRun

from .conftest import run_promtool, samples, scrape

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
ALERTS = DEPLOY / "prometheus" / "alerts.yml"
ALERT_TESTS = DEPLOY / "prometheus" / "alerts_test.yml"
DASHBOARD = DEPLOY / "grafana" / "steward.json"
METRIC_NAME = re.compile(r"(?<![:\w])((?:steward|gen_ai)_[a-z_]+)")


def test_promtool_check_rules():
    result = run_promtool("check", "rules", str(ALERTS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 10 rules found" in result.stdout


def test_promtool_test_rules():
    result = run_promtool("test", "rules", str(ALERT_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_alerts_cover_what_the_issue_asks_for():
    text = ALERTS.read_text()
    for alert in ("StewardToolCallSpike", "StewardTokenSpike", "StewardCostSpike", "StewardDeadLetterGrowth",
                  "StewardCompletionRateDrop", "StewardApprovalsPastSLA", "StewardSweeperNotRunning"):
        assert f"alert: {alert}" in text
        assert f"alertname: {alert}" in ALERT_TESTS.read_text(), f"{alert} has no promtool unit test"


@pytest.mark.django_db
def test_rules_and_dashboard_use_only_metrics_that_exist(scenario, operator, make_task, make_approval, settings):
    # One pending approval, a loop ceiling (few samples suffice here) and a sweep, so every gauge
    # has a series.
    make_approval(make_task(status="awaiting_approval"), "finance_director")
    SweepRun.objects.create(started_at=timezone.now())
    settings.STEWARD_LOOP_MIN_SAMPLES = 1
    clear_cache()
    found = samples(scrape(operator))
    exposed = {name for name, _ in found}
    label_names = {label for _, labels in found for label, _ in labels}
    dashboard = json.loads(DASHBOARD.read_text())
    expressions = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    used = set(METRIC_NAME.findall(ALERTS.read_text())) | set(METRIC_NAME.findall("\n".join(expressions)))
    used -= label_names  # gen_ai_agent_name and the like are labels, not metrics
    assert len(used) >= 15
    assert not used - exposed, f"not on /metrics: {sorted(used - exposed)}"


def test_dashboard_is_importable_json():
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] == "steward-agents"
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    titles = " ".join(panel["title"] for panel in dashboard["panels"]).lower()
    for topic in ("completion", "tool calls", "token", "cost", "rejections", "approval wait", "dead letters"):
        assert topic in titles
