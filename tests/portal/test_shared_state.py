"""Several portal replicas share one Redis for what must hold across them: two live portal processes on
the same Redis and database count one user name's failed sign-ins together."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest
import redis
from django.conf import settings

from functions.auth.login_guard import FAILED_LOGIN_LIMIT
from tests.support.ports import free_port

REPO = Path(__file__).resolve().parents[2]


def _database_url() -> str:
    """The test database, for the portal processes (they need no migrations of their own)."""
    db = settings.DATABASES["default"]
    if db["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{db['NAME']}"
    return f"postgres://{db['USER']}:{db['PASSWORD']}@{db['HOST']}:{db['PORT'] or 5432}/{db['NAME']}"


def _env(tmp_path: Path, prefix: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HKS_", "DJANGO_", "PYTEST"))}
    return {
        **env,
        "HKS_DATA_DIR": str(tmp_path),
        "DATABASE_URL": _database_url(),
        "REDIS_URL": settings.REDIS_URL,
        "HKS_CACHE_PREFIX": prefix,
        "HKS_SECRET_KEY": "two-portals-" + uuid.uuid4().hex,
        "HKS_CELERY_QUEUE": prefix,
        "HKS_CHANNELS_PREFIX": prefix + ":asgi",
        "HKS_LOCAL_RUNTIME": "0",  # portals as deploy/ runs them: /healthz asks for the database and Redis
    }


def _wait_healthy(url: str, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert process.poll() is None, process.stderr.read().decode()[-2000:]
        try:
            if httpx.get(url + "/healthz", timeout=2, trust_env=False).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"{url} did not become healthy")


@pytest.fixture
def two_portals(tmp_path, transactional_db):
    from django.contrib.auth import get_user_model
    from django.contrib.auth.hashers import PBKDF2PasswordHasher

    prefix = f"hks-test-two-portals-{uuid.uuid4().hex[:8]}"
    env = _env(tmp_path, prefix)
    # A hash the portals' own hashers check, cheap to check (few iterations): every guess costs one check.
    get_user_model().objects.create(
        username="dana", password=PBKDF2PasswordHasher().encode("the-right-password", "salt", iterations=1000)
    )
    processes, urls = [], []
    for _ in range(2):
        port = free_port()
        command = [sys.executable, "-m", "uvicorn", "hks_portal.asgi:application", "--port", str(port)]
        processes.append(
            subprocess.Popen(command + ["--log-level", "warning"], cwd=REPO, env=env, stderr=subprocess.PIPE)
        )
        urls.append(f"http://127.0.0.1:{port}")
    try:
        for url, process in zip(urls, processes, strict=True):
            _wait_healthy(url, process)
        yield urls
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(10)
        client = redis.Redis.from_url(settings.REDIS_URL)
        for key in client.scan_iter(match=prefix + "*"):
            client.delete(key)


def _sign_in(url: str, password: str) -> httpx.Response:
    with httpx.Client(base_url=url, trust_env=False, timeout=10, headers={"Host": "localhost"}) as http:
        page = http.get("/accounts/login/")
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text)[1]
        return http.post(
            "/accounts/login/",
            data={"username": "dana", "password": password, "csrfmiddlewaretoken": token},
            headers={"Referer": url + "/accounts/login/"},
        )


def test_two_portals_on_one_redis_share_the_sign_in_limit(two_portals):
    first, second = two_portals
    assert _sign_in(second, "the-right-password").status_code == 302  # signs in; the count starts at 0

    # Half the guesses on each replica: with a per-process cache neither would reach the limit.
    for attempt in range(FAILED_LOGIN_LIMIT):
        refused = _sign_in(first if attempt % 2 else second, "a-guess")
        assert refused.status_code == 200  # the form again

    locked = _sign_in(first, "the-right-password")
    assert locked.status_code == 200
    assert "Too many failed sign-ins for this user" in locked.text
    assert "Too many failed sign-ins for this user" in _sign_in(second, "the-right-password").text
