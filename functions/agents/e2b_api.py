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

The data plane (sandbox traffic) never reaches Django: ``e2b_data_plane.py`` is an ASGI layer in front.
"""

from __future__ import annotations

import json
import math
import re

from django.http import HttpResponse, JsonResponse
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt

from functions.agents import sessions
from functions.agents.tokens import TokenError, credential_authenticate
from functions.api import throttling
from functions.errors import ServiceError
from functions.models import AgentSession

ENVD_VERSION = "0.5.7"  # multipart and octet-stream uploads; no file metadata or watchers (0.6.x)
_CONTROL = [
    (re.compile(r"^(v2/)?sandboxes/?$"), "collection"),
    (re.compile(r"^(v2/)?sandboxes/(?P<id>[a-z0-9]+)/connect$"), "connect"),
    (re.compile(r"^sandboxes/(?P<id>[a-z0-9]+)/timeout$"), "timeout"),
    (re.compile(r"^sandboxes/(?P<id>[a-z0-9]+)$"), "item"),
]


def _error(status: int, message: str) -> JsonResponse:
    return JsonResponse({"code": status, "message": message}, status=status)


@csrf_exempt
def e2b_entry(request, rest: str = ""):
    if request.headers.get("E2b-Sandbox-Id"):  # hks_portal.asgi routes these to e2b_data_plane.py first
        return _error(501, "sandbox traffic is served by the portal's ASGI application")
    return _control(request, rest)


# --- control plane ----------------------------------------------------------------------------------------


def _control(request, rest: str):
    try:
        credential = credential_authenticate(request.headers.get("X-Api-Key", ""))
    except TokenError as exc:
        return _error(401, str(exc))
    retry_after = throttling.spend("internal", f"project:{credential.project_id}")
    if retry_after is not None:  # the project's agents' budget, shared with /internal/v1
        response = _error(429, "Too many requests.")
        response["Retry-After"] = str(math.ceil(retry_after))
        return response
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
                    if exc.retry_after:  # when it may: for a client of its own that waits
                        response["Retry-After"] = str(exc.retry_after)
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
        # "Token required for accessing sandbox via proxy": E2B's SDK sends it (E2B-Traffic-Access-Token) on
        # the code interpreter's /contexts calls, which carry no envd token: no data-plane call is tokenless
        "trafficAccessToken": sessions.access_token(session.sandbox_id),
    }


def _detail(session: AgentSession) -> dict:
    return {
        **_sandbox(session),
        "alias": session.template,
        "startedAt": session.created_at.isoformat(),
        "endAt": session.expires_at.isoformat(),
        "cpuCount": 1,
        "memoryMB": 256,
        "diskSizeMB": 128,  # its home (and /tmp): in memory, half the memory limit (sandbox.memory_dir_bytes)
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
    template = str(data.get("templateID") or "base")
    session = sessions.session_create(
        project=credential.project,
        credential=credential,
        timeout=_timeout(data),
        metadata=metadata,
        template=template,
        # E2B's code interpreter runs JavaScript too (run_code(language="js")): a Node-ready sandbox
        language="node" if template.startswith("code-interpreter") else "python",
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
