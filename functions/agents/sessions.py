"""Agent sessions: services (create, extend, kill, collect) and the runtime calls behind them.

A session is a long-lived restricted sandbox on the local runtime (hks_runtime/sessions.py) that keeps a
Python kernel, files and commands. The portal holds one ``AgentSession`` row per session, enforces the
project's ``max_sessions``, and reaches the session's agent directly for the data plane (e2b_api.py).

Two secrets belong to a session, both derived from its id with the portal's secret key, so neither is
stored: the *access token* the agent's SDK sends (E2B's ``envdAccessToken``), and the *agent token* only the
portal and the runtime know. A project on Knative gets its sessions from the backend instead
(cluster_sessions.py: a one-replica, cluster-local Knative Service per session in its namespace).
"""

from __future__ import annotations

import datetime as dt
import hmac
import secrets
import string

import httpx
from django.conf import settings
from django.db import transaction
from django.utils import timezone
from django.utils.crypto import salted_hmac

from functions.agents import cluster_sessions
from functions.backends.local import runtime_http
from functions.errors import ServiceError
from functions.models import AgentCredential, AgentSession, Backend, Project, SessionStatus
from functions.services import usage
from functions.services.audit import audit

MAX_TIMEOUT = 24 * 3600
_ALPHABET = string.ascii_lowercase + string.digits
_TIMEOUT = httpx.Timeout(60.0, connect=5.0)
# What the SDKs call a language, as the runtime's kernels are named (hks_runtime/sessions.py): TypeScript is
# the JavaScript kernel stripping each cell's types.
KERNELS = {
    "python": "python",
    **dict.fromkeys(("node", "javascript", "js"), "javascript"),
    **dict.fromkeys(("typescript", "ts"), "typescript"),
}
LANGUAGE_PATTERN = "^(python|node|javascript|js|typescript|ts)$"


def new_sandbox_id() -> str:
    return "".join(secrets.choice(_ALPHABET) for _ in range(20))  # ~103 bits; E2B ids are [a-z0-9]+


def access_token(sandbox_id: str) -> str:
    return salted_hmac("hks-session-access", sandbox_id, algorithm="sha256").hexdigest()


def agent_token(sandbox_id: str) -> str:
    return salted_hmac("hks-session-agent", sandbox_id, algorithm="sha256").hexdigest()


def access_token_valid(sandbox_id: str, given: str) -> bool:
    return hmac.compare_digest(access_token(sandbox_id).encode(), (given or "").encode())


# --- the runtime ------------------------------------------------------------------------------------------


def _runtime(method: str, path: str, **kwargs) -> httpx.Response:
    headers = {"Authorization": f"Bearer {settings.HKS_RUNTIME_TOKEN}"}
    url = settings.HKS_RUNTIME_URL.rstrip("/") + path
    kwargs.setdefault("timeout", _TIMEOUT)
    try:
        response = runtime_http().request(method, url, headers=headers, **kwargs)
    except httpx.HTTPError as exc:
        raise ServiceError(f"the local runtime is unreachable: {exc}", code=503) from exc
    if response.status_code >= 500:
        raise ServiceError(f"the local runtime failed: {_detail(response)}", code=503)
    return response


def _detail(response: httpx.Response) -> str:
    try:
        return str(response.json().get("error", response.text))
    except ValueError:
        return response.text[:500]


def runtime_execute(
    *,
    project: Project,
    code: str,
    timeout: int,
    env: dict[str, str],
    language: str = "python",
    audit_detail: dict[str, str] | None = None,
) -> dict:
    """A one-shot run in a pre-started restricted sandbox (no build, no Celery, no polling); at most
    ``project.max_agent_functions`` at once and the project's execution quotas (ServiceError 429 past
    them, services/usage.py). The run and its sandbox's CPU seconds go to the project's usage, and a run
    the runtime answered is audited ("agent.execute", with ``audit_detail``: who ran it).
    ``language`` "node" (or "javascript", "js") runs it in a bare Node kernel; "typescript" ("ts") too,
    its types stripped."""
    admitted = usage.execution_admit(project=project)
    body = {
        "code": code,
        "timeout_seconds": timeout,
        "env": env,
        "namespace": project.effective_namespace,
        "max_concurrent": project.max_agent_functions,
        "language": KERNELS[language],
    }
    try:
        response = _runtime("POST", "/v1/execute", json=body, timeout=timeout + 30)
        if response.status_code != 200:
            raise ServiceError(_detail(response), code=response.status_code)
    except ServiceError:
        usage.execution_release(admitted)
        raise
    result = response.json()
    # The run's two writes in one transaction: one commit, and on SQLite one wait for the write lock instead
    # of two, which is what a burst of executions queues on. The audit row first, so that on PostgreSQL the
    # project's hourly usage row - every execution of the project updates it - stays locked only for its
    # UPDATE and the commit.
    with transaction.atomic():
        audit(project=project, action="agent.execute", **(audit_detail or {}))
        usage.execution_finished(project=project, cpu_seconds=result.get("cpu_seconds"))
    return result


