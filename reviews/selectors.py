"""Reads for the review pages: the reviewer's queues with their counts, and the inbox, oldest first.

Both stay constant-time however long the backlog: counts stop at COUNT_CAP ("1,000+"), and the
inbox pages by keyset on (created_at, id) over the (queue, status, created_at, id) index.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone as dt_timezone

from django.db import connection
from django.db.models import Q, QuerySet
from django.db.models.expressions import RawSQL
from django.http import Http404

from orchestrator.roles import ADMIN, REVIEWER, has_role

from .models import Approval, ApprovalStatus, Queue

EPOCH = datetime(1970, 1, 1, tzinfo=dt_timezone.utc)
PAGE_SIZE = 50
# Counting every pending row of a huge backlog on each 10 s refresh would grow with it; past
# this many the inbox says "1,000+".
COUNT_CAP = 1000


def review_queues(user) -> QuerySet[Queue]:
    """The queues whose approvals `user` may decide: an admin's are all of them."""
    if has_role(user, ADMIN):
        return Queue.objects.all()
    return Queue.objects.filter(reviewers=user)


def queue_deciders(queue: Queue):
    """The active users listed as `queue`'s reviewers who may decide in it (services.user_can_decide):
    with the reviewer or admin role. Someone listed without either is sent no email links."""
    return (
        queue.reviewers.filter(is_active=True)
        .filter(Q(groups__name__in=(REVIEWER, ADMIN)) | Q(is_superuser=True))
        .distinct()
        .order_by("id")
    )


def _capped_count(where: str, params: list) -> RawSQL:
    approvals = Approval._meta.db_table
    queues = Queue._meta.db_table
    return RawSQL(
        f"(SELECT COUNT(*) FROM (SELECT 1 FROM {approvals} a WHERE a.queue_id = {queues}.id AND {where} "
        f"LIMIT %s) capped)",
        [*params, COUNT_CAP + 1],
    )


def queues_with_counts(user, now) -> list[Queue]:
    """The user's queues, each with `pending` and `overdue` (past its SLA) counts, in one query."""
    now_param = connection.ops.adapt_datetimefield_value(now)
    return list(
        review_queues(user)
        .annotate(
            pending=_capped_count("a.status = %s", [ApprovalStatus.PENDING]),
            overdue=_capped_count("a.status = %s AND a.due_at < %s", [ApprovalStatus.PENDING, now_param]),
        )
        .only("id", "name", "description", "sla_minutes")
        .order_by("name")
    )


@dataclass(frozen=True)
class Cursor:
    created_at: datetime
    id: int

    def encode(self) -> str:
        micros = (self.created_at - EPOCH) // timedelta(microseconds=1)
        return f"{micros}.{self.id}"

    @classmethod
    def decode(cls, raw: str) -> "Cursor | None":
        try:
            micros, pk = raw.split(".", 1)
            moment = EPOCH + timedelta(microseconds=int(micros))
            return cls(moment, int(pk))
        except (ValueError, OverflowError, OSError):
            return None

    @classmethod
    def of(cls, approval: Approval) -> "Cursor":
        return cls(approval.created_at, approval.pk)


def pending_in(queue_ids: list[int]) -> QuerySet[Approval]:
    return Approval.objects.filter(status=ApprovalStatus.PENDING, queue_id__in=queue_ids)


# (created_at, id) > cursor, written with a plain range on created_at first so that the database
# can start its index scan at the cursor instead of filtering from the oldest row.
def _after(cursor: Cursor) -> Q:
    return Q(created_at__gte=cursor.created_at) & (Q(created_at__gt=cursor.created_at) | Q(id__gt=cursor.id))


def _before(cursor: Cursor) -> Q:
    return Q(created_at__lte=cursor.created_at) & (Q(created_at__lt=cursor.created_at) | Q(id__lt=cursor.id))


def inbox_queryset(queue_ids: list[int], after: Cursor | None = None) -> QuerySet[Approval]:
    """Pending approvals in these queues after `after`, oldest first, with what a row shows."""
    queryset = (
        pending_in(queue_ids)
        .select_related("queue", "task")
        .only("id", "status", "created_at", "due_at", "expires_at", "escalated_at", "action_summary",
              "action_data", "reasons", "queue__name", "task__id", "task__filename", "task__external_ref",
              "task__doc_type", "task__confidence", "task__duplicate_of_id")
        .order_by("created_at", "id")
    )
    return queryset.filter(_after(after)) if after is not None else queryset


def inbox_page(queue_ids: list[int], after: Cursor | None = None, size: int = PAGE_SIZE
               ) -> tuple[list[Approval], Cursor | None]:
    """One page of pending approvals, oldest first, after `after`; returns (rows, next cursor)."""
    rows = list(inbox_queryset(queue_ids, after)[: size + 1])
    if len(rows) > size:
        return rows[:size], Cursor.of(rows[size - 1])
    return rows, None


def neighbours(queue_ids: list[int], approval: Approval) -> tuple[Approval | None, Approval | None]:
    """The pending approvals just before and after `approval` in the inbox order."""
    cursor = Cursor.of(approval)
    pending = pending_in(queue_ids).only("id", "created_at")
    previous = pending.filter(_before(cursor)).order_by("-created_at", "-id").first()
    following = pending.filter(_after(cursor)).order_by("created_at", "id").first()
    return previous, following


def approval_for_reviewer(user, approval_id: int) -> Approval:
    """The approval if it is in one of `user`'s queues (any status), else 404: never reveal it exists."""
    queryset = Approval.objects.select_related("queue", "task", "decided_by", "rejection_reason", "replaces")
    if not has_role(user, ADMIN):
        queryset = queryset.filter(queue__reviewers=user)
    approval = queryset.filter(pk=approval_id).first()
    if approval is None:
        raise Http404("No such approval")
    return approval
