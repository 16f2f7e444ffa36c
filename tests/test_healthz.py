"""/healthz: 200 when the database and Redis answer, 503 naming what failed; ?live=1 only the process."""

from django.test import override_settings


def test_healthz_reports_the_database_and_redis(client, db):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "database": "ok", "redis": "ok"}


def test_healthz_fails_when_redis_is_unreachable_but_the_process_stays_live(client, db, tmp_path):
    dead = {
        "default": {
            "BACKEND": "hks_portal.cache.PrefixedRedisCache",
            "LOCATION": f"unix://{tmp_path / 'nothing.sock'}",
            "OPTIONS": {"socket_connect_timeout": 1},
        }
    }
    with override_settings(CACHES=dead):
        response = client.get("/healthz")
        assert response.status_code == 503
        body = response.json()
        assert (body["status"], body["database"]) == ("failing", "ok")
        assert body["redis"].startswith("ConnectionError")
        assert client.get("/healthz?live=1").status_code == 200


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
