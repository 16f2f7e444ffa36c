"""Calling a deployed function from the portal, and its logs: a snapshot, or followed as a stream.

Invoke never lets the caller choose where the request goes: the host always comes from the function's own
URLs (written by the backend), the caller's ``path`` must be a plain path without dot segments (so it
cannot climb to another function on a path-routed gateway), and headers that steer routing (``Host``,
``Forwarded``…) are dropped. Redirects are returned, not followed.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import json
from dataclasses import asdict
from urllib.parse import urlsplit

import httpx
from asgiref.sync import async_to_sync
from django.conf import settings
from django.http import StreamingHttpResponse
from ninja import Router

from functions import selectors
from functions.api.schemas import ErrorOut, InvokeIn, InvokeOut, LogLineOut
from functions.backends import BackendError
from functions.models import Backend, Function, Role
from functions.realtime import logstream
from functions.secret_env import log_source
from functions.services.functions import ServiceError, function_ref
from functions.validators import check_function_path

router = Router(tags=["functions"])
BASE = "/projects/{slug}/functions/{name}"
DROPPED_HEADERS = set(
    "host content-length connection keep-alive te trailer transfer-encoding upgrade proxy-authorization "
    "proxy-connection forwarded x-forwarded-for x-forwarded-host x-forwarded-proto x-forwarded-port "
    "x-real-ip".split()
)
MAX_RESPONSE_BYTES = 1024 * 1024
MAX_LOG_LINES = 5000
HEARTBEAT_SECONDS = 15.0  # a blank line on an idle stream, so proxies and clients see it alive


def _check_path(path: str) -> str:
    try:
        return check_function_path(path)
    except ValueError as exc:
        raise ServiceError(str(exc)) from exc


def _base_url(function: Function) -> str:
    """Where the portal reaches the function: the backend's URLs, or the local gateway's path form.

    On Knative the internal address (``*.svc.cluster.local``) resolves only inside the cluster, so a
    portal outside it (``HKS_KNATIVE_PORTAL_IN_CLUSTER`` off, the default) uses the public URL."""
    if function.project.backend == Backend.KNATIVE and not settings.HKS_KNATIVE_PORTAL_IN_CLUSTER:
        host = urlsplit(function.url).hostname or ""
        if not function.url or host.endswith((".svc.cluster.local", ".svc")):
            raise ServiceError(
                f"function {function.name} has no public URL (it is cluster-local, or the cluster has no "
                "config-domain): the portal runs outside the cluster and cannot reach it",
                code=409,
            )
        return function.url.rstrip("/")
    if function.internal_url or function.url:
        return (function.internal_url or function.url).rstrip("/")
    if function.project.backend == Backend.LOCAL:
        return f"{settings.HKS_GATEWAY_URL.rstrip('/')}/{function.project.slug}/{function.name}"
    raise ServiceError(f"function {function.name} has no URL yet", code=409)


def _forwarded_headers(headers: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in headers.items() if k.lower() not in DROPPED_HEADERS}


def _send(url: str, payload: InvokeIn, timeout: float) -> tuple[httpx.Response, bytes, bool]:
    with httpx.Client(timeout=timeout, follow_redirects=False, trust_env=False) as client:
        request = client.build_request(
            payload.method, url, headers=_forwarded_headers(payload.headers), content=payload.body.encode()
        )
        response = client.send(request, stream=True)
        try:
            body = bytearray()
            for chunk in response.iter_bytes():
                body += chunk
                if len(body) > MAX_RESPONSE_BYTES:
                    return response, bytes(body[:MAX_RESPONSE_BYTES]), True
            return response, bytes(body), False
        finally:
            response.close()


def _body_text(body: bytes) -> tuple[str, str]:
    try:
        return body.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        return base64.b64encode(body).decode(), "base64"


@router.post(
    BASE + "/invoke",
    response={200: InvokeOut, **{code: ErrorOut for code in (400, 403, 404, 409, 502, 504)}},
)
def function_invoke(request, slug: str, name: str, payload: InvokeIn):
    """Send one HTTP request to the function and return its answer (status, headers, body, duration)."""
    from functions.services.invoke import function_invoke as invoke  # it builds on this module's helpers

    function = selectors.function_get_for_user(
        user=request.auth, project_slug=slug, name=name, role=Role.DEVELOPER
    )
    result = invoke(
        function=function,
        method=payload.method,
        path=payload.path,
        headers=payload.headers,
        body=payload.body,
    )
    return asdict(result)


async def _collect_logs(backend, ref, since, tail) -> list:
    return [line async for line in backend.logs(ref, since=since, tail=tail, follow=False)]


@router.get(BASE + "/logs", response={200: list[LogLineOut], 403: ErrorOut, 404: ErrorOut, 502: ErrorOut})
def function_logs(request, slug: str, name: str, since: dt.datetime | None = None, tail: int = 200):
    """The function's recent log lines, oldest first (``tail`` newest ones, optionally ``since`` a time)."""
    function = selectors.function_get_for_user(user=request.auth, project_slug=slug, name=name)
    tail = max(1, min(tail, MAX_LOG_LINES))
    try:
        backend = log_source(function)
        lines = async_to_sync(_collect_logs)(backend, function_ref(function), since, tail)
    except BackendError as exc:
        raise ServiceError(f"logs are not available: {exc.message}", code=502) from exc
    return [
        {"timestamp": line.timestamp, "instance": line.instance, "stream": line.stream, "text": line.text}
        for line in lines[-tail:]
    ]


