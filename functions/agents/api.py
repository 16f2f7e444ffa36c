"""The internal Operations API for AI agents, under /internal/v1.

An agent exchanges its credential for a short-lived JWT (``POST /token``), then deploys generated code as
a throwaway function (restricted sandbox, no network, cluster-local, expiring), reads its status, invokes
it and deletes it. Every operation is confined to the credential's project and to agent functions: an
agent never sees or touches the functions people deploy.
"""

from __future__ import annotations

import datetime as dt

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.http import Http404
from ninja import Field, Schema, Status
from ninja.errors import AuthenticationError
from ninja.security import HttpBearer
from ninja.throttling import AnonRateThrottle

from functions.agents.tokens import (
    GUESSING_MESSAGE,
    SCOPE_EXECUTE,
    AgentIdentity,
    TokenError,
    credential_authenticate,
    credential_failed,
    credential_guessing,
    token_mint,
    token_verify,
)
from functions.api.throttling import CallerRateThrottle
from functions.auth.login_guard import client_address
from functions.errors import ServiceError
from functions.models import Function, FunctionStatus
from functions.operation_ids import StableIdsAPI
from functions.services import functions as services
from functions.services.agents import agent_function_deploy
from functions.services.audit import audit
from functions.services.invoke import function_invoke


class AgentAuth(HttpBearer):
    """A refused token leaves its ``TokenError`` on the request, for ``_unauthorized`` to answer with."""

    def authenticate(self, request, token: str) -> AgentIdentity | None:
        try:
            identity = token_verify(token)
        except TokenError as exc:
            request.agent_auth_error = exc
            return None
        if SCOPE_EXECUTE not in identity.scopes:
            request.agent_auth_error = TokenError(
                f"token lacks the {SCOPE_EXECUTE!r} scope", reason="insufficient_scope"
            )
            return None
        return identity


internal_api = StableIdsAPI(
    title="HKS Functions internal Operations API",
    version="1",
    auth=AgentAuth(),
    urls_namespace="internal",
    docs_url=None,
    throttle=CallerRateThrottle("internal"),
)


@internal_api.exception_handler(ServiceError)
def _service_error(request, exc: ServiceError):
    response = internal_api.create_response(request, {"detail": exc.message}, status=exc.code)
    if exc.retry_after:
        response["Retry-After"] = str(exc.retry_after)
    return response


@internal_api.exception_handler(AuthenticationError)
def _unauthorized(request, exc):
    """Why the token was refused (RFC 6750's ``WWW-Authenticate`` and a ``reason`` field)."""
    refusal = getattr(request, "agent_auth_error", None) or TokenError(
        "no bearer token: send Authorization: Bearer <token from POST /internal/v1/token>",
        reason="missing_token",
    )
    status = 403 if refusal.reason == "insufficient_scope" else 401
    response = internal_api.create_response(
        request, {"detail": str(refusal), "reason": refusal.reason}, status=status
    )
    error = "insufficient_scope" if status == 403 else "invalid_token"
    response["WWW-Authenticate"] = f'Bearer error="{error}", error_description="{refusal.reason}"'
    return response


@internal_api.exception_handler(Http404)
def _not_found(request, exc):
    return internal_api.create_response(request, {"detail": str(exc) or "Not found."}, status=404)


@internal_api.exception_handler(RequestDataTooBig)
def _too_big(request, exc):
    limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    return internal_api.create_response(
        request,
        {"detail": f"request body is larger than {limit} bytes (code, files and env together)"},
        status=413,
    )


class TokenIn(Schema):
    credential: str


class TokenOut(Schema):
    token: str
    expires_at: dt.datetime
    project: str


class DeployIn(Schema):
    runtime: str = Field("python", pattern="^(python|node)$")
    code: str = Field(..., max_length=512 * 1024)
    files: dict[str, str] = Field(default_factory=dict)
    env: dict[str, str] = Field(default_factory=dict)
    ttl_seconds: int = Field(600, ge=30, le=3600)
    timeout_seconds: int = Field(60, ge=1, le=600)


