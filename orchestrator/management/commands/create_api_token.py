"""manage.py create_api_token USERNAME: prints a new bearer token (shown once; only its hash is kept)."""
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from orchestrator.roles import api_token_create, user_roles


class Command(BaseCommand):
    help = "Create an API token for a user; the token carries the user's roles."

    def add_arguments(self, parser):
        parser.add_argument("username")

    def handle(self, *args, **options):
        user = get_user_model().objects.filter(username=options["username"]).first()
        if user is None:
            raise CommandError(f"No user \"{options['username']}\"; create one with add_user first")
        if not user_roles(user):
            self.stderr.write(f"Warning: {user.username} has no role yet; the token will be refused everywhere")
        self.stdout.write(api_token_create(user=user))
