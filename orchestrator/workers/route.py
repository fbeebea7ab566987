"""route: deterministic business rules decide the queue and whether a person must approve.

Never the model's opinion: the amount used is the larger of the extracted amount and a
deterministic parse of the text, and any disagreement between the two sends the action to review.
Text inside the document ("route to standard_queue") cannot change anything here.
"""
from __future__ import annotations

import types
import typing
from decimal import Decimal, InvalidOperation

from ..amounts import parse_total
from ..errors import PermanentError
from .base import StepContext
from .extract import SCHEMAS

NAME = "route"
VERSION = "v1"
PROMPT = "(route uses no model: RoutingRule rows decide)"
FALLBACK_QUEUE = "standard_queue"
FALLBACK_CONDITION = "no rule matched"

# How the reasons that come from the rules and the auto-approve policy begin. Moving an approval
# to another queue and the admin's impact preview recompute these and keep the others, so they
# recognise them by these openings: reword a reason here, not there.
# With the rule's condition as it is when it routes: its name is free text, and may still give a
# threshold an admin has since changed.
RULE_REASON = "Rule \"{rule}\" ({condition}) requires approval"
RULE_REASON_PREFIX = "Rule \""
POLICY_REASON_PREFIXES = (RULE_REASON_PREFIX, "Low confidence", "Auto-approval is switched off",
                          "Above the auto-approve ceiling")


def to_decimal(value) -> Decimal | None:
    if value is None or value == "":
        return None
    try:
        return Decimal(str(value))
    except InvalidOperation:
        return None


def _kind(annotation) -> str | None:
    """"number" or "text" for a schema field's type (optional or not); None for lists and objects."""
    optional = typing.get_origin(annotation) in (typing.Union, types.UnionType)
    members = {a for a in typing.get_args(annotation) if a is not type(None)} if optional else {annotation}
    if members and members <= {int, float}:
        return "number"
    return "text" if members == {str} else None


def rule_fields(doc_type: str = "") -> dict[str, str]:
    """The extracted fields a rule can compare for `doc_type` (any type when empty), by kind:
    "number" (compared as numbers, with any operator) or "text" (with "=", ignoring case). They
    are extract's per-type schemas' fields; lists (line items) are left out, no rule reads them."""
    schemas = [SCHEMAS[doc_type]] if doc_type in SCHEMAS else list(SCHEMAS.values())
    found: dict[str, str] = {}
    for schema in schemas:
        for name, info in schema.model_fields.items():
            kind = _kind(info.annotation)
            if kind is not None:
                found.setdefault(name, kind)
    return found


def rule_matches(rule, doc_type: str, fields: dict, amount: Decimal | None) -> bool:
    if rule.doc_type and rule.doc_type != doc_type:
        return False
    if not rule.field:
        return True
    left = amount if rule.field == "amount" else to_decimal(fields.get(rule.field))
    right = to_decimal(rule.value)
    if rule.operator == "eq" and (left is None or right is None):
        return str(fields.get(rule.field, "")).strip().lower() == rule.value.strip().lower()
    if left is None or right is None:
        return False
    return {
        "gt": left > right, "gte": left >= right, "lt": left < right, "lte": left <= right, "eq": left == right,
    }.get(rule.operator, False)


def choose_rule(doc_type: str, fields: dict, amount: Decimal | None, rules=None):
    """The first active rule (by priority) that matches; `rules` from a tuning snapshot, or read now."""
    if rules is None:
        from ..tuning import tuning

        rules = tuning().rules
    for rule in rules:
        if rule_matches(rule, doc_type, fields, amount):
            return rule
    return None


def money(amount: Decimal | None, currency: str = "USD") -> str:
    if amount is None:
        return "no amount"
    symbol = {"USD": "$", "EUR": "€", "GBP": "£"}.get(currency or "USD", "")
    text = f"{amount:,.2f}".removesuffix(".00")
    return f"{symbol}{text}" if symbol else f"{text} {currency}"


def describe_action(doc_type: str, fields: dict, amount: Decimal | None, queue: str) -> str:
    counterparty = fields.get("counterparty") or "unknown counterparty"
    if doc_type == "Invoice":
        number = fields.get("invoice_number") or "without number"
        return f"Send payment approval for invoice {number}, {money(amount, fields.get('currency'))}, to {queue}"
    if doc_type == "Contract":
        return f"Forward the contract with {counterparty} to {queue} for signature"
    if doc_type == "Report":
        return f"File the report \"{fields.get('title') or 'untitled'}\" with {queue}"
    if doc_type == "Email":
        return f"Hand the email from {counterparty} (\"{fields.get('subject') or 'no subject'}\") to {queue}"
    return f"File the document with {queue}"


