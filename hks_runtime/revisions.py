"""What the supervisor holds, as plain state its parts share: functions, their revisions, their instances.

A function has at most one revision taking traffic (``active``) and one being rolled out (``pending``);
revisions it replaced drain in ``retired``. ``SupervisorState`` is the one object the supervisor, the
instance lifecycle, the autoscaler and the pre-warm pool are given (as uvicorn passes its ``ServerState``),
so none of them reaches into another's attributes.

A leaf: of this package it imports only ``instances``, ``quotas`` and ``spec``.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from .instances import READY, STARTING, Instance
from .quotas import ProjectQuotas
from .spec import FunctionSpec

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
        self.low_since: float | None = None  # since when the demand fits in one instance fewer
        self.queued = 0  # requests HAProxy holds for it (every instance at its container concurrency)
        # CPU seconds of its instances that have exited, and how many of them had no figure
        self.cpu_seconds = 0.0
        self.cpu_unmeasured = 0
        self.changed = asyncio.Event()

    @property
    def key(self) -> tuple[str, str]:
        return (self.spec.namespace, self.spec.name)

    def notify(self) -> None:
        self.changed.set()
        self.changed = asyncio.Event()

    def revisions(self) -> list[RevisionState]:
        return [r for r in (self.active, self.pending, *self.retired) if r is not None]

    @property
    def live(self) -> int:
        """Its instances starting or ready, in the revision serving and the one being rolled out."""
        return sum(len(r.live) for r in (self.active, self.pending) if r is not None)


@dataclass
class SupervisorState:
    """The functions the daemon runs and what every part of the supervisor needs to see of the daemon."""

    functions: dict[tuple[str, str], FunctionState] = field(default_factory=dict)
    closing: bool = False  # the daemon is shutting down: start nothing new
    http: aiohttp.ClientSession | None = None  # probes, and the Python gateway's upstream requests
    router: Any = None  # haproxy.HAProxyRouting when HAProxy is the data path
    callers: Any = None  # gateway.SandboxCallers: one listener per sandbox with a network of its own
    quotas: ProjectQuotas = field(default_factory=ProjectQuotas)  # instances per project (quotas.py)

    def current(self, fn: FunctionState) -> bool:
        """Whether ``fn`` is still the function the daemon runs under its name (not deleted, not replaced)."""
        return self.functions.get(fn.key) is fn

    def function_of(self, inst: Instance) -> FunctionState | None:
        return self.functions.get((inst.namespace, inst.function))
