"""Instance lifecycle, mixed into the Supervisor: start (spawn or claim a pre-warmed one), readiness,
exit and crash handling with backoff, promotion of a new revision, draining and stopping.

Blocking calls into the sandbox (terminate, cleanup, building a runtime layer) go to a thread pool, and
``spawn`` to one dedicated long-lived thread: bwrap's ``--die-with-parent`` is PR_SET_PDEATHSIG, which fires
when the *thread* that forked the child exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING

import aiohttp

from . import background
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
from .logstore import LinePump
from .pool import Shape, gateway_env
from .spec import FunctionSpec

if TYPE_CHECKING:
    from .supervisor import FunctionState, RevisionState

STARTUP_TIMEOUT = 60.0
START_ATTEMPTS = 3  # a new revision that cannot start is retried this often, then reported failed


def pipe_reader(loop: asyncio.AbstractEventLoop, fd: int):
    """A file object over ``fd`` for ``loop.connect_read_pipe`` that gets ``fd`` closed exactly once.

    uvloop hands the fd to libuv, which closes it when the transport ends, and then closes the file object
    as well. That second close(2) of the same number is harmless only in a single-threaded process: here
    the builder's and spawner's threads open files all the time, and one that got the number in between
    lost its fd ("[Errno 9] Bad file descriptor" in 1 of 150 concurrent agent builds). Under uvloop the file
    object therefore never closes the fd; under asyncio's own loop the transport closes it through the file.
    """
    owned_by_loop = type(loop).__module__.startswith("uvloop")
    return os.fdopen(fd, "rb", buffering=0, closefd=not owned_by_loop)


class InstanceLifecycle:
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
        background.start(self._run(fn, rev, inst))

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
            background.start(self.router.add(fn, inst))
        self._count(fn, rev)
        fn.notify()

    def _runtime_env(self, spec: FunctionSpec) -> dict[str, str]:
        return {"K_SERVICE": spec.name, "K_REVISION": spec.revision, "K_CONFIGURATION": spec.name}

    async def _spawn(self, fn: FunctionState, rev: RevisionState, inst: Instance) -> None:
        spec = rev.spec
        standby = self.prewarm.claim(spec)
        if standby is not None:
            inst.proc, inst.port, inst.slot = standby.proc, standby.port, standby.slot
            inst.caller_port = standby.caller_port
            if self.callers is not None and inst.caller_port:
                self.callers.bind(inst.caller_port, spec.namespace)
            self._attach(fn, inst)
            await self.prewarm.specialise(standby, spec, {**spec.env, **self._runtime_env(spec)})
            return
        layer = await self.layer(spec.runtime, fn)
        inst.caller_port = await self.open_caller_port(spec.profile)
        if inst.caller_port:
            self.callers.bind(inst.caller_port, spec.namespace)
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
                env={**spec.env, **env, **self._runtime_env(spec), **gateway_env(inst.caller_port)},
                profile=spec.profile,
                limits=self.limits(spec.profile, spec.memory_mb, spec.cpu_millicores),
                ro_binds=binds,
                pass_fds=(sock.fileno(),),
                name=f"{spec.namespace}-{inst.id}",
                gateway_port=inst.caller_port,
                identity=self.core.project_identity(self.layers_dir, spec.namespace),
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

    async def open_caller_port(self, profile: str) -> int | None:
        """The gateway listener a sandbox of this profile calls other functions through (None: no network)."""
        if self.callers is None or not self.core.isolated_network(profile):
            return None
        return await self.callers.open()

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
            reader = pipe_reader(loop, os.dup(pipe.fileno()))
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
        if inst.proc is None:  # never spawned: no exit watcher will remove it (nor close its listener)
            inst.state = STOPPED
            if self.callers is not None and inst.caller_port:
                background.start(self.callers.close(inst.caller_port))
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
            background.start(self._stop(inst, drain=False))
        if self.functions.get(fn.key) is fn and rev is fn.pending and rev.attempts < START_ATTEMPTS:
            self._start(fn, rev)
        fn.notify()

    def _exited(self, fn: FunctionState, inst: Instance, code: int | None) -> None:
        was_ready = inst.state in (READY, DRAINING)
        inst.exit_code, inst.state = code, STOPPED
        if self.router is not None and inst.haproxy_server:
            background.start(self.router.remove(inst))
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
        if self.callers is not None and inst.caller_port:
            background.start(self.callers.close(inst.caller_port))
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
            background.start(self._stop(inst, drain=True))
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


def _cleanup(inst: Instance) -> None:
    _safe(inst.proc.cleanup)
    if inst.slot is not None:
        shutil.rmtree(inst.slot, ignore_errors=True)


def _safe(call):
    try:
        return call()
    except Exception:  # noqa: BLE001 - metrics and cleanup must never take the daemon down
        return None
