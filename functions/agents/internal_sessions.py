"""Session endpoints of the internal API (/internal/v1/sessions, agent JWTs), used by hks_sdk's sessions.

    POST   /sessions                {timeout_seconds, metadata, language}: 201, with the sandbox's access
                                    token (``language`` "node", "javascript", "js", "typescript" or
                                    "ts": its Node kernel already started; ``run()`` takes that language)
    GET    /sessions                the project's running sessions
    GET    /sessions/{id}
    POST   /sessions/{id}/timeout   {timeout_seconds}: a new deadline from now
    DELETE /sessions/{id}           kill it
    POST   /operations/execute      {code, language, timeout_seconds, env}: the one-shot fast path (Python,
                                    or Node: "node", "javascript", "js"; TypeScript, its types stripped:
                                    "typescript", "ts")
    GET    /session-libraries       the libraries sessions can import: {state, libraries: {name: version}}

A session's code, files and commands then go through the data plane at ``data_url`` (e2b_api.py) with
the access token, the same way E2B's SDK reaches it.
"""

from __future__ import annotations

import datetime as dt

from django.conf import settings
from django.http import Http404, JsonResponse
from ninja import Field, Router, Schema, Status

from functions.agents import sessions
from functions.agents.tokens import AgentIdentity
from functions.errors import ServiceError
from functions.models import AgentSession

router = Router(tags=["sessions"])


class SessionIn(Schema):
    timeout_seconds: int = Field(300, ge=1, le=sessions.MAX_TIMEOUT)
    metadata: dict[str, str] = Field(default_factory=dict)
    language: str = Field("python", pattern=sessions.LANGUAGE_PATTERN)


class TimeoutIn(Schema):
    timeout_seconds: int = Field(..., ge=1, le=sessions.MAX_TIMEOUT)


class SessionOut(Schema):
    id: str
    status: str
    metadata: dict[str, str]
    created_at: dt.datetime
    expires_at: dt.datetime
    ended_at: dt.datetime | None


class SessionCreated(SessionOut):
    access_token: str
    data_url: str


class ExecuteIn(Schema):
    code: str = Field(..., max_length=512 * 1024)
    language: str = Field("python", pattern=sessions.LANGUAGE_PATTERN)
    env: dict[str, str] = Field(default_factory=dict)
    timeout_seconds: int = Field(60, ge=1, le=600)


def _out(session: AgentSession) -> dict:
    return {
        "id": session.sandbox_id,
        "status": session.status,
        "metadata": session.metadata,
        "created_at": session.created_at,
        "expires_at": session.expires_at,
        "ended_at": session.ended_at,
    }


def _session(identity: AgentIdentity, sandbox_id: str) -> AgentSession:
    session = sessions.session_get_for_project(project=identity.project, sandbox_id=sandbox_id)
    if session is None:
        raise Http404("No such running session.")
    return session


@router.post("/sessions", response={201: SessionCreated})
def session_create(request, payload: SessionIn):
    identity: AgentIdentity = request.auth
    session = sessions.session_create(
        project=identity.project,
        credential=identity.credential,
        timeout=payload.timeout_seconds,
        metadata=payload.metadata,
        language=payload.language,
    )
    data_url = settings.HKS_PUBLIC_URL.rstrip("/") + "/e2b"
    return Status(
        201,
        {**_out(session), "access_token": sessions.access_token(session.sandbox_id), "data_url": data_url},
    )


@router.get("/sessions", response=list[SessionOut])
def session_list(request):
    return [_out(s) for s in sessions.sessions_for_project(project=request.auth.project)]


@router.get("/sessions/{sandbox_id}", response=SessionOut)
def session_get(request, sandbox_id: str):
    return _out(_session(request.auth, sandbox_id))


@router.post("/sessions/{sandbox_id}/timeout", response=SessionOut)
def session_timeout(request, sandbox_id: str, payload: TimeoutIn):
    session = sessions.session_set_timeout(
        session=_session(request.auth, sandbox_id), timeout=payload.timeout_seconds
    )
    return _out(session)


@router.delete("/sessions/{sandbox_id}", response=SessionOut)
def session_kill(request, sandbox_id: str):
    session = _session(request.auth, sandbox_id)
    sessions.session_end(session=session)
    return _out(session)


@router.post("/operations/execute")
def execute(request, payload: ExecuteIn):
    identity: AgentIdentity = request.auth
    if identity.project.backend != "local":
        return Status(501, {"detail": "the fast path needs the local runtime; deploy the code instead"})
    try:
        result = sessions.runtime_execute(
            project=identity.project,
            code=payload.code,
            timeout=payload.timeout_seconds,
            env=payload.env,
            language=payload.language,
            audit_detail={"credential": identity.credential.name, "jti": identity.jti},
        )
    except ServiceError as exc:
        if exc.code != 429:
            raise
        retry = str(exc.retry_after or 1)
        return JsonResponse({"detail": exc.message}, status=429, headers={"Retry-After": retry})
    return result


@router.get("/session-libraries")
def session_libraries(request):
    return sessions.runtime_libraries()
