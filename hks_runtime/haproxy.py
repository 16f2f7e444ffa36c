"""HAProxy as the gateway's data path (Knative's Envoy + activator split), enabled by ``--data-path haproxy``.

HAProxy (Debian package ``haproxy``) listens on the gateway port and proxies warm traffic straight to the
instances; the Python gateway becomes the *activator* on an internal port. Every function gets one of a
fixed set of backend slots (``be_0``...) with server slots (``s0``...), driven through HAProxy's runtime API
(stats socket): ``add map`` routes its Host to the slot, ``set server ... addr/port`` + ``state ready``
adds an instance, ``state maint`` takes one out (in-flight requests finish). Each backend's last server is
the activator as a ``backup``: with no instance in service, HAProxy hands the request to Python, which holds
it while an instance starts - scale from zero works unchanged.

Python still sees everything it needs: HAProxy's per-request log lines feed the Knative latency histogram,
each instance's last-used time and the function's request log, and a poll of ``show stat`` (the backends in
use only) gives each instance's in-flight requests for concurrency-based scaling and draining.

The log lines go into a ring buffer in HAProxy (``ring hks_log``, 1 MiB), which HAProxy forwards over one
unix *stream* connection to the daemon, octet-counted (``<length> <line>``). The daemon reads that in
batches, at most one read per ``LOG_BATCH_SECONDS``, so the cost of a warm request on this data path stays in
HAProxy whatever the request rate. (A datagram per request, as before, woke the daemon for every request,
and the kernel queues only ``net.unix.max_dgram_qlen`` - 10 by default - datagrams: under load HAProxy
dropped a third of the lines.)

HAProxy checks the body limit on ``Content-Length``; a body without one (``Transfer-Encoding: chunked``) is
sent through the activator, which counts it as it reads. Latencies on this path are HAProxy's whole
milliseconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from .client_limits import ClientLimits

ACTIVATOR = "act"
LOG_BATCH_SECONDS = 0.02  # the request log is read at most this often (lines wait in HAProxy's ring)
LOG_RING_BYTES = 1024 * 1024


class HAProxy:
    def __init__(
        self,
        *,
        run_dir: Path,
        host: str,
        port: int,
        activator_port: int,
        max_body: int,
        backends: int = 64,
        servers: int = 10,
        limits: ClientLimits | None = None,
    ):
        self.run_dir = run_dir
        self.limits = limits or ClientLimits()
        self.host, self.port, self.activator_port = host, port, activator_port
        self.max_body = max_body
        self.backends = [f"be_{n}" for n in range(backends)]
        self.servers = [f"s{n}" for n in range(servers)]
        self.free_backends = list(self.backends)
        self.by_key: dict[tuple[str, str], str] = {}  # (namespace, function) -> backend
        self.hosts: dict[str, str] = {}  # backend -> host key in the map
        self.used: dict[str, dict[str, object]] = {}  # backend -> server -> instance (or the last one)
        self.released: dict[tuple[str, str], float] = {}  # (backend, server) -> when last taken out
        self.process: subprocess.Popen | None = None
        self.log_sock: socket.socket | None = None
        self.log_server: asyncio.AbstractServer | None = None
        self.backend_keys: dict[str, tuple[str, str]] = {}  # backend -> (namespace, function)

    @property
    def admin(self) -> Path:
        return self.run_dir / "haproxy.sock"

    def config(self) -> str:
        maps, logs = self.run_dir / "hosts.map", self.run_dir / "haproxy-log.sock"
        timeouts = self.run_dir / "timeouts.map"
        limits = self.limits
        lines = [
            "global",
            f"    stats socket {self.admin} mode 600 level admin",
            "    log ring@hks_log len 1024 format raw local0",
            f"    maxconn {limits.connections_allowed()}",
            "    nbthread 1",  # on a small machine one thread beats two competing with the functions
            "ring hks_log",  # the request log: buffered here, streamed to the daemon (see the module doc)
            "    format raw",
            "    maxlen 1024",
            f"    size {LOG_RING_BYTES}",
            "    timeout connect 5s",
            "    timeout server 3600s",
            f"    server daemon unix@{logs} log-proto octet-count",
            "defaults",
            "    mode http",
            "    log global",
            '    log-format "%b %s %ST %Ta %HM %HPO"',  # method and path (no query) for the request log
            "    timeout connect 5s",
            "    timeout client 3600s",
            "    timeout server 3600s",
            "    timeout queue 3600s",
            # A request head must arrive whole within this (slowloris), an idle kept-alive connection and
            # a half-closed one are let go - see client_limits.py.
            f"    timeout http-request {int(limits.header_timeout * 1000)}ms",
            f"    timeout http-keep-alive {int(limits.keepalive_timeout * 1000)}ms",
            "    timeout client-fin 5s",
            "    retries 3",
            "    option redispatch 1",
            "    retry-on conn-failure",  # only where the request cannot have reached the function
            "    http-reuse always",
            "frontend gateway",
            f"    bind {self.host}:{self.port}",
            # One source address holds at most this many connections; the rest are refused at accept.
            "    stick-table type ipv6 size 100k expire 60s store conn_cur",
            "    tcp-request connection track-sc0 src",
            f"    tcp-request connection reject if {{ sc0_conn_cur gt {limits.max_connections_per_client} }}",
            f"    http-request deny deny_status 413 if {{ req.hdr_val(content-length) gt {self.max_body} }}",
            # Off this machine: marked for the activator, and refused for a cluster-local function's host.
            "    http-request del-header x-hks-external",
            "    http-request set-header x-hks-external 1 unless { src 127.0.0.0/8 ::1 }",
            "    http-request deny deny_status 404 if { req.hdr(x-hks-external) -m found } "
            f"{{ req.hdr(host),lower,field(1,:),map({self.run_dir / 'local_hosts.map'}) -m found }}",
            # A body without a length (chunked) goes through the activator, which counts it as it reads.
            "    use_backend activator if { req.hdr(transfer-encoding) -m found }",
            f"    http-request set-var(txn.be) req.hdr(host),lower,field(1,:),map({maps})",
            "    use_backend %[var(txn.be)] if { var(txn.be) -m found }",
            "    default_backend activator",
            "backend activator",
            f"    server {ACTIVATOR} 127.0.0.1:{self.activator_port}",
        ]
        for backend in self.backends:
            lines += [
                f"backend {backend}",
                "    balance leastconn",
                f"    http-request set-timeout server var(txn.be),map({timeouts},300000)",
                *(f"    server {s} 127.0.0.1:1 disabled" for s in self.servers),
                f"    server {ACTIVATOR} 127.0.0.1:{self.activator_port} backup",
            ]
        return "\n".join(lines) + "\n"

    def start(self, spawn_thread_call: Callable, on_logs: Callable[[list[str]], None]) -> None:
        """Write the config and start haproxy (dies with the daemon: setpriv --pdeathsig); its request log
        lines go to ``on_logs`` in batches."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        for name in ("hosts.map", "timeouts.map", "local_hosts.map"):
            (self.run_dir / name).write_text("")
        (self.run_dir / "haproxy.cfg").write_text(self.config())
        log_path = self.run_dir / "haproxy-log.sock"
        log_path.unlink(missing_ok=True)
        self.log_sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.log_sock.bind(str(log_path))
        os.chmod(log_path, 0o600)
        self.log_sock.listen(8)
        self.log_sock.setblocking(False)
        loop = asyncio.get_running_loop()
        accepting = loop.create_unix_server(lambda: LogStream(on_logs), sock=self.log_sock)
        loop.create_task(accepting).add_done_callback(self._log_server_up)
        argv = ["setpriv", "--pdeathsig", "KILL", "haproxy", "-db", "-f", str(self.run_dir / "haproxy.cfg")]
        with open(self.run_dir / "haproxy.log", "ab") as errors:  # its own warnings, e.g. servers up/down
            self.process = spawn_thread_call(
                lambda: subprocess.Popen(
                    argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=errors
                )
            )

    def _log_server_up(self, task: asyncio.Task) -> None:
        if not task.cancelled() and task.exception() is None:
            self.log_server = task.result()

    async def wait_up(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            with contextlib.suppress(OSError):
                if "Name:" in await self.command("show info"):
                    return
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("haproxy did not start (see haproxy -c -f haproxy.cfg in the data dir)")
            await asyncio.sleep(0.05)

    async def command(self, line: str) -> str:
        reader, writer = await asyncio.open_unix_connection(str(self.admin))
        try:
            writer.write(line.encode() + b"\n")
            await writer.drain()
            return (await reader.read()).decode()
        finally:
            writer.close()

    # Functions and instances ---------------------------------------------------------------------

    async def bind_function(
        self, key: tuple[str, str], host: str, timeout_seconds: int, local_only: bool = False
    ) -> str | None:
        backend = self.by_key.get(key)
        new = backend is None
        if new:
            if not self.free_backends:
                return None  # more functions than slots: the rest are served by the activator
            backend = self.by_key[key] = self.free_backends.pop(0)
            self.backend_keys[backend] = key
            self.used[backend] = {}
            self.hosts[backend] = host
        # The timeout first and without a gap (set, else add), so no request routed here misses it.
        timeouts = self.run_dir / "timeouts.map"
        answer = await self.command(f"set map {timeouts} {backend} {timeout_seconds * 1000}")
        if answer.strip():  # "entry not found"
            await self.command(f"add map {timeouts} {backend} {timeout_seconds * 1000}")
        # cluster-local: refused to clients off this machine (before routing, so also before the map entry)
        local = self.run_dir / "local_hosts.map"
        if local_only:
            if (await self.command(f"set map {local} {host} 1")).strip():
                await self.command(f"add map {local} {host} 1")
        else:
            await self.command(f"del map {local} {host}")
        if new:
            await self.command(f"add map {self.run_dir / 'hosts.map'} {host} {backend}")
        return backend

    async def unbind_function(self, key: tuple[str, str]) -> None:
        backend = self.by_key.pop(key, None)
        if backend is None:
            return
        host = self.hosts.pop(backend)
        self.backend_keys.pop(backend, None)
        await self.command(f"del map {self.run_dir / 'hosts.map'} {host}")
        await self.command(f"del map {self.run_dir / 'local_hosts.map'} {host}")
        for server in list(self.used.pop(backend, {})):
            await self.command(f"set server {backend}/{server} state maint")
        self.free_backends.append(backend)

    async def add_instance(self, key: tuple[str, str], inst, max_conn: int = 0) -> bool:
        backend = self.by_key.get(key)
        if backend is None:
            return False
        # A slot is reused only once the instance it last pointed at has exited (HAProxy keeps idle
        # connections per server slot: re-pointed earlier, a request could reuse one to the old, draining
        # instance and fail as it stops), and the longest-free slot first.
        used = self.used[backend]
        free = [s for s in self.servers if s not in used or _gone(used[s])]
        if not free:
            return False  # more instances than server slots: the extra ones stay out of HAProxy
        server = min(free, key=lambda s: self.released.get((backend, s), 0.0))
        self.used[backend][server] = inst
        inst.haproxy_server = (backend, server)
        await self.command(f"set server {backend}/{server} addr 127.0.0.1 port {inst.port}")
        # Knative's containerConcurrency: a hard per-instance limit, the excess waits in HAProxy's queue.
        await self.command(f"set maxconn server {backend}/{server} {max_conn or 0}")
        await self.command(f"set server {backend}/{server} state ready")
        return True

    async def remove_instance(self, inst) -> None:
        where = getattr(inst, "haproxy_server", None)
        if not where:
            return
        inst.haproxy_server = None
        backend, server = where
        await self.command(f"set server {backend}/{server} state maint")
        self.released[(backend, server)] = time.monotonic()  # the slot stays taken until inst has exited

    def instance_of(self, backend: str, server: str):
        return self.used.get(backend, {}).get(server)

    def key_of(self, backend: str) -> tuple[str, str] | None:
        return self.backend_keys.get(backend)

    async def current_sessions(self) -> dict[tuple[str, str], int]:
        """(backend, server) -> requests in flight, and (backend, "BACKEND") -> requests queued for a free
        server (all at their maxconn), from ``show stat``."""
        if not self.used:
            return {}
        # Only the backends in use (all 64 would be ~770 rows every poll); servers and backend rows (6).
        text = await self.command(";".join(f"show stat {backend} 6 -1" for backend in self.used))
        sessions = {}
        columns: list[str] = []
        for row in text.splitlines():
            if row.startswith("#"):
                columns = row.lstrip("# ").split(",")
                px, sv = columns.index("pxname"), columns.index("svname")
                scur, qcur = columns.index("scur"), columns.index("qcur")
                continue
            fields = row.split(",")
            if columns and len(fields) > max(scur, qcur) and fields[px] in self.used:
                column = qcur if fields[sv] == "BACKEND" else scur
                sessions[(fields[px], fields[sv])] = int(fields[column] or 0)
        return sessions

    def stop(self) -> None:
        if self.log_server is not None:
            self.log_server.close()
        elif self.log_sock is not None:
            self.log_sock.close()
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.run_dir / "haproxy-log.sock")