def _line_out(line) -> dict:
    return {
        "timestamp": logstream.stamp(line),
        "instance": line.instance,
        "stream": line.stream,
        "text": line.text,
    }


async def _ndjson(backend, ref, since, tail):
    """The followed lines as JSON objects, one per line; a blank line when nothing came for a while."""
    lines = logstream.follow(backend, ref, since=since, tail=tail).__aiter__()
    upcoming = asyncio.ensure_future(anext(lines))
    try:
        while True:
            done, _ = await asyncio.wait({upcoming}, timeout=HEARTBEAT_SECONDS)
            if not done:
                yield b"\n"
                continue
            item = upcoming.result()
            if isinstance(item, logstream.StreamTrouble):
                yield json.dumps({"error": item.message}).encode() + b"\n"
            else:
                yield json.dumps(_line_out(item)).encode() + b"\n"
            upcoming = asyncio.ensure_future(anext(lines))
    finally:  # the client went away: stop following the backend
        upcoming.cancel()
        await lines.aclose()


@router.get(
    BASE + "/logs/stream",
    response={200: None, 403: ErrorOut, 404: ErrorOut, 502: ErrorOut},
    openapi_extra={
        "responses": {
            200: {
                "description": "newline-delimited JSON, until the client closes the connection",
                "content": {"application/x-ndjson": {"schema": {"$ref": "#/components/schemas/LogLineOut"}}},
            }
        }
    },
)
def function_logs_stream(request, slug: str, name: str, since: dt.datetime | None = None, tail: int = 200):
    """Follow the function's logs: the newest ``tail`` lines (or those after ``since``), then new ones as
    they come, as newline-delimited JSON (``timestamp``, ``instance``, ``stream``, ``text``). A blank line
    every 15 s of quiet keeps the connection alive; ``{"error": ...}`` says the backend's stream broke and
    is being followed again. Served to the end by the ASGI server (``bash scripts/run``)."""
    function = selectors.function_get_for_user(user=request.auth, project_slug=slug, name=name)
    tail = max(1, min(tail, MAX_LOG_LINES))
    try:
        backend = log_source(function)
    except BackendError as exc:
        raise ServiceError(f"logs are not available: {exc.message}", code=502) from exc
    response = StreamingHttpResponse(
        _ndjson(backend, function_ref(function), since, tail), content_type="application/x-ndjson"
    )
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"  # nginx in front: pass lines through as they come
    return response
