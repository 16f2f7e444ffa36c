"""The control API (JSON over HTTP, bearer token) that ``functions/backends/local.py`` calls.

    PUT    /v1/namespaces/{ns}/functions/{name}        apply a spec (see spec.FunctionSpec.from_json)
    GET    /v1/namespaces/{ns}/functions/{name}        status (404 {"exists": false} when unknown)
    DELETE /v1/namespaces/{ns}/functions/{name}        stop and forget it (idempotent: 200 either way):
                                                       {"deleted": bool, "cpu_seconds": the CPU its instances
                                                       used over its life, null when one had no figure}
    GET    /v1/namespaces/{ns}/functions/{name}/logs   ndjson records; ?since=ISO (inclusive)&tail=N&follow=1
    PUT    /v1/namespaces/{ns}/quota                   {"max_instances": N}: the project's instance quota now,
                                                       not at its next spec (quotas.py); 0 = none
    GET    /v1/functions[?namespace=ns]                what the daemon holds, with replicas, the latest
                                                       ready revision and the status message of each
    POST   /v1/builds                                  {runtime, archive_path, content_hash[, profile,
                                                       namespace]}: ndjson stream
                                                       of {"log": line}..., then {"artifact": dir,
                                                       "bytes": its size on disk} or
                                                       {"error": message, "permanent": bool}
    DELETE /v1/artifacts/{content_hash}                free a built artifact: 200 {"deleted": bool}, or 409
                                                       while a function's revision or a fresh build uses it
    GET    /metrics                                    the same token (Prometheus sends it)
    GET    /healthz                                    no token: liveness only

Errors are ``{"error": message, "permanent": bool}``; permanent means the same request cannot succeed later.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hmac
import json
import re
import shutil
import time
from pathlib import Path

from aiohttp import web

from . import builder, netns, seccomp
from .logstore import parse_ts
from .session_api import SessionApi
from .spec import DNS_LABEL, RUNTIMES, FunctionSpec, SpecError

# <content hash>[_agent][-<project>] (builder.artifact_name: whose build made it, and whether an agent's)
ARTIFACT_NAME = re.compile(r"[0-9A-Za-z]{8,128}(_agent)?(-[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?)?")
ARTIFACT_GUARD_SECONDS = 600.0


def error(status: int, message: str, *, permanent: bool) -> web.Response:
    return web.json_response({"error": message, "permanent": permanent}, status=status)


class ControlApi:
    def __init__(self, daemon):
        self.daemon = daemon
        self.supervisor = daemon.supervisor
        self.build_slots = asyncio.Semaphore(2)  # builds are CPU-heavy; 2 cores
        # content hash -> when a build last answered with an artifact that already existed: it belongs to a
        # second revision the portal may not have recorded yet, so the artifact is not freed under it.
        self.reused_at: dict[str, float] = {}

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self.auth], client_max_size=1024 * 1024)
        fn = "/v1/namespaces/{ns}/functions/{name}"
        app.router.add_put(fn, self.apply)
        app.router.add_get(fn, self.status)
        app.router.add_delete(fn, self.delete)
        app.router.add_get(fn + "/logs", self.logs)
        app.router.add_put("/v1/namespaces/{ns}/quota", self.set_quota)
        app.router.add_get("/v1/functions", self.list_functions)
        app.router.add_post("/v1/builds", self.build)
        app.router.add_delete("/v1/artifacts/{content_hash}", self.delete_artifact)
        app.router.add_get("/metrics", self.metrics)
        app.router.add_get("/healthz", self.healthz)
        SessionApi(self.daemon.sessions, self.daemon.sandbox_problem).register(app)  # session_api.py
        return app

    @web.middleware
    async def auth(self, request: web.Request, handler):
        if request.path.startswith("/v1/") or request.path == "/metrics":
            given = request.headers.get("Authorization", "")
            expected = f"Bearer {self.daemon.token}"
            if not hmac.compare_digest(given.encode(), expected.encode()):
                return error(401, "missing or wrong bearer token", permanent=True)
        return await handler(request)

    def _names(self, request: web.Request) -> tuple[str, str]:
        ns, name = request.match_info["ns"], request.match_info["name"]
        if not DNS_LABEL.fullmatch(ns) or not DNS_LABEL.fullmatch(name):
            raise web.HTTPBadRequest(
                text=json.dumps({"error": "names must be DNS-1035 labels", "permanent": True}),
                content_type="application/json",
            )
        return ns, name

    async def apply(self, request: web.Request) -> web.Response:
        ns, name = self._names(request)
        try:
            data = await request.json()
        except ValueError:
            return error(400, "the body must be JSON", permanent=True)
        try:
            spec = FunctionSpec.from_json(ns, name, data)
        except SpecError as exc:
            return error(400, str(exc), permanent=True)
        problem = self.daemon.sandbox_problem()
        if problem:
            return error(503, problem, permanent=True)
        self.supervisor.apply(spec)
        return web.json_response(self._status(ns, name))

    async def set_quota(self, request: web.Request) -> web.Response:
        ns = request.match_info["ns"]
        if not DNS_LABEL.fullmatch(ns):
            return error(400, "names must be DNS-1035 labels", permanent=True)
        try:
            data = await request.json()
        except ValueError:
            return error(400, "the body must be JSON", permanent=True)
        cap = data.get("max_instances") if isinstance(data, dict) else None
        if isinstance(cap, bool) or not isinstance(cap, int) or cap < 0:
            return error(400, "max_instances must be a non-negative integer", permanent=True)
        self.supervisor.set_quota(ns, cap)
        quotas = self.supervisor.state.quotas
        return web.json_response({"max_instances": quotas.cap(ns), "instances": quotas.count(ns)})

    async def status(self, request: web.Request) -> web.Response:
        ns, name = self._names(request)
        status = self._status(ns, name)
        return web.json_response(status, status=200 if status["exists"] else 404)

    def _status(self, ns: str, name: str) -> dict:
        fn = self.supervisor.functions.get((ns, name))
        if fn is None:
            return {"exists": False, "ready": False}
        return {
            **self.supervisor.status(fn),
            **self.daemon.urls(ns, name),
            "revision": fn.spec.revision,
            "labels": fn.spec.labels,
        }

    async def delete(self, request: web.Request) -> web.Response:
        ns, name = self._names(request)
        existed, cpu = await self.supervisor.delete_measured(ns, name)
        return web.json_response({"deleted": existed, "cpu_seconds": cpu})

    async def list_functions(self, request: web.Request) -> web.Response:
        namespace = request.query.get("namespace")
        items = [
            {
                "namespace": fn.spec.namespace,
                "name": fn.spec.name,
                "revision": fn.spec.revision,
                "labels": fn.spec.labels,
                # what the portal shows (replicas 0 included), in the same call for every function
                "replicas": len(fn.active.ready) if fn.active else 0,
                "latest_ready_revision": fn.latest_ready,
                "message": self.supervisor.message(fn),  # e.g. held back by the project's instance quota
            }
            for fn in self.supervisor.functions.values()
            if namespace is None or fn.spec.namespace == namespace
        ]
        return web.json_response({"functions": items})

    async def logs(self, request: web.Request) -> web.StreamResponse:
        ns, name = self._names(request)
        if (ns, name) not in self.supervisor.functions:
            return error(404, f"function {ns}/{name} not found", permanent=True)
        try:
            since = parse_ts(request.query["since"]) if request.query.get("since") else None
            tail = int(request.query["tail"]) if request.query.get("tail") else None
        except ValueError:
            return error(400, "since must be an ISO-8601 time and tail an integer", permanent=True)
        if since is not None and since.tzinfo is None:
            since = since.replace(tzinfo=dt.UTC)
        follow = request.query.get("follow") in ("1", "true")
        log = self.daemon.logs.get(ns, name)
        queue: asyncio.Queue = asyncio.Queue()
        log.flush()  # request lines still queued (logstore.REQUEST_FLUSH_SECONDS) go into the snapshot
        if follow:
            log.followers.add(queue)  # before the snapshot, so no line falls between the two
        try:
            return await self._stream_logs(
                request, log.snapshot(since=since, tail=tail), queue if follow else None
            )
        except ConnectionResetError:  # the follower went away; aiohttp's own error subclasses this
            return web.Response(status=499)
        finally:
            log.followers.discard(queue)

    async def _stream_logs(self, request, records: list[dict], queue) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        await response.prepare(request)
        last = records[-1]["ts"] if records else ""
        await response.write("".join(json.dumps(r) + "\n" for r in records).encode())
        while queue is not None:
            try:
                record = await asyncio.wait_for(queue.get(), timeout=15)
            except TimeoutError:
                await response.write(b"\n")  # keep-alive; a blank line is skipped by readers
                continue
            if record is None:
                break
            if record["ts"] > last:
                await response.write((json.dumps(record) + "\n").encode())
        await response.write_eof()
        return response

    async def build(self, request: web.Request) -> web.StreamResponse:
        try:
            data = await request.json()
            runtime, archive, content_hash = data["runtime"], Path(data["archive_path"]), data["content_hash"]
        except (ValueError, KeyError, TypeError):
            return error(400, "runtime, archive_path and content_hash are required", permanent=True)
        if runtime not in RUNTIMES or not archive.is_absolute() or not archive.is_file():
            return error(
                400, f"unknown runtime {runtime!r} or missing archive {str(archive)!r}", permanent=True
            )
        if not isinstance(content_hash, str) or not content_hash.isalnum():
            return error(400, "content_hash must be alphanumeric", permanent=True)
        profile, namespace = data.get("profile", "standard"), data.get("namespace", "")
        if profile not in ("standard", "restricted"):
            return error(400, "profile must be standard or restricted", permanent=True)
        if not isinstance(namespace, str) or (namespace and not DNS_LABEL.fullmatch(namespace)):
            return error(400, "namespace must be a DNS-1035 label", permanent=True)
        problem = self.daemon.sandbox_problem()
        if problem:
            return error(503, problem, permanent=True)
        response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        await response.prepare(request)
        async with self.build_slots:
            await self._run_build(response, runtime, archive, content_hash, profile, namespace)
        await response.write_eof()
        return response

    async def _run_build(
        self, response, runtime: str, archive: Path, content_hash: str, profile: str, namespace: str
    ) -> None:
        loop = asyncio.get_running_loop()
        lines: asyncio.Queue = asyncio.Queue()

        def on_log(line: str) -> None:
            loop.call_soon_threadsafe(lines.put_nowait, {"log": str(line).rstrip("\n")})

        def run() -> dict:
            artifacts_dir = self.daemon.data_dir / "artifacts"
            name = builder.artifact_name(content_hash, profile, namespace)
            reused = (artifacts_dir / name / ".hks-built").exists()
            try:
                artifact = builder.build(
                    runtime=runtime,
                    archive_path=archive,
                    artifacts_dir=artifacts_dir,
                    layers_dir=self.daemon.layers_dir,
                    content_hash=content_hash,
                    on_log=on_log,
                    profile=profile,
                    scope=namespace,
                )
                if reused:  # a second revision of this content, maybe not recorded by the portal yet
                    self.reused_at[name] = time.monotonic()
                return {"artifact": str(artifact), "bytes": builder.artifact_bytes(artifact)}
            except Exception as exc:  # noqa: BLE001 - reported to the caller
                permanent = isinstance(exc, builder.BuildError)
                return {"error": getattr(exc, "message", None) or str(exc), "permanent": permanent}

        job = loop.run_in_executor(self.supervisor.blocking, run)
        while not (job.done() and lines.empty()):
            getter = asyncio.ensure_future(lines.get())
            await asyncio.wait({getter, job}, return_when=asyncio.FIRST_COMPLETED)
            if getter.done():
                await response.write((json.dumps(getter.result()) + "\n").encode())
            else:
                getter.cancel()
        await response.write((json.dumps(job.result()) + "\n").encode())

    async def delete_artifact(self, request: web.Request) -> web.Response:
        content_hash = request.match_info["content_hash"]
        if not ARTIFACT_NAME.fullmatch(content_hash):
            return error(400, "not an artifact name", permanent=True)
        target = self.daemon.data_dir / "artifacts" / content_hash
        users = [
            f"{fn.spec.namespace}/{fn.spec.name}"
            for fn in self.supervisor.functions.values()
            if any(Path(rev.spec.artifact) == target for rev in [*fn.revisions()])
            or Path(fn.spec.artifact) == target
        ]
        if users:
            return error(409, f"artifact in use by {', '.join(sorted(users))}", permanent=False)
        if (
            time.monotonic() - self.reused_at.get(content_hash, -ARTIFACT_GUARD_SECONDS)
            < ARTIFACT_GUARD_SECONDS
        ):
            return error(409, "artifact reused by a build moments ago", permanent=False)
        existed = target.exists()
        await asyncio.get_running_loop().run_in_executor(None, shutil.rmtree, target, True)
        return web.json_response({"deleted": existed})

    async def metrics(self, request: web.Request) -> web.Response:
        return web.Response(
            body=self.daemon.metrics.exposition(),
            headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"},
        )

    async def healthz(self, request: web.Request) -> web.Response:
        standbys: dict[str, int] = {}
        for shape, items in self.supervisor.prewarm.ready.items():  # summed over projects (names not shown)
            key = f"{shape.runtime}/{shape.kind}/{shape.profile}/{shape.memory_mb}Mi/{shape.cpu_millicores}m"
            standbys[key] = standbys.get(key, 0) + len(items)
        return web.json_response(
            {
                "ok": True,
                "sandbox": self.daemon.sandbox_mode or self.daemon.sandbox_problem(),
                "seccomp": seccomp.program() is not None,
                "network": _network_state(),
                "data_path": self.daemon.options.data_path,
                "missing": missing_parts(self.daemon),
                "functions": len(self.supervisor.functions),
                "prewarmed": standbys,
            }
        )


def _network_state() -> str:
    """``isolated``, ``host`` (the operator chose it), or why standard sandboxes cannot start here."""
    try:
        return "host" if netns.mode() == "host" else (netns.check() or "isolated")
    except netns.NetworkUnavailable as exc:
        return str(exc)


# What running without a part costs, said plainly (/healthz "missing"; the portal's /healthz and the
# operators' page show it).
COSTS = {
    "bubblewrap": "functions cannot run at all: every deploy fails with 'sandbox unavailable'",
    "seccomp": "functions run without the system-call filter: keyrings, io_uring, bpf, ptrace and the "
    "other calls it refuses are open to tenant code (install Debian's python3-seccomp)",
    "haproxy": "requests go through the Python gateway instead of HAProxy: more latency and a fraction of "
    "the throughput per function (install Debian's haproxy)",
    "network": "standard functions and builds cannot start: each needs a network namespace of its own "
    "(install Debian's slirp4netns, nftables and iproute2; run the runtime as root)",
    "network isolation": "HKS_SANDBOX_NETWORK=host: standard functions and builds share the host's network "
    "and reach every service on it, Redis and the database included",
}


def missing_parts(daemon) -> list[dict]:
    """The parts this runtime runs without, each with what that costs."""
    missing = []
    if not daemon.sandbox_mode:
        missing.append(
            {"part": "bubblewrap", "problem": daemon.sandbox_problem(), "cost": COSTS["bubblewrap"]}
        )
    if seccomp.program() is None:
        missing.append({"part": "seccomp", "problem": "no seccomp filter", "cost": COSTS["seccomp"]})
    if daemon.options.data_path != "haproxy":
        missing.append(
            {"part": "haproxy", "problem": "HAProxy is not in the data path", "cost": COSTS["haproxy"]}
        )
    network = _network_state()
    if network == "host":
        missing.append({"part": "network isolation", "problem": network, "cost": COSTS["network isolation"]})
    elif network != "isolated":
        missing.append({"part": "network", "problem": network, "cost": COSTS["network"]})
    return missing
