"""Django's cache in Redis as the portal uses it: a counter with a window counted in one step, and the
process's Redis connections shared by requests (under ASGI each request has its own cache object)."""

import contextvars

import redis
from django.core.cache import cache


def _ttl(key: str) -> int:
    return cache._cache.get_client(write=True).ttl(cache.make_key(key))


def test_a_window_counter_counts_from_one_and_its_window_starts_at_the_first_count(db):
    assert cache.incr_window("tries", timeout=50) == 1
    assert cache.incr_window("tries", timeout=500) == 2  # a later count does not move the window
    assert 0 < _ttl("tries") <= 50
    assert cache.get("tries") == 2  # a plain integer, as incr and decr keep it
    cache.decr("tries")
    assert cache.get("tries") == 1
    assert cache.incr_window("other", timeout=50) == 1


def test_a_window_counter_starts_again_once_its_window_is_over(db):
    cache.incr_window("tries", timeout=50)
    cache.delete("tries")  # what its expiry does
    assert cache.incr_window("tries", timeout=50) == 1
    assert 0 < _ttl("tries") <= 50


def test_requests_in_their_own_contexts_reuse_the_processs_redis_connections(db, monkeypatch):
    made = []
    real = redis.ConnectionPool.make_connection

    def counted(pool):
        made.append(pool)
        return real(pool)

    monkeypatch.setattr(redis.ConnectionPool, "make_connection", counted)

    def request():  # as uvicorn runs each request: a context of its own, so a cache object of its own
        from django.core.cache import cache as its_cache

        its_cache.incr_window("requests", timeout=60)

    for _ in range(4):
        contextvars.Context().run(request)
    assert len(made) <= 1  # at most the first request opened one; before, each opened its own
    assert cache.get("requests") == 4
