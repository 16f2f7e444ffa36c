"""Scaling: scale up by concurrency (Knative's target and container concurrency), scale down after the
idle period (to zero unless min-scale), the starts a project's instance quota held back (``resume``), and
the liveness check that replaces an instance stuck after a request timed out on it. One of the
supervisor's collaborators: it starts and stops instances through the ``InstanceLifecycle``'s public
methods.
"""

from __future__ import annotations

import asyncio
import math
import time

import aiohttp

from . import background
from .instances import DRAINING, READY, Instance
from .lifecycle import InstanceLifecycle
from .logstore import LogStore
from .revisions import START_ATTEMPTS, FunctionState, RevisionState, SupervisorState

LIVENESS_TIMEOUT = 3.0


class Autoscaler:
    def __init__(
        self, *, state: SupervisorState, lifecycle: InstanceLifecycle, logs: LogStore, idle_seconds: float
    ):
        self.state = state
        self.lifecycle = lifecycle
        self.logs = logs
        self.idle_seconds = idle_seconds

    def check_liveness(self, inst: Instance) -> None:
        """After a request timed out on it: an instance that no longer answers ``/health/liveness`` (a busy
        loop, a deadlock) is replaced, as Kubernetes' liveness probe would do."""
        if inst.state == READY and not inst.probing:
            inst.probing = True
            background.start(self._probe_liveness(inst))

    async def _probe_liveness(self, inst: Instance) -> None:
        try:
            timeout = aiohttp.ClientTimeout(total=LIVENESS_TIMEOUT)
            async with self.state.http.get(f"{inst.base_url}/health/liveness", timeout=timeout) as resp:
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
        await self.lifecycle.stop(inst, drain=False)

    def _target(self, rev: RevisionState) -> int:
        target = rev.spec.target_concurrency
        if rev.spec.container_concurrency:  # a hard limit below the target caps it, as on Knative
            target = min(target, rev.spec.container_concurrency)
        return target

    def _demand(self, fn: FunctionState, rev: RevisionState) -> int:
        return sum(i.inflight + i.external for i in rev.instances) + fn.waiting + fn.queued

    def _desired(self, fn: FunctionState, rev: RevisionState) -> int:
        return min(rev.spec.max_scale, max(1, math.ceil(self._demand(fn, rev) / self._target(rev))))

    def scale_for_demand(self, fn: FunctionState, rev: RevisionState) -> None:
        if len(rev.live) < self._desired(fn, rev):
            self.lifecycle.start(fn, rev, cold=not rev.live)

    def next_start(self, fn: FunctionState) -> tuple[RevisionState, bool] | None:
        """The start ``fn`` wants now, as (revision, cold): its rollout's first, then its min-scale, then
        what its demand asks for; None when it wants none."""
        pending, active = fn.pending, fn.active
        if pending is not None and pending.attempts < START_ATTEMPTS:
            if len(pending.live) < max(1, pending.spec.min_scale):
                return pending, True
        if active is None:
            return None
        want = active.spec.min_scale
        if fn.waiting or fn.queued or any(i.inflight or i.external for i in active.instances):
            want = max(want, self._desired(fn, active))
        return (active, not active.live) if len(active.live) < want else None

    def resume(self, namespace: str) -> None:
        """Places free under the project's instance quota: the functions held back get their starts, one
        at a time in turns, the one waiting longest first. A function that wants nothing more any more stops
        waiting; one that got a start and wants more waits again behind the others."""
        quotas = self.state.quotas
        progress = True
        while progress:
            progress = False
            for fn in quotas.held_in(namespace):
                want = self.next_start(fn) if self.state.current(fn) and not self.state.closing else None
                if want is None:
                    quotas.release(fn)
                    fn.notify()  # its status no longer says it is held
                    continue
                rev, cold = want
                if not self.lifecycle.within_quota(fn, rev):
                    continue
                before = quotas.count(namespace)
                self.lifecycle.start(fn, rev, cold=cold)
                if quotas.count(namespace) > before:
                    progress = True
                    if self.next_start(fn) is None:
                        quotas.release(fn)
                    else:
                        quotas.requeue(fn)

    async def run(self) -> None:
        """Scale down, every tick, whatever has been idle long enough (until cancelled)."""
        tick = max(0.1, min(1.0, self.idle_seconds / 4))
        while True:
            await asyncio.sleep(tick)
            for fn in list(self.state.functions.values()):
                self._scale_down(fn)
            for namespace in self.state.quotas.namespaces_waiting():
                self.resume(namespace)  # drops those whose demand went; and a place freed unnoticed

    def _scale_down(self, fn: FunctionState) -> None:
        rev = fn.active
        if rev is None or fn.waiting or fn.queued:
            return
        if not self._shrink_to_demand(fn, rev):
            self._stop_idle(fn, rev)

    def _shrink_to_demand(self, fn: FunctionState, rev: RevisionState) -> bool:
        """One instance fewer once the demand has fit in one fewer for a whole idle period (HAProxy spreads
        requests over every instance, so none of them would ever sit idle under a steady trickle)."""
        now, ready = time.monotonic(), rev.ready
        if len(ready) <= max(1, rev.spec.min_scale) or self._demand(fn, rev) > self._target(rev) * (
            len(ready) - 1
        ):
            fn.low_since = None
            return False
        if fn.low_since is None:
            fn.low_since = now
            return False
        if now - fn.low_since < self.idle_seconds:
            return False
        fn.low_since = now  # the next one goes after another full period
        self._scale_down_one(fn, rev, ready[-1], "demand fits in fewer instances")
        return True

    def _stop_idle(self, fn: FunctionState, rev: RevisionState) -> None:
        now = time.monotonic()
        keep = len(rev.live)
        for inst in reversed(rev.ready):  # newest first: load is packed onto the oldest
            if keep <= rev.spec.min_scale:
                break
            if inst.inflight == 0 and inst.external == 0 and now - inst.last_used >= self.idle_seconds:
                keep -= 1
                self._scale_down_one(fn, rev, inst, f"idle for {self.idle_seconds:g}s")

    def _scale_down_one(self, fn: FunctionState, rev: RevisionState, inst: Instance, why: str) -> None:
        self.logs.get(fn.spec.namespace, fn.spec.name).write(
            inst.id, "system", f"scaling down: {why}", limited=False
        )
        background.start(self.lifecycle.stop(inst, drain=True))
        self.lifecycle.count(fn, rev)