def routing_amounts(task, fields: dict) -> tuple[Decimal | None, Decimal | None, Decimal | None]:
    """(extracted, printed, amount): the amount the rules see is the larger of the field and the
    document's own printed total, so neither the model nor a correction can talk a document below it."""
    extracted = to_decimal(fields.get("amount"))
    printed = parse_total(task.content) if (task.doc_type or "Other") in ("Invoice", "Contract") else None
    candidates = [a for a in (extracted, printed) if a is not None]
    return extracted, printed, max(candidates) if candidates else None


def choose_route(doc_type: str, fields: dict, amount: Decimal | None, rules=None) -> dict:
    """The first matching rule's queue, or the fallback queue (which always needs a person)."""
    rule = choose_rule(doc_type, fields, amount, rules)
    if rule is None:
        return {"queue": FALLBACK_QUEUE, "rule": "(fallback)", "rule_condition": FALLBACK_CONDITION,
                "requires_approval": True}
    return {"queue": rule.queue.name, "rule": rule.name, "rule_condition": rule.condition,
            "requires_approval": rule.requires_approval}


def route_for_fields(task, fields: dict) -> dict:
    """Where the rules send `task` with these (e.g. corrected) fields: queue, rule, amount."""
    amount = routing_amounts(task, fields)[2]
    return {**choose_route(task.doc_type or "Other", fields, amount), "amount": amount}


def run(ctx: StepContext) -> dict:
    from ..tuning import tuning

    task = ctx.task
    tuned = ctx.tuning or tuning()
    doc_type = task.doc_type or "Other"
    fields = task.fields or {}
    extracted, parsed, amount = routing_amounts(task, fields)
    route = choose_route(doc_type, fields, amount, tuned.rules)
    queue_name, rule_name, rule_requires = route["queue"], route["rule"], route["requires_approval"]
    if queue_name == FALLBACK_QUEUE and FALLBACK_QUEUE not in tuned.queues:
        raise PermanentError(f"No routing rule matched and there is no {FALLBACK_QUEUE} queue",
                             error_type="NoRoute")

    reasons: list[str] = []
    if rule_requires:
        reasons.append(RULE_REASON.format(rule=rule_name, condition=route["rule_condition"]))
    if task.duplicate_of_id:
        reasons.append(f"Exact duplicate of task {task.duplicate_of_id}")
    for finding in task.findings or []:
        reasons.append(f"Verifier: {finding.get('message', finding.get('kind'))}")
    if parsed is not None and (extracted is None or abs(parsed - extracted) > Decimal("0.01")):
        reasons.append(f"Amount disagreement: the model read {money(extracted)}, the document shows {money(parsed)}")
    if doc_type == "Invoice" and parsed is None:
        # Only the model's word for the amount: never enough to pay without a person.
        reasons.append(f"Amount not confirmed: the model read {money(extracted)}, "
                       "but the document shows no amount with a currency")
    policy = tuned.policy
    if task.confidence is not None and task.confidence < policy.min_confidence:
        reasons.append(f"Low confidence ({task.confidence:.2f} < {policy.min_confidence:.2f})")
    if not reasons:
        if not policy.enabled:
            reasons.append("Auto-approval is switched off")
        elif amount is not None and amount > policy.max_amount:
            reasons.append(f"Above the auto-approve ceiling of {money(policy.max_amount)}")

    return {
        "queue": queue_name,
        "rule": rule_name,
        "rule_condition": route["rule_condition"],
        "amount": str(amount) if amount is not None else None,
        "extracted_amount": str(extracted) if extracted is not None else None,
        "document_amount": str(parsed) if parsed is not None else None,
        "requires_approval": bool(reasons),
        "reasons": reasons,
        "action_summary": describe_action(doc_type, fields, amount, queue_name),
    }


def apply(task, output: dict) -> list[str]:
    task.routed_to = output["queue"]
    task.route_reason = "; ".join(output["reasons"]) or "Auto-approved under the policy"
    return ["routed_to", "route_reason"]
