"""Helpers for running the real ``hks`` / ``hks-func`` executables in a private config dir."""

import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import pytest

from hks_portal.platform import Ports
from tests.live import LivePlatform, _PostgresDatabase, free_port

BIN = Path(sys.executable).parent
HKS = str(BIN / "hks")
HKS_FUNC = str(BIN / "hks-func")


@pytest.fixture
def cli_env(tmp_path):
    """Environment for CLI subprocesses: a fresh XDG config dir, no inherited HKS_* settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HKS_")}
    env.update(XDG_CONFIG_HOME=str(tmp_path / "xdg"), HOME=str(tmp_path / "home"), HKS_NO_BROWSER="1")
    (tmp_path / "home").mkdir()
    return env


def run_cli(exe: str, *args: str, env: dict, cwd=None, input: str | None = None, timeout: float = 600):
    return subprocess.run(
        [exe, *args], env=env, cwd=cwd, input=input, capture_output=True, text=True, timeout=timeout
    )


# A running platform (portal, worker, beat, runtime), shared by the live CLI tests. It is the lead's
# LivePlatform, but in a data dir outside pytest's temp root: that root is 0700 (and re-tightened by every
# other pytest run on the machine), while the runtime's sandboxed dependency installs run as "nobody" and
# need to traverse to their build dir.
@pytest.fixture(scope="session")
def cli_platform():
    data_dir = Path(tempfile.mkdtemp(prefix="hks-cli-live-"))
    data_dir.chmod(0o711)
    env = {
        "HKS_ADMIN_PASSWORD": LivePlatform.admin_password,
        "HKS_CELERY_QUEUE": f"hks-cli-{uuid.uuid4().hex[:8]}",
        "HKS_RUNTIME_IDLE_SECONDS": "30",
        "DATABASE_URL": f"sqlite:///{data_dir / 'db.sqlite3'}",
    }
    database = None
    if os.environ.get("DATABASE_URL", "").startswith("postgres"):
        database = _PostgresDatabase(os.environ["DATABASE_URL"])
        database.create()
        env["DATABASE_URL"] = database.url
    ports = Ports(portal=free_port(), runtime=free_port(), gateway=free_port(), prometheus=free_port())
    platform = LivePlatform(data_dir=data_dir, ports=ports, env=env, quiet=True, with_prometheus=False)
    try:
        platform.start()
        yield platform
    finally:
        platform.stop()
        if database is not None:
            database.drop()
        shutil.rmtree(data_dir, ignore_errors=True)


PASSWORD = "cli-test-password"


@pytest.fixture(scope="session")
def cli_users(cli_platform):
    """dana (developer) and vic (viewer) in acme; oscar owns globex and is an outsider to acme."""
    cli_platform.create_user("dana", PASSWORD, project="acme", role="developer")
    cli_platform.create_user("vic", PASSWORD, project="acme", role="viewer")
    cli_platform.create_user("oscar", PASSWORD, project="globex", role="owner")
    return cli_platform


def login(platform, env: dict, username: str) -> dict:
    """Log in with the real ``hks`` (password on stdin); returns the env pointing at the portal."""
    env = {**env, "HKS_URL": platform.portal_url}
    result = run_cli(HKS, "login", "--username", username, "--password-stdin", env=env, input=PASSWORD + "\n")
    assert result.returncode == 0, result.stderr
    return env
