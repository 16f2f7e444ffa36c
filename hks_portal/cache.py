"""Django's Redis cache, made safe to share a Redis with Celery's broker and the Channels layer, and cheap
to use from every request of an ASGI portal.

- Django's ``RedisCache.clear()`` flushes the whole database - the task queue and every live socket's
  channel with it. Here ``clear()`` deletes only the keys under this cache's ``KEY_PREFIX``.
- Django keeps one cache object per asyncio context (``caches`` is an asgiref ``Local``), and under ASGI
  every request is a new context: each request made a new connection pool, so a new Redis connection
  (connect, handshake, redis-py's driver-version look-up in the package metadata). The pools here are the
  process's, one per server and options, so requests reuse connections (redis-py's pool is thread-safe and
  makes new connections after a fork).
- ``incr_window``: a counter that expires, counted in one round trip (execution quotas, sign-in limits).
"""

import re
import threading

from django.core.cache.backends.redis import RedisCache, RedisCacheClient


def _glob_escape(text: str) -> str:
    return re.sub(r"([*?\[\]\\])", r"\\\1", text)


_POOLS: dict[tuple[str, str], object] = {}
_POOLS_LOCK = threading.Lock()


class SharedPoolRedisCacheClient(RedisCacheClient):
    """Django's client with its connection pools kept per process instead of per cache object."""

    def _get_connection_pool(self, write):
        index = self._get_connection_pool_index(write)
        key = (self._servers[index], repr(sorted(self._pool_options.items())))
        pool = _POOLS.get(key)
        if pool is None:
            with _POOLS_LOCK:
                pool = _POOLS.get(key)
                if pool is None:
                    pool = _POOLS[key] = self._pool_class.from_url(self._servers[index], **self._pool_options)
        return pool


class PrefixedRedisCache(RedisCache):
    def __init__(self, server, params):
        super().__init__(server, params)
        self._class = SharedPoolRedisCacheClient

    def clear(self) -> bool:
        client = self._cache.get_client(None, write=True)
        pattern = _glob_escape(self.key_prefix) + ":*"
        deleted = 0
        batch: list[bytes] = []
        for key in client.scan_iter(match=pattern, count=500):
            batch.append(key)
            if len(batch) >= 500:
                deleted += client.delete(*batch)
                batch = []
        if batch:
            deleted += client.delete(*batch)
        return bool(deleted)

    def incr_window(self, key: str, *, timeout: int) -> int:
        """Add one to the counter ``key`` and return it; a new counter starts at 0 and expires ``timeout``
        seconds after it was made (later increments do not extend it). Django's ``add`` then ``incr`` take
        three round trips (``incr`` asks whether the key exists first) and can lose the key between them;
        this is one MULTI/EXEC (SET NX EX, INCR), atomic in Redis. The value stays a plain integer, so
        ``get``, ``incr`` and ``decr`` read it as before."""
        key = self.make_and_validate_key(key)
        client = self._cache.get_client(key, write=True)
        with client.pipeline(transaction=True) as pipe:
            pipe.set(key, 0, ex=max(1, int(timeout)), nx=True)
            pipe.incr(key)
            return int(pipe.execute()[1])
