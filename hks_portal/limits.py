"""Request limits for the portal, as the gateway and the runtime's control API have.

The HTTP server bounds the bytes it buffers for a request head (uvicorn's h11 parser, run with
``--h11-max-incomplete-event-size``: a bigger head is answered 400 before it is held in memory; httptools,
uvicorn's other parser, has no such bound, which is why the platform runs h11). This ASGI middleware adds
the same bytes rule for any other server, and the count of header lines, answering 431 with a JSON reason.

It bounds request bodies too, before anyone is signed in: Django's ASGI handler reads a whole body before
a view runs (into a temporary file past ``FILE_UPLOAD_MAX_MEMORY_SIZE``), so without this any caller could
fill the portal's disk with one endless POST. A body declared bigger than the limit of its path is answered
413 unread; a chunked one is counted as it arrives and cut off at the limit. The limit is
``DATA_UPLOAD_MAX_MEMORY_SIZE`` (an archive upload and its form), unless ``body_limit`` gives a request
another (asgi.py: the sandbox data plane's files, ``e2b_data_plane.body_limit``).
"""

from __future__ import annotations

import json
from collections.abc import Callable

from django.conf import settings


def _refusal(reason: str, status: int = 431) -> tuple[dict, dict]:
    body = json.dumps({"detail": reason}).encode()
    start = {
        "type": "http.response.start",
        "status": status,
        "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
    }
    return start, {"type": "http.response.body", "body": body}


def header_problem(headers: list[tuple[bytes, bytes]]) -> str:
    """Why these request headers are refused, or '' when they are within the limits."""
    count, limit = len(headers), settings.HKS_MAX_REQUEST_HEADERS
    if count > limit:
        return f"request has {count} header lines; the limit is {limit}"
    size = sum(len(name) + len(value) + 4 for name, value in headers)
    if size > settings.HKS_MAX_REQUEST_HEADER_BYTES:
        return f"request headers are {size} bytes; the limit is {settings.HKS_MAX_REQUEST_HEADER_BYTES}"
    return ""


def _declared(headers: list[tuple[bytes, bytes]]) -> int:
    for name, value in headers:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return 0
    return 0


async def _limited(app, scope, receive, send, limit: int) -> None:
    """Run ``app`` with a receive that stops at ``limit`` body bytes: past it the caller gets the 413 and
    the app sees the client gone (Django then drops the request: RequestAborted)."""
    state = {"read": 0, "refused": False, "started": False}

    async def counted_receive():
        if state["refused"]:
            return {"type": "http.disconnect"}
        message = await receive()
        if message["type"] == "http.request":
            state["read"] += len(message.get("body", b""))
            if state["read"] > limit:
                state["refused"] = True
                if not state["started"]:
                    start, body = _refusal(f"the request body is over the limit of {limit} bytes", 413)
                    state["started"] = True
                    await send(start)
                    await send(body)
                return {"type": "http.disconnect"}
        return message

    async def guarded_send(message):
        if state["refused"]:
            return  # the 413 has been sent; what the app says after the disconnect goes nowhere
        if message["type"] == "http.response.start":
            state["started"] = True
        await send(message)

    await app(scope, counted_receive, guarded_send)


class HeaderLimits:
    """ASGI middleware: HTTP requests and websocket handshakes over the header limits get a 431; HTTP
    request bodies over their path's limit a 413."""

    def __init__(self, app, body_limit: Callable[[dict], int | None] = lambda scope: None):
        self.app = app
        self.body_limit = body_limit  # a bigger limit for some requests (None: the default)

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            problem = header_problem(scope.get("headers") or [])
            if not problem:
                limit = self.body_limit(scope) or settings.DATA_UPLOAD_MAX_MEMORY_SIZE
                if _declared(scope.get("headers") or []) > limit:
                    start, body = _refusal(f"the request body is over the limit of {limit} bytes", 413)
                    await send(start)
                    await send(body)
                    return
                return await _limited(self.app, scope, receive, send, limit)
        if scope["type"] in ("http", "websocket"):
            problem = header_problem(scope.get("headers") or [])
            if problem:
                if scope["type"] == "websocket":
                    await send({"type": "websocket.close", "code": 1008, "reason": problem[:120]})
                    return
                start, body = _refusal(problem)
                await send(start)
                await send(body)
                return
        await self.app(scope, receive, send)
