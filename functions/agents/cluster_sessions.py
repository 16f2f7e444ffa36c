"""Agent sessions of projects on a cluster backend (Knative): what sessions.py calls instead of the local
runtime's control API. The backend's session operations (functions/backends/base.py) do the work; this
module turns their errors into ``ServiceError`` and reaps what the cluster holds past its deadline.

The portal reaches a session's agent at its cluster-local address, so it must run inside the cluster
(``HKS_KNATIVE_PORTAL_IN_CLUSTER``); otherwise sessions on Knative are refused before anything is written.

A create holds its request for at most ``HKS_KNATIVE_SESSION_CREATE_WAIT_SECONDS`` (a cold image pull can
take minutes, longer than clients wait for an answer): past it the session is *starting*, a running row
without an agent address. ``poll_ready`` asks the cluster again - the data plane (e2b_data_plane.py) while
it holds a request for it, the reaper every round - and records the address once the Service is Ready,
or ends the session as failed (everything deleted, its quota slot free) when its pod cannot start or is
not ready ``HKS_KNATIVE_SESSION_READY_SECONDS`` after the create.
"""

from __future__ import annotations

import datetime as dt

import httpx
from django.conf import settings
from django.db.models import Q
from django.utils import timezone

from functions.backends import get_backend
from functions.backends.base import BackendError, SessionSpec
from functions.errors import ServiceError
from functions.models import AgentSession, Backend, Project, SessionStatus
from functions.services import usage
from functions.services.audit import audit


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
    """Start the session's Knative Service and wait a bounded time for it; ``{"host", "port"}`` of its
    agent (``""``, 0 while it still starts: ``poll_ready``)."""
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


STARTING, READY, FAILED = "starting", "ready", "failed"


def poll_ready(sandbox_id: str, *, now: dt.datetime | None = None) -> tuple[str, object]:
    """Where a session's agent is: ``(READY, (host, port))``; ``(STARTING, "")`` while its pod starts;
    ``(FAILED, why)`` when it cannot start (then it is ended and deleted) or has ended."""
    session = (
        AgentSession.objects.select_related("project")
        .filter(sandbox_id=sandbox_id, status=SessionStatus.RUNNING)
        .first()
    )
    if session is None:
        return FAILED, "it has ended"
    if session.agent_port:
        return READY, (session.agent_host, session.agent_port)
    project = session.project
    try:
        endpoint = get_backend(project).session_ready(project.effective_namespace, sandbox_id)
    except BackendError as exc:
        if exc.permanent:
            return FAILED, _fail(session, exc.message)
        endpoint = None  # the cluster did not answer: as far as we know it still starts
    if endpoint is not None:
        AgentSession.objects.filter(pk=session.pk, status=SessionStatus.RUNNING).update(
            agent_host=endpoint.host, agent_port=endpoint.port
        )
        return READY, (endpoint.host, endpoint.port)
    now = now or timezone.now()
    limit = settings.HKS_KNATIVE_SESSION_READY_SECONDS
    if now - session.created_at > dt.timedelta(seconds=limit):
        return FAILED, _fail(
            session, f"its pod did not become ready in {limit} s (an image pull, a full node?)"
        )
    return STARTING, ""


def _fail(session: AgentSession, why: str) -> str:
    """End a session that could not start: its row failed (the quota slot is free), its objects deleted (if
    the cluster does not answer now, the reaper deletes them: their row has ended)."""
    if AgentSession.objects.filter(pk=session.pk, status=SessionStatus.RUNNING).update(
        status=SessionStatus.FAILED, ended_at=timezone.now()
    ):
        audit(project=session.project, action="agent.session.failed", session=session.sandbox_id, reason=why)
    try:
        delete(session=session)
    except ServiceError:
        pass
    return why


def set_deadline(*, session: AgentSession, deadline: dt.datetime) -> bool:
    """False when the cluster no longer has the session."""
    project = session.project
    try:
        return get_backend(project).session_set_deadline(
            project.effective_namespace, session.sandbox_id, deadline
        )
    except BackendError as exc:
        raise _service_error(exc) from exc


def delete(*, session: AgentSession, agent_token: str = "") -> float | None:
    """Delete the session's objects; with the session's ``agent_token``, the CPU seconds its pod reported
    first (None: not measured; 0 for one that never became ready: no request reached it)."""
    project = session.project
    cpu = pod_cpu_seconds(session, agent_token) if session.agent_port and agent_token else None
    if not session.agent_port:
        cpu = 0.0
    try:
        get_backend(project).session_delete(project.effective_namespace, session.sandbox_id)
    except BackendError as exc:
        raise _service_error(exc) from exc
    return cpu


def pod_cpu_seconds(session: AgentSession, agent_token: str) -> float | None:
    """What the session's pod says it used (its agent's ``GET /hks/usage``: the container's cgroup, or its
    process tree's clocks), or None when it does not answer. The pod's own word: code in the session runs
    as the agent's user, so it could falsify it; the cluster's metrics (cAdvisor) are not read here."""
    try:
        response = httpx.get(
            f"http://{session.agent_host}:{session.agent_port}/hks/usage",
            headers={"X-HKS-Agent-Token": agent_token},
            timeout=httpx.Timeout(5.0, connect=2.0),
        )
        cpu = response.json().get("cpu_seconds") if response.status_code == 200 else None
    except (httpx.HTTPError, ValueError, AttributeError):
        return None
    return float(cpu) if isinstance(cpu, int | float) and not isinstance(cpu, bool) and cpu >= 0 else None


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
    starting = AgentSession.objects.filter(
        project__backend=Backend.KNATIVE, status=SessionStatus.RUNNING, agent_port__in=[0, None]
    ).values_list("sandbox_id", flat=True)
    for sandbox_id in list(starting):  # ready by now (its address recorded), failed, or still starting
        state, _ = poll_ready(sandbox_id, now=now)
        ended += state == FAILED
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
        gone = (
            AgentSession.objects.filter(project=project, status=SessionStatus.RUNNING, created_at__lte=cutoff)
            .exclude(sandbox_id__in=ids)
            .update(status=SessionStatus.EXPIRED, ended_at=now)
        )
        if gone:  # their pods went without a report
            usage.usage_record(project=project, unmeasured=gone)
        ended += gone
    return ended
