"""Seed what a fresh install needs: roles, queues, routing rules, budget, prices, worker configs."""
from datetime import date
from decimal import Decimal

from django.db import migrations

ROLES = ("reviewer", "operator", "admin")
QUEUES = [
    ("finance_director", "Invoices above 10,000", 240),
    ("legal_team", "Contracts", 1440),
    ("standard_queue", "Everything else", 480),
]
RULES = [
    # name, priority, doc_type, field, operator, value, queue, requires_approval
    ("Invoice amount > 10,000", 10, "Invoice", "amount", "gt", "10000", "finance_director", True),
    ("Contracts", 20, "Contract", "", "", "", "legal_team", True),
    ("Everything else", 1000, "", "", "", "", "standard_queue", False),
]
PRICES = [  # USD per 1M tokens: input, cached input, output
    ("gpt-4o-mini", "0.15", "0.075", "0.60"),
    ("gpt-4o", "2.50", "1.25", "10.00"),
    ("gpt-4.1-mini", "0.40", "0.10", "1.60"),
    ("o3-mini", "1.10", "0.55", "4.40"),
]
REASONS = [
    ("duplicate", "Duplicate of an earlier document"),
    ("wrong-amount", "Amount is wrong"),
    ("wrong-counterparty", "Unknown or wrong counterparty"),
    ("not-authorised", "Not authorised / not ours"),
    ("bad-extraction", "Extraction is wrong"),
    ("other", "Other (see comment)"),
]


def seed(apps, schema_editor):
    from orchestrator.workers import WORKERS

    Group = apps.get_model("auth", "Group")
    Queue = apps.get_model("reviews", "Queue")
    RoutingRule = apps.get_model("orchestrator", "RoutingRule")
    Budget = apps.get_model("orchestrator", "Budget")
    ModelPrice = apps.get_model("orchestrator", "ModelPrice")
    WorkerConfig = apps.get_model("orchestrator", "WorkerConfig")
    RejectionReason = apps.get_model("reviews", "RejectionReason")
    AutoApprovePolicy = apps.get_model("reviews", "AutoApprovePolicy")

    for role in ROLES:
        Group.objects.get_or_create(name=role)
    queues = {}
    for name, description, sla in QUEUES:
        queues[name], _ = Queue.objects.get_or_create(name=name, defaults={"description": description, "sla_minutes": sla})
    for name, priority, doc_type, field, operator, value, queue, requires in RULES:
        RoutingRule.objects.get_or_create(name=name, defaults=dict(
            priority=priority, doc_type=doc_type, field=field, operator=operator, value=value,
            queue=queues[queue], requires_approval=requires))
    Budget.objects.get_or_create(name="default", defaults=dict(
        max_llm_calls=30, max_tool_calls=40, max_tokens=200_000, max_cost_usd=Decimal("1.00")))
    for model, per_in, per_cached, per_out in PRICES:
        ModelPrice.objects.get_or_create(model=model, effective_from=date(2024, 1, 1), defaults=dict(
            input_per_1m=Decimal(per_in), cached_input_per_1m=Decimal(per_cached), output_per_1m=Decimal(per_out)))
    for name in ("classify", "extract", "verify"):
        module = WORKERS[name]
        WorkerConfig.objects.get_or_create(worker=name, defaults=dict(
            model="gpt-4o-mini", prompt=module.PROMPT, version=module.VERSION))
    for code, label in REASONS:
        RejectionReason.objects.get_or_create(code=code, defaults={"label": label})
    if not AutoApprovePolicy.objects.exists():
        AutoApprovePolicy.objects.create(enabled=True, min_confidence=0.95, max_amount=Decimal("1000.00"))


class Migration(migrations.Migration):
    dependencies = [
        ("orchestrator", "0002_initial"),
        ("reviews", "0001_initial"),
        ("auth", "0012_alter_user_first_name_max_length"),
    ]
    operations = [migrations.RunPython(seed, migrations.RunPython.noop)]
