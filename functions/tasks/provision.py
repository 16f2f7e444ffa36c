"""Tasks putting projects on the cluster and taking them off, and a local project's instance quota onto the
runtime (functions/services/projects.py).

Like the function tasks they take ids, return early when the row is gone, and are safe to run twice:
provisioning writes only what differs from what should be there.
"""

import logging

from celery import shared_task

from functions.models import Backend, ClusterState, Project
from functions.services import projects as services_projects
from functions.services import usage as services_usage
from functions.tasks.retry import RETRY, drive

log = logging.getLogger(__name__)


@shared_task(name="functions.tasks_provision.provision_project", bind=True, acks_late=True, **RETRY)
def provision_project(self, project_id: int) -> None:
    project = Project.objects.filter(pk=project_id, backend=Backend.KNATIVE).first()
    if project is None or project.cluster_state == ClusterState.DELETING:
        return
    drive(
        self,
        lambda: services_projects.project_provision_run(project=project),
        lambda msg: services_projects.project_provision_fail(project=project, message=msg),
    )


@shared_task(name="functions.tasks_provision.teardown_project", bind=True, acks_late=True, **RETRY)
def teardown_project(self, project_id: int) -> None:
    project = Project.objects.filter(pk=project_id, cluster_state=ClusterState.DELETING).first()
    if project is None:
        return
    drive(
        self,
        lambda: services_projects.project_teardown_run(project=project),
        lambda msg: services_projects.project_teardown_fail(project=project, message=msg),
    )


@shared_task(name="functions.tasks_provision.push_instance_quota", bind=True, acks_late=True, **RETRY)
def push_instance_quota(self, project_id: int) -> None:
    """The local runtime learns a changed ``max_instances`` (safe twice: it sets the cap, it adds none)."""
    project = Project.objects.filter(pk=project_id, backend=Backend.LOCAL).first()
    if project is None:
        return
    drive(
        self,
        lambda: services_usage.project_instance_quota_run(project=project),
        lambda msg: log.warning(
            "runtime refused %s's instance quota (its next deploy carries it): %s", project, msg
        ),
    )


@shared_task(name="functions.tasks_provision.reconcile_projects")
def reconcile_projects() -> dict[str, int]:
    return services_projects.projects_reconcile()