def _gone(inst) -> bool:
    """Out of rotation and exited: its slot may point at another instance."""
    return inst.haproxy_server is None and inst.exited.is_set()


class HAProxyRouting:
    """Keeps HAProxy's view in step with the supervisor's, and feeds back what only HAProxy sees."""

    def __init__(self, haproxy: HAProxy, supervisor, metrics, *, host_of: Callable[[str, str], str]):
        self.haproxy, self.supervisor, self.metrics = haproxy, supervisor, metrics
        self.host_of = host_of
        self.lock = asyncio.Lock()  # runtime API commands of one change must not interleave with another's

    async def function(self, fn) -> None:
        key = fn.key
        async with self.lock:
            await self.haproxy.bind_function(
                key, self.host_of(*key), fn.spec.timeout_seconds, fn.spec.visibility == "cluster-local"
            )

    async def forget(self, key: tuple[str, str]) -> None:
        async with self.lock:
            await self.haproxy.unbind_function(key)

    async def add(self, fn, inst) -> None:
        async with self.lock:
            if inst.state == "ready" and self.supervisor.functions.get(fn.key) is fn:
                await self.haproxy.add_instance(fn.key, inst, fn.spec.container_concurrency)

    async def remove(self, inst) -> None:
        async with self.lock:
            await self.haproxy.remove_instance(inst)

    async def drain(self, inst, timeout: float) -> None:
        """Out of rotation, then wait until HAProxy has no request in flight on it."""
        where = getattr(inst, "haproxy_server", None)
        await self.remove(inst)
        if not where:
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            sessions = await self.haproxy.current_sessions()
            if not sessions.get(where):
                return
            await asyncio.sleep(0.05)

    async def poll(self, interval: float = 0.1) -> None:
        """In-flight requests per instance, for scaling and idleness."""
        while True:
            await asyncio.sleep(interval)
            with contextlib.suppress(OSError, ValueError):
                sessions = await self.haproxy.current_sessions()
                now = time.monotonic()
                for (backend, server), count in sessions.items():
                    if server == "BACKEND":
                        key = self.haproxy.key_of(backend)
                        fn = self.supervisor.functions.get(key) if key else None
                        if fn is not None:
                            fn.queued = count
                        continue
                    inst = self.haproxy.instance_of(backend, server)
                    if inst is not None:
                        inst.external = count
                        if count:
                            inst.last_used = now
                for fn in list(self.supervisor.functions.values()):
                    if fn.active is not None and (fn.queued or any(i.external for i in fn.active.instances)):
                        self.supervisor.scale_for_demand(fn, fn.active)

    def on_logs(self, lines: list[str]) -> None:
        """Requests HAProxy proxied, one line each: ``<backend> <server> <status> <ms> <method> <path>``."""
        now = time.monotonic()
        for line in lines:
            self._one(line, now)

    def _one(self, line: str, now: float) -> None:
        parts = line.split()
        if len(parts) != 6 or parts[1] == ACTIVATOR or not parts[2].isdigit():
            return  # the activator measures (and logs) what it serves itself
        backend, server, status, millis, method, path = parts
        key = self.haproxy.key_of(backend)
        fn = self.supervisor.functions.get(key) if key else None
        if fn is None:
            return
        inst = self.haproxy.instance_of(backend, server)
        revision = inst.revision if inst is not None else (fn.active.name if fn.active else fn.spec.revision)
        if inst is not None:
            inst.last_used = now
            if status == "504":
                self.supervisor.check_liveness(inst)
        labels = self.metrics.revision_labels(fn.spec.namespace, fn.spec.name, revision)
        self.metrics.observe_request(labels, int(status), int(millis or 0) / 1000)
        self.supervisor.logs.get(fn.spec.namespace, fn.spec.name).request(
            method=method,
            path=path,
            status=int(status),
            millis=float(millis or 0),
            revision=revision,
            instance=getattr(inst, "id", ""),
        )


