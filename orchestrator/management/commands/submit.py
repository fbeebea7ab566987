"""manage.py submit PATH... [--wait]: submit documents from files; --wait follows them to the end."""
from __future__ import annotations

import time
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from orchestrator.intake import IntakeError, document_text
from orchestrator.models import Source, Task, TaskStatus
from orchestrator.services import task_submit

SETTLED = {TaskStatus.COMPLETED, TaskStatus.REJECTED, TaskStatus.DEAD_LETTERED, TaskStatus.DISCARDED,
           TaskStatus.AWAITING_APPROVAL}


class Command(BaseCommand):
    help = "Submit documents (.txt, .md, .eml, .pdf). Folders are read file by file."

    def add_arguments(self, parser):
        parser.add_argument("paths", nargs="+")
        parser.add_argument("--wait", action="store_true",
                            help="Wait until every task completes, waits for a person, or fails")
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
        if options["wait"] and submitted:
            self._wait([t.pk for t in submitted], options["timeout"])
        if refused:
            raise CommandError(f"{len(refused)} of {len(files)} file(s) refused: {', '.join(refused)}")

    def _wait(self, ids: list[int], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        pending = set(ids)
        while pending and time.monotonic() < deadline:
            for task in Task.objects.filter(pk__in=pending, status__in=SETTLED):
                pending.discard(task.pk)
                where = f" in {task.routed_to}" if task.status == TaskStatus.AWAITING_APPROVAL else ""
                self.stdout.write(f"task {task.pk}: {task.status}{where} ({task.doc_type or 'unclassified'})")
            if pending:
                time.sleep(0.5)
        if pending:
            raise CommandError(f"Timed out; still running: {', '.join(map(str, sorted(pending)))}")
