"""Request header limits for the portal, as the gateway and the runtime's control API have.

The HTTP server bounds the bytes it buffers for a request head (uvicorn's h11 parser, run with
``--h11-max-incomplete-event-size``: a bigger head is answered 400 before it is held in memory; httptools,
uvicorn's other parser, has no such bound, which is why the platform runs h11). This ASGI middleware adds
the same bytes rule for any other server, and the count of header lines, answering 431 with a JSON reason.
"""

from __future__ import annotations

import json

from django.conf import settings


def _refusal(reason: str) -> tuple[dict, dict]:
    body = json.dumps({"detail": reason}).encode()
    start = {
        "type": "http.response.start",
        "status": 431,
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


class HeaderLimits:
    """ASGI middleware: HTTP requests and websocket handshakes over the header limits get a 431."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
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
