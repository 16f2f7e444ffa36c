"""``manage.py set_kubeconfig <project> <file>``: give a Knative project its cluster credentials."""

import sys
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from functions.errors import ServiceError
from functions.models import Backend, Project
from functions.services.projects import project_provision, project_set_kubeconfig


class Command(BaseCommand):
    help = "Store a project's kubeconfig (encrypted) and switch the project to the knative backend."

    def add_arguments(self, parser):
        parser.add_argument("project", help="the project's slug")
        parser.add_argument("file", help="the kubeconfig file, or - for standard input")

    def handle(self, *args, project: str, file: str, **options):
        found = Project.objects.filter(slug=project).first()
        if found is None:
            raise CommandError(f"no project {project!r}")
        try:
            text = sys.stdin.read() if file == "-" else Path(file).read_text(encoding="utf-8")
        except OSError as exc:
            raise CommandError(f"cannot read {file}: {exc.strerror}") from exc
        with transaction.atomic():  # a refused kubeconfig leaves the backend as it was
            found.backend = Backend.KNATIVE
            found.save(update_fields=["backend"])
            try:
                project_set_kubeconfig(project=found, kubeconfig_text=text, actor=None)
            except ServiceError as exc:
                raise CommandError(exc.message) from exc
            project_provision(project=found)  # its namespace, quota and policies inside that cluster
        self.stdout.write(
            f"{found.slug}: kubeconfig stored; functions go to namespace {found.effective_namespace}"
        )
