"""A real runtime daemon for tests: ``runtime_daemon`` (session) and ``local_backend_settings``.

The daemon is ``python -m hks_runtime`` in a child process on free ports, with a scratch data dir, the
shared cached runtime layers (var/test-layers/) and a 2 s idle period, so scale-to-zero shows in a test.
Debian package: bubblewrap.
"""

from __future__ import annotations

import os
import secrets
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from hks_runtime import harness
from tests.support.needs import require_binary
from tests.support.sample_functions import LAYERS_DIR, remove_dir, scratch_dir

IDLE_SECONDS = 2.0


@dataclass
class RuntimeDaemon:
    control_url: str
    gateway_url: str
    token: str
    data_dir: Path
    process: subprocess.Popen

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


def start_daemon(data_dir: Path, token: str, *extra: str) -> RuntimeDaemon:
    """Start a daemon and wait for its ``listening`` line (it prints it once both servers are up)."""
    log = data_dir / "daemon.stderr.log"
    with open(log, "ab") as stderr:
        # two one-shot kernels waiting, not the machine's default (up to 16): a test that wants more says so
        # (a later --execute-pool-size in ``extra`` wins); daemons start often in the suite
        args = ("--idle-seconds", str(IDLE_SECONDS), "--layers-dir", str(LAYERS_DIR))
        args += ("--execute-pool-size", "2", *extra)
        try:
            process, info = harness.start_daemon(data_dir, token, *args, stderr=stderr)
        except RuntimeError as exc:
            raise RuntimeError(f"{exc}: {log.read_text()[-3000:]}") from exc
    return RuntimeDaemon(info["control_url"], info["gateway_url"], token, data_dir, process)


def stop_daemon(daemon: RuntimeDaemon) -> None:
    daemon.process.terminate()
    try:
        daemon.process.wait(30)
    except subprocess.TimeoutExpired:
        daemon.process.kill()
        daemon.process.wait()


@pytest.fixture(scope="session")
def runtime_daemon():
    """A running daemon (control_url, gateway_url, token, data_dir), stopped at the end of the session."""
    require_binary("bwrap", hint="apt-get install bubblewrap")
    data_dir = scratch_dir("daemon-")
    daemon = start_daemon(data_dir, secrets.token_urlsafe(16))
    yield daemon
    stop_daemon(daemon)
    if not os.environ.get("HKS_TEST_KEEP_RUNTIME"):  # set it to read daemon.stderr.log and the logs after
        remove_dir(data_dir)


@pytest.fixture
def local_backend_settings(runtime_daemon, settings):
    """Point the portal's ``local`` backend at the test daemon."""
    settings.HKS_RUNTIME_URL = runtime_daemon.control_url
    settings.HKS_RUNTIME_TOKEN = runtime_daemon.token
    settings.HKS_GATEWAY_URL = runtime_daemon.gateway_url
    return runtime_daemon
