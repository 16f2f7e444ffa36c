"""Revisions, instances and scaling: a small Knative autoscaler + activator for one machine.

Concurrency model: everything here runs on the daemon's event loop; blocking calls into the sandbox
(terminate, cleanup, building a runtime layer) go to a thread pool, and ``spawn`` to one dedicated
long-lived thread: bwrap's ``--die-with-parent`` is PR_SET_PDEATHSIG, which fires when the *thread* that
forked the child exits.

A function has at most one revision taking traffic (``active``) and one being rolled out (``pending``).
The pending one takes traffic once one of its instances answers ``/health/readiness``; the previous
revision's instances then drain (finish their in-flight requests) and stop, so a redeploy fails no request.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import math
import os
import shutil
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import aiohttp

from .instances import (
    DRAINING,
    READY,
    STARTING,
    STOPPED,
    Instance,
    backoff_seconds,
    listening_socket,
    watch_exit,
)
from .logstore import LinePump, LogStore
from .metrics import InstanceUsage, Metrics
from .pool import Pool, Shape
from .spec import FunctionSpec

STARTUP_TIMEOUT = 60.0
LIVENESS_TIMEOUT = 3.0
START_ATTEMPTS = 3  # a new revision that cannot start is retried this often, then reported failed


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


class Supervisor:
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
    ):
        self.core = core
        self.layers_dir = layers_dir
        self.logs = logs
        self.metrics = metrics
        self.idle_seconds = idle_seconds
        self.on_change = on_change  # persists state
        self.functions: dict[tuple[str, str], FunctionState] = {}
        self.pool = ThreadPoolExecutor(max_workers=16, thread_name_prefix="hks-runtime")
        # One long-lived thread forks every sandbox: bwrap's --die-with-parent (PR_SET_PDEATHSIG) fires when
        # the forking *thread* exits, so it must live as long as the daemon; off the loop so a slow spawn
        # (cgroup setup on a loaded machine) never stalls the gateway.
        self.spawner = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hks-spawn")
        self.layers: dict[str, Path] = {}
        self.layer_lock = asyncio.Lock()
        self.session: aiohttp.ClientSession | None = None
        self.closing = False
        self.router = None  # haproxy.HAProxyRouting when HAProxy is the data path
        self.prewarm = Pool(self, slots_dir or layers_dir.parent / "slots", pool_size)

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
            asyncio.get_running_loop().create_task(self.router.function(fn))

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
            asyncio.get_running_loop().create_task(self._terminate(inst))
        fn = self.functions.get((inst.namespace, inst.function))
        if fn is not None:
            fn.notify()

    def check_liveness(self, inst: Instance) -> None:
        """After a request timed out on it: an instance that no longer answers ``/health/liveness`` (a busy
        loop, a deadlock) is replaced, as Kubernetes' liveness probe would do."""
        if inst.state == READY and not inst.probing:
            inst.probing = True
            asyncio.get_running_loop().create_task(self._probe_liveness(inst))

    async def _probe_liveness(self, inst: Instance) -> None:
        try:
            timeout = aiohttp.ClientTimeout(total=LIVENESS_TIMEOUT)
            async with self.session.get(f"{inst.base_url}/health/liveness", timeout=timeout) as resp:
                await resp.read()
                if resp.status < 500:
                    return
        except (aiohttp.ClientError, TimeoutError):
            pass
        finally:
            inst.probing = False
        if inst.state != READY:
            return
        self.logs.get(inst.namespace, inst.function).write(
            inst.id, "system", "liveness probe failed after a request timeout: restarting", limited=False
        )
        inst.state = DRAINING  # no new requests; the in-flight ones are the stuck ones
        await self._stop(inst, drain=False)

    def scale_for_demand(self, fn: FunctionState, rev: RevisionState) -> None:
        demand = sum(i.inflight + i.external for i in rev.instances) + fn.waiting + fn.queued
        target = rev.spec.target_concurrency
        if rev.spec.container_concurrency:  # a hard limit below the target caps it, as on Knative
            target = min(target, rev.spec.container_concurrency)
        desired = min(rev.spec.max_scale, max(1, math.ceil(demand / target)))
        if len(rev.live) < desired:
            self._start(fn, rev, cold=not rev.live)

    # Instances -----------------------------------------------------------------------------------

    def _start(self, fn: FunctionState, rev: RevisionState, *, cold: bool = False) -> None:
        if self.closing or self.functions.get(fn.key) is not fn:
            return
        delay = fn.next_start_at - time.monotonic()
        if delay > 0:  # crash backoff: one delayed start, which re-checks demand when it fires
            if fn.start_timer is None:
                fn.start_timer = asyncio.get_running_loop().call_later(delay, self._delayed_start, fn, rev)
            return
        inst = Instance.new(fn.spec.namespace, fn.spec.name, rev.name)
        if cold:
            inst.cold_since = time.monotonic()
        rev.instances.append(inst)
        asyncio.get_running_loop().create_task(self._run(fn, rev, inst))

    def _delayed_start(self, fn: FunctionState, rev: RevisionState) -> None:
        fn.start_timer = None
        if self.functions.get(fn.key) is not fn or rev not in (fn.active, fn.pending):
            return
        if rev is fn.pending or fn.waiting or len(rev.live) < rev.spec.min_scale:
            self._start(fn, rev, cold=not rev.live)

    async def _run(self, fn: FunctionState, rev: RevisionState, inst: Instance) -> None:
        log = self.logs.get(fn.spec.namespace, fn.spec.name)
        try:
            await self._spawn(fn, rev, inst)
            await self._wait_ready(inst, rev.spec)
        except Exception as exc:  # noqa: BLE001 - any failure to start is reported on the revision
            detail = str(exc) or type(exc).__name__
            log.write(inst.id, "system", f"instance failed to start: {detail}", limited=False)
            self._start_failed(fn, rev, inst, detail)
            return
        finally:
            if inst.slot is not None:  # it came from the pool: start its replacement now, not during it
                self.prewarm.refill(Shape.of(rev.spec))
        inst.state = READY
        inst.last_used = time.monotonic()
        rev.start_error = ""
        took = time.monotonic() - inst.started_at
        how = "pre-warmed, " if inst.slot is not None else ""
        log.write(inst.id, "system", f"instance ready in {took:.3f}s ({how}port {inst.port})", limited=False)
        if inst.cold_since is not None:
            self.metrics.observe_cold_start(self._labels(fn, rev), time.monotonic() - inst.cold_since)
        if rev is fn.pending:
            self._promote(fn, rev)
        if self.router is not None and rev is fn.active:
            asyncio.get_running_loop().create_task(self.router.add(fn, inst))
        self._count(fn, rev)
        fn.notify()

    def _runtime_env(self, spec: FunctionSpec) -> dict[str, str]:
        return {"K_SERVICE": spec.name, "K_REVISION": spec.revision, "K_CONFIGURATION": spec.name}

    async def _spawn(self, fn: FunctionState, rev: RevisionState, inst: Instance) -> None:
        spec = rev.spec
        standby = self.prewarm.claim(spec)
        if standby is not None:
            inst.proc, inst.port, inst.slot = standby.proc, standby.port, standby.slot
            self._attach(fn, inst)
            await self.prewarm.specialise(standby, spec, {**spec.env, **self._runtime_env(spec)})
            return
        layer = await self.layer(spec.runtime, fn)
        sock = listening_socket()
        try:
            inst.port = sock.getsockname()[1]
            argv, env, binds = self.core.instance_command(
                runtime=spec.runtime,
                kind=spec.kind,
                artifact_dir=Path(spec.artifact),
                layer_dir=layer,
                listen_fd=sock.fileno(),
            )
            if self.closing or inst.state != STARTING:
                raise RuntimeError("stopped before it started")
            sandbox_spec = self.core.SandboxSpec(
                argv=argv,
                env={**spec.env, **env, **self._runtime_env(spec)},
                profile=spec.profile,
                limits=self.limits(spec.profile, spec.memory_mb, spec.cpu_millicores),
                ro_binds=binds,
                pass_fds=(sock.fileno(),),
                name=f"{spec.namespace}-{inst.id}",
            )
            proc = await asyncio.get_running_loop().run_in_executor(
                self.spawner, self.core.spawn, sandbox_spec
            )
        finally:
            sock.close()
        inst.proc = proc
        self._attach(fn, inst)
        if self.closing or inst.state != STARTING:  # stopped while it was being spawned
            await self._terminate(inst)
            raise RuntimeError("stopped before it started")

    def limits(self, profile: str, memory_mb: int, cpu_millicores: int):
        base = self.core.PROFILES[profile]
        if profile == "restricted":  # agent code: the profile's caps are a ceiling
            memory_mb, cpu_millicores = (
                min(base.memory_mb, memory_mb),
                min(base.cpu_millicores, cpu_millicores),
            )
        return dataclasses.replace(base, memory_mb=memory_mb, cpu_millicores=cpu_millicores)

    def _attach(self, fn: FunctionState, inst: Instance) -> None:
        loop = asyncio.get_running_loop()
        log = self.logs.get(fn.spec.namespace, fn.spec.name)
        for stream_name in ("stdout", "stderr"):
            pipe = getattr(inst.proc, stream_name, None)
            if pipe is None:
                continue

            def write(text, stream_name=stream_name):
                if stream_name == "stderr":
                    inst.stderr_tail.append(text)
                log.write(inst.id, stream_name, text)

            # Our own copy of the fd: the sandbox's cleanup() closes its pipes, and a closed fd number reused
            # by the next instance's pipe while this transport still watches it would break both.
            reader = os.fdopen(os.dup(pipe.fileno()), "rb", buffering=0)
            loop.create_task(loop.connect_read_pipe(lambda w=write: LinePump(w, lambda: None), reader))
        watch_exit(loop, inst.proc, lambda code: self._exited(fn, inst, code))

    async def _wait_ready(self, inst: Instance, spec: FunctionSpec) -> None:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        url = f"{inst.base_url}/health/readiness"
        while True:
            if inst.exited.is_set() or inst.state != STARTING:
                raise RuntimeError(self._exit_detail(inst))
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise RuntimeError(f"not ready after {STARTUP_TIMEOUT:.0f}s")
            try:
                # The socket is listening already: the request waits in its backlog until the runtime accepts.
                timeout = aiohttp.ClientTimeout(total=min(remaining, 5.0))
                async with self.session.get(url, timeout=timeout) as resp:
                    await resp.read()
                    if resp.status == 200:
                        return
            except (aiohttp.ClientError, TimeoutError):
                pass
            await asyncio.sleep(0.01)

    def _exit_detail(self, inst: Instance) -> str:
        if inst.exit_code is None:
            return "stopped"
        detail = f"exited with code {inst.exit_code}"
        if inst.proc is not None and _safe(inst.proc.oom_killed):
            detail += " (out of memory)"
        if inst.stderr_tail:
            detail += ": " + "\n".join(inst.stderr_tail)[-2000:]
        return detail

    def _start_failed(self, fn: FunctionState, rev: RevisionState, inst: Instance, detail: str) -> None:
        if inst.proc is None:  # never spawned: no exit watcher will remove it
            inst.state = STOPPED
            with contextlib.suppress(ValueError):
                rev.instances.remove(inst)
        if inst.stopping:  # stopped on purpose while starting (deleted, replaced): not the code's fault
            fn.notify()
            return
        rev.start_error = detail
        rev.attempts += 1
        fn.crashes += 1
        fn.next_start_at = time.monotonic() + backoff_seconds(fn.crashes)
        if inst.alive:
            asyncio.get_running_loop().create_task(self._stop(inst, drain=False))
        if self.functions.get(fn.key) is fn and rev is fn.pending and rev.attempts < START_ATTEMPTS:
            self._start(fn, rev)
        fn.notify()

    def _exited(self, fn: FunctionState, inst: Instance, code: int | None) -> None:
        was_ready = inst.state in (READY, DRAINING)
        inst.exit_code, inst.state = code, STOPPED
        if self.router is not None and inst.haproxy_server:
            asyncio.get_running_loop().create_task(self.router.remove(inst))
        inst.exited.set()
        if not inst.stopping:
            detail = self._exit_detail(inst)
            self.logs.get(fn.spec.namespace, fn.spec.name).write(
                inst.id, "system", f"instance {detail}", limited=False
            )
            if was_ready:
                fn.crashes += 1
                fn.next_start_at = time.monotonic() + backoff_seconds(fn.crashes)
        for rev in fn.revisions():
            if inst in rev.instances:
                rev.instances.remove(inst)
                self._count(fn, rev)
        fn.retired = [r for r in fn.retired if r.instances]
        if inst.proc is not None:
            self.pool.submit(_cleanup, inst)
        if self.functions.get(fn.key) is fn and not self.closing:
            self._ensure_min_scale(fn)
        fn.notify()

    def _promote(self, fn: FunctionState, rev: RevisionState) -> None:
        old, fn.active, fn.pending = fn.active, rev, None
        fn.latest_ready = rev.name
        fn.crashes = 0
        if old is not None:
            self._retire(fn, old)
        self.on_change()

    def _retire(self, fn: FunctionState, rev: RevisionState) -> None:
        fn.retired.append(rev)
        for inst in list(rev.instances):
            asyncio.get_running_loop().create_task(self._stop(inst, drain=True))
        self.metrics.forget_revision(self._labels(fn, rev))

    async def _stop(self, inst: Instance, *, drain: bool) -> None:
        if inst.stopping or not inst.alive:
            return
        inst.stopping = True
        if inst.state != STARTING:
            inst.state = DRAINING
        if self.router is not None:
            if drain:
                fn = self.functions.get((inst.namespace, inst.function))
                await self.router.drain(inst, fn.spec.timeout_seconds if fn else 30)
            else:
                await self.router.remove(inst)
        if drain and inst.inflight:
            return  # release() terminates it when its last request finishes
        await self._terminate(inst)

    async def _terminate(self, inst: Instance) -> None:
        if inst.state == STARTING and inst.proc is None:
            inst.state = STOPPED  # _spawn sees this and gives up
            return
        if inst.proc is not None and not inst.exited.is_set():
            with contextlib.suppress(Exception):
                await asyncio.get_running_loop().run_in_executor(self.pool, inst.proc.terminate, 5.0)

    def _ensure_min_scale(self, fn: FunctionState) -> None:
        rev = fn.active
        if rev is not None and len(rev.live) < rev.spec.min_scale:
            for _ in range(rev.spec.min_scale - len(rev.live)):
                self._start(fn, rev)

    def _count(self, fn: FunctionState, rev: RevisionState) -> None:
        if rev is fn.active or rev is fn.pending:
            self.metrics.set_pods(self._labels(fn, rev), len(rev.ready))

    def _labels(self, fn: FunctionState, rev: RevisionState) -> dict[str, str]:
        return self.metrics.revision_labels(fn.spec.namespace, fn.spec.name, rev.name)

    async def layer(self, runtime: str, fn: FunctionState | None = None) -> Path:
        if runtime in self.layers:
            return self.layers[runtime]
        async with self.layer_lock:
            if runtime not in self.layers:
                log = (
                    self.logs.get(fn.spec.namespace, fn.spec.name)
                    if fn
                    else self.logs.get("_runtime", "layers")
                )
                self.layers[runtime] = await asyncio.get_running_loop().run_in_executor(
                    self.pool,
                    self.core.ensure_layer,
                    runtime,
                    self.layers_dir,
                    lambda line: log.write("runtime-layer", "system", line),
                )
        return self.layers[runtime]

    # Scale down ----------------------------------------------------------------------------------

    async def _autoscale_loop(self) -> None:
        tick = max(0.1, min(1.0, self.idle_seconds / 4))
        while True:
            await asyncio.sleep(tick)
            for fn in list(self.functions.values()):
                self._scale_down(fn)

    def _scale_down(self, fn: FunctionState) -> None:
        rev = fn.active
        if rev is None or fn.waiting or fn.queued:
            return
        now = time.monotonic()
        keep = len(rev.live)
        for inst in reversed(rev.ready):  # newest first: load is packed onto the oldest
            if keep <= rev.spec.min_scale:
                break
            if inst.inflight == 0 and inst.external == 0 and now - inst.last_used >= self.idle_seconds:
                keep -= 1
                self.logs.get(fn.spec.namespace, fn.spec.name).write(
                    inst.id, "system", f"scaling down: idle for {self.idle_seconds:g}s", limited=False
                )
                asyncio.get_running_loop().create_task(self._stop(inst, drain=True))
                self._count(fn, rev)

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
        self.pool.shutdown(wait=False, cancel_futures=True)
        self.spawner.shutdown(wait=False, cancel_futures=True)


def _cleanup(inst: Instance) -> None:
    _safe(inst.proc.cleanup)
    if inst.slot is not None:
        shutil.rmtree(inst.slot, ignore_errors=True)


def _safe(call):
    try:
        return call()
    except Exception:  # noqa: BLE001 - metrics and cleanup must never take the daemon down
        return None


__all__ = ["Supervisor", "FunctionState", "RevisionState", "Unavailable", "STOPPED"]
