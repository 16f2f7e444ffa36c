"""First-start setup: an admin user and a demo project, idempotent.

The password comes from HKS_ADMIN_PASSWORD, or is generated once and kept (0600) in the data dir so
later starts can print the same login.
"""

import os
import secrets

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand

from functions.models import Membership, Project, Role


class Command(BaseCommand):
    help = "Create the admin user and the demo project if they do not exist; print the login."

    def handle(self, *args, **options):
        username = os.environ.get("HKS_ADMIN_USER", "admin")
        password = self._password()
        User = get_user_model()
        user = User.objects.filter(username=username).first()
        if user is None:
            user = User.objects.create_superuser(username=username, email="", password=password)
        elif os.environ.get("HKS_ADMIN_PASSWORD"):
            user.set_password(password)
            user.save(update_fields=["password"])
        project, _ = Project.objects.get_or_create(slug="demo", defaults={"name": "Demo project"})
        Membership.objects.get_or_create(project=project, user=user, defaults={"role": Role.OWNER})
        self.stdout.write(f"login: {username} / {password}")

    def _password(self) -> str:
        configured = os.environ.get("HKS_ADMIN_PASSWORD")
        if configured:
            return configured
        path = settings.DATA_DIR / "admin-password"
        if not path.exists():
            path.write_text(secrets.token_urlsafe(12))
            path.chmod(0o600)
        return path.read_text().strip()