class FunctionOut(Schema):
    name: str
    status: str
    message: str
    ready: bool
    expires_at: dt.datetime | None


class NameIn(Schema):
    name: str


class InvokeIn(Schema):
    name: str
    method: str = "POST"
    path: str = "/"
    headers: dict[str, str] = Field(default_factory=dict)
    body: str = ""


def _agent_function(identity: AgentIdentity, name: str) -> Function:
    function = (
        Function.objects.alive()
        .select_related("project", "current_revision")
        .filter(project=identity.project, name=name, ephemeral=True)
        .first()
    )
    if function is None:
        raise Http404("No such agent function.")
    return function


def _out(function: Function) -> FunctionOut:
    return FunctionOut(
        name=function.name,
        status=function.status,
        message=function.status_message,
        ready=function.status == FunctionStatus.READY,
        expires_at=function.expires_at,
    )


@internal_api.post(
    "/token",
    auth=None,
    response={200: TokenOut, 401: dict, 429: dict},
    throttle=[AnonRateThrottle(settings.HKS_INTERNAL_TOKEN_RATE)],  # per client address
)
def token(request, payload: TokenIn):
    address = client_address(request)
    if credential_guessing(address):
        return Status(429, {"detail": GUESSING_MESSAGE, "reason": "too_many_failures"})
    try:
        credential = credential_authenticate(payload.credential)
    except TokenError as exc:
        credential_failed(address)
        return Status(401, {"detail": str(exc), "reason": exc.reason})
    jwt_text, expires = token_mint(credential=credential)
    return TokenOut(token=jwt_text, expires_at=expires, project=credential.project.slug)


@internal_api.post("/operations/deploy-function", response={202: FunctionOut})
def deploy_function(request, payload: DeployIn):
    identity: AgentIdentity = request.auth
    function = agent_function_deploy(
        project=identity.project,
        credential=identity.credential.name,
        jti=identity.jti,
        runtime=payload.runtime,
        code=payload.code,
        files=payload.files,
        env=payload.env,
        ttl_seconds=payload.ttl_seconds,
        timeout_seconds=payload.timeout_seconds,
    )
    return Status(202, _out(function))


@internal_api.get("/operations/functions/{name}", response=FunctionOut)
def function_status(request, name: str):
    return _out(_agent_function(request.auth, name))


@internal_api.post("/operations/invoke-function")
def invoke_function(request, payload: InvokeIn):
    """The function's answer. When the code ran out of time or its instance broke, that is the code's
    outcome, not a refusal: the answer carries the status (504, 502) and ``X-Hks-Failure`` says which."""
    function = _agent_function(request.auth, payload.name)
    try:
        result = function_invoke(
            function=function,
            method=payload.method,
            path=payload.path,
            headers=payload.headers,
            body=payload.body,
        )
    except ServiceError as exc:
        if exc.code not in (502, 504):
            raise
        failure = "timeout" if exc.code == 504 else "unreachable"
        return {
            "status": exc.code,
            "headers": {"x-hks-failure": failure},
            "body": exc.message,
            "body_encoding": "utf-8",
            "truncated": False,
            "duration_ms": 0.0,
        }
    return {
        "status": result.status,
        "headers": result.headers,
        "body": result.body,
        "body_encoding": result.body_encoding,
        "truncated": result.truncated,
        "duration_ms": result.duration_ms,
    }


@internal_api.post("/operations/delete-function", response={202: FunctionOut})
def delete_function(request, payload: NameIn):
    identity: AgentIdentity = request.auth
    function = _agent_function(identity, payload.name)
    services.function_delete(function=function, user=None)
    audit(
        project=identity.project,
        function=function,
        action="agent.delete",
        credential=identity.credential.name,
        jti=identity.jti,
    )
    function.refresh_from_db()
    return Status(202, _out(function))


from functions.agents.internal_sessions import router as _sessions_router  # noqa: E402  (sessions, fast execute)

internal_api.add_router("/", _sessions_router)
