"""Agent sessions of projects on a cluster backend (Knative): what sessions.py calls instead of the local
runtime's control API. The backend's session operations (functions/backends/base.py) do the work; this
module turns their errors into ``ServiceError`` and reaps what the cluster holds past its deadline.

The portal reaches a session's agent at its cluster-local address, so it must run inside the cluster
(``HKS_KNATIVE_PORTAL_IN_CLUSTER``); otherwise sessions on Knative are refused before anything is written.
"""

from __future__ import annotations

import datetime as dt

from django.conf import settings
from django.db.models import Q

from functions.backends import get_backend
from functions.backends.base import BackendError, SessionSpec
from functions.errors import ServiceError
from functions.models import AgentSession, Backend, Project, SessionStatus


def _service_error(exc: BackendError) -> ServiceError:
    # permanent: this project's cluster cannot run sessions as configured (501); otherwise try again (503)
    return ServiceError(exc.message, code=501 if exc.permanent else 503)


def check(project: Project) -> None:
    """Refuse, before any row or object exists, a project whose sessions the portal could not reach."""
    if project.backend != Backend.KNATIVE:
        raise ServiceError(f"sessions are not available on the {project.backend} backend", code=501)
    if not settings.HKS_KNATIVE_PORTAL_IN_CLUSTER:
        raise ServiceError(
            "sessions on Knative are cluster-local: the portal must run inside the cluster "
            "(HKS_KNATIVE_PORTAL_IN_CLUSTER=1) to reach them",
            code=501,
        )


def start(*, project: Project, session: AgentSession, token: str, timeout: int) -> dict:
    """Start the session's Knative Service and wait for it; ``{"host", "port"}`` of its agent."""
    spec = SessionSpec(
        project=project.slug,
        namespace=project.effective_namespace,
        session_id=session.sandbox_id,
        token=token,
        timeout_seconds=timeout,
    )
    try:
        endpoint = get_backend(project).session_create(spec)
    except BackendError as exc:
        raise _service_error(exc) from exc
    return {"host": endpoint.host, "port": endpoint.port}


def set_deadline(*, session: AgentSession, deadline: dt.datetime) -> bool:
    """False when the cluster no longer has the session."""
    project = session.project
    try:
        return get_backend(project).session_set_deadline(
            project.effective_namespace, session.sandbox_id, deadline
        )
    except BackendError as exc:
        raise _service_error(exc) from exc


def delete(*, session: AgentSession) -> None:
    project = session.project
    try:
        get_backend(project).session_delete(project.effective_namespace, session.sandbox_id)
    except BackendError as exc:
        raise _service_error(exc) from exc


def collect(*, now: dt.datetime) -> int:
    """The reaper's cluster side, for every project on Knative: delete each session its namespace holds
    that is past its deadline or whose row has ended (a kill whose delete failed); a session with no row
    at all (a create whose clean-up failed) goes at its deadline. Running rows whose session the cluster
    no longer holds are marked expired. Returns how many rows ended."""
    ended = 0
    cutoff = now - dt.timedelta(seconds=60)  # one being created right now may not be listed yet
    # Only projects that had a session lately (a round runs every few seconds; a deadline is at most a day
    # after the last create or set_timeout, which a running row stands for).
    recent = now - dt.timedelta(days=1, hours=1)
    projects = Project.objects.filter(backend=Backend.KNATIVE).filter(
        Q(agent_sessions__status=SessionStatus.RUNNING)
        | Q(agent_sessions__created_at__gte=recent)
        | Q(agent_sessions__ended_at__gte=recent)
    )
    for project in projects.distinct():
        try:
            backend = get_backend(project)
            held = backend.session_list(project.slug, project.effective_namespace)
        except BackendError:
            continue  # no kubeconfig, cluster down: next round
        ids = [e.session_id for e in held]
        ended_rows = set(
            AgentSession.objects.filter(project=project, sandbox_id__in=ids)
            .exclude(status=SessionStatus.RUNNING)
            .values_list("sandbox_id", flat=True)
        )
        for endpoint in held:
            past = endpoint.deadline is not None and endpoint.deadline <= now
            if past or endpoint.session_id in ended_rows:
                try:
                    backend.session_delete(project.effective_namespace, endpoint.session_id)
                except BackendError:
                    continue
        ended += (
            AgentSession.objects.filter(project=project, status=SessionStatus.RUNNING, created_at__lte=cutoff)
            .exclude(sandbox_id__in=ids)
            .update(status=SessionStatus.EXPIRED, ended_at=now)
        )
    return ended
