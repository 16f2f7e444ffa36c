"""After a crash, the sandbox control groups the dead daemon made are removed when a daemon starts."""

from __future__ import annotations

import secrets
import subprocess

import pytest

from hks_runtime import sandbox
from tests.support.daemon import start_daemon, stop_daemon
from tests.support.needs import require_binary
from tests.support.sample_functions import remove_dir, scratch_dir


def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_a_crashed_daemons_cgroups_are_swept_at_start():
    require_binary("bwrap", hint="apt-get install bubblewrap")
    parents = sandbox._cgroups().parents
    if not parents:
        pytest.skip("no writable cgroup hierarchy here (rlimit fallback): nothing to sweep")
    stale = [parent / f"hello-{_dead_pid()}-deadbeef" for parent in parents.values()]
    for path in stale:
        path.mkdir()
    data_dir = scratch_dir("sweep-")
    daemon = start_daemon(data_dir, secrets.token_urlsafe(16))
    try:
        assert [path for path in stale if path.exists()] == []
    finally:
        stop_daemon(daemon)
        for path in stale:
            if path.exists():
                path.rmdir()
        remove_dir(data_dir)
