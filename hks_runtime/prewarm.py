"""Pre-warmed instances (Fission's pool design): sandboxes started before any function needs them.

A standby is spawned with an empty *slot* dir bound at ``/app`` and its language runtime already loaded
(``instance_command(..., prewarm=True)``); it waits for one line on stdin. A cold start then claims it: the
revision's artifact is hard-linked into the slot (``builder.fill_slot``) and ``{"env": {...}}`` is written
to its stdin, so only the function's own import is left to do. One standby is kept per *shape* in use -
runtime, kind, sandbox profile, memory and CPU - because the sandbox's network and limits are fixed when it
is spawned. A claimed standby is replaced once the claim is done, so the refill never competes with it.

A shape whose last function is gone keeps its standby while it is one of the ``recent`` shapes given up
last: an agent deploys a throwaway function, deletes it and deploys the next, each of the same shape, and
each one should find a standby waiting.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from . import background, builder, identities, sandbox
from .instances import listening_socket
from .revisions import SupervisorState
from .spec import FunctionSpec
from .starter import SandboxStarter


def gateway_env(caller_port: int | None) -> dict[str, str]:
    """How a function with a network of its own calls other functions: the gateway as slirp maps it."""
    return {"HKS_GATEWAY_URL": f"http://10.0.2.2:{caller_port}"} if caller_port else {}


@dataclass(frozen=True)
class Shape:
    runtime: str
    kind: str
    profile: str
    memory_mb: int
    cpu_millicores: int
    project: str = ""  # a standby runs as its project's uid (identities.py), so it serves that project only

    @classmethod
    def of(cls, spec: FunctionSpec) -> Shape:
        return cls(spec.runtime, spec.kind, spec.profile, spec.memory_mb, spec.cpu_millicores, spec.namespace)


@dataclass
class Standby:
    proc: object
    port: int
    slot: Path
    shape: Shape
    caller_port: int | None = None


class PrewarmPool:
    def __init__(
        self,
        *,
        state: SupervisorState,
        starter: SandboxStarter,
        slots_dir: Path,
        size: int = 1,
        recent: int = 2,
    ):
        self.state = state
        self.starter = starter
        self.slots_dir = slots_dir
        self.size = size
        self.recent = recent
        self.ready: dict[Shape, list[Standby]] = {}
        self.filling: dict[Shape, int] = {}
        self.in_use: set[Shape] = set()
        self.given_up: list[Shape] = []  # shapes no longer in use, the most recently given up last

    def wanted(self, shapes: set[Shape]) -> None:
        """Keep standbys for these shapes (the ones in use) and the ``recent`` shapes given up last."""
        if self.size <= 0:
            return
        self.given_up = [s for s in self.given_up if s not in shapes]
        self.given_up += [s for s in self.in_use if s not in shapes]
        self.given_up = self.given_up[-self.recent :] if self.recent > 0 else []
        self.in_use = set(shapes)
        for shape in list(self.ready):
            if shape not in shapes and shape not in self.given_up:
                for standby in self.ready.pop(shape):
                    background.start(self._discard(standby))
        for shape in shapes:
            self.refill(shape)

    def refill(self, shape: Shape) -> None:
        if self.size <= 0 or self.state.closing:
            return
        missing = self.size - len(self.ready.get(shape, [])) - self.filling.get(shape, 0)
        for _ in range(max(0, missing)):
            self.filling[shape] = self.filling.get(shape, 0) + 1
            background.start(self._fill(shape))

    async def _fill(self, shape: Shape) -> None:
        try:
            standby = await self._spawn(shape)
        except Exception:  # noqa: BLE001 - no standby: cold starts fall back to a plain spawn
            return
        finally:
            self.filling[shape] -= 1
        if self.state.closing or (shape not in self.in_use and shape not in self.given_up):
            await self._discard(standby)  # shutting down, or its shape went while it started
            return
        self.ready.setdefault(shape, []).append(standby)

    async def _spawn(self, shape: Shape) -> Standby:
        layer = await self.starter.layer(shape.runtime)
        slot = self.slots_dir / secrets.token_hex(6)
        slot.mkdir(parents=True, mode=0o755)
        identity = identities.project_identity(self.starter.layers_dir, shape.project)
        identities.restrict_to(slot, identity)
        caller_port = await self.starter.open_caller_port(shape.profile)
        sock = listening_socket()
        try:
            argv, env, binds = builder.instance_command(
                runtime=shape.runtime,
                kind=shape.kind,
                artifact_dir=slot,
                layer_dir=layer,
                listen_fd=sock.fileno(),
                prewarm=True,
            )
            spec = sandbox.SandboxSpec(
                argv=argv,
                env={**env, **gateway_env(caller_port)},
                profile=shape.profile,
                limits=self.starter.limits(shape.profile, shape.memory_mb, shape.cpu_millicores),
                ro_binds=binds,
                pass_fds=(sock.fileno(),),
                name=f"pool-{slot.name}",
                gateway_port=caller_port,
                identity=identity,
                group=self.starter.group(shape.project),  # the project it will serve bounds its memory
            )
            proc = await self.starter.spawn(spec, stdin=subprocess.PIPE)
            port = sock.getsockname()[1]
            return Standby(proc=proc, port=port, slot=slot, shape=shape, caller_port=caller_port)
        except BaseException:
            shutil.rmtree(slot, ignore_errors=True)
            await self.starter.close_caller_port(caller_port)
            raise
        finally:
            sock.close()

    def claim(self, spec: FunctionSpec) -> Standby | None:
        """A live standby of this spec's shape, or None."""
        standbys = self.ready.get(Shape.of(spec), [])
        while standbys:
            standby = standbys.pop(0)
            if standby.proc.poll() is None:
                return standby
            background.start(self._discard(standby))
        return None

    async def specialise(self, standby: Standby, spec: FunctionSpec, env: dict[str, str]) -> None:
        """Give a claimed standby its code and environment; it then loads the function and listens."""
        await self.starter.run_blocking(
            lambda: builder.fill_slot(artifact_dir=Path(spec.artifact), slot_dir=standby.slot)
        )
        standby.proc.stdin.write(json.dumps({"env": env}).encode() + b"\n")
        standby.proc.stdin.flush()
        standby.proc.stdin.close()

    async def _discard(self, standby: Standby) -> None:
        with contextlib.suppress(Exception):
            await self.starter.run_blocking(standby.proc.terminate, 1.0)
            await self.starter.run_blocking(standby.proc.cleanup)
        shutil.rmtree(standby.slot, ignore_errors=True)
        await self.starter.close_caller_port(standby.caller_port)

    async def close(self) -> None:
        standbys = [s for items in self.ready.values() for s in items]
        self.ready.clear()
        await asyncio.gather(*(self._discard(s) for s in standbys), return_exceptions=True)


__all__ = ["PrewarmPool", "Shape", "Standby", "gateway_env"]
