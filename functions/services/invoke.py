"""Invoking a function from the portal, shared by the dashboard's invoke pane and the JSON API.

The safety rules live here too: where the request may go (``function_base_url``, ``check_path``), which
headers pass, how much body comes back.
"""

from __future__ import annotations

import base64
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx
from django.conf import settings

from functions.errors import ServiceError
from functions.models import Backend, Function, FunctionStatus
from functions.validators import check_function_path

DROPPED_HEADERS = set(
    "host content-length connection keep-alive te trailer transfer-encoding upgrade proxy-authorization "
    "proxy-connection forwarded x-forwarded-for x-forwarded-host x-forwarded-proto x-forwarded-port "
    "x-real-ip".split()
)
MAX_RESPONSE_BYTES = 1024 * 1024


def check_path(path: str) -> str:
    try:
        return check_function_path(path)
    except ValueError as exc:
        raise ServiceError(str(exc)) from exc


def function_base_url(function: Function, *, in_cluster: bool) -> str:
    """Where the platform reaches the function: its internal URL first, then its public one, then the local
    gateway's path form - the one rule for the portal's invocations and the schedules' targets.

    On Knative the internal address (``*.svc.cluster.local``) resolves only inside the cluster, so a caller
    outside it (``in_cluster=False``: the portal with ``HKS_KNATIVE_PORTAL_IN_CLUSTER`` off, the default)
    uses the public URL."""
    if function.project.backend == Backend.KNATIVE and not in_cluster:
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


def forwarded_headers(headers: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in headers.items() if k.lower() not in DROPPED_HEADERS}


def send(
    url: str, *, method: str, headers: dict[str, str], body: str, timeout: float
) -> tuple[httpx.Response, bytes, bool]:
    with httpx.Client(timeout=timeout, follow_redirects=False, trust_env=False) as client:
        request = client.build_request(method, url, headers=forwarded_headers(headers), content=body.encode())
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


def body_text(body: bytes) -> tuple[str, str]:
    try:
        return body.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        return base64.b64encode(body).decode(), "base64"


@dataclass(frozen=True)
class InvokeResult:
    status: int
    headers: dict[str, str]
    body: str
    body_encoding: str  # "utf-8" or "base64"
    truncated: bool
    duration_ms: float


def function_invoke(
    *, function: Function, method: str, path: str, headers: dict[str, str], body: str
) -> InvokeResult:
    """Send one request to ``function``; raise ``ServiceError`` (with an HTTP-ish code) when it cannot."""
    if function.status == FunctionStatus.DELETING:
        raise ServiceError(f"function {function.name} is being deleted", code=409)
    if function.current_revision_id is None:
        raise ServiceError(
            f"function {function.name} has no deployed revision yet (status: {function.status})", code=409
        )
    url = function_base_url(function, in_cluster=settings.HKS_KNATIVE_PORTAL_IN_CLUSTER) + check_path(path)
    # The backend enforces the function's timeout and says so (a 504 naming it); the portal waits a little
    # longer, so that answer - not a race between two equal clocks - decides.
    limit = min(function.timeout_seconds, getattr(settings, "HKS_INVOKE_TIMEOUT_SECONDS", 120))
    timeout = float(limit + settings.HKS_INVOKE_GRACE_SECONDS)
    started = time.perf_counter()
    try:
        response, raw, truncated = send(url, method=method, headers=headers, body=body, timeout=timeout)
    except httpx.TimeoutException as exc:
        raise ServiceError(f"function {function.name} did not answer within {limit:g} s", code=504) from exc
    except (httpx.HTTPError, ValueError) as exc:
        raise ServiceError(f"could not reach function {function.name}: {exc}", code=502) from exc
    text, encoding = body_text(raw)
    return InvokeResult(
        status=response.status_code,
        headers=dict(response.headers),
        body=text,
        body_encoding=encoding,
        truncated=truncated,
        duration_ms=round((time.perf_counter() - started) * 1000, 3),
    )
