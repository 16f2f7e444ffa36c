"""A running platform for end-to-end tests (CLI, browser): the same process manager as ``scripts/run``.

Each test session gets its own data dir, free ports, database and Celery queue: a SQLite file, or a fresh
PostgreSQL database on the server of ``DATABASE_URL`` (dropped afterwards). Use it from a conftest with
``from tests.support.live import live_platform  # noqa: F401``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from pathlib import Path

import pytest

from hks_portal.platform import Platform, Ports
from tests.support.ports import free_port


class _PostgresDatabase:
    """A throwaway database next to the one DATABASE_URL names."""

    def __init__(self, url: str):
        import dj_database_url

        self.config = dj_database_url.parse(url)
        self.name = f"hks_live_{uuid.uuid4().hex[:10]}"
        self.url = url.rsplit("/", 1)[0] + "/" + self.name

    def _admin(self, sql: str) -> None:
        import psycopg

        cfg = self.config
        with psycopg.connect(
            host=cfg["HOST"],
            port=cfg["PORT"] or 5432,
            user=cfg["USER"],
            password=cfg["PASSWORD"] or None,
            dbname=cfg["NAME"],
            autocommit=True,
        ) as conn:
            conn.execute(sql)

    def create(self) -> None:
        self._admin(f'CREATE DATABASE "{self.name}"')

    def drop(self) -> None:
        self._admin(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')


class LivePlatform(Platform):
    admin_user = "admin"
    admin_password = "live-admin-password"

    def create_user(self, username: str, password: str, *, project: str, role: str = "developer") -> None:
        self.manage(
            "shell",
            "-c",
            (
                "from django.contrib.auth import get_user_model;"
                "from functions.models import Project, Membership;"
                f"u, _ = get_user_model().objects.get_or_create(username={username!r});"
                f"u.set_password({password!r}); u.save();"
                f"p, _ = Project.objects.get_or_create(slug={project!r}, defaults={{'name': {project!r}}});"
                f"Membership.objects.update_or_create(project=p, user=u, defaults={{'role': {role!r}}})"
            ),
            capture=True,
        )

    def agent_secret(self, name: str, *, project: str = "demo") -> str:
        """Issue an agent credential for ``project`` and return its secret."""
        output = self.manage(
            "shell",
            "-c",
            (
                "from functions.models import AgentCredential, Project;"
                f"p = Project.objects.get(slug={project!r});"
                f"print(AgentCredential.issue(project=p, name={name!r})[1])"
            ),
            capture=True,
        )
        return output.strip().splitlines()[-1]


@pytest.fixture(scope="session")
def live_platform():
    # Not under pytest's tmp root: that is 0700, and sandboxed builds and functions run as nobody, who must
    # be able to reach the runtime's directories.
    data_dir = Path(tempfile.mkdtemp(prefix="hks-live-"))
    data_dir.chmod(0o711)
    env = {
        "HKS_ADMIN_PASSWORD": LivePlatform.admin_password,
        "HKS_CELERY_QUEUE": f"hks-live-{uuid.uuid4().hex[:8]}",
        "HKS_CACHE_PREFIX": f"hks-live-{uuid.uuid4().hex[:8]}:cache",  # its sign-in counts, apart
        # Its log streams and beat lock too: with xdist each worker runs a platform, maybe on one REDIS_URL,
        # where a shared lock would keep all but one beat waiting.
        "HKS_CHANNELS_PREFIX": f"hks-live-{uuid.uuid4().hex[:8]}:asgi",
        "HKS_BEAT_LOCK_KEY": f"hks-live-{uuid.uuid4().hex[:8]}:beat-lock",
        "HKS_RUNTIME_IDLE_SECONDS": os.environ.get("HKS_RUNTIME_IDLE_SECONDS", "30"),
        # two one-shot kernels waiting, not the machine's default (up to 16; pool_policy.py): each worker
        # of the suite runs a platform
        "HKS_RUNTIME_EXECUTE_POOL_SIZE": os.environ.get("HKS_RUNTIME_EXECUTE_POOL_SIZE", "2"),
    }
    database = None
    if os.environ.get("DATABASE_URL", "").startswith("postgres"):
        database = _PostgresDatabase(os.environ["DATABASE_URL"])
        database.create()
        env["DATABASE_URL"] = database.url
    else:
        env["DATABASE_URL"] = f"sqlite:///{data_dir / 'db.sqlite3'}"
    ports = Ports(portal=free_port(), runtime=free_port(), gateway=free_port(), prometheus=free_port())
    platform = LivePlatform(data_dir=data_dir, ports=ports, env=env, quiet=True)
    platform.start()
    try:
        platform.manage("bootstrap", capture=True)
        yield platform
    finally:
        platform.stop()
        if database is not None:
            database.drop()
        shutil.rmtree(data_dir, ignore_errors=True)
