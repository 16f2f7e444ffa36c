"""E2B-compatible endpoints under /e2b/: the unmodified ``e2b`` / ``e2b-code-interpreter`` SDKs drive
sessions.

Point the SDK at ``E2B_API_URL=<portal>/e2b`` and ``E2B_SANDBOX_URL=<portal>/e2b`` with an agent credential
as ``E2B_API_KEY``. One URL serves both planes, told apart as E2B's own edge proxy does: a request with an
``E2b-Sandbox-Id`` header is for a sandbox (its ``E2b-Sandbox-Port`` says which daemon: 49983 envd,
49999 code interpreter) and is streamed to that session's agent; any other is the control plane.

Control plane (``X-API-KEY``; errors are ``{"code": int, "message": str}``, as the SDK parses them):
``POST /v2/sandboxes`` and ``/sandboxes`` (create, 201), ``GET /v2/sandboxes`` and ``/sandboxes`` (list),
``GET /sandboxes/{id}``, ``DELETE /sandboxes/{id}`` (204/404), ``POST /sandboxes/{id}/timeout`` (204),
``POST /v2/sandboxes/{id}/connect`` and ``/sandboxes/{id}/connect`` (200).

Data plane: the sandbox's ``X-Access-Token`` (returned at create) is required, except on the code
interpreter's ``/contexts`` calls, which the SDK sends without it (as E2B does; the id itself is ~103
random bits). An unknown or ended sandbox answers 502 "The sandbox … was not found", which the SDK maps to
``SandboxNotRunningException``.
"""

from __future__ import annotations

import json
import re

import httpx
from asgiref.sync import sync_to_async
from django.http import HttpResponse, JsonResponse, StreamingHttpResponse
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt

from . import sessions
from .agent_tokens import TokenError, credential_authenticate
from .models import AgentSession, SessionStatus
from .services import ServiceError

ENVD_VERSION = "0.5.7"  # multipart and octet-stream uploads; no file metadata or watchers (0.6.x)
ENVD_PORT, JUPYTER_PORT = "49983", "49999"
_FORWARDED = ("content-type", "content-encoding", "connect-timeout-ms", "connect-protocol-version")
_CONTROL = [
    (re.compile(r"^(v2/)?sandboxes/?$"), "collection"),
    (re.compile(r"^(v2/)?sandboxes/(?P<id>[a-z0-9]+)/connect$"), "connect"),
    (re.compile(r"^sandboxes/(?P<id>[a-z0-9]+)/timeout$"), "timeout"),
    (re.compile(r"^sandboxes/(?P<id>[a-z0-9]+)$"), "item"),
]
_client: httpx.AsyncClient | None = None


def _error(status: int, message: str) -> JsonResponse:
    return JsonResponse({"code": status, "message": message}, status=status)


@csrf_exempt
async def e2b_entry(request, rest: str = ""):
    sandbox_id = request.headers.get("E2b-Sandbox-Id")
    if sandbox_id:
        return await _proxy(request, sandbox_id, "/" + rest)
    return await sync_to_async(_control)(request, rest)


# --- control plane ----------------------------------------------------------------------------------------


def _control(request, rest: str):
    try:
        credential = credential_authenticate(request.headers.get("X-Api-Key", ""))
    except TokenError as exc:
        return _error(401, str(exc))
    for pattern, kind in _CONTROL:
        match = pattern.match(rest)
        if match:
            try:
                return _HANDLERS[(kind, request.method)](request, credential, match.groupdict().get("id"))
            except KeyError:
                return _error(405, f"{request.method} is not allowed on /{rest}")
            except ServiceError as exc:
                response = _error(exc.code, exc.message)
                if exc.code == 429:  # over the session quota: the SDK's retries would not help
                    response["Should-Retry"] = "false"
                return response
    return _error(404, f"/{rest} is not supported by HKS Functions (see docs/sdk.md)")


def _body(request) -> dict:
    try:
        data = json.loads(request.body or b"{}")
    except ValueError as exc:
        raise ServiceError("the body must be JSON") from exc
    if not isinstance(data, dict):
        raise ServiceError("the body must be a JSON object")
    return data


