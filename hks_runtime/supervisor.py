"""Revisions, instances and scaling: a small Knative autoscaler + activator for one machine.

Concurrency model: everything runs on the daemon's event loop (blocking sandbox calls go to threads, see
starter.py). The supervisor owns the desired state and answers the control API and the gateway; its
collaborators are given the one shared ``SupervisorState`` (revisions.py) and call each other only through
public methods: the ``InstanceLifecycle`` (lifecycle.py) starts and stops instances, the ``Autoscaler``
(autoscaler.py) decides how many, the ``PrewarmPool`` (prewarm.py) keeps standbys, and the
``SandboxStarter`` (starter.py) holds what every start needs.

A function has at most one revision taking traffic (``active``) and one being rolled out (``pending``).
The pending one takes traffic once one of its instances answers ``/health/readiness``; the previous
revision's instances then drain (finish their in-flight requests) and stop, so a redeploy fails no request.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable
from pathlib import Path

import aiohttp

from . import background
from .autoscaler import Autoscaler
from .instances import DRAINING, READY, Instance, cleanup, safe
from .lifecycle import InstanceLifecycle
from .logstore import LogStore
from .metrics import InstanceUsage, Metrics
from .prewarm import PrewarmPool, Shape
from .revisions import START_ATTEMPTS, FunctionState, RevisionState, SupervisorState, Unavailable
from .spec import FunctionSpec
from .starter import SandboxStarter


class Supervisor:
    def __init__(
        self,
        *,
        layers_dir: Path,
        logs: LogStore,
        metrics: Metrics,
        idle_seconds: float,
        on_change: Callable[[], None] = lambda: None,
        pool_size: int = 1,
        slots_dir: Path | None = None,
        pool_recent_shapes: int = 2,
        project_memory_mb: int = 0,
    ):
        self.logs = logs
        self.metrics = metrics
        self.on_change = on_change  # persists state
        self.state = SupervisorState()
        self.functions = self.state.functions
        self.starter = SandboxStarter(
            state=self.state, layers_dir=layers_dir, logs=logs, project_memory_mb=project_memory_mb
        )
        self.blocking, self.spawner = self.starter.blocking, self.starter.spawner
        self.prewarm = PrewarmPool(
            state=self.state,
            starter=self.starter,
            slots_dir=slots_dir or layers_dir.parent / "slots",
            size=pool_size,
            recent=pool_recent_shapes,
        )
        self.lifecycle = InstanceLifecycle(
            state=self.state,
            starter=self.starter,
            prewarm=self.prewarm,
            logs=logs,
            metrics=metrics,
            on_promote=on_change,
        )
        self.autoscaler = Autoscaler(
            state=self.state, lifecycle=self.lifecycle, logs=logs, idle_seconds=idle_seconds
        )
        self.lifecycle.on_room = self.autoscaler.resume
        self._tick: asyncio.Task | None = None

    @property
    def session(self) -> aiohttp.ClientSession | None:
        """The HTTP client the gateway forwards requests with (the same one the probes use)."""
        return self.state.http

    async def start(self) -> None:
        self.state.http = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, force_close=False), auto_decompress=False
        )
        self._tick = asyncio.create_task(self.autoscaler.run())

    # Desired state -------------------------------------------------------------------------------

    def apply(self, spec: FunctionSpec) -> None:
        self._set_cap(spec.namespace, spec.project_max_instances)
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
        if self.state.router is not None:
            background.start(self.state.router.function(fn))

    def _set_cap(self, namespace: str, cap: int) -> None:
        """The project's instance quota: raised, it lets held functions start; lowered, it stops no running
        instance."""
        if self.state.quotas.set_cap(namespace, cap):
            asyncio.get_running_loop().call_soon(self.autoscaler.resume, namespace)

    def set_quota(self, namespace: str, cap: int) -> None:
        """The portal changed the project's instance quota: its functions' specs say so from now on, so the
        state file keeps it across a restart and the latest spec stays the one that counts."""
        for fn in self.functions.values():
            if fn.spec.namespace == namespace:
                fn.spec = dataclasses.replace(fn.spec, project_max_instances=cap)
        self._set_cap(namespace, cap)
        self.on_change()

    def keep_pool(self) -> None:
        self.prewarm.wanted({Shape.of(fn.spec) for fn in self.functions.values()})

    def restore(self, spec: FunctionSpec, latest_ready: str) -> None:
        """After a daemon restart: a revision that was ready comes back at zero instances (plus min-scale)."""
        self._set_cap(spec.namespace, spec.project_max_instances)
        fn = self.functions[(spec.namespace, spec.name)] = FunctionState(spec, latest_ready)
        if latest_ready == spec.revision:
            fn.active = RevisionState(spec)
            self.lifecycle.ensure_min_scale(fn)
        else:
            self._roll_out(fn, spec)

    def _update_in_place(self, fn: FunctionState, spec: FunctionSpec) -> None:
        fn.spec = spec
        for rev in fn.revisions():
            if rev.name == spec.revision:
                rev.spec = spec
        if fn.pending and fn.pending.start_error and not fn.pending.live:
            fn.pending.attempts, fn.pending.start_error = 0, ""  # applying again retries a failed rollout
            self.lifecycle.start(fn, fn.pending)
        self.lifecycle.ensure_min_scale(fn)
        fn.notify()

    def _roll_out(self, fn: FunctionState, spec: FunctionSpec) -> None:
        fn.spec = spec
        if fn.pending is not None:
            self.lifecycle.retire(fn, fn.pending)
        if fn.active is not None and fn.active.name == spec.revision:
            self.lifecycle.retire(fn, fn.active)  # same name, new template: replace it like a new revision
            fn.active = None
        fn.pending = RevisionState(spec)
        fn.crashes = 0
        fn.next_start_at = 0.0
        for _ in range(max(1, spec.min_scale)):
            self.lifecycle.start(fn, fn.pending)
        fn.notify()

    async def delete(self, namespace: str, name: str) -> bool:
        return (await self.delete_measured(namespace, name))[0]

    async def delete_measured(self, namespace: str, name: str) -> tuple[bool, float | None]:
        """Delete the function: (whether it existed, the CPU seconds its instances used over its life -
        None when one of them had no figure)."""
        fn = self.functions.pop((namespace, name), None)
        if fn is None:
            return False, None
        if fn.start_timer:
            fn.start_timer.cancel()
        instances = [inst for rev in fn.revisions() for inst in rev.instances]
        stops = [self.lifecycle.stop(inst, drain=False) for inst in instances]
        for rev in fn.revisions():
            self.lifecycle.forget_metrics(fn, rev)
        fn.notify()
        await asyncio.gather(*stops, return_exceptions=True)
        exits = [asyncio.ensure_future(inst.exited.wait()) for inst in instances if inst.proc is not None]
        if exits:  # their exit watchers add up their CPU (lifecycle._exited)
            await asyncio.wait(exits, timeout=10)
            for waiting in exits:
                waiting.cancel()
        self.logs.remove(namespace, name)
        self.on_change()
        self.keep_pool()
        if self.state.router is not None:
            await self.state.router.forget((namespace, name))
        if fn.cpu_unmeasured or any(not inst.exited.is_set() for inst in instances if inst.proc is not None):
            return True, None
        return True, round(fn.cpu_seconds, 6)

    # Status --------------------------------------------------------------------------------------

    def message(self, fn: FunctionState) -> str:
        """Why the function does not run as its spec asks: a start that failed, or its project's quota."""
        if fn.pending is not None and fn.pending.start_error:
            return f"revision {fn.pending.name} failed to start: {fn.pending.start_error}"
        if fn.active is not None and fn.active.start_error:
            return fn.active.start_error
        if self.state.quotas.is_held(fn):
            return self.state.quotas.message(fn)
        return ""

    def status(self, fn: FunctionState) -> dict:
        message = self.message(fn)
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
                            safe(inst.proc.cpu_seconds),
                            safe(inst.proc.memory_bytes),
                        )

    # Requests (the activator) --------------------------------------------------------------------

    async def acquire(self, fn: FunctionState) -> Instance:
        """An instance to send one request to, starting one (and waiting for it) when needed."""
        fn.waiting += 1
        try:
            while True:
                if not self.state.current(fn) or self.state.closing:
                    raise Unavailable("the function was deleted")
                rev = fn.active
                if rev is None and fn.pending is not None and fn.pending.start_error and not fn.pending.live:
                    raise Unavailable(f"revision {fn.pending.name} failed to start: {fn.pending.start_error}")
                if rev is not None:
                    inst = rev.pick()
                    self.autoscaler.scale_for_demand(fn, rev)
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
            background.start(self.lifecycle.terminate(inst))
        fn = self.state.function_of(inst)
        if fn is not None:
            fn.notify()

    def scale_for_demand(self, fn: FunctionState, rev: RevisionState) -> None:
        """Start instances for the demand HAProxy reports (haproxy.py), as the activator does for its own."""
        self.autoscaler.scale_for_demand(fn, rev)

    def check_liveness(self, inst: Instance) -> None:
        """After a request timed out on it: replace the instance if its liveness probe fails."""
        self.autoscaler.check_liveness(inst)

    async def close(self) -> None:
        """Stop every instance (process group and cgroup), leaving no orphan."""
        self.state.closing = True
        if self._tick is not None:
            self._tick.cancel()
        await self.prewarm.close()
        stops = [
            self.lifecycle.stop(i, drain=False)
            for fn in self.functions.values()
            for rev in fn.revisions()
            for i in rev.instances
        ]
        await asyncio.gather(*stops, return_exceptions=True)
        for fn in self.functions.values():
            for rev in fn.revisions():
                for inst in rev.instances:
                    if inst.proc is not None:
                        cleanup(inst)
        if self.state.http is not None:
            await self.state.http.close()
        self.starter.shutdown()
