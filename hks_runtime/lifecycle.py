"""Instance lifecycle: start (spawn or claim a pre-warmed one), readiness, exit and crash handling with
backoff, promotion of a new revision, draining and stopping.

``InstanceLifecycle`` is one of the supervisor's collaborators, given the shared ``SupervisorState``, the
``SandboxStarter`` and the pre-warm pool; the supervisor and the autoscaler call its public methods.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Callable
from pathlib import Path

import aiohttp

from . import background, builder, identities, sandbox
from .instances import (
    DRAINING,
    READY,
    STARTING,
    STOPPED,
    Instance,
    backoff_seconds,
    cleanup,
    listening_socket,
    pipe_file,
    safe,
    watch_exit,
)
from .logstore import LinePump, LogStore
from .metrics import Metrics
from .prewarm import PrewarmPool, Shape, gateway_env
from .revisions import START_ATTEMPTS, FunctionState, RevisionState, SupervisorState
from .spec import FunctionSpec
from .starter import SandboxStarter

STARTUP_TIMEOUT = 60.0


class InstanceLifecycle:
    def __init__(
        self,
        *,
        state: SupervisorState,
        starter: SandboxStarter,
        prewarm: PrewarmPool,
        logs: LogStore,
        metrics: Metrics,
        on_promote: Callable[[], None],
        on_room: Callable[[str], None] = lambda namespace: None,
    ):
        self.state = state
        self.starter = starter
        self.prewarm = prewarm
        self.logs = logs
        self.metrics = metrics
        self.on_promote = on_promote  # a revision became the active one: persist the state
        self.on_room = on_room  # an instance of the namespace is gone: its held functions may start

    def start(self, fn: FunctionState, rev: RevisionState, *, cold: bool = False) -> None:
        """Add one instance to ``rev`` (at once, or after the function's crash backoff), unless its project
        is at its instance quota: then the function waits for a place (``Autoscaler.resume``)."""
        if self.state.closing or not self.state.current(fn):
            return
        delay = fn.next_start_at - time.monotonic()
        if delay > 0:  # crash backoff: one delayed start, which re-checks demand when it fires
            if fn.start_timer is None:
                fn.start_timer = asyncio.get_running_loop().call_later(delay, self._delayed_start, fn, rev)
            return
        if not self.within_quota(fn, rev):
            self._hold(fn)
            return
        inst = Instance.new(fn.spec.namespace, fn.spec.name, rev.name)
        self.state.quotas.add(inst)
        if cold:
            inst.cold_since = time.monotonic()
        rev.instances.append(inst)
        background.start(self._run(fn, rev, inst))

    def within_quota(self, fn: FunctionState, rev: RevisionState) -> bool:
        """Whether one more instance of ``rev`` fits in its project's quota. A rollout's new revision may
        start in place of the instances of the revision it replaces (they stop once it is ready): else a
        project at its quota could never roll out, its old instances waiting for a new one that waits for
        them. So a project runs at most its quota plus one function's instances, and only while that
        function's rollout drains."""
        replaced = len(fn.active.live) if rev is fn.pending and fn.active is not None else 0
        return self.state.quotas.allows(fn.spec.namespace, besides=replaced)

    def _hold(self, fn: FunctionState) -> None:
        quotas = self.state.quotas
        if quotas.hold(fn):  # one line when it starts waiting, not one per request that wanted a start
            self.logs.get(fn.spec.namespace, fn.spec.name).write(
                "-",
                "system",
                f"{quotas.message(fn)}: more instances start as the project's others stop",
                limited=False,
            )
            fn.notify()

    def _forget(self, inst: Instance) -> None:
        """The instance (never spawned) no longer holds a place in its project's quota: offer the place to
        the functions held back, once the caller is done."""
        if self.state.quotas.discard(inst) and not self.state.closing:
            asyncio.get_running_loop().call_soon(self.on_room, inst.namespace)

    def _delayed_start(self, fn: FunctionState, rev: RevisionState) -> None:
        fn.start_timer = None
        if not self.state.current(fn) or rev not in (fn.active, fn.pending):
            return
        if rev is fn.pending or fn.waiting or len(rev.live) < rev.spec.min_scale:
            self.start(fn, rev, cold=not rev.live)

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
        if self.state.router is not None and rev is fn.active:
            background.start(self.state.router.add(fn, inst))
        self.count(fn, rev)
        fn.notify()

    def _runtime_env(self, spec: FunctionSpec) -> dict[str, str]:
        return {"K_SERVICE": spec.name, "K_REVISION": spec.revision, "K_CONFIGURATION": spec.name}

    async def _spawn(self, fn: FunctionState, rev: RevisionState, inst: Instance) -> None:
        spec = rev.spec
        standby = self.prewarm.claim(spec)
        if standby is not None:
            inst.proc, inst.port, inst.slot = standby.proc, standby.port, standby.slot
            inst.cpu_at_claim = safe(standby.proc.cpu_seconds) or 0.0  # its start-up was nobody's
            inst.caller_port = standby.caller_port
            if self.state.callers is not None and inst.caller_port:
                self.state.callers.bind(inst.caller_port, spec.namespace)
            self._attach(fn, inst)
            await self.prewarm.specialise(standby, spec, {**spec.env, **self._runtime_env(spec)})
            return
        layer = await self.starter.layer(spec.runtime, fn)
        inst.caller_port = await self.starter.open_caller_port(spec.profile)
        if inst.caller_port:
            self.state.callers.bind(inst.caller_port, spec.namespace)
        sock = listening_socket()
        try:
            inst.port = sock.getsockname()[1]
            argv, env, binds = builder.instance_command(
                runtime=spec.runtime,
                kind=spec.kind,
                artifact_dir=Path(spec.artifact),
                layer_dir=layer,
                listen_fd=sock.fileno(),
            )
            if self.state.closing or inst.state != STARTING:
                raise RuntimeError("stopped before it started")
            sandbox_spec = sandbox.SandboxSpec(
                argv=argv,
                env={**spec.env, **env, **self._runtime_env(spec), **gateway_env(inst.caller_port)},
                profile=spec.profile,
                limits=self.starter.limits(spec.profile, spec.memory_mb, spec.cpu_millicores),
                ro_binds=binds,
                pass_fds=(sock.fileno(),),
                name=f"{spec.namespace}-{inst.id}",
                gateway_port=inst.caller_port,
                identity=identities.project_identity(self.starter.layers_dir, spec.namespace),
                group=self.starter.group(spec.namespace),
            )
            proc = await self.starter.spawn(sandbox_spec)
        finally:
            sock.close()
        inst.proc = proc
        self._attach(fn, inst)
        if self.state.closing or inst.state != STARTING:  # stopped while it was being spawned
            await self.terminate(inst)
            raise RuntimeError("stopped before it started")

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
            reader = pipe_file(loop, os.dup(pipe.fileno()))
            background.start(loop.connect_read_pipe(lambda w=write: LinePump(w, lambda: None), reader))
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
                async with self.state.http.get(url, timeout=timeout) as resp:
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
        if inst.proc is not None and safe(inst.proc.oom_killed):
            detail += " (out of memory)"
        if inst.stderr_tail:
            detail += ": " + "\n".join(inst.stderr_tail)[-2000:]
        return detail

    def _start_failed(self, fn: FunctionState, rev: RevisionState, inst: Instance, detail: str) -> None:
        if inst.proc is None:  # never spawned: no exit watcher will remove it (nor close its listener)
            inst.state = STOPPED
            self._forget(inst)
            if inst.caller_port:
                background.start(self.starter.close_caller_port(inst.caller_port))
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
            background.start(self.stop(inst, drain=False))
        if self.state.current(fn) and rev is fn.pending and rev.attempts < START_ATTEMPTS:
            self.start(fn, rev)
        fn.notify()

    def _exited(self, fn: FunctionState, inst: Instance, code: int | None) -> None:
        was_ready = inst.state in (READY, DRAINING)
        inst.exit_code, inst.state = code, STOPPED
        if inst.proc is not None:  # the final figure: read when the exit was first seen (sandbox.py)
            cpu = safe(inst.proc.cpu_seconds)
            if cpu is None:
                fn.cpu_unmeasured += 1
            else:
                fn.cpu_seconds += max(0.0, cpu - inst.cpu_at_claim)
        if self.state.router is not None and inst.haproxy_server:
            background.start(self.state.router.remove(inst))
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
                self.count(fn, rev)
        fn.retired = [r for r in fn.retired if r.instances]
        if inst.proc is not None:
            self.starter.blocking.submit(cleanup, inst)
        if inst.caller_port:
            background.start(self.starter.close_caller_port(inst.caller_port))
        freed = self.state.quotas.discard(inst)
        if self.state.current(fn) and not self.state.closing:
            self.ensure_min_scale(fn)  # a crashed function re-takes its own place first
        if freed and not self.state.closing:  # then the functions held back get what is left
            asyncio.get_running_loop().call_soon(self.on_room, inst.namespace)
        fn.notify()

    def _promote(self, fn: FunctionState, rev: RevisionState) -> None:
        old, fn.active, fn.pending = fn.active, rev, None
        fn.latest_ready = rev.name
        fn.crashes = 0
        if old is not None:
            self.retire(fn, old)
        self.on_promote()

    def retire(self, fn: FunctionState, rev: RevisionState) -> None:
        """Drain and stop every instance of a revision that no longer takes traffic. It stays among the
        function's revisions (its artifact in use) while any of them is still running - they are all in
        ``rev.instances`` from the moment they are started - and not at all when none is (scaled to zero)."""
        if rev.instances:
            fn.retired.append(rev)
        for inst in list(rev.instances):
            background.start(self.stop(inst, drain=True))
        self.forget_metrics(fn, rev)

    async def stop(self, inst: Instance, *, drain: bool) -> None:
        """Take the instance out of the routing and stop it (with ``drain``: once its requests finished)."""
        if inst.stopping or not inst.alive:
            return
        inst.stopping = True
        if inst.state != STARTING:
            inst.state = DRAINING
        if self.state.router is not None:
            if drain:
                fn = self.state.function_of(inst)
                await self.state.router.drain(inst, fn.spec.timeout_seconds if fn else 30)
            else:
                await self.state.router.remove(inst)
        if drain and inst.inflight:
            return  # release() terminates it when its last request finishes
        await self.terminate(inst)

    async def terminate(self, inst: Instance) -> None:
        if inst.state == STARTING and inst.proc is None:
            inst.state = STOPPED  # _spawn sees this and gives up
            return
        if inst.proc is not None and not inst.exited.is_set():
            with contextlib.suppress(Exception):
                await self.starter.run_blocking(inst.proc.terminate, 5.0)

    def ensure_min_scale(self, fn: FunctionState) -> None:
        rev = fn.active
        if rev is not None and len(rev.live) < rev.spec.min_scale:
            for _ in range(rev.spec.min_scale - len(rev.live)):
                self.start(fn, rev)

    def count(self, fn: FunctionState, rev: RevisionState) -> None:
        """Publish the revision's ready instances (``kn_revision_pods_count``)."""
        if rev is fn.active or rev is fn.pending:
            self.metrics.set_pods(self._labels(fn, rev), len(rev.ready))

    def forget_metrics(self, fn: FunctionState, rev: RevisionState) -> None:
        self.metrics.forget_revision(self._labels(fn, rev))

    def _labels(self, fn: FunctionState, rev: RevisionState) -> dict[str, str]:
        return self.metrics.revision_labels(fn.spec.namespace, fn.spec.name, rev.name)
