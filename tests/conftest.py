"""Shared fixtures: personas (owner, developer, viewer, outsider), API clients, a real Celery worker.

Redis is real: ``REDIS_URL`` when set (CI), otherwise the embedded redis-server started here.
"""

import os

import pytest
from django.conf import settings
from django.test import Client

from functions.models import ApiToken, Role
from hks_portal.celery import app as celery_app
from tests.support.daemon import local_backend_settings, runtime_daemon  # noqa: F401  (one runtime daemon)
from tests.support.factories import MembershipFactory, ProjectFactory, UserFactory
from tests.support.k8s_fake import (  # noqa: F401  (fake K8s API)
    fake_k8s,
    fake_k8s_server,
    fake_vcluster,
    fake_vcluster_server,
    knative_hello,
    knative_project,
)
from tests.support.live import live_platform  # noqa: F401  (one running platform per session)


def _embedded_redis_client():
    import redis

    return redis.Redis(unix_socket_path=str(settings.EMBEDDED_REDIS_SOCKET), socket_timeout=5)


def pytest_configure(config):
    # Persona users are made in nearly every test; the default hasher costs ~0.3 s each on these machines.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    if settings.REDIS_EMBEDDED:
        from hks_portal.embedded_redis import ensure_running

        ensure_running(settings.EMBEDDED_REDIS_SOCKET)
        # Test sessions on this machine share the embedded server: count them, the last one out stops it.
        _embedded_redis_client().incr("hks:test-sessions")
    # One queue per test process, so parallel runs (xdist, a running platform) never share tasks.
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    celery_app.conf.task_default_queue = f"hks-test-{worker}-{os.getpid()}"
    # The cache (sign-in limits) is in Redis too: one key prefix per test process, emptied before each test.
    settings.CACHES["default"]["KEY_PREFIX"] = f"hks-test-{worker}-{os.getpid()}:cache"
    # And the channel layer (log streams, dashboard updates): groups are named by database ids, which repeat
    # across the workers' test databases on one Redis.
    settings.CHANNEL_LAYERS["default"]["CONFIG"]["prefix"] = f"hks-test-{worker}-{os.getpid()}:asgi"


# Modules that take minutes, started first under xdist (scripts/test: --dist loadfile, a module's tests on one
# worker, so its module-scoped set-ups happen once) so that no worker is left with one at the end.
SLOW_FIRST = [
    "tests/cli/test_documented_commands.py",
    "tests/tasks/test_faults_live.py",
    "tests/repository/test_fresh_clone.py",
    "tests/repository/test_scripts.py",
    "tests/portal/test_platform_ports.py",
]


def pytest_collection_modifyitems(config, items):
    """In an xdist worker, queue the slow modules first (all workers sort alike, the rest in order)."""
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return
    rank = {path: i for i, path in enumerate(SLOW_FIRST)}
    items.sort(key=lambda item: rank.get(item.nodeid.split("::")[0], len(rank)))


def pytest_unconfigure(config):
    import redis

    if not settings.REDIS_EMBEDDED:
        return
    client = _embedded_redis_client()
    try:
        if client.decr("hks:test-sessions") <= 0:
            client.shutdown(nosave=True)
    except redis.exceptions.ConnectionError:
        pass  # shutdown closes the connection, or the server is already gone


@pytest.fixture(autouse=True)
def _fresh_cache():
    """Each test starts with an empty cache: no sign-in failures counted by an earlier test."""
    from django.core.cache import cache

    cache.clear()


@pytest.fixture(scope="session")
def django_db_modify_db_settings(django_db_modify_db_settings_parallel_suffix, tmp_path_factory):
    """SQLite tests use a file, not pytest-django's shared-cache memory database: there, the real worker's
    threads get "database table is locked" at once instead of waiting for each other."""
    database = settings.DATABASES["default"]
    if database["ENGINE"].endswith("sqlite3"):
        database.setdefault("TEST", {})["NAME"] = str(tmp_path_factory.mktemp("db") / "test.sqlite3")


@pytest.fixture
def project(db):
    return ProjectFactory(slug="acme", name="Acme")


@pytest.fixture
def other_project(db):
    return ProjectFactory(slug="globex", name="Globex")


def _member(project, role, username):
    return MembershipFactory(project=project, user=UserFactory(username=username), role=role).user


@pytest.fixture
def owner(project):
    return _member(project, Role.OWNER, "olivia-owner")


@pytest.fixture
def developer(project):
    return _member(project, Role.DEVELOPER, "dev-dana")


@pytest.fixture
def viewer(project):
    return _member(project, Role.VIEWER, "vic-viewer")


@pytest.fixture
def outsider(other_project):
    """Owner of another project, and nothing in ours."""
    return _member(other_project, Role.OWNER, "oscar-outsider")


class ApiClient(Client):
    """A Django test client that sends a bearer token with every request."""

    def __init__(self, token: str, **kwargs):
        super().__init__(HTTP_AUTHORIZATION=f"Bearer {token}", **kwargs)


@pytest.fixture
def api_client_for(db):
    def make(user):
        _, plaintext = ApiToken.issue(user=user, name="tests")
        return ApiClient(plaintext)

    return make


@pytest.fixture
def celery_worker(transactional_db):
    """A real Celery worker (threads pool) consuming this test process's queue on the real Redis."""
    from celery.contrib.testing.worker import start_worker

    celery_app.control.purge()
    with start_worker(
        celery_app,
        pool="threads",
        concurrency=4,
        perform_ping_check=False,
        loglevel="WARNING",
        shutdown_timeout=30,
    ) as worker:
        yield worker