class LogStream(asyncio.Protocol):
    """HAProxy's ring forwarding its log lines, octet-counted (``<length> <line>``), handed over in batches.

    After each read the connection is paused for ``LOG_BATCH_SECONDS``: lines arriving meanwhile wait in the
    socket and in HAProxy's ring, and the next read takes them all at once.
    """

    MAX_PENDING = 64 * 1024  # no frame is this long (maxlen 1024): anything else is not HAProxy's ring

    def __init__(self, on_lines: Callable[[list[str]], None], pause: float = LOG_BATCH_SECONDS):
        self.on_lines, self.pause = on_lines, pause
        self.buffer = b""
        self.transport: asyncio.Transport | None = None
        self.resume: asyncio.TimerHandle | None = None

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        buffer, lines, pos = self.buffer + data, [], 0
        while True:
            space = buffer.find(b" ", pos, pos + 8)
            if space < 0:
                break
            length = buffer[pos:space]
            if not length.isdigit():
                self.transport.close()  # not a frame: stop reading rather than guess
                return
            end = space + 1 + int(length)
            if end > len(buffer):
                break
            lines.append(buffer[space + 1 : end].decode(errors="replace").strip())
            pos = end
        self.buffer = buffer[pos:]
        if len(self.buffer) > self.MAX_PENDING:
            self.transport.close()
            return
        if lines:
            self.on_lines(lines)
        if self.pause > 0 and not self.transport.is_closing():
            self.transport.pause_reading()
            self.resume = asyncio.get_running_loop().call_later(self.pause, self._resume)

    def _resume(self) -> None:
        self.resume = None
        if not self.transport.is_closing():
            self.transport.resume_reading()

    def connection_lost(self, exc) -> None:
        if self.resume is not None:
            self.resume.cancel()
