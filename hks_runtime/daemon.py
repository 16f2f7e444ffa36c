"""The runtime daemon: control API + gateway + supervisor on one event loop.

``Daemon(...).run()`` serves until SIGTERM/SIGINT, then stops every instance (no orphan is left: each
sandbox is also started with ``--die-with-parent``) and persists its state for the next start.
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import socket
import sys
from dataclasses import dataclass
from pathlib import Path

import uvloop
from aiohttp import web

from . import background, sandbox
from .client_limits import ClientLimits, guarded
from .control import ControlApi
from .gateway import Gateway, SandboxCallers
from .haproxy import HAProxy, HAProxyRouting
from .logstore import LogStore
from .metrics import Metrics
from .sessions import SessionManager
from .statefile import StateFile
from .supervisor import Supervisor

log = logging.getLogger("hks_runtime")


@dataclass
class Options:
    data_dir: Path
    token: str
    host: str = "127.0.0.1"
    control_port: int = 8070
    gateway_port: int = 8080
    domain: str = "localhost"
    idle_seconds: float = 90.0  # Knative: 60 s stable window + 30 s scale-to-zero grace period
    max_body_bytes: int = 10 * 1024 * 1024
    layers_dir: Path | None = None  # shared runtime layers; default <data_dir>/layers
    pool_size: int = 1  # pre-warmed standbys per function shape in use (0: none)
    pool_recent_shapes: int = 2  # shapes no longer in use that keep their standbys (the latest given up)
    data_path: str = "python"  # "haproxy": HAProxy proxies warm traffic, Python activates (haproxy.py)
    client_limits: ClientLimits = ClientLimits()  # what one client may hold of the gateway
    session_pool_size: int = 2  # pre-started agent sandboxes for sessions, at least (sessions.py)
    session_pool_max: int = 50  # at most, grown toward recent demand (pool_policy.py)
    session_pool_window: float = 300.0  # seconds of demand the pool is sized by
    session_libraries: str = "lazy"  # the agent library layer: eager | lazy (at the first session) | off
    node_pool_size: int = 2  # Node-ready agents started ahead, apart: JavaScript sessions
    execute_pool_size: int = 2  # bare Python kernels started ahead for execute(), at least (oneshot.py;
    # the command line's default is pool_policy.execute_pool_default())
    execute_node_pool_size: int = 2  # bare Node kernels started ahead for JavaScript execute(), at least
    project_memory_mb: int = 0  # a project's function instances together (their cgroup); 0: half the host's


class Daemon:
    def __init__(self, options: Options):
        self.options = options
        self.token = options.token
        self.data_dir = options.data_dir.resolve()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.layers_dir = (options.layers_dir or self.data_dir / "layers").resolve()
        self.sandbox_mode = ""
        self._sandbox_error = ""
        self.logs = LogStore(self.data_dir / "logs")
        self.state = StateFile(self.data_dir / "state.json")
        self.metrics = Metrics(usage=lambda: self.supervisor.usage())
        self.supervisor = Supervisor(
            layers_dir=self.layers_dir,
            logs=self.logs,
            metrics=self.metrics,
            idle_seconds=options.idle_seconds,
            on_change=self.save,
            pool_size=options.pool_size,
            slots_dir=self.data_dir / "slots",
            pool_recent_shapes=options.pool_recent_shapes,
            project_memory_mb=options.project_memory_mb,
        )
        self.sessions = SessionManager(
            spawner=self.supervisor.spawner,
            blocking=self.supervisor.blocking,
            data_dir=self.data_dir,
            layers_dir=self.layers_dir,
            pool_size=options.session_pool_size,
            pool_max=options.session_pool_max,
            pool_window=options.session_pool_window,
            libraries=options.session_libraries,
            node_pool_size=options.node_pool_size,
            execute_pool_size=options.execute_pool_size,
            execute_node_pool_size=options.execute_node_pool_size,
        )
        self.runners: list[web.AppRunner] = []
        self.servers: list[asyncio.Server] = []
        self.haproxy: HAProxy | None = None
        self._poller: asyncio.Task | None = None
        self.control_url = self.gateway_url = ""

    def sandbox_problem(self) -> str:
        return self._sandbox_error

    def _check_sandbox(self) -> None:
        try:
            self.sandbox_mode = sandbox.check_sandbox()
            sandbox.sweep_stale_networks()
        except Exception as exc:  # noqa: BLE001 - SandboxUnavailable or a failing probe: shown, never bypassed
            self._sandbox_error = f"sandbox unavailable: {exc}"
            log.error("%s", self._sandbox_error)
            return
        # A crashed predecessor's sandboxes died with it (--die-with-parent), but not its control groups.
        try:
            removed = sandbox.sweep_stale_cgroups()
        except OSError as exc:
            log.warning("could not sweep stale sandbox cgroups: %s", exc)
        else:
            if removed:
                log.info("removed %d stale sandbox cgroups left by a previous daemon", removed)

    def urls(self, namespace: str, name: str) -> dict[str, str]:
        port = self.gateway_port
        return {
            "url": f"http://{name}.{namespace}.{self.options.domain}:{port}",
            "internal_url": f"http://127.0.0.1:{port}/{namespace}/{name}",
        }

    def save(self) -> None:
        self.state.save(self.supervisor.functions.values())

    async def start(self) -> None:
        self._check_sandbox()
        await self.supervisor.start()
        control = await self._serve(ControlApi(self).app(), self.options.control_port)
        gateway = Gateway(
            self.supervisor, self.metrics, domain=self.options.domain, max_body=self.options.max_body_bytes
        )
        gateway.callers = self.supervisor.state.callers = SandboxCallers(gateway.app())
        await gateway.callers.start()
        gateway_app = gateway.app()
        if self.options.data_path == "haproxy":
            gateway = await self._start_haproxy(await self._serve(gateway_app, 0, host="127.0.0.1"))
        else:  # the Python gateway faces clients itself: it applies the client limits
            gateway = await self._serve(
                gateway_app, self.options.gateway_port, limits=self.options.client_limits
            )
        self.control_port, self.gateway_port = control, gateway
        self.control_url = f"http://{self.options.host}:{control}"
        self.gateway_url = f"http://{self.options.host}:{gateway}"
        if not self._sandbox_error:
            for spec, latest_ready in self.state.load():
                self.supervisor.restore(spec, latest_ready)
            self.save()
            self.supervisor.keep_pool()
            await self.sessions.start()
            if self.supervisor.state.router is not None:
                for fn in self.supervisor.functions.values():
                    await self.supervisor.state.router.function(fn)

    async def _start_haproxy(self, activator_port: int) -> int:
        """HAProxy on the gateway port in front of the Python gateway (now the activator); see haproxy.py."""
        port = self.options.gateway_port or _free_port(self.options.host)
        self.haproxy = HAProxy(
            run_dir=self.data_dir / "haproxy",
            host=self.options.host,
            port=port,
            activator_port=activator_port,
            max_body=self.options.max_body_bytes,
            limits=self.options.client_limits,
        )
        router = HAProxyRouting(
            self.haproxy,
            self.supervisor,
            self.metrics,
            host_of=lambda ns, name: f"{name}.{ns}.{self.options.domain}",
        )
        spawner = self.supervisor.spawner
        self.haproxy.start(lambda call: spawner.submit(call).result(), router.on_logs)
        await self.haproxy.wait_up()
        self.supervisor.state.router = router
        self._poller = asyncio.get_running_loop().create_task(router.poll())
        return port

    async def _serve(
        self, app: web.Application, port: int, host: str | None = None, limits: ClientLimits | None = None
    ) -> int:
        keepalive = {"keepalive_timeout": limits.keepalive_timeout} if limits else {}
        runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=5, **keepalive)
        await runner.setup()
        if limits is not None:
            self.runners.append(runner)
            server = await asyncio.get_running_loop().create_server(
                guarded(runner.server, limits),
                host or self.options.host,
                port,
                backlog=1024,
                reuse_address=True,
            )
            self.servers.append(server)
            return server.sockets[0].getsockname()[1]
        site = web.TCPSite(runner, host or self.options.host, port, backlog=1024, reuse_address=True)
        await site.start()
        self.runners.append(runner)
        return runner.addresses[0][1]

    async def stop(self) -> None:
        for server in self.servers:
            server.close()
        for runner in self.runners:
            await runner.cleanup()
        self.save()
        if self._poller is not None:
            self._poller.cancel()
        await self.sessions.close()
        await self.supervisor.close()
        if self.supervisor.state.callers is not None:
            await self.supervisor.state.callers.cleanup()
        await background.settle(timeout=5)
        if self.haproxy is not None:
            self.haproxy.stop()
        self.logs.close()

    async def serve_forever(self) -> None:
        await self.start()
        print(
            json.dumps(
                {
                    "event": "listening",
                    "control_url": self.control_url,
                    "gateway_url": self.gateway_url,
                    "sandbox": self.sandbox_mode or self._sandbox_error,
                }
            ),
            flush=True,
        )
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        try:
            await stop.wait()
        finally:
            await self.stop()

    def run(self) -> None:
        try:
            uvloop.run(self.serve_forever())
        except KeyboardInterrupt:  # pragma: no cover
            sys.exit(130)


def _free_port(host: str) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]
