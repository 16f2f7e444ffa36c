"""The sessions' data plane: an ASGI layer in front of Django that streams sandbox traffic to the agents.

A request under ``/e2b/`` with an ``E2b-Sandbox-Id`` header (E2B's SDK, hks_sdk's sessions) is for a
session's agent: ``E2b-Sandbox-Port`` says which daemon (49983 envd, 49999 code interpreter), the path and
body go to the agent unchanged, and the answer streams back chunk by chunk. Everything else goes on to
Django (the control plane is ``e2b_api.py``). Skipping Django's middleware and view machinery here is what
keeps a warm ``run()`` within a few milliseconds of the agent's own time.

The sandbox's ``X-Access-Token`` (E2B's ``envdAccessToken``) is required on every call. The code
interpreter's ``/contexts`` calls, which E2B's SDK sends without it, carry ``E2B-Traffic-Access-Token``
instead: the control plane hands the SDK that token as ``trafficAccessToken`` ("required for accessing
sandbox via proxy"), so knowing a sandbox's id is never enough to touch its kernels. An
unknown or ended sandbox answers 502 "The sandbox … was not found", which the SDK maps to
``SandboxNotRunningException``. When the caller goes away mid-stream the agent's connection is closed, so
the agent interrupts the running code.

Where a session's agent listens is looked up in the database and kept for two seconds: a killed session's
agent is gone (the connection is refused: 502), and the runtime enforces the deadline itself.

A session on Knative may still be starting (its pod pulling the image: cluster_sessions.py). A request for
it is held while the portal asks the cluster, for at most ``HKS_KNATIVE_SESSION_START_WAIT_SECONDS`` (below
the SDKs' own request timeouts), and goes on to the agent once it is ready. Otherwise it is answered 503
"The sandbox … is still starting" with ``Retry-After`` (nothing is left waiting), or - when the pod cannot
start - 502 "The sandbox … was not found: it could not start (why)", the session then ended and deleted.
"""

from __future__ import annotations

import asyncio
import json
import time

import aiohttp
from asgiref.sync import sync_to_async
from django.conf import settings
from django.utils import timezone

from functions.agents import cluster_sessions, sessions
from functions.models import AgentSession, Backend, SessionStatus

PREFIX = "/e2b/"
JUPYTER_PORT = b"49999"
MAX_BODY = 100 * 1024 * 1024
_FORWARDED = {b"content-type", b"content-encoding", b"connect-timeout-ms", b"connect-protocol-version"}
_CACHE_SECONDS = 2.0
STARTING = ("", 0)  # a session on Knative whose pod is not ready yet
START_POLL_SECONDS = 0.5


def body_limit(scope: dict) -> int | None:
    """The body limit of a request for a session's agent (see hks_portal/limits.py)."""
    headers = scope.get("headers") or []
    if scope["path"].startswith(PREFIX) and any(k == b"e2b-sandbox-id" for k, _ in headers):
        return MAX_BODY
    return None


