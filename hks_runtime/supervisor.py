"""Revisions, instances and scaling: a small Knative autoscaler + activator for one machine.

Concurrency model: everything runs on the daemon's event loop (blocking sandbox calls go to threads, see
lifecycle.py). The instance lifecycle and the scaling rules are mixins (lifecycle.py, autoscaler.py).

A function has at most one revision taking traffic (``active``) and one being rolled out (``pending``).
The pending one takes traffic once one of its instances answers ``/health/readiness``; the previous
revision's instances then drain (finish their in-flight requests) and stop, so a redeploy fails no request.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import aiohttp

from . import background
from .autoscaler import Autoscaler
from .instances import (
    DRAINING,
    READY,
    STARTING,
    STOPPED,
    Instance,
)
from .lifecycle import START_ATTEMPTS, InstanceLifecycle, _cleanup, _safe
from .logstore import LogStore
from .metrics import InstanceUsage, Metrics
from .prewarm import PrewarmPool, Shape
from .spec import FunctionSpec


class Unavailable(Exception):
    """The function cannot serve this request now (502)."""


class RevisionState:
    def __init__(self, spec: FunctionSpec):
        self.spec = spec
        self.name = spec.revision
        self.instances: list[Instance] = []
        self.start_error = ""
        self.attempts = 0

    @property
    def live(self) -> list[Instance]:
        return [i for i in self.instances if i.state in (STARTING, READY)]

    @property
    def ready(self) -> list[Instance]:
        return [i for i in self.instances if i.state == READY]

    def pick(self) -> Instance | None:
        """First ready instance under the target (packing load so extra instances go idle and scale
        down), else the least loaded one under the hard limit."""
        target, hard = self.spec.target_concurrency, self.spec.container_concurrency
        ready = self.ready
        for inst in ready:
            if inst.inflight < target and (not hard or inst.inflight < hard):
                return inst
        open_ = [i for i in ready if not hard or i.inflight < hard]
        return min(open_, key=lambda i: i.inflight, default=None)


class FunctionState:
    def __init__(self, spec: FunctionSpec, latest_ready: str = ""):
        self.spec = spec
        self.active: RevisionState | None = None
        self.pending: RevisionState | None = None
        self.retired: list[RevisionState] = []
        self.latest_ready = latest_ready
        self.crashes = 0
        self.next_start_at = 0.0
        self.start_timer: asyncio.TimerHandle | None = None
        self.waiting = 0
        self.low_since: float | None = None  # since when the demand fits in one instance fewer
        self.queued = 0  # requests HAProxy holds for it (every instance at its container concurrency)
        self.changed = asyncio.Event()

    @property
    def key(self) -> tuple[str, str]:
        return (self.spec.namespace, self.spec.name)

    def notify(self) -> None:
        self.changed.set()
        self.changed = asyncio.Event()

    def revisions(self) -> list[RevisionState]:
        return [r for r in (self.active, self.pending, *self.retired) if r is not None]


class Supervisor(InstanceLifecycle, Autoscaler):
    def __init__(
        self,
        *,
        core,
        layers_dir: Path,
        logs: LogStore,
        metrics: Metrics,
        idle_seconds: float,
        on_change: Callable[[], None] = lambda: None,
        pool_size: int = 1,
        slots_dir: Path | None = None,
        pool_recent_shapes: int = 2,
    ):
        self.core = core
        self.layers_dir = layers_dir
        self.logs = logs
        self.metrics = metrics
        self.idle_seconds = idle_seconds
        self.on_change = on_change  # persists state
        self.functions: dict[tuple[str, str], FunctionState] = {}
        # Blocking calls off the loop: sandbox terminate and cleanup, runtime layers, builds, filling slots.
        self.blocking = ThreadPoolExecutor(max_workers=16, thread_name_prefix="hks-blocking")
        # One long-lived thread forks every sandbox: bwrap's --die-with-parent (PR_SET_PDEATHSIG) fires when
        # the forking *thread* exits, so it must live as long as the daemon; off the loop so a slow spawn
        # (cgroup setup on a loaded machine) never stalls the gateway.
        self.spawner = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hks-spawn")
        self.layers: dict[str, Path] = {}
        self.layer_lock = asyncio.Lock()
        self.session: aiohttp.ClientSession | None = None
        self.closing = False
        self.router = None  # haproxy.HAProxyRouting when HAProxy is the data path
        self.callers = None  # gateway.SandboxCallers: one listener per sandbox with a network of its own
        self.prewarm = PrewarmPool(
            self, slots_dir or layers_dir.parent / "slots", pool_size, pool_recent_shapes
        )

    async def start(self) -> None:
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, force_close=False), auto_decompress=False
        )
        self._tick = asyncio.create_task(self._autoscale_loop())

    # Desired state -------------------------------------------------------------------------------

    def apply(self, spec: FunctionSpec) -> None:
        fn = self.functions.get((spec.namespace, spec.name))
        if fn is None:
            fn = self.functions[(spec.namespace, spec.name)] = FunctionState(spec)
            self._roll_out(fn, spec)
        elif spec.revision == fn.spec.revision and spec.template() == fn.spec.template():
            self._update_in_place(fn, spec)
        else:
            self._roll_out(fn, spec)
        self.on_change()
        self.keep_pool()
        if self.router is not None:
            background.start(self.router.function(fn))

    def keep_pool(self) -> None:
        self.prewarm.wanted({Shape.of(fn.spec) for fn in self.functions.values()})

    def restore(self, spec: FunctionSpec, latest_ready: str) -> None:
        """After a daemon restart: a revision that was ready comes back at zero instances (plus min-scale)."""
        fn = self.functions[(spec.namespace, spec.name)] = FunctionState(spec, latest_ready)
        if latest_ready == spec.revision:
            fn.active = RevisionState(spec)
            self._ensure_min_scale(fn)
        else:
            self._roll_out(fn, spec)

    def _update_in_place(self, fn: FunctionState, spec: FunctionSpec) -> None:
        fn.spec = spec
        for rev in fn.revisions():
            if rev.name == spec.revision:
                rev.spec = spec
        if fn.pending and fn.pending.start_error and not fn.pending.live:
            fn.pending.attempts, fn.pending.start_error = 0, ""  # applying again retries a failed rollout
            self._start(fn, fn.pending)
        self._ensure_min_scale(fn)
        fn.notify()

    def _roll_out(self, fn: FunctionState, spec: FunctionSpec) -> None:
        fn.spec = spec
        if fn.pending is not None:
            self._retire(fn, fn.pending)
        if fn.active is not None and fn.active.name == spec.revision:
            self._retire(fn, fn.active)  # same name, new template: replace it like a new revision
            fn.active = None
        fn.pending = RevisionState(spec)
        fn.crashes = 0
        fn.next_start_at = 0.0
        for _ in range(max(1, spec.min_scale)):
            self._start(fn, fn.pending)
        fn.notify()

    async def delete(self, namespace: str, name: str) -> bool:
        fn = self.functions.pop((namespace, name), None)
        if fn is None:
            return False
        if fn.start_timer:
            fn.start_timer.cancel()
        stops = [self._stop(inst, drain=False) for rev in fn.revisions() for inst in rev.instances]
        for rev in fn.revisions():
            self.metrics.forget_revision(self._labels(fn, rev))
        fn.notify()
        await asyncio.gather(*stops, return_exceptions=True)
        self.logs.remove(namespace, name)
        self.on_change()
        self.keep_pool()
        if self.router is not None:
            await self.router.forget((namespace, name))
        return True

    # Status --------------------------------------------------------------------------------------

    def status(self, fn: FunctionState) -> dict:
        message = ""
        if fn.pending is not None and fn.pending.start_error:
            message = f"revision {fn.pending.name} failed to start: {fn.pending.start_error}"
        elif fn.active is not None and fn.active.start_error:
            message = fn.active.start_error
        return {
            "exists": True,
            "ready": bool(fn.active) and fn.latest_ready == fn.spec.revision,
            "replicas": len(fn.active.ready) if fn.active else 0,
            "latest_ready_revision": fn.latest_ready,
            "latest_created_revision": fn.spec.revision,
            "message": message,
            "failed": fn.pending is not None and fn.pending.attempts >= START_ATTEMPTS,
            "instances": [
                {"id": i.id, "revision": rev.name, "state": i.state, "inflight": i.inflight, "port": i.port}
                for rev in fn.revisions()
                for i in rev.instances
            ],
        }

    def usage(self):
        for fn in list(self.functions.values()):
            for rev in fn.revisions():
                for inst in rev.instances:
                    if inst.proc is not None and inst.alive:
                        yield InstanceUsage(
                            fn.spec.namespace,
                            fn.spec.name,
                            rev.name,
                            inst.id,
                            _safe(inst.proc.cpu_seconds),
                            _safe(inst.proc.memory_bytes),
                        )

    # Requests (the activator) --------------------------------------------------------------------

    async def acquire(self, fn: FunctionState) -> Instance:
        """An instance to send one request to, starting one (and waiting for it) when needed."""
        fn.waiting += 1
        try:
            while True:
                if self.functions.get(fn.key) is not fn or self.closing:
                    raise Unavailable("the function was deleted")
                rev = fn.active
                if rev is None and fn.pending is not None and fn.pending.start_error and not fn.pending.live:
                    raise Unavailable(f"revision {fn.pending.name} failed to start: {fn.pending.start_error}")
                if rev is not None:
                    inst = rev.pick()
                    self.scale_for_demand(fn, rev)
                    if inst is not None:
                        inst.inflight += 1
                        return inst
                    if rev.start_error and not rev.live and fn.next_start_at > time.monotonic():
                        raise Unavailable(rev.start_error)
                await fn.changed.wait()
        finally:
            fn.waiting -= 1

    def release(self, inst: Instance, *, healthy: bool = True) -> None:
        inst.inflight -= 1
        inst.last_used = time.monotonic()
        if not healthy and inst.state == READY:
            inst.state = DRAINING  # refused connections: let the exit watcher reap it, send nobody else
        if inst.state == DRAINING and inst.inflight == 0 and inst.stopping:
            background.start(self._terminate(inst))
        fn = self.functions.get((inst.namespace, inst.function))
        if fn is not None:
            fn.notify()

    async def close(self) -> None:
        """Stop every instance (process group and cgroup), leaving no orphan."""
        self.closing = True
        if getattr(self, "_tick", None):
            self._tick.cancel()
        await self.prewarm.close()
        stops = [
            self._stop(i, drain=False)
            for fn in self.functions.values()
            for rev in fn.revisions()
            for i in rev.instances
        ]
        await asyncio.gather(*stops, return_exceptions=True)
        for fn in self.functions.values():
            for rev in fn.revisions():
                for inst in rev.instances:
                    if inst.proc is not None:
                        _cleanup(inst)
        if self.session is not None:
            await self.session.close()
        self.blocking.shutdown(wait=False, cancel_futures=True)
        self.spawner.shutdown(wait=False, cancel_futures=True)


__all__ = ["Supervisor", "FunctionState", "RevisionState", "Unavailable", "STOPPED"]
