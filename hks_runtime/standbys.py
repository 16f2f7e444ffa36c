"""A pool of sandboxes started ahead (standbys), each claimed once: the session agents' (sessions.py) and
the one-shot kernels' of each language (oneshot.py).

How many a pool keeps is its ``PoolPolicy``'s (pool_policy.py): ``refill()`` starts what its target lacks,
``trim()`` destroys the surplus once the demand that grew it has passed. A claim takes the first idle
standby still alive (a dead one is destroyed on the way); when none is idle it waits for the next one up,
and one is started for it if none is on its way. Starts are bounded by a semaphore shared by every pool
(``starts``): fifty started together would share two cores and all be ready late, while started a few at a
time the first are answering while the last wait their turn.

A standby is whatever ``spawn()`` returns with an ``up`` future (done once it is ready, or once it ended),
``alive()`` and ``said()`` (its last output, for the log when it could not start); ``destroy(standby)``
tears it down.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from collections.abc import Awaitable, Callable

from . import background
from .pool_policy import PoolPolicy

log = logging.getLogger("hks_runtime.standbys")
READY_TIMEOUT = 30.0


class StandbyUnavailable(RuntimeError):
    """No standby could be started for a waiting claim (or the runtime is stopping)."""


class StandbyPool:
    def __init__(
        self,
        name: str,
        policy: PoolPolicy,
        *,
        spawn: Callable[[], Awaitable],
        destroy: Callable[[object], Awaitable],
        starts: Callable[[], asyncio.Semaphore],
    ):
        self.name = name  # for the log: "session agent", "python kernel", ...
        self.policy = policy
        self._spawn = spawn
        self._destroy = destroy
        self._starts = starts  # the shared bound (made on the loop, after the pool)
        self.standbys: list = []
        self.filling = 0  # starting now, for the pool or for a waiting claim
        self.waiters: collections.deque[asyncio.Future] = collections.deque()
        self.closing = False

    def refill(self) -> None:
        if self.closing:
            return
        for _ in range(max(0, self.policy.target() - len(self.standbys) - self.filling)):
            self.filling += 1
            background.start(self._add())

    def trim(self) -> None:
        """Destroy the standbys the policy no longer wants (the demand that grew the pool has passed)."""
        starting = max(0, self.filling - len(self.waiters))  # those not already promised to a claim
        for _ in range(min(self.policy.surplus(len(self.standbys) + starting), len(self.standbys))):
            background.start(self._destroy(self.standbys.pop()))

    def view(self) -> dict:
        starting = max(0, self.filling - len(self.waiters))  # for the pool, not for a waiting claim
        return {**self.policy.view(), "standbys": len(self.standbys), "starting": starting}

    def pop_live(self):
        """The first idle standby still alive (dead ones are torn down on the way), or None."""
        while self.standbys:
            standby = self.standbys.pop(0)
            if standby.alive():
                return standby
            log.warning("a %s standby had ended: %s", self.name, standby.said())
            background.start(self._destroy(standby))
        return None

    async def claim(self, concurrent: int):
        """A live standby: an idle one, else the next one up (started for this claim if need be).
        ``concurrent``: the claims in progress, this one included (the policy's demand)."""
        self.policy.claimed(concurrent)
        standby = self.pop_live()
        if standby is not None:
            return standby
        waiter = asyncio.get_running_loop().create_future()
        self.waiters.append(waiter)
        while self.waiters and self.waiters[0].done():
            self.waiters.popleft()
        for _ in range(len(self.waiters) - self.filling):  # not deferred: these claims wait for nothing else
            self.filling += 1
            background.start(self._add())
        try:
            return await waiter
        except asyncio.CancelledError:  # the caller went away just as its standby came up
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                background.start(self._destroy(waiter.result()))
            raise

    async def _add(self) -> None:
        """Start one (within the shared bound); once it is up it goes to the first claim waiting for one,
        else to the pool."""
        standby = None
        try:
            async with self._starts():
                standby = await self._spawn()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(standby.up), READY_TIMEOUT)
            if not standby.up.done() or not standby.alive():
                raise StandbyUnavailable(f"it ended (or never became ready) as it started: {standby.said()}")
        except Exception as exc:  # noqa: BLE001 - logged and told to a waiting claim, never fatal
            if standby is not None:
                background.start(self._destroy(standby))
            if not self.closing:
                log.warning("cannot pre-start a %s: %s", self.name, exc)
            while self.waiters:  # a claim waiting is told rather than left waiting
                waiter = self.waiters.popleft()
                if not waiter.done():
                    waiter.set_exception(StandbyUnavailable(f"cannot start a {self.name}: {exc}"))
                    break
            return
        finally:
            self.filling -= 1
        if self.closing:
            await self._destroy(standby)
            return
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():  # a claim given up (its caller went away) is skipped
                waiter.set_result(standby)
                return
        self.standbys.append(standby)

    def close(self) -> list:
        """Stop: waiting claims are told, no more starts; the idle standbys, for the caller to destroy."""
        self.closing = True
        for waiter in self.waiters:
            if not waiter.done():
                waiter.set_exception(StandbyUnavailable("the runtime is stopping"))
        self.waiters.clear()
        idle, self.standbys = self.standbys, []
        return idle
