"""Django's Redis cache, made safe to share a Redis with Celery's broker and the Channels layer.

Django's ``RedisCache.clear()`` flushes the whole database - the task queue and every live socket's
channel with it. Here ``clear()`` deletes only the keys under this cache's ``KEY_PREFIX``.
"""

import re

from django.core.cache.backends.redis import RedisCache


def _glob_escape(text: str) -> str:
    return re.sub(r"([*?\[\]\\])", r"\\\1", text)


class PrefixedRedisCache(RedisCache):
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
