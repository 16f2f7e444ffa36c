"""``python -m hks_portal.beat [celery beat options]``: Celery beat, only while holding a Redis lock.

Two beats would fire every periodic task twice. The Deployment runs one replica with the Recreate
strategy, but a second one can still appear (a pod started by hand, a node cut off while its pod is
replaced). So beat first takes the lock ``HKS_BEAT_LOCK_KEY`` (``SET NX`` with a TTL of
``HKS_BEAT_LOCK_TTL`` seconds, renewed every third of it by a thread): a second beat waits for it instead
of starting. A beat that cannot renew its lock (it expired, or Redis was unreachable for a whole TTL)
stops itself at once, before another one can take over; on exit it releases the lock, so a rolling
replacement does not wait for the TTL.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys
import threading
import time
import uuid

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "hks_portal.settings")

log = logging.getLogger("hks.beat")

# Renew or release the lock only if it is still ours.
_RENEW = (
    "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('expire', KEYS[1], ARGV[2]) end return 0"
)
_RELEASE = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0"


class BeatLock:
    def __init__(self, client, key: str, ttl: int):
        self.client, self.key, self.ttl = client, key, ttl
        self.token = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._stop = threading.Event()

    def acquire(self) -> None:
        """Block until the lock is ours."""
        announced = False
        while not self.client.set(self.key, self.token, nx=True, ex=self.ttl):
            if not announced:
                log.warning("another beat holds %s (%s); waiting", self.key, self.client.get(self.key))
                announced = True
            time.sleep(max(self.ttl / 3, 0.2))
        log.warning("beat lock %s acquired by %s", self.key, self.token)

    def keep(self, on_lost) -> threading.Thread:
        """Renew the lock in the background; call ``on_lost`` once if it cannot be renewed in time."""

        def run():
            renewed = time.monotonic()
            while not self._stop.wait(self.ttl / 3):
                try:
                    if self.client.eval(_RENEW, 1, self.key, self.token, self.ttl):
                        renewed = time.monotonic()
                        continue
                    reason = "the lock is no longer ours"
                except Exception as exc:  # noqa: BLE001 - Redis away: keep trying until the TTL is spent
                    if time.monotonic() - renewed < self.ttl * 2 / 3:
                        continue
                    reason = f"cannot renew it: {exc}"
                log.error("beat lock %s lost (%s); stopping", self.key, reason)
                on_lost()
                return

        thread = threading.Thread(target=run, name="beat-lock", daemon=True)
        thread.start()
        return thread

    def release(self) -> None:
        self._stop.set()
        try:
            self.client.eval(_RELEASE, 1, self.key, self.token)
        except Exception:  # noqa: BLE001 - it expires by itself
            log.warning("could not release the beat lock; it expires in %s s", self.ttl)


LOST_LOCK_EXIT = 3
_lost = threading.Event()


def _stop_self() -> None:
    _lost.set()
    os.kill(os.getpid(), signal.SIGTERM)  # Celery beat shuts down on SIGTERM
    threading.Timer(10, os._exit, args=(LOST_LOCK_EXIT,)).start()


def main(argv: list[str]) -> int:
    import django
    import redis

    django.setup()
    from django.conf import settings

    from hks_portal.celery import app
    from hks_portal.envtools import env_int, env_str

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    client = redis.Redis.from_url(settings.REDIS_URL, socket_timeout=5, socket_connect_timeout=5)
    lock = BeatLock(client, env_str("HKS_BEAT_LOCK_KEY", "hks:beat-lock"), env_int("HKS_BEAT_LOCK_TTL", 30))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # while waiting; beat installs its own
    try:
        lock.acquire()
        lock.keep(_stop_self)
        app.start(["beat", *argv])
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 0
    else:
        code = 0
    finally:
        lock.release()
    return LOST_LOCK_EXIT if _lost.is_set() else code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