def runtime_libraries() -> dict:
    """The agent library layer's state and pinned versions (hks_runtime/agent_layer.py)."""
    response = _runtime("GET", "/v1/session-libraries")
    if response.status_code != 200:
        raise ServiceError(_detail(response), code=503)
    return response.json()


# --- services ---------------------------------------------------------------------------------------------


def _check_timeout(timeout: int) -> None:
    if not 1 <= timeout <= MAX_TIMEOUT:
        raise ServiceError(f"timeout must be between 1 and {MAX_TIMEOUT} seconds")


def session_create(
    *,
    project: Project,
    credential: AgentCredential | None,
    timeout: int = 300,
    metadata: dict[str, str] | None = None,
    template: str = "code-interpreter-v1",
    language: str = "python",
) -> AgentSession:
    """Start a session (counts against ``project.max_sessions``); raises ServiceError (429 over quota).

    ``language`` "node" (or "javascript", "js", "typescript", "ts") on the local runtime: a sandbox whose
    Node kernel is already started, so the first JavaScript run does not wait for Node (its Python kernel is
    there too)."""
    _check_timeout(timeout)
    metadata = metadata or {}
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
        raise ServiceError("metadata must map strings to strings")
    if project.backend != Backend.LOCAL:
        cluster_sessions.check(project)
    usage.cpu_quota_check(project=project)
    with transaction.atomic():
        locked = Project.objects.select_for_update(no_key=True).get(pk=project.pk)
        held = AgentSession.objects.filter(project=locked, status=SessionStatus.RUNNING)
        running = held.count()
        if running >= locked.max_sessions:
            raise ServiceError(
                f"project {locked.slug} already has {running} running sessions (quota {locked.max_sessions})",
                code=429,
                retry_after=_slot_retry_after(held),
            )
        session = AgentSession.objects.create(
            project=locked,
            credential=credential,
            sandbox_id=new_sandbox_id(),
            template=template[:100],
            metadata=metadata,
            expires_at=timezone.now() + dt.timedelta(seconds=timeout),
        )
    try:
        if project.backend != Backend.LOCAL:
            data = cluster_sessions.start(
                project=project, session=session, token=agent_token(session.sandbox_id), timeout=timeout
            )
        else:
            data = _runtime_create(project, session, timeout, KERNELS[language])
    except ServiceError:
        session.delete()
        raise
    session.agent_host, session.agent_port = data["host"], data["port"]
    session.save(update_fields=["agent_host", "agent_port"])
    usage.usage_record(project=project, sessions=1)
    audit(project=project, action="agent.session.create", session=session.sandbox_id)
    return session


def _slot_retry_after(held) -> int:
    """When to ask again for a session slot: at the latest the earliest deadline of the running ones frees
    one, but a kill may come sooner, so at most 10 s (at least 1)."""
    first = held.order_by("expires_at").values_list("expires_at", flat=True).first()
    seconds = (first - timezone.now()).total_seconds() if first else 1
    return int(min(10, max(1, seconds)))


def _runtime_create(project: Project, session: AgentSession, timeout: int, kernel: str) -> dict:
    """The local runtime starts the session (hks_runtime/sessions.py)."""
    response = _runtime(
        "POST",
        "/v1/sessions",
        json={
            "id": session.sandbox_id,
            "namespace": project.effective_namespace,
            "token": agent_token(session.sandbox_id),
            "timeout_seconds": timeout,
            "labels": {"hks.project": project.slug},
            "language": kernel,
        },
    )
    if response.status_code != 201:
        raise ServiceError(_detail(response), code=response.status_code)
    return response.json()


