"""``GET …/logs/stream``: a function's logs followed as newline-delimited JSON, through the ASGI app (as
uvicorn serves it) against the fake Kubernetes API's pod logs."""

import asyncio
import datetime as dt
import json

import pytest
from asgiref.sync import sync_to_async
from django.test import AsyncClient

from functions.api import logs as invoke
from functions.models import ApiToken

pytestmark = [pytest.mark.django_db(transaction=True)]

STREAM = "/api/v1/projects/{slug}/functions/hello/logs/stream"


async def _get(user, slug: str = "acme", **params):
    _, token = await sync_to_async(ApiToken.issue)(user=user, name="tests")
    headers = {"Authorization": f"Bearer {token}"}
    return await AsyncClient().get(STREAM.format(slug=slug), params, headers=headers)


async def _read_until(response, predicate, timeout: float = 15.0) -> list:
    """JSON objects from the stream (blank keep-alive lines as None) until ``predicate(objects)``."""
    seen: list = []
    chunks = aiter(response.streaming_content)

    async def collect():
        while not predicate(seen):
            chunk = await anext(chunks)
            for raw in chunk.split(b"\n")[:-1]:
                seen.append(json.loads(raw) if raw.strip() else None)

    try:
        await asyncio.wait_for(collect(), timeout)
    finally:
        await chunks.aclose()
    return seen


def _texts(objects) -> list[str]:
    return [o["text"] for o in objects if o and "text" in o]


async def test_viewer_follows_the_tail_then_new_lines(knative_hello, viewer, fake_k8s):
    for i in range(3):
        fake_k8s.append_log(knative_hello.ns, knative_hello.pod, "user-container", f"before {i}")
    response = await _get(viewer, tail=2)
    assert response.status_code == 200
    assert response["Content-Type"] == "application/x-ndjson"

    async def later():
        await asyncio.sleep(0.5)
        fake_k8s.append_log(knative_hello.ns, knative_hello.pod, "user-container", "after")

    writer = asyncio.create_task(later())
    objects = await _read_until(response, lambda seen: "after" in _texts(seen))
    await writer
    shown = [t for t in _texts(objects) if t.startswith(("before", "after"))]
    assert shown == ["before 1", "before 2", "after"]
    line = next(o for o in objects if o and o.get("text") == "after")
    assert line["instance"] == knative_hello.pod and line["stream"] == "stdout"
    assert line["timestamp"].endswith("Z")


async def test_since_gives_only_what_came_after(knative_hello, viewer, fake_k8s):
    moment = dt.datetime.now(dt.UTC)
    fake_k8s.append_log(knative_hello.ns, knative_hello.pod, "user-container", "old", at=moment)
    fake_k8s.append_log(
        knative_hello.ns, knative_hello.pod, "user-container", "new", at=moment + dt.timedelta(milliseconds=5)
    )
    response = await _get(viewer, since=moment.isoformat().replace("+00:00", "Z"))
    objects = await _read_until(response, lambda seen: "new" in _texts(seen))
    assert "old" not in _texts(objects)


async def test_a_quiet_stream_sends_keep_alive_lines(knative_hello, viewer, monkeypatch):
    monkeypatch.setattr(invoke, "HEARTBEAT_SECONDS", 0.2)
    response = await _get(viewer, since=dt.datetime.now(dt.UTC).isoformat())
    objects = await _read_until(response, lambda seen: seen.count(None) >= 2)
    assert objects.count(None) >= 2 and _texts(objects) == []


async def test_outsider_gets_404_and_no_stream(knative_hello, outsider):
    response = await _get(outsider)
    assert response.status_code == 404
    assert response["Content-Type"].startswith("application/json")
