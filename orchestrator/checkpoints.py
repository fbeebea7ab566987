"""Writing a step's checkpoint: the step row, the task's new state and (for route) the approval.

All of it commits together or not at all, and only while the worker still holds the task's lease
(DESIGN.md invariant 1). On PostgreSQL that is one statement, so a step costs one round trip and
one commit:

    WITH t AS (UPDATE task SET ... WHERE id = ... AND lease_owner = ... AND status = 'running' RETURNING id),
         s AS (INSERT INTO step (...) SELECT ... FROM t RETURNING id, attempt),
         a AS (INSERT INTO approval (...) SELECT ... FROM t RETURNING id)
    SELECT ...

The inserts select FROM t, so when the lease was lost (the UPDATE matched nothing) nothing is
written. The step's attempt number is counted in the same statement. Other databases (SQLite)
get the same writes in one transaction of a few statements.
"""
from __future__ import annotations

import functools

from django.db import DEFAULT_DB_ALIAS, connection, connections, models, transaction

from .errors import LeaseLost
from .models import Step, Task, TaskStatus


def checkpoint_write(task: Task, runner: str, values: dict, step: Step, approval: models.Model | None = None) -> None:
    """Save `step` (its attempt numbered here) and `approval`, and set `values` on the task; raise
    LeaseLost (writing nothing) when `runner` no longer holds the task."""
    if connection.vendor == "postgresql":
        _write_in_one_statement(task, runner, values, step, approval)
    else:
        _write_in_one_transaction(task, runner, values, step, approval)


def leased(task_id: int, runner: str) -> models.QuerySet:
    """The task's row while `runner` holds its lease: a worker's every ORM write to a running task
    goes through this, so one that lost its lease writes nothing (the one-statement checkpoint
    below says the same in its SQL)."""
    return Task.objects.filter(pk=task_id, lease_owner=runner, status=TaskStatus.RUNNING)


def next_attempt(task_id: int, worker: str) -> int:
    last = Step.objects.filter(task_id=task_id, worker=worker).aggregate(n=models.Max("attempt"))["n"]
    return (last or 0) + 1


def _write_in_one_transaction(task, runner, values, step, approval) -> None:
    with transaction.atomic():
        if not leased(task.pk, runner).update(**values):
            raise LeaseLost(task.pk)
        step.attempt = next_attempt(task.pk, step.worker)
        step.save(force_insert=True)
        if approval is not None:
            approval.save(force_insert=True)


def _write_in_one_statement(task, runner, values, step, approval) -> None:
    db = connections[DEFAULT_DB_ALIAS]  # the proxy `connection` costs a lookup per use; this is hot
    params: list = []
    sql = [_update_sql(tuple(values))]
    params += [_FIELDS[Task][name].get_db_prep_save(value, db) for name, value in values.items()]
    params += [task.pk, runner, TaskStatus.RUNNING.value]

    step_sql, step_fields = _insert_sql(Step, "s", returning="id, attempt", computed=("attempt",))
    sql.append(step_sql)
    params += _values(step, step_fields, db)
    params += [task.pk, step.worker]  # the attempt number's subquery
    final = "SELECT s.id, s.attempt, NULL FROM s"
    if approval is not None:
        approval_sql, approval_fields = _insert_sql(type(approval), "a", returning="id")
        sql.append(approval_sql)
        params += _values(approval, approval_fields, db)
        final = "SELECT s.id, s.attempt, a.id FROM s, a"
    with db.cursor() as cursor:
        cursor.execute(",\n".join(sql) + "\n" + final, params)
        row = cursor.fetchone()
    if row is None:
        raise LeaseLost(task.pk)
    step.pk, step.attempt = row[0], row[1]
    step._state.adding = False
    if approval is not None:
        approval.pk = row[2]
        approval._state.adding = False


# The SQL is the same for every checkpoint of a kind: built once per process, only values change.


class _FieldsByName(dict):
    def __missing__(self, model):
        self[model] = {field.name: field for field in model._meta.concrete_fields}
        return self[model]


_FIELDS = _FieldsByName()


def _cast(field) -> str:
    # INSERT ... SELECT types its values by the expressions, not by the target columns: say each.
    return f"CAST(%s AS {field.db_type(connection)})"


@functools.lru_cache(maxsize=64)
def _update_sql(names: tuple[str, ...]) -> str:
    quote = connection.ops.quote_name
    fields = [_FIELDS[Task][name] for name in names]
    assignments = ", ".join(f"{quote(field.column)} = {_cast(field)}" for field in fields)
    return (f"WITH t AS (UPDATE {quote(Task._meta.db_table)} SET {assignments} "
            f"WHERE id = %s AND lease_owner = %s AND status = %s RETURNING id)")


@functools.lru_cache(maxsize=8)
def _insert_sql(model, alias: str, *, returning: str, computed: tuple[str, ...] = ()) -> tuple[str, tuple]:
    """(the CTE that inserts a `model` row if t returned one, the fields whose values it takes, in
    order). `computed` fields (the step's attempt) come last, counted by a subquery on task and
    worker whose two parameters follow the values."""
    quote = connection.ops.quote_name
    table = quote(model._meta.db_table)
    fields = [field for field in model._meta.concrete_fields if not field.primary_key]
    given = tuple(field for field in fields if field.name not in computed)
    counted = [field for field in fields if field.name in computed]
    columns = ", ".join(quote(field.column) for field in (*given, *counted))
    select_list = ", ".join([_cast(field) for field in given] + [
        f"(SELECT COALESCE(MAX({quote(field.column)}), 0) + 1 FROM {table} WHERE task_id = %s AND worker = %s)"
        for field in counted])
    return f"{alias} AS (INSERT INTO {table} ({columns}) SELECT {select_list} FROM t RETURNING {returning})", given


def _values(obj: models.Model, fields: tuple, db) -> list:
    """The row's values as Django would insert them (defaults, auto_now_add, JSON adaptation)."""
    return [field.get_db_prep_save(field.pre_save(obj, add=True), db) for field in fields]
