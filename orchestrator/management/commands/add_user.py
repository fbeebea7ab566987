"""manage.py add_user USERNAME --role reviewer|operator|admin [--queue NAME ...] [--password P] [--email ADDRESS]

A password given must pass AUTH_PASSWORD_VALIDATORS (Django's usual four), as in the admin."""
from __future__ import annotations

import secrets

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from orchestrator.roles import ADMIN, OPERATOR, ROLES
from reviews.models import Queue


class Command(BaseCommand):
    help = "Create or update a user with a role (and, for reviewers, the queues they review)."

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("--role", required=True, choices=ROLES)
        parser.add_argument("--queue", action="append", default=[], help="Queue name; repeat for several")
        parser.add_argument("--password", help="Default: keep the current one, or generate one for a new user")
        parser.add_argument("--email", default="")

    @transaction.atomic
    def handle(self, *args, **options):
        User = get_user_model()
        username, role = options["username"], options["role"]
        queues = []
        for name in options["queue"]:
            queue = Queue.objects.filter(name=name).first()
            if queue is None:
                known = ", ".join(Queue.objects.values_list("name", flat=True)) or "none"
                raise CommandError(f"Unknown queue \"{name}\" (known: {known})")
            queues.append(queue)
        user = User.objects.filter(username=username).first()
        created = user is None
        if created:
            user = User(username=username)
        if options["email"]:
            user.email = options["email"]
        elif created:
            user.email = f"{username}@example.com"
        password = options["password"]
        generated = False
        if password is None and created:
            password, generated = secrets.token_urlsafe(12), True
        elif password is not None:
            # The rules the admin's forms apply (AUTH_PASSWORD_VALIDATORS), checked before anything
            # is written: one too like the name or address given here is refused too.
            try:
                validate_password(password, user)
            except ValidationError as error:
                raise CommandError(f"Password refused: {' '.join(error.messages)}") from None
        if password is not None:
            user.set_password(password)
        # The admin role is Django admin's superuser; the others never get admin-site access.
        user.is_staff = user.is_superuser = role == ADMIN
        user.save()
        user.groups.remove(*Group.objects.filter(name__in=ROLES))
        user.groups.add(Group.objects.get_or_create(name=role)[0])
        if role == OPERATOR:
            if queues:
                raise CommandError("--queue is for reviewers (and admins); an operator reviews no queue")
            # No longer a reviewer: off the queues too, or queue notifications would still reach them.
            user.review_queues.clear()
        for queue in queues:
            queue.reviewers.add(user)
        verb = "Created" if created else "Updated"
        line = f"{verb} {username} ({role}{', queues: ' + ', '.join(q.name for q in queues) if queues else ''})"
        if generated:
            line += f" with password {password}"
        self.stdout.write(line)
