"""/healthz on a cluster (no local runtime): 200 when the database and Redis answer, 503 naming the one
that failed; ``?live=1`` only says the process answers. Django's cache in Redis: clear() keeps the rest."""

import pytest
from django.test import override_settings

from tests.support.faults import unreachable_caches


@pytest.fixture
def on_a_cluster(settings, db):
    settings.HKS_LOCAL_RUNTIME = False  # as deploy/ sets it
    settings.HKS_PROMETHEUS_URL = "http://127.0.0.1:9"  # none there: an optional part


def test_healthz_on_a_cluster_asks_for_the_database_and_redis_not_a_local_runtime(client, on_a_cluster):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert [m["part"] for m in response.json()["missing"]] == ["Prometheus"]


def test_healthz_fails_when_redis_is_unreachable_but_the_process_stays_live(client, on_a_cluster, tmp_path):
    dead = unreachable_caches(tmp_path)
    with override_settings(CACHES=dead):
        response = client.get("/healthz")
        assert response.status_code == 503
        redis = next(m for m in response.json()["missing"] if m["part"] == "Redis")
        assert redis["required"] is True and redis["problem"].startswith("ConnectionError")
        assert client.get("/healthz?live=1").json() == {"ok": True}


def test_clearing_the_cache_leaves_the_brokers_keys_alone(db, settings):
    import redis
    from django.core.cache import cache

    other = redis.Redis.from_url(settings.REDIS_URL)
    other.set("hks-test-not-the-cache", "1")
    cache.set("mine", 1)
    try:
        cache.clear()
        assert cache.get("mine") is None
        assert other.get("hks-test-not-the-cache") == b"1"
    finally:
        other.delete("hks-test-not-the-cache")
