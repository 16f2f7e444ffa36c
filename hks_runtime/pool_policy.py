"""How many pre-started agents a pool keeps: its minimum, grown toward recent demand, within a cap.

A pool of standbys (``sessions.py``: agents started ahead for sessions and the ``execute()`` fast path) is
sized by one ``PoolPolicy``. The pool reports each claim with how many claims are in progress at that
moment (``claimed(concurrent)``), and the same on its tick while any are; the policy remembers the peak of
those over the last ``window`` seconds, in ``window / BUCKETS`` slices, and its ``target()`` is that peak,
never below ``minimum`` and never above ``maximum``. So after a burst of 50 executions the pool refills to
50 (capped), the next burst within the window finds its agents waiting, and once the window has passed
without such demand the target is the minimum again and the pool destroys its surplus (``surplus()``; the
pool does this on its reaper's tick).

This is the provisioned-capacity idea of a FaaS (predictive warm capacity from recent concurrency), kept to
what one machine can afford: ``maximum`` is the ``--session-pool-max`` setting, and never more agents than
a quarter of the machine's memory holds at ``AGENT_MB`` each (``memory_cap``). An idle agent costs memory
only (it sleeps in ``readline``), so the policy never stops one that is needed and never starts beyond the
cap. Isolation is unaffected: each standby is still a sandbox of its own, used once (one-shot) or by one
session, then destroyed.

A second pool (another language's standbys) uses a ``PoolPolicy`` of its own with its own minimum and
cap, calling ``claimed`` at its claims and ``target``/``surplus`` where it refills and trims.
"""

from __future__ import annotations

import os
import time
from collections import deque

AGENT_MB = 35  # an idle agent's memory (agent, kernel, bwrap), measured
BUCKETS = 10  # the window is remembered in this many slices
MEMORY_SHARE = 4  # idle agents may take at most 1/MEMORY_SHARE of the machine's memory


def memory_cap(agent_mb: int = AGENT_MB) -> int | None:
    """How many idle agents a quarter of this machine's memory holds (None when it cannot be read)."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        return None
    return max(1, total // MEMORY_SHARE // (agent_mb * 1024 * 1024))


def execute_pool_default() -> int:
    """The one-shot Python kernels kept waiting when idle, by default: one per GiB of the machine's memory,
    between 2 and 16. An idle kernel costs ~6 MB of its own (14 MB resident, the interpreter's pages
    shared) and no CPU; sixteen waiting serve the first 16 calls of a burst at once, while the rest are
    started for it (on the 2-core machine a first burst of 50 took p50 1.3-1.6 s with 2 waiting, 0.66 s
    with 16; docs/sdk.md)."""
    try:
        gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2**30
    except (ValueError, OSError):
        return 2
    return max(2, min(16, gib))


class PoolPolicy:
    """The size a pool of standbys should have now: see the module docstring."""

    def __init__(self, minimum: int, maximum: int, window: float = 300.0, clock=time.monotonic):
        cap = memory_cap()
        self.minimum = max(0, minimum)
        self.maximum = max(self.minimum, min(maximum, cap) if cap is not None else maximum)
        self.window = max(window, 0.0)
        self.clock = clock
        self._peaks: deque[tuple[float, int]] = deque()  # (slice start, peak concurrent claims in it)

    def claimed(self, concurrent: int) -> None:
        """A claim was made while ``concurrent`` claims (it included) were in progress; also called on the
        pool's tick while claims are in progress, so a long burst is remembered from its end."""
        if self.window <= 0:
            return
        now = self.clock()
        slice_length = self.window / BUCKETS
        if self._peaks and now - self._peaks[-1][0] < slice_length:
            start, peak = self._peaks[-1]
            self._peaks[-1] = (start, max(peak, concurrent))
        else:
            self._peaks.append((now, concurrent))
        self._forget(now)

    def _forget(self, now: float) -> None:
        while self._peaks and now - self._peaks[0][0] > self.window:
            self._peaks.popleft()

    def demand(self) -> int:
        """The peak of concurrent claims over the window (0 without any)."""
        self._forget(self.clock())
        return max((peak for _, peak in self._peaks), default=0)

    def target(self) -> int:
        """How many standbys to keep now: recent demand, within [minimum, maximum]."""
        return max(self.minimum, min(self.maximum, self.demand()))

    def surplus(self, standbys: int) -> int:
        """How many of ``standbys`` idle agents to destroy now (the demand that grew the pool has passed)."""
        return max(0, standbys - self.target())

    def view(self) -> dict:
        return {
            "minimum": self.minimum,
            "maximum": self.maximum,
            "window_seconds": self.window,
            "demand": self.demand(),
            "target": self.target(),
        }
