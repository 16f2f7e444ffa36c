"""Helpers for running the real ``hks`` / ``hks-func`` executables in a private config dir."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

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


@pytest.fixture(scope="session")
def cli_platform(live_platform):  # noqa: F811
    """The session's running platform (one for the CLI, browser and SDK tests)."""
    return live_platform


PASSWORD = "live-test-password"  # the same users exist for the browser tests on this platform


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