def session_set_timeout(*, session: AgentSession, timeout: int) -> AgentSession:
    """A new deadline ``timeout`` seconds from now (E2B's ``set_timeout``: shorter or longer)."""
    _check_timeout(timeout)
    deadline = timezone.now() + dt.timedelta(seconds=timeout)
    if session.project.backend != Backend.LOCAL:
        held = cluster_sessions.set_deadline(session=session, deadline=deadline)
    else:
        response = _runtime(
            "POST", f"/v1/sessions/{session.sandbox_id}/timeout", json={"timeout_seconds": timeout}
        )
        held = response.status_code != 404
    if not held:
        session_end(session=session, status=SessionStatus.EXPIRED)
        raise ServiceError("the session has ended", code=404)
    session.expires_at = deadline
    session.save(update_fields=["expires_at"])
    return session


def session_end(*, session: AgentSession, status: str = SessionStatus.KILLED) -> None:
    """Kill the session's sandbox (idempotent) and record how it ended; its CPU seconds go to the project's
    usage: the runtime's figure, or on a cluster the pod's own report (cluster_sessions.delete). The one
    call that ends the row counts a session without a figure as "not measured"."""
    if session.project.backend != Backend.LOCAL:
        cpu = cluster_sessions.delete(session=session, agent_token=agent_token(session.sandbox_id))
    else:
        response = _runtime("DELETE", f"/v1/sessions/{session.sandbox_id}")
        try:
            cpu = response.json().get("cpu_seconds")
        except (ValueError, AttributeError):
            cpu = None
    if not isinstance(cpu, int | float) or isinstance(cpu, bool):
        cpu = None
    updated = AgentSession.objects.filter(pk=session.pk, status=SessionStatus.RUNNING).update(
        status=status, ended_at=timezone.now()
    )
    if cpu is not None:  # the runtime answers it once per session
        usage.usage_record(project=session.project, cpu_seconds=cpu)
    elif updated:
        usage.cpu_finished(project=session.project, cpu_seconds=None)
    if updated:
        audit(project=session.project, action=f"agent.session.{status}", session=session.sandbox_id)
    session.refresh_from_db()


def sessions_collect_expired(*, now: dt.datetime | None = None) -> int:
    """Beat: end sessions past their deadline, and those the runtime no longer holds (a restart)."""
    now = now or timezone.now()
    ended = 0
    for session in AgentSession.objects.filter(
        status=SessionStatus.RUNNING, expires_at__lte=now
    ).select_related("project"):
        try:
            session_end(session=session, status=SessionStatus.EXPIRED)
            ended += 1
        except ServiceError:
            continue  # the runtime is down: next round
    ended += cluster_sessions.collect(now=now)
    try:
        held = {s["id"] for s in _runtime("GET", "/v1/sessions").json()["sessions"]}
    except (ServiceError, ValueError, KeyError):
        return ended
    cutoff = now - dt.timedelta(seconds=60)  # one being created right now is not in the list yet
    for session in AgentSession.objects.filter(
        status=SessionStatus.RUNNING, created_at__lte=cutoff, project__backend=Backend.LOCAL
    ).exclude(sandbox_id__in=held):
        running = AgentSession.objects.filter(pk=session.pk, status=SessionStatus.RUNNING)
        if running.update(status=SessionStatus.EXPIRED, ended_at=now):
            usage.cpu_finished(project=session.project, cpu_seconds=None)  # died with the runtime, unmeasured
            ended += 1
    return ended


# --- selectors --------------------------------------------------------------------------------------------


def session_get_for_project(*, project: Project, sandbox_id: str) -> AgentSession | None:
    return (
        AgentSession.objects.select_related("project")
        .filter(project=project, sandbox_id=sandbox_id, status=SessionStatus.RUNNING)
        .first()
    )


def sessions_for_project(*, project: Project, metadata: dict[str, str] | None = None) -> list[AgentSession]:
    sessions = AgentSession.objects.filter(project=project, status=SessionStatus.RUNNING).order_by(
        "created_at"
    )
    return [s for s in sessions if all(s.metadata.get(k) == v for k, v in (metadata or {}).items())]
