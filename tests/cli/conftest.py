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
