"""A function's logs through the API: the recent lines, and a followed stream (newline-delimited JSON)."""

from __future__ import annotations

import asyncio
import datetime as dt
import json

from asgiref.sync import async_to_sync
from django.http import StreamingHttpResponse
from ninja import Router

from functions import selectors
from functions.api.schemas import ErrorOut, LogLineOut
from functions.backends import BackendError, function_ref
from functions.errors import ServiceError
from functions.realtime import logstream
from functions.secret_env import log_source

router = Router(tags=["functions"])
BASE = "/projects/{slug}/functions/{name}"
MAX_LOG_LINES = 5000
HEARTBEAT_SECONDS = 15.0  # a blank line on an idle stream, so proxies and clients see it alive


@router.get(
    BASE + "/logs",
    response={200: list[LogLineOut], 403: ErrorOut, 404: ErrorOut, 502: ErrorOut},
)
def function_logs(request, slug: str, name: str, since: dt.datetime | None = None, tail: int = 200):
    """The function's recent log lines, oldest first (``tail`` newest ones, optionally ``since`` a time)."""
    function = selectors.function_get_for_user(user=request.auth, project_slug=slug, name=name)
    tail = max(1, min(tail, MAX_LOG_LINES))
    try:
        backend = log_source(function)
        lines = async_to_sync(logstream.snapshot)(backend, function_ref(function), tail=tail, since=since)
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
