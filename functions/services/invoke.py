"""Invoking a function from the portal, shared by the dashboard's invoke pane and the JSON API.

The safety rules (where the request may go, which headers pass, how much body comes back) live with the API
in ``functions/api/invoke.py``; this module is the plain-function entry point on top of them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import httpx
from django.conf import settings

from functions.api.invoke import _base_url, _body_text, _check_path, _send
from functions.api.schemas import InvokeIn
from functions.models import Function, FunctionStatus
from functions.services.functions import ServiceError


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
    url = _base_url(function) + _check_path(path)
    payload = InvokeIn(method=method, path=path, headers=headers, body=body)
    # The backend enforces the function's timeout and says so (a 504 naming it); the portal waits a little
    # longer, so that answer - not a race between two equal clocks - decides.
    limit = min(function.timeout_seconds, getattr(settings, "HKS_INVOKE_TIMEOUT_SECONDS", 120))
    timeout = float(limit + settings.HKS_INVOKE_GRACE_SECONDS)
    started = time.perf_counter()
    try:
        response, raw, truncated = _send(url, payload, timeout)
    except httpx.TimeoutException as exc:
        raise ServiceError(f"function {function.name} did not answer within {limit:g} s", code=504) from exc
    except (httpx.HTTPError, ValueError) as exc:
        raise ServiceError(f"could not reach function {function.name}: {exc}", code=502) from exc
    text, encoding = _body_text(raw)
    return InvokeResult(
        status=response.status_code,
        headers=dict(response.headers),
        body=text,
        body_encoding=encoding,
        truncated=truncated,
        duration_ms=round((time.perf_counter() - started) * 1000, 3),
    )