class SandboxDataPlane:
    def __init__(self, app):
        self.app = app
        self._where: dict[str, tuple[float, tuple[str, int] | None, float]] = {}
        self._client: aiohttp.ClientSession | None = None
        self._client_loop: asyncio.AbstractEventLoop | None = None

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or not scope["path"].startswith(PREFIX):
            return await self.app(scope, receive, send)
        headers = dict(scope["headers"])  # ASGI header names are lowercase bytes
        sandbox_id = headers.get(b"e2b-sandbox-id", b"").decode("latin-1")
        if not sandbox_id:
            return await self.app(scope, receive, send)
        await self._proxy(scope, receive, send, headers, sandbox_id)

    # --- lookup -----------------------------------------------------------------------------------------

    async def _target(self, sandbox_id: str) -> tuple[str, int] | None:
        cached = self._where.get(sandbox_id)
        now = time.monotonic()
        if cached is None or now - cached[0] > _CACHE_SECONDS or cached[1] == STARTING:
            target, expires = await sync_to_async(_lookup)(sandbox_id)
            cached = (now, target, expires)
            if len(self._where) > 10000:
                self._where.clear()
            self._where[sandbox_id] = cached
        _, target, expires = cached
        return target if target is not None and expires > time.time() else None

    async def _started(self, sandbox_id: str) -> tuple[tuple[str, int] | None, str]:
        """Hold on while a starting session's pod becomes ready: (where its agent is, "") once it is;
        (None, why) when it could not start; (None, "") when it is still starting after the wait."""
        give_up = time.monotonic() + settings.HKS_KNATIVE_SESSION_START_WAIT_SECONDS
        # not thread-sensitive: each poll is a round trip to the cluster, and other requests go on meanwhile
        poll = sync_to_async(cluster_sessions.poll_ready, thread_sensitive=False)
        while True:
            state, detail = await poll(sandbox_id)
            if state == cluster_sessions.READY:
                self._where.pop(sandbox_id, None)
                return detail, ""
            if state == cluster_sessions.FAILED:
                self._where.pop(sandbox_id, None)
                return None, detail
            if time.monotonic() + START_POLL_SECONDS > give_up:
                return None, ""
            await asyncio.sleep(START_POLL_SECONDS)

    # --- proxying ---------------------------------------------------------------------------------------

    def _http(self) -> aiohttp.ClientSession:
        """One client per event loop. aiohttp rather than httpx: about a millisecond less CPU per proxied
        request, which is most of what the portal adds to a warm run. Bytes are relayed as they come (no
        decompression), and no headers are added but the ones forwarded."""
        loop = asyncio.get_running_loop()
        if self._client is None or self._client_loop is not loop or self._client.closed:
            connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=60)
            timeout = aiohttp.ClientTimeout(total=None, sock_connect=5.0)
            self._client = aiohttp.ClientSession(
                connector=connector,
                timeout=timeout,
                auto_decompress=False,
                skip_auto_headers=("User-Agent", "Accept-Encoding"),
            )
            self._client_loop = loop
        return self._client

    async def _proxy(self, scope, receive, send, headers: dict, sandbox_id: str) -> None:
        # Who may send it is settled before a byte of the body is read: a caller without the sandbox's
        # token cannot make the portal hold up to MAX_BODY for it.
        target = await self._target(sandbox_id)
        if target is None:
            return await _not_found(send, sandbox_id)
        path = scope["path"][len(PREFIX) - 1 :]
        given = headers.get(b"x-access-token") or headers.get(b"e2b-traffic-access-token") or b""
        if not sessions.access_token_valid(sandbox_id, given.decode("latin-1")):
            message = "missing or wrong X-Access-Token (or E2B-Traffic-Access-Token)"
            return await _answer(send, 401, {"code": 401, "message": message})
        body = await _read_body(receive, MAX_BODY)
        if body is None:
            return await _answer(send, 413, {"code": 413, "message": "the body is too large"})
        if target == STARTING:
            target, why = await self._started(sandbox_id)
            if target is None and why:
                message = f"The sandbox {sandbox_id} was not found: it could not start ({why})"
                return await _answer(send, 502, {"code": 502, "message": message})
            if target is None:
                message = (
                    f"The sandbox {sandbox_id} is still starting (its pod is being pulled or started); "
                    "try again in a few seconds"
                )
                return await _answer(send, 503, {"code": 503, "message": message}, retry_after=5)
        forwarded = {k.decode(): v.decode("latin-1") for k, v in headers.items() if k in _FORWARDED}
        forwarded["X-HKS-Agent-Token"] = sessions.agent_token(sandbox_id)
        query = scope.get("query_string", b"").decode("latin-1")
        url = f"http://{target[0]}:{target[1]}{path}" + (f"?{query}" if query else "")
        try:
            upstream = await self._http().request(scope["method"], url, headers=forwarded, data=body)
        except (aiohttp.ClientError, OSError):
            self._where.pop(sandbox_id, None)
            return await _not_found(send, sandbox_id)
        finished = False
        try:
            finished = await _relay(upstream, receive, send)
        finally:
            if finished:
                upstream.release()  # read to the end: the connection goes back to the pool
            else:
                upstream.close()  # the caller went away mid-stream: the agent sees it and interrupts the code


def _lookup(sandbox_id: str) -> tuple[tuple[str, int] | None, float]:
    row = (
        AgentSession.objects.filter(sandbox_id=sandbox_id, status=SessionStatus.RUNNING)
        .values_list("agent_host", "agent_port", "expires_at", "project__backend")
        .first()
    )
    if row is None or row[2] <= timezone.now():
        return None, 0.0
    if not row[1]:  # no agent yet: a session on Knative whose pod starts (on the local runtime: its create)
        return (STARTING if row[3] == Backend.KNATIVE else None), row[2].timestamp()
    return (row[0], row[1]), row[2].timestamp()


async def _read_body(receive, limit: int = MAX_BODY) -> bytes | None:
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return b""
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body"):
            return b"".join(chunks)


async def _relay(upstream: aiohttp.ClientResponse, receive, send) -> bool:
    """Stream the agent's answer to the caller; True if it was relayed to its end."""
    headers = [(b"x-accel-buffering", b"no")]
    if "content-type" in upstream.headers:
        headers.append((b"content-type", upstream.headers["content-type"].encode("latin-1")))
    await send({"type": "http.response.start", "status": upstream.status, "headers": headers})

    async def pump():
        async for chunk in upstream.content.iter_any():
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def disconnected():
        while (await receive())["type"] != "http.disconnect":
            pass

    pumping, watching = asyncio.ensure_future(pump()), asyncio.ensure_future(disconnected())
    try:
        await asyncio.wait({pumping, watching}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (pumping, watching):
            task.cancel()
        await asyncio.gather(pumping, watching, return_exceptions=True)  # an agent that died mid-stream
    return pumping.done() and not pumping.cancelled() and pumping.exception() is None


async def _answer(send, status: int, data: dict, retry_after: int = 0) -> None:
    body = json.dumps(data).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if retry_after:
        headers.append((b"retry-after", str(retry_after).encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _not_found(send, sandbox_id: str) -> None:
    await _answer(send, 502, {"code": 502, "message": f"The sandbox {sandbox_id} was not found"})
