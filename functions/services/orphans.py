"""Orphan collection: what a backend still runs for a project but the portal no longer knows.

A Knative Service can outlive its function - a delete that failed for good, a database restored from an
older backup, a function row removed by hand. ``orphans_collect`` asks each Knative project's cluster what
it holds (``FunctionBackend.list_owned``) and deletes what has no function, or only a deleted one. Functions
being deleted are left to their own delete task. Run by Celery beat (``collect-orphans``).
"""

from __future__ import annotations

import logging

from functions.backends import get_backend
from functions.backends.base import BackendError
from functions.models import Backend, Function, FunctionStatus, Project

log = logging.getLogger(__name__)


def project_orphans_collect(*, project: Project) -> list[str]:
    """Delete the project's orphans on its backend; return their names."""
    backend = get_backend(project)
    owned = backend.list_owned(project.slug, project.effective_namespace)
    known = set(
        Function.objects.filter(project=project)
        .exclude(status=FunctionStatus.DELETED)
        .values_list("name", flat=True)
    )
    collected = []
    for item in owned:
        if item.ref.function in known:
            continue
        log.warning("deleting orphan %s in %s/%s", item.ref.function, project.slug, item.ref.namespace)
        backend.delete(item.ref)
        collected.append(item.ref.function)
    return collected


def orphans_collect() -> int:
    """Every Knative project with a kubeconfig; a cluster that fails is logged and tried next time."""
    count = 0
    projects = Project.objects.filter(backend=Backend.KNATIVE).exclude(kubeconfig_encrypted="")
    for project in projects:
        try:
            count += len(project_orphans_collect(project=project))
        except BackendError as exc:
            log.warning("orphan collection in %s failed: %s", project.slug, exc.message)
    return count