def _timeout(data: dict, default: int = 300) -> int:
    value = data.get("timeout", default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ServiceError("timeout must be an integer number of seconds")
    return value


def _sandbox(session: AgentSession) -> dict:
    return {
        "templateID": session.template,
        "sandboxID": session.sandbox_id,
        "clientID": "hks",
        "envdVersion": ENVD_VERSION,
        "envdAccessToken": sessions.access_token(session.sandbox_id),
    }


def _detail(session: AgentSession) -> dict:
    return {
        **_sandbox(session),
        "alias": session.template,
        "startedAt": session.created_at.isoformat(),
        "endAt": session.expires_at.isoformat(),
        "cpuCount": 1,
        "memoryMB": 256,
        "diskSizeMB": 32,
        "state": "running",
        "metadata": session.metadata,
    }


def _owned(credential, sandbox_id: str) -> AgentSession:
    session = sessions.session_get_for_project(project=credential.project, sandbox_id=sandbox_id)
    if session is None or session.expires_at <= timezone.now():
        raise ServiceError(f"sandbox {sandbox_id} not found", code=404)
    return session


def _create(request, credential, _id):
    data = _body(request)
    if data.get("autoPause") or data.get("autoResume"):
        raise ServiceError("pause and resume are not supported")
    metadata = data.get("metadata") or {}
    if not isinstance(metadata, dict):
        raise ServiceError("metadata must be an object")
    session = sessions.session_create(
        project=credential.project,
        credential=credential,
        timeout=_timeout(data),
        metadata=metadata,
        template=str(data.get("templateID") or "base"),
    )
    return JsonResponse(_sandbox(session), status=201)


def _list(request, credential, _id):
    wanted = {}
    for pair in filter(None, request.GET.get("metadata", "").split("&")):
        key, _, value = pair.partition("=")
        wanted[key] = value
    states = set(filter(None, request.GET.get("state", "running").split(",")))
    found = sessions.sessions_for_project(project=credential.project, metadata=wanted)
    items = [_detail(s) for s in found] if "running" in states else []
    response = JsonResponse(items, safe=False)
    response["X-Next-Token"] = ""
    return response


def _get(request, credential, sandbox_id):
    return JsonResponse(_detail(_owned(credential, sandbox_id)))


def _kill(request, credential, sandbox_id):
    sessions.session_end(session=_owned(credential, sandbox_id))
    return HttpResponse(status=204)


def _set_timeout(request, credential, sandbox_id):
    sessions.session_set_timeout(session=_owned(credential, sandbox_id), timeout=_timeout(_body(request)))
    return HttpResponse(status=204)


def _connect(request, credential, sandbox_id):
    session = _owned(credential, sandbox_id)
    data = _body(request)
    if "timeout" in data:
        session = sessions.session_set_timeout(session=session, timeout=_timeout(data))
    return JsonResponse(_sandbox(session), status=200)


_HANDLERS = {
    ("collection", "POST"): _create,
    ("collection", "GET"): _list,
    ("item", "GET"): _get,
    ("item", "DELETE"): _kill,
    ("timeout", "POST"): _set_timeout,
    ("connect", "POST"): _connect,
}


# --- data plane -------------------------------------------------------------------------------------------


def _http() -> httpx.AsyncClient:
    global _client
    if _client is None:
        limits = httpx.Limits(max_connections=None, max_keepalive_connections=64)
        _client = httpx.AsyncClient(timeout=httpx.Timeout(None, connect=5.0), limits=limits)
    return _client


def _not_found(sandbox_id: str) -> JsonResponse:
    return JsonResponse({"code": 502, "message": f"The sandbox {sandbox_id} was not found"}, status=502)


async def _proxy(request, sandbox_id: str, path: str):
    session = await AgentSession.objects.filter(sandbox_id=sandbox_id, status=SessionStatus.RUNNING).afirst()
    if session is None or session.expires_at <= timezone.now() or not session.agent_port:
        return _not_found(sandbox_id)
    port = request.headers.get("E2b-Sandbox-Port", ENVD_PORT)
    tokenless = port == JUPYTER_PORT and path.startswith("/contexts")
    if not tokenless and not sessions.access_token_valid(
        sandbox_id, request.headers.get("X-Access-Token", "")
    ):
        return _error(401, "missing or wrong X-Access-Token for this sandbox")
    headers = {k: v for k, v in request.headers.items() if k.lower() in _FORWARDED}
    headers["X-HKS-Agent-Token"] = sessions.agent_token(sandbox_id)
    query = request.META.get("QUERY_STRING", "")
    url = f"http://{session.agent_host}:{session.agent_port}{path}" + (f"?{query}" if query else "")
    body = request.read()  # the ASGI handler has spooled it; read() skips the 2.5 MB form-data cap
    upstream_request = _http().build_request(request.method, url, headers=headers, content=body)
    try:
        upstream = await _http().send(upstream_request, stream=True)
    except httpx.HTTPError:
        return _not_found(sandbox_id)
    response = StreamingHttpResponse(_relay(upstream), status=upstream.status_code)
    for key in ("content-type",):
        if key in upstream.headers:
            response[key] = upstream.headers[key]
    response["X-Accel-Buffering"] = "no"
    return response


async def _relay(upstream: httpx.Response):
    try:
        async for chunk in upstream.aiter_raw():
            yield chunk
    finally:
        await upstream.aclose()  # the caller went away: the agent sees it and interrupts the code
