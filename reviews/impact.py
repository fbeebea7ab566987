"""Impact preview: how the last routed tasks would route under a changed RoutingRule or
AutoApprovePolicy, compared with the rules as they are now. Shown in admin before saving.

Each task is replayed from what its route step recorded (the amount it used, the reasons for
review that do not depend on the rules or the policy) with orchestrator/workers/route.py's own
`rule_matches`, so the preview and the route step cannot disagree about what a rule matches.
"""
from __future__ import annotations

from collections import Counter
from copy import copy
from dataclasses import dataclass, field
from decimal import Decimal

from orchestrator.models import RoutingRule, Step, StepStatus
from orchestrator.workers.route import FALLBACK_QUEUE, POLICY_REASON_PREFIXES, rule_matches, to_decimal

from .models import AutoApprovePolicy

SAMPLE = 1000
# Reasons the route step writes because of the rule or the policy are recomputed, not replayed.


@dataclass(frozen=True)
class Routed:
    task_id: int
    doc_type: str
    fields: dict
    confidence: float | None
    amount: Decimal | None
    other_reasons: tuple[str, ...]


def recent_routed(limit: int = SAMPLE) -> list[Routed]:
    """The last `limit` tasks the route step handled, newest first, as the route step saw them
    (with any reviewer's corrections since applied to the fields)."""
    steps = (
        Step.objects.filter(worker="route", status=StepStatus.SUCCEEDED)
        .select_related("task")
        .only("output", "task__id", "task__doc_type", "task__fields", "task__confidence")
        .order_by("-id")[:limit]
    )
    routed = []
    for step in steps:
        output = step.output or {}
        fields = step.task.fields or {}
        candidates = [a for a in (to_decimal(fields.get("amount")), to_decimal(output.get("document_amount")),
                                  to_decimal(output.get("amount"))) if a is not None]
        routed.append(Routed(
            task_id=step.task_id,
            doc_type=step.task.doc_type or "Other",
            fields=fields,
            confidence=step.task.confidence,
            amount=max(candidates) if candidates else None,
            other_reasons=tuple(r for r in output.get("reasons") or [] if not r.startswith(POLICY_REASON_PREFIXES)),
        ))
    return routed


def outcome(task: Routed, rules: list, policy: AutoApprovePolicy) -> tuple[str, bool]:
    """(queue, needs a person) for `task` under `rules` (ordered, active only) and `policy`: the
    route step's decision, replayed."""
    rule = next((r for r in rules if rule_matches(r, task.doc_type, task.fields, task.amount)), None)
    queue, requires = (rule.queue.name, rule.requires_approval) if rule else (FALLBACK_QUEUE, True)
    if requires or task.other_reasons:
        return queue, True
    if task.confidence is not None and task.confidence < policy.min_confidence:
        return queue, True
    if not policy.enabled:
        return queue, True
    return queue, task.amount is not None and task.amount > policy.max_amount


def current_rules() -> list[RoutingRule]:
    return list(RoutingRule.objects.filter(active=True).select_related("queue").order_by("priority", "id"))


def rules_with(candidate: RoutingRule) -> list[RoutingRule]:
    """The active rules as they would be with `candidate` saved (added, changed or switched off)."""
    rules = [r for r in current_rules() if r.pk != candidate.pk]
    if candidate.active:
        rules.append(candidate)
    return sorted(rules, key=lambda r: (r.priority, r.pk if r.pk is not None else float("inf")))


@dataclass
class Impact:
    considered: int = 0
    moves: list[dict] = field(default_factory=list)  # {"from", "to", "count", "task_ids"}
    moved: int = 0
    now_auto: int = 0      # needed a person, would now be auto-approved
    now_person: int = 0    # was auto-approved, would now need a person
    by_queue: list[dict] = field(default_factory=list)  # {"queue", "now", "new"}

    @property
    def unchanged(self) -> bool:
        return not (self.moved or self.now_auto or self.now_person)

    def sentences(self) -> list[str]:
        of = f"Of the last {self.considered:,} routed tasks"
        if not self.considered:
            return ["No task has been routed yet, so there is nothing to compare."]
        if self.unchanged:
            return [f"{of}, none would route or need approval differently."]
        lines = [f"{of}, {m['count']:,} would now go to {m['to']} instead of {m['from']}." for m in self.moves]
        if self.now_auto:
            lines.append(f"{of}, {self.now_auto:,} would now be auto-approved instead of waiting for a person.")
        if self.now_person:
            lines.append(f"{of}, {self.now_person:,} would now wait for a person instead of being auto-approved.")
        return lines


def impact_compare(*, rules_now: list, rules_new: list, policy_now: AutoApprovePolicy,
                   policy_new: AutoApprovePolicy, limit: int = SAMPLE) -> Impact:
    tasks = recent_routed(limit)
    impact = Impact(considered=len(tasks))
    moves: dict[tuple[str, str], list[int]] = {}
    queues_now: Counter = Counter()
    queues_new: Counter = Counter()
    for task in tasks:
        queue_now, person_now = outcome(task, rules_now, policy_now)
        queue_new, person_new = outcome(task, rules_new, policy_new)
        queues_now[queue_now] += 1
        queues_new[queue_new] += 1
        if queue_now != queue_new:
            moves.setdefault((queue_now, queue_new), []).append(task.task_id)
        impact.now_auto += person_now and not person_new
        impact.now_person += person_new and not person_now
    impact.moves = sorted(
        ({"from": a, "to": b, "count": len(ids), "task_ids": ids[:10]} for (a, b), ids in moves.items()),
        key=lambda m: -m["count"],
    )
    impact.moved = sum(m["count"] for m in impact.moves)
    impact.by_queue = [{"queue": q, "now": queues_now[q], "new": queues_new[q]}
                       for q in sorted(set(queues_now) | set(queues_new))]
    return impact


def impact_of_rule(candidate: RoutingRule, limit: int = SAMPLE) -> Impact:
    policy = AutoApprovePolicy.current()
    return impact_compare(rules_now=current_rules(), rules_new=rules_with(candidate), policy_now=policy,
                          policy_new=policy, limit=limit)


def impact_of_deleting_rule(rule: RoutingRule, limit: int = SAMPLE) -> Impact:
    """As if `rule` were gone: the same as switching it off."""
    gone = copy(rule)
    gone.active = False
    return impact_of_rule(gone, limit)


def impact_of_deleting_policy(policy: AutoApprovePolicy, limit: int = SAMPLE) -> Impact:
    """The next row takes over, or with none left auto-approval is off (AutoApprovePolicy.current())."""
    policy_now = AutoApprovePolicy.current()
    if policy.pk != policy_now.pk:
        policy_new = policy_now
    else:
        policy_new = AutoApprovePolicy.objects.exclude(pk=policy.pk).order_by("id").first() or \
            AutoApprovePolicy(enabled=False)
    rules = current_rules()
    return impact_compare(rules_now=rules, rules_new=rules, policy_now=policy_now, policy_new=policy_new,
                          limit=limit)


def impact_of_policy(candidate: AutoApprovePolicy, limit: int = SAMPLE) -> Impact:
    """The policy that applies is the first row (AutoApprovePolicy.current()); editing another row
    changes nothing."""
    policy_now = AutoApprovePolicy.current()
    applies = policy_now.pk is None or candidate.pk == policy_now.pk
    rules = current_rules()
    return impact_compare(rules_now=rules, rules_new=rules, policy_now=policy_now,
                          policy_new=candidate if applies else policy_now, limit=limit)
