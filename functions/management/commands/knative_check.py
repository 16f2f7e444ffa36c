"""``manage.py knative_check [project]``: the preflight (functions/backends/knative_preflight.py).

Prints each prerequisite as ok / missing / wrong with the fix; exits 1 when any is not ok. Without a
project it checks the cluster of the platform's own credentials; with one, that project's cluster.
"""

from django.core.management.base import BaseCommand, CommandError

from functions.models import Project


class Command(BaseCommand):
    help = "Check that the cluster has what the Knative backend needs; print each prerequisite with its fix."

    def add_arguments(self, parser):
        parser.add_argument("project", nargs="?", help="a project's slug: check its cluster")

    def handle(self, *args, project: str | None = None, **options):
        from functions.backends.knative_preflight import preflight

        found = None
        if project:
            found = Project.objects.filter(slug=project).first()
            if found is None:
                raise CommandError(f"no project {project!r}")
        where, checks = preflight(found)
        self.stdout.write(f"Knative prerequisites on {where}:")
        width = max(len(check.name) for check in checks)
        for check in checks:
            self.stdout.write(f"  {check.state:<8} {check.name:<{width}}  {check.detail}")
            if check.fix:
                self.stdout.write(f"  {'':<8} {'':<{width}}  fix: {check.fix}")
        failing = [check for check in checks if not check.ok]
        if failing:
            raise CommandError(f"{len(failing)} of {len(checks)} prerequisites are not ok")
        self.stdout.write(f"all {len(checks)} prerequisites are ok")
