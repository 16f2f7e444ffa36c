"""Writing down what the backend reports about running functions: replicas (0 included), the revision it
serves, its status message (the local runtime's "held at N instances: project quota of M instances
reached", say), and when it last said so (``Function.observed_at``, read by ``functions.status``).

``functions_observe()`` runs on beat every few seconds. Per project it asks the backend once for everything
it holds (``list_owned``; the local runtime's answer carries replicas and the latest ready revision), and
``status()`` per function only where the listing has no figures (Knative). Rows that changed are written and
pushed to the list pages (``realtime.push``); the rest only get a fresh ``observed_at``, in one UPDATE. A
backend that does not answer leaves ``observed_at`` to age, and the pages show "unknown".
"""

from __future__ import annotations

import logging

from django.db.models import Q
from django.utils import timezone

from functions.backends import BackendError, function_ref, get_backend
from functions.models import Function, FunctionStatus, Project
from functions.realtime import push as live

log = logging.getLogger(__name__)


def functions_observe() -> int:
    """Observe every ready function of every project; returns how many rows changed."""
    projects = Project.objects.filter(functions__status=FunctionStatus.READY).distinct()
    return sum(project_observe(project=project) for project in projects)


def project_observe(*, project: Project) -> int:
    functions = {
        f.name: f
        for f in Function.objects.filter(project=project, status=FunctionStatus.READY).select_related(
            "current_revision"
        )
    }
    if not functions:
        return 0
    backend = get_backend(project)
    try:
        owned = {
            item.ref.function: item for item in backend.list_owned(project.slug, project.effective_namespace)
        }
        reports = {name: _report(backend, function, owned.get(name)) for name, function in functions.items()}
    except BackendError as exc:
        log.info("project %s: backend did not answer: %s", project.slug, exc.message)
        return 0
    now = timezone.now()
    changed = [f for name, f in functions.items() if _apply(f, reports[name])]
    # Only rows still ready: a deploy or delete that started meanwhile owns the row now.
    ready = Q(status=FunctionStatus.READY)
    Function.objects.filter(ready, pk__in=[f.pk for f in functions.values()]).update(observed_at=now)
    for function in changed:
        Function.objects.filter(ready, pk=function.pk).update(
            replicas=function.replicas,
            current_revision=function.current_revision,
            status_message=function.status_message,
        )
    if changed:
        for function in changed:
            live.function_changed(function_id=function.pk)
    return len(changed)


def _report(backend, function: Function, owned) -> tuple[int, str, str | None] | None:
    """(replicas, latest ready revision, status message - None when not given), or None when the backend
    holds nothing for the function."""
    if owned is not None and owned.replicas is not None:
        return owned.replicas, owned.latest_ready_revision, owned.message

    status = backend.status(function_ref(function))
    if not status.exists:
        return None
    return status.replicas, status.latest_ready_revision, None  # a ready Knative Service's message is ""


def _apply(function: Function, report: tuple[int, str, str | None] | None) -> bool:
    if report is None:
        return False  # gone from the backend: the reconciler's business, not a display change
    replicas, latest, message = report
    changed = function.replicas != replicas
    function.replicas = replicas
    if message is not None and message != function.status_message:
        function.status_message, changed = message[:4000], True
    current = function.current_revision
    if latest and (current is None or current.name != latest):
        number = latest.rsplit("-", 1)[-1]
        revision = function.revisions.filter(number=int(number)).first() if number.isdigit() else None
        if revision is not None and revision.artifact:
            function.current_revision = revision
            changed = True
    return changed
