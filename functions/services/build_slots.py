"""Fair builds: at most ``HKS_BUILDS_PER_PROJECT`` builds of one project run at once, so no tenant can hold
every worker (and the runtime's build slots) while other tenants' builds wait behind its queue.

A build task takes its project's slot before it runs (:func:`held`); when the project's slots are all taken
the task is sent again a few seconds later instead of waiting on a worker thread, so a free worker serves
the next project's build meanwhile. Slots live in Redis (shared by every worker), one sorted set per project
whose members are the holding tasks and whose scores are their expiry: a holder refreshes its slot while it
runs, and the slot of a worker killed mid-build expires after ``SLOT_TTL`` seconds, so nothing stays stuck.
Without Redis the build runs (the task queue itself lives there, so a build task that runs has it).
"""

from __future__ import annotations

import logging
import threading
import time
from contextlib import contextmanager

from django.conf import settings

from functions.services import enqueue

log = logging.getLogger(__name__)

SLOT_TTL = 30.0  # seconds a slot outlives its holder's last refresh
_REFRESH = SLOT_TTL / 3

# KEYS[1] the project's set; ARGV: member, now, expiry, capacity. 1 when the member holds a slot.
_TAKE = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[2])
if redis.call('ZSCORE', KEYS[1], ARGV[1]) or redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[4]) then
  redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1])
  redis.call('EXPIRE', KEYS[1], math.ceil(ARGV[3] - ARGV[2]) + 1)
  return 1
end
return 0
"""


def _redis():
    return enqueue.queue_client()


def _key(project_id: int) -> str:
    prefix = settings.CACHES["default"].get("KEY_PREFIX", "hks")
    return f"{prefix}:build-slots:{project_id}"


def take(project_id: int, holder: str) -> bool:
    """Take one of the project's build slots for ``holder`` (or keep the one it has); False when all are
    taken by others."""
    import redis

    now = time.time()
    try:
        taken = _redis().eval(
            _TAKE, 1, _key(project_id), holder, now, now + SLOT_TTL, settings.HKS_BUILDS_PER_PROJECT
        )
    except (redis.exceptions.RedisError, OSError) as exc:
        log.warning("build slots unavailable (%s): building without one", exc)
        return True
    return bool(taken)


def give_back(project_id: int, holder: str) -> None:
    import redis

    try:
        _redis().zrem(_key(project_id), holder)
    except (redis.exceptions.RedisError, OSError) as exc:
        log.warning("could not give back the build slot of %s (%s): it expires by itself", holder, exc)


def holders(project_id: int) -> list[str]:
    """Who holds the project's slots now (for the tests and the operators' eyes)."""
    return [m.decode() for m in _redis().zrangebyscore(_key(project_id), time.time(), "+inf")]


@contextmanager
def held(project_id: int, holder: str):
    """Yield True holding a slot (refreshed while the body runs, given back after), or False at once when
    the project's slots are all taken."""
    if not take(project_id, holder):
        yield False
        return
    stop = threading.Event()

    def refresh() -> None:
        while not stop.wait(_REFRESH):
            take(project_id, holder)

    thread = threading.Thread(target=refresh, name=f"build-slot-{holder}", daemon=True)
    thread.start()
    try:
        yield True
    finally:
        stop.set()
        thread.join(timeout=5)
        give_back(project_id, holder)
