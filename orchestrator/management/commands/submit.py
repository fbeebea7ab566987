"""manage.py submit PATH... [--wait]: submit documents from files; --wait follows them to the end."""
from __future__ import annotations

import time
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from kombu.utils.url import maybe_sanitize_url

from orchestrator.intake import IntakeError, document_text
from orchestrator.models import DeadLetterStatus, Source, Task, TaskStatus
from orchestrator.services import task_submit

SETTLED = {TaskStatus.COMPLETED, TaskStatus.REJECTED, TaskStatus.DEAD_LETTERED, TaskStatus.DISCARDED,
           TaskStatus.AWAITING_APPROVAL}


class Command(BaseCommand):
    help = "Submit documents (.txt, .md, .eml, .pdf). Folders are read file by file."

    def add_arguments(self, parser):
        parser.add_argument("paths", nargs="+")
        parser.add_argument("--wait", action="store_true",
                            help="Wait until every task completes, waits for a person, or fails (then exit 1)")
        parser.add_argument("--timeout", type=float, default=600, help="Seconds to wait at most (with --wait)")

    def handle(self, *args, **options):
        files: list[Path] = []
        for raw in options["paths"]:
            path = Path(raw)
            if path.is_dir():
                files.extend(sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith(".")))
            elif path.is_file():
                files.append(path)
            else:
                raise CommandError(f"{raw}: no such file or folder")
        submitted: list[Task] = []
        refused: list[str] = []
        for path in files:
            try:
                text = document_text(path.read_bytes(), path.name)
                task, _ = task_submit(content=text, filename=path.name, source=Source.CLI)
            except (IntakeError, OSError) as exc:
                refused.append(str(path))
                self.stderr.write(f"{path}: refused: {exc}")
                continue
            submitted.append(task)
            note = f" (exact duplicate of task {task.duplicate_of_id})" if task.duplicate_of_id else ""
            self.stdout.write(f"{path}: task {task.pk} {task.status}{note}")
        failed = self._wait([t.pk for t in submitted], options["timeout"]) if options["wait"] and submitted else []
        problems = []
        if refused:
            problems.append(f"{len(refused)} of {len(files)} file(s) refused: {', '.join(refused)}")
        if failed:
            # Non-zero, so that a script running `submit --wait && ...` does not carry on.
            problems.append(f"{len(failed)} of {len(submitted)} tasks failed (dead-lettered: "
                            f"{', '.join(map(str, failed))}); an operator triages them at "
                            f"{settings.STEWARD_BASE_URL}/dead-letters/")
        if problems:
            raise CommandError("; ".join(problems))

    def _wait(self, ids: list[int], timeout: float) -> list[int]:
        """Print each task's end as it comes (for a dead letter, why); returns the dead-lettered ones."""
        deadline = time.monotonic() + timeout
        pending = set(ids)
        failed: list[int] = []
        while pending and time.monotonic() < deadline:
            for task in Task.objects.filter(pk__in=pending, status__in=SETTLED):
                pending.discard(task.pk)
                self.stdout.write(f"task {task.pk}: {self._outcome(task)}")
                if task.status in (TaskStatus.DEAD_LETTERED, TaskStatus.DISCARDED):
                    failed.append(task.pk)
            if pending:
                time.sleep(0.5)
        if pending:
            raise CommandError(self._unfinished(pending, timeout))
        return sorted(failed)

    @staticmethod
    def _unfinished(pending: set[int], timeout: float) -> str:
        """What each task left at the timeout is doing; tasks never taken out of the queue most
        often mean that no worker reads this broker (a command run without the workers' settings)."""
        statuses = dict(Task.objects.filter(pk__in=pending).values_list("pk", "status"))
        listed = ", ".join(f"{pk} ({statuses.get(pk, 'gone')})" for pk in sorted(pending))
        message = f"Timed out after {timeout:g} s; not finished: {listed}"
        if any(status == TaskStatus.QUEUED for status in statuses.values()):
            message += (f". Queued tasks wait for a Celery worker reading {maybe_sanitize_url(settings.CELERY_BROKER_URL)}: is one running "
                        "there, with this DATABASE_URL?")
        return message

    @staticmethod
    def _outcome(task: Task) -> str:
        if task.status == TaskStatus.DEAD_LETTERED:
            letter = task.dead_letters.filter(status=DeadLetterStatus.OPEN).order_by("-id").first()
            if letter is not None:
                return (f"dead_lettered at {letter.worker or task.current_step}: {letter.error_type}: "
                        f"{letter.message}")
        where = f" in {task.routed_to}" if task.status == TaskStatus.AWAITING_APPROVAL else ""
        return f"{task.status}{where} ({task.doc_type or 'unclassified'})"
