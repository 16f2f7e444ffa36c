"""Daemon restarts: every deployed function comes back, and no sandboxed process outlives the daemon.
Debian package: bubblewrap.
"""

from __future__ import annotations

import os
import secrets
import signal
from pathlib import Path

import pytest

from functions.backends.base import FunctionRef
from functions.backends.local import LocalBackend
from hks_runtime import views
from tests.support.daemon import start_daemon, stop_daemon
from tests.support.daemon_helpers import NS, as_json, build, call, deploy, service, wait_for
from tests.support.sample_functions import remove_dir, scratch_dir

pytestmark = pytest.mark.runtime


def processes_mentioning(path: Path | str) -> list[int]:
    """Host pids whose command line names ``path``."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
            state = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if str(path).encode() in cmdline and state != "Z" and int(entry) != os.getpid():
            pids.append(int(entry))
    return pids


def sandboxes_of(daemon) -> list[int]:
    """A daemon's sandboxes: their bwrap command lines name its views of the dirs they bind (views.py:
    ``/run/hks-views/<daemon pid>-...``), or its data dir itself where views cannot be made."""
    views = processes_mentioning(f"/run/hks-views/{daemon.process.pid}-")
    return views + processes_mentioning(daemon.data_dir / "artifacts")


@pytest.fixture
def data_dir():
    path = scratch_dir("restart-")
    yield path
    remove_dir(path)


def test_restarted_daemon_restores_functions_at_zero_and_leaves_no_orphans(data_dir):
    token = secrets.token_urlsafe(8)
    daemon = start_daemon(data_dir, token, "--data-path", "python")
    try:
        backend = LocalBackend(daemon.control_url, token)
        artifact = build(backend, data_dir, "survivor", "python")
        deploy(backend, service("survivor", "python", artifact, env={"GREETING": "again"}))
        assert call(daemon.gateway_url, "survivor").status_code == 200
        assert sandboxes_of(daemon)  # its instance is running
    finally:
        stop_daemon(daemon)
    assert wait_for(lambda: not sandboxes_of(daemon), timeout=30)

    daemon = start_daemon(data_dir, token, "--data-path", "python")
    try:
        backend = LocalBackend(daemon.control_url, token)
        status = backend.status(FunctionRef(NS, NS, "survivor"))
        assert (status.ready, status.replicas, status.latest_ready_revision) == (True, 0, "survivor-00001")
        assert as_json(call(daemon.gateway_url, "survivor", "?env=1"))["GREETING"] == "again"
    finally:
        stop_daemon(daemon)


def test_killed_daemon_takes_its_sandboxes_with_it(data_dir):
    token = secrets.token_urlsafe(8)
    daemon = start_daemon(data_dir, token)
    try:
        backend = LocalBackend(daemon.control_url, token)
        artifact = build(backend, data_dir, "orphan", "node")
        deploy(backend, service("orphan", "node", artifact))
        assert call(daemon.gateway_url, "orphan").status_code == 200
        assert sandboxes_of(daemon)
        os.kill(daemon.process.pid, signal.SIGKILL)  # no cleanup code runs: only --die-with-parent
        daemon.process.wait(10)
        # Sandboxes bind the artifacts, HAProxy (the default data path where installed) reads its config
        # from the data dir: none of them may outlive the daemon.
        assert wait_for(lambda: not sandboxes_of(daemon) and not processes_mentioning(data_dir), timeout=30)
    finally:
        if daemon.process.poll() is None:
            stop_daemon(daemon)
        views.sweep_stale()  # what the next daemon's start would do: the killed one's mounts go
