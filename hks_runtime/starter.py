"""What starting any sandboxed instance needs, shared by cold starts (lifecycle.py) and standbys (prewarm.py):
the runtime layers (built once per runtime), the gateway listener a sandbox with a network of its own calls
other functions through, a profile's limits, the project's cgroup its instances share, and the two
executors.

Blocking calls into the sandbox (terminate, cleanup, building a runtime layer, filling a slot, builds) go to
``blocking``, a thread pool; ``spawn`` goes to ``spawner``, one dedicated long-lived thread: bwrap's
``--die-with-parent`` is PR_SET_PDEATHSIG, which fires when the *thread* that forked the child exits, so that
thread must live as long as the daemon. Off the loop, so a slow spawn (cgroup setup on a loaded machine)
never stalls the gateway.
"""

from __future__ import annotations

import asyncio
import dataclasses
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from . import builder, sandbox
from .logstore import LogStore
from .revisions import FunctionState, SupervisorState


class SandboxStarter:
    def __init__(
        self, *, state: SupervisorState, layers_dir: Path, logs: LogStore, project_memory_mb: int = 0
    ):
        self.state = state
        self.layers_dir = layers_dir
        self.logs = logs
        # What a project's function instances may use together (their cgroup, sandbox.Group): by default
        # half the machine, so one tenant alone can never take all of it. 0 = the default.
        self.project_memory_mb = project_memory_mb or sandbox.host_memory_mb() // 2
        self.blocking = ThreadPoolExecutor(max_workers=16, thread_name_prefix="hks-blocking")
        self.spawner = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hks-spawn")
        self.layers: dict[str, Path] = {}
        self.layer_lock = asyncio.Lock()

    async def run_blocking(self, call, *args):
        return await asyncio.get_running_loop().run_in_executor(self.blocking, call, *args)

    async def spawn(self, spec: sandbox.SandboxSpec, *, stdin: int | None = subprocess.DEVNULL):
        return await asyncio.get_running_loop().run_in_executor(
            self.spawner, lambda: sandbox.spawn(spec, stdin=stdin)
        )

    async def layer(self, runtime: str, fn: FunctionState | None = None) -> Path:
        """The runtime's layer, built on first use (its build log goes to ``fn``'s log, if given)."""
        if runtime in self.layers:
            return self.layers[runtime]
        async with self.layer_lock:
            if runtime not in self.layers:
                log = (
                    self.logs.get(fn.spec.namespace, fn.spec.name)
                    if fn
                    else self.logs.get("_runtime", "layers")
                )
                self.layers[runtime] = await self.run_blocking(
                    builder.ensure_layer,
                    runtime,
                    self.layers_dir,
                    lambda line: log.write("runtime-layer", "system", line),
                )
        return self.layers[runtime]

    async def open_caller_port(self, profile: str) -> int | None:
        """The gateway listener a sandbox of this profile calls other functions through (None: no network)."""
        if self.state.callers is None or not sandbox.isolated_network(profile):
            return None
        return await self.state.callers.open()

    async def close_caller_port(self, port: int | None) -> None:
        if port and self.state.callers is not None:
            await self.state.callers.close(port)

    def limits(self, profile: str, memory_mb: int, cpu_millicores: int) -> sandbox.Limits:
        base = sandbox.PROFILES[profile]
        if profile == "restricted":  # agent code: the profile's caps are a ceiling
            memory_mb, cpu_millicores = (
                min(base.memory_mb, memory_mb),
                min(base.cpu_millicores, cpu_millicores),
            )
        return dataclasses.replace(base, memory_mb=memory_mb, cpu_millicores=cpu_millicores)

    def group(self, namespace: str) -> sandbox.Group | None:
        """The cgroup a project's function instances (and its standbys) share, bounding their memory."""
        return sandbox.Group(namespace, self.project_memory_mb) if namespace else None

    def shutdown(self) -> None:
        self.blocking.shutdown(wait=False, cancel_futures=True)
        self.spawner.shutdown(wait=False, cancel_futures=True)
