"""The gateway: routes ``http://{function}.{namespace}.{domain}:{port}/`` and ``/{namespace}/{function}/...``
to an instance, holding the request while a scaled-to-zero function starts.

Answers of its own: 404 unknown function, 413 body over the limit, 502 instance crashed or cannot start,
504 request timeout (the function's ``timeout_seconds``, cold start included, as Knative counts it). When a
sandbox limit is why, the answer says so in ``X-Hks-Failure`` (``timeout``, ``out-of-memory``,
``process-limit``, ``crashed``) and in its text, for the SDK to name the error.
A ``cluster-local`` function answers only to its own project: to a sandbox of the same namespace (known by
the listener it connects to, see ``SandboxCallers``) and to the platform's own processes on this machine; to
anyone else - another project's sandbox, a client off the machine - it is unknown (404).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import time

import aiohttp
from aiohttp import HttpVersion11, web
from multidict import CIMultiDict

from .revisions import FunctionState, Unavailable
from .supervisor import Supervisor

FAILURE_HEADER = "X-Hks-Failure"
FAILURE_TEXT = {
    "out-of-memory": "out of memory (killed at the sandbox's memory limit)",
    "process-limit": "the code hit the sandbox's process limit",
}


def _limit_hit(inst) -> str:
    """Which sandbox limit the instance ran into, if any: "out-of-memory", "process-limit" or ""."""
    proc = inst.proc
    try:
        if proc is not None and proc.oom_killed():
            return "out-of-memory"
        if proc is not None and proc.hit_process_limit():
            return "process-limit"
    except (OSError, AttributeError, ValueError):
        pass
    return ""


async def _why_it_failed(inst) -> str:
    """The connection to an instance broke: give its process a moment to end (the kernel's OOM kill and the
    exit are not instant), then say whether a limit killed it."""
    for _ in range(20):
        if inst.proc is None or inst.proc.poll() is not None:
            break
        await asyncio.sleep(0.05)
    return _limit_hit(inst) or "crashed"


HOP_BY_HOP = frozenset(
    h.lower()
    for h in (
        "Connection",
        "Keep-Alive",
        "Proxy-Authenticate",
        "Proxy-Authorization",
        "TE",
        "Trailer",
        "Transfer-Encoding",
        "Upgrade",
        "Content-Length",
    )
)
BUFFERED_RESPONSE = 1024 * 1024  # answers up to this size are sent in one piece, larger ones streamed


_HOST = object()  # the caller is not a sandbox: a process on the host (the portal, the SDK, a test)


class SandboxCallers:
    """The gateway's listener for each sandbox that has a network of its own: its identity.

    A sandbox reaches the host only through slirp4netns, and its ruleset lets it reach exactly one host
    port (``netns.py``): the listener opened for it here. So the port a request arrives on says which
    sandbox sent it, and ``bind`` says which project that sandbox serves (a pre-warmed one learns it when
    claimed; until then it is nobody's and sees only public functions).
    """

    def __init__(self, app: web.Application):
        self.runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=1)
        self.sites: dict[int, web.SockSite] = {}
        self.owners: dict[int, str] = {}

    async def start(self) -> None:
        await self.runner.setup()

    async def open(self) -> int:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        site = web.SockSite(self.runner, sock, backlog=128)
        await site.start()
        port = sock.getsockname()[1]
        self.sites[port] = site
        return port

    def bind(self, port: int, namespace: str) -> None:
        if port in self.sites:
            self.owners[port] = namespace

    async def close(self, port: int | None) -> None:
        site = self.sites.pop(port, None) if port else None
        self.owners.pop(port, None)
        if site is not None and site in self.runner.sites:  # a cleaned-up runner has stopped them all
            await site.stop()

    def caller(self, request: web.Request):
        """The calling sandbox's namespace ("" before it is claimed), or _HOST for any other caller."""
        sockname = request.transport.get_extra_info("sockname") if request.transport else None
        port = sockname[1] if sockname else None
        if port not in self.sites:
            return _HOST
        return self.owners.get(port, "")

    async def cleanup(self) -> None:
        await self.runner.cleanup()


class Gateway:
    def __init__(self, supervisor: Supervisor, metrics, *, domain: str, max_body: int):
        self.supervisor = supervisor
        self.metrics = metrics
        self.domain = domain.lower()
        self.max_body = max_body
        self.callers: SandboxCallers | None = None

    def app(self) -> web.Application:
        app = web.Application(client_max_size=self.max_body)
        app.router.add_route("*", "/{tail:.*}", self.handle)
        return app

    def resolve(self, request: web.Request) -> tuple[tuple[str, str], str] | None:
        """((namespace, function), path with query to forward) by Host header, else by path."""
        host = (request.host or "").rsplit(":", 1)[0].lower() if request.host else ""
        suffix = "." + self.domain
        if host.endswith(suffix):
            parts = host[: -len(suffix)].split(".")
            if len(parts) == 2:
                return (parts[1], parts[0]), request.raw_path
        segments = request.raw_path.split("?", 1)
        parts = segments[0].split("/", 3)
        if len(parts) >= 3 and parts[1] and parts[2]:
            rest = "/" + (parts[3] if len(parts) > 3 else "")
            return (parts[1], parts[2]), rest + ("?" + segments[1] if len(segments) > 1 else "")
        return None

    async def handle(self, request: web.Request) -> web.StreamResponse:
        route = self.resolve(request)
        fn = self.supervisor.functions.get(route[0]) if route else None
        if fn is not None and fn.spec.visibility == "cluster-local" and not self._same_cluster(request, fn):
            fn = None  # as on Knative's external gateway: a cluster-local function does not exist there
        if fn is None:
            if request.path == "/healthz":
                return web.json_response({"ok": True})
            return web.Response(status=404, text="function not found\n")
        started = time.perf_counter()
        revision = fn.active.name if fn.active else fn.spec.revision
        response = await self._serve(request, fn, route[1])
        seconds = time.perf_counter() - started
        labels = self.metrics.revision_labels(fn.spec.namespace, fn.spec.name, revision)
        self.metrics.observe_request(labels, response.status, seconds)
        self._log_request(request, fn, route[1], response.status, seconds, revision)
        return response

    def _log_request(self, request, fn: FunctionState, path: str, status: int, seconds: float, revision: str):
        """The request's line in the function's log (logstore.FunctionLog.request)."""
        inst = request.get("hks_instance")
        self.supervisor.logs.get(fn.spec.namespace, fn.spec.name).request(
            method=request.method,
            path=path,
            status=status,
            millis=seconds * 1000,
            revision=getattr(inst, "revision", None) or revision,
            instance=getattr(inst, "id", ""),
        )

    def _same_cluster(self, request: web.Request, fn: FunctionState) -> bool:
        caller = self.callers.caller(request) if self.callers is not None else _HOST
        if caller is _HOST:
            return not _external(request)
        return caller == fn.spec.namespace

    async def _serve(self, request: web.Request, fn: FunctionState, path: str) -> web.StreamResponse:
        if request.content_length is not None and request.content_length > self.max_body:
            return _too_large(self.max_body)
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return _too_large(self.max_body)
        try:
            async with asyncio.timeout(fn.spec.timeout_seconds):
                return await self._forward(request, fn, path, body)
        except TimeoutError:
            inst = request.get("hks_instance")
            if inst is not None:
                self.supervisor.check_liveness(inst)
            text = f"function did not answer within {fn.spec.timeout_seconds}s"
            kind = "timeout"
            if inst is not None and _limit_hit(inst) == "process-limit":
                kind, text = "process-limit", f"{text}: the code hit the sandbox's process limit"
            return web.Response(status=504, text=text + "\n", headers={FAILURE_HEADER: kind})
        except Unavailable as exc:
            return web.Response(status=502, text=f"function unavailable: {exc}\n")

    async def _forward(self, request, fn: FunctionState, path: str, body: bytes) -> web.StreamResponse:
        headers = _forward_headers(request)
        for attempt in range(3):
            inst = await self.supervisor.acquire(fn)
            request["hks_instance"] = inst  # for the liveness check after a timeout
            healthy = True
            try:
                async with self.supervisor.session.request(
                    request.method,
                    inst.base_url + path,
                    headers=headers,
                    data=body,
                    allow_redirects=False,
                ) as upstream:
                    return await self._respond(request, upstream)
            except aiohttp.ClientConnectorError:
                healthy = False  # refused before the request reached it: safe to send elsewhere
                if attempt == 2:
                    return web.Response(status=502, text="function instance is not accepting connections\n")
            except (aiohttp.ClientError, ConnectionError) as exc:
                healthy = False
                kind = await _why_it_failed(inst)
                reason = FAILURE_TEXT.get(kind, type(exc).__name__)
                return web.Response(
                    status=502, text=f"function instance failed: {reason}\n", headers={FAILURE_HEADER: kind}
                )
            finally:
                self.supervisor.release(inst, healthy=healthy)
        raise AssertionError("unreachable")

    async def _respond(self, request, upstream: aiohttp.ClientResponse) -> web.StreamResponse:
        headers = [(k, v) for k, v in upstream.headers.items() if k.lower() not in HOP_BY_HOP]
        length = upstream.content_length
        if length is not None and length <= BUFFERED_RESPONSE:
            body = await upstream.read()
            return web.Response(status=upstream.status, reason=upstream.reason, body=body, headers=headers)
        response = web.StreamResponse(status=upstream.status, reason=upstream.reason, headers=headers)
        if length is not None:
            response.content_length = length
        elif request.version < HttpVersion11:
            # HTTP/1.0 has no chunks: the body ends where the connection does. aiohttp (3.14) knows that
            # for the headers but still keeps a kept-alive 1.0 connection open (HAProxy always asks for
            # keep-alive), so the client never sees the end of the answer: close it ourselves.
            response.force_close()
        await response.prepare(request)
        async for chunk in upstream.content.iter_chunked(64 * 1024):
            await response.write(chunk)
        await response.write_eof()
        return response


def _external(request: web.Request) -> bool:
    """From off this machine: a non-loopback peer, or HAProxy's mark for one (it drops a client's own)."""
    if request.headers.get("X-HKS-External") == "1":
        return True
    try:
        return not ipaddress.ip_address(request.remote or "").is_loopback
    except ValueError:
        return True  # no peer address (a unix socket?): not known to be local


def _forward_headers(request: web.Request) -> CIMultiDict:
    headers = CIMultiDict(
        (k, v)
        for k, v in request.headers.items()
        if k.lower() not in HOP_BY_HOP and k.lower() != "x-hks-external"
    )
    peer = request.remote or ""
    previous = request.headers.get("X-Forwarded-For")
    headers["X-Forwarded-For"] = f"{previous}, {peer}" if previous else peer
    headers.setdefault("X-Forwarded-Proto", request.scheme)
    headers.setdefault("X-Forwarded-Host", request.host or "")
    return headers


def _too_large(limit: int) -> web.Response:
    return web.Response(status=413, text=f"request body larger than {limit} bytes\n")
