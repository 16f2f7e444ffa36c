"""Websockets: live logs of one function, and live status of a project's functions.

Consumers authenticate in ``connect()``, check access through a selector, and hold no business logic; the
status consumer checks again before each push.
An outsider (or anonymous user) is refused before the handshake completes: the socket just closes.

Backpressure in ``LogConsumer``: the backend's lines go into a bounded buffer; when the browser (or the
network) cannot keep up, the OLDEST buffered lines are dropped and the client is told "N lines dropped",
so neither the server's memory nor the page grows without bound. Sends are batched and paced by a token
bucket: a line that comes alone goes out at once, a flood goes out in batches at most ``SEND_RATE`` a second.
"""

from __future__ import annotations

import asyncio
import collections
import datetime as dt
import time
from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.core.exceptions import PermissionDenied
from django.http import Http404

from functions import selectors
from functions.backends import BackendError, function_ref
from functions.realtime import logstream
from functions.realtime.push import project_group
from functions.secret_env import log_source

BUFFER_LINES = 1000  # most lines held for one client
BATCH_LINES = 200  # most lines in one websocket message
SEND_RATE = 20.0  # messages a second per client, sustained...
SEND_BURST = 5  # ...after a burst of this many sent at once: a lone line goes out as it comes
CLOSE_NOT_FOUND = 4404


def _parse_since(raw: str) -> dt.datetime | None:
    try:
        value = dt.datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        return None
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


@database_sync_to_async
def _function_for(user, project: str, name: str):
    function = selectors.function_get_for_user(
        user=user, project_slug=project, name=name, operators_read=True
    )
    return function, log_source(function), function_ref(function)


class LogConsumer(AsyncJsonWebsocketConsumer):
    """Follows ``backend.logs(follow=True)`` for one function; the client may pause, resume and filter."""

    async def connect(self):
        kwargs = self.scope["url_route"]["kwargs"]
        try:
            self.function, backend, ref = await _function_for(
                self.scope["user"], kwargs["project"], kwargs["name"]
            )
        except (Http404, PermissionDenied):
            await self.close(code=CLOSE_NOT_FOUND)
            return
        except BackendError as exc:
            await self.accept()
            await self.send_json({"type": "error", "message": f"logs are not available: {exc.message}"})
            await self.close()
            return
        self.buffer: collections.deque = collections.deque()
        self.dropped = 0
        query = parse_qs(self.scope.get("query_string", b"").decode())
        self.paused = query.get("paused", [""])[0] == "1"
        self.text_filter = ""
        self.wakeup = asyncio.Event()
        await self.accept()
        since = _parse_since(query.get("since", [""])[0])
        self.tasks = [
            asyncio.create_task(self._read(backend, ref, since)),
            asyncio.create_task(self._pump()),
        ]

    async def disconnect(self, code):
        for task in getattr(self, "tasks", []):
            task.cancel()

    async def receive_json(self, content, **kwargs):
        action = content.get("action") if isinstance(content, dict) else None
        if action == "pause":
            self.paused = True
        elif action == "resume":
            self.paused = False
            self.wakeup.set()
        elif action == "filter":
            self.text_filter = str(content.get("text", ""))[:200]
        else:
            await self.send_json({"type": "error", "message": f"unknown action {action!r}"})

    async def _read(self, backend, ref, since):
        async for item in logstream.follow(backend, ref, since=since):
            if isinstance(item, logstream.StreamTrouble):
                await self.send_json({"type": "error", "message": item.message})
            else:
                self._enqueue(item)

    def _enqueue(self, line) -> None:
        if self.text_filter and self.text_filter.lower() not in line.text.lower():
            return
        if len(self.buffer) >= BUFFER_LINES:
            self.buffer.popleft()
            self.dropped += 1
        self.buffer.append(line)
        self.wakeup.set()

    async def _pump(self):
        tokens, refilled = float(SEND_BURST), time.monotonic()
        while True:
            await self.wakeup.wait()
            self.wakeup.clear()
            while self.buffer and not self.paused:
                now = time.monotonic()
                tokens, refilled = min(SEND_BURST, tokens + (now - refilled) * SEND_RATE), now
                if tokens < 1:
                    await asyncio.sleep((1 - tokens) / SEND_RATE)  # meanwhile more lines join the batch
                    continue
                tokens -= 1
                if self.dropped:
                    dropped, self.dropped = self.dropped, 0
                    await self.send_json({"type": "dropped", "count": dropped})
                batch = [self.buffer.popleft() for _ in range(min(BATCH_LINES, len(self.buffer)))]
                await self.send_json({"type": "lines", "lines": [_line_json(line) for line in batch]})


def _line_json(line) -> dict:
    return {"ts": logstream.stamp(line), "instance": line.instance, "stream": line.stream, "text": line.text}


@database_sync_to_async
def _project_for(user, slug: str):
    return selectors.project_get_for_user(user=user, slug=slug, operators_read=True)


class FunctionStatusConsumer(AsyncJsonWebsocketConsumer):
    """Pushes re-rendered function rows (htmx out-of-band swaps) to a project's list page.

    Access is checked at ``connect`` and again before every push: a member removed from the project stops
    receiving at the next push, and the socket closes."""

    async def _allowed(self) -> bool:
        try:
            await _project_for(self.scope["user"], self.scope["url_route"]["kwargs"]["project"])
        except (Http404, PermissionDenied):
            return False
        return True

    async def connect(self):
        try:
            project = await _project_for(self.scope["user"], self.scope["url_route"]["kwargs"]["project"])
        except (Http404, PermissionDenied):
            await self.close(code=CLOSE_NOT_FOUND)
            return
        self.group = project_group(project.pk)
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.accept()

    async def disconnect(self, code):
        if hasattr(self, "group"):
            await self.channel_layer.group_discard(self.group, self.channel_name)

    async def receive_json(self, content, **kwargs):
        pass  # the htmx ws extension may send form data; nothing here listens to it

    async def function_status(self, event):
        if not await self._allowed():
            await self.channel_layer.group_discard(self.group, self.channel_name)
            await self.close(code=CLOSE_NOT_FOUND)
            return
        await self.send(text_data=event["html"])
