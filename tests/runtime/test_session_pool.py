"""The session pool on a real daemon: sized by recent demand within its cap (pool_policy.py), and one-shot
executions that leave nothing behind. Debian package: bubblewrap."""

from __future__ import annotations

import concurrent.futures as cf
import os
import secrets
import threading
from pathlib import Path

import httpx
import pytest

from hks_runtime import sandbox
from tests.support.daemon import start_daemon, stop_daemon
from tests.support.daemon_helpers import wait_for
from tests.support.needs import require_binary
from tests.support.sample_functions import remove_dir, scratch_dir

pytestmark = pytest.mark.runtime

MINIMUM, MAXIMUM, WINDOW = 1, 4, 10.0


@pytest.fixture(scope="module")
def daemon():
    require_binary("bwrap", hint="apt-get install bubblewrap")
    data_dir = scratch_dir("session-pool-")
    extra = ("--session-pool-size", str(MINIMUM), "--session-pool-max", str(MAXIMUM))
    extra += ("--session-pool-window", str(WINDOW), "--session-libraries", "off")
    extra += ("--node-pool-size", "0")  # only the session pool: its slots are the ones counted
    running = start_daemon(data_dir, secrets.token_urlsafe(16), *extra)
    yield running
    stop_daemon(running)
    remove_dir(data_dir)


def _pool(daemon) -> dict:
    return httpx.get(f"{daemon.control_url}/v1/session-pool", headers=daemon.headers, timeout=30).json()


def _execute(daemon, code: str, timeout: float = 60) -> dict:
    body = {"code": code, "namespace": "pool-test", "timeout_seconds": timeout}
    response = httpx.post(f"{daemon.control_url}/v1/execute", json=body, headers=daemon.headers, timeout=120)
    assert response.status_code == 200, response.text
    return response.json()


def _slots(daemon) -> set[str]:
    return {path.name for path in (daemon.data_dir / "sessions").iterdir()}


def test_the_pool_grows_after_a_burst_within_its_cap_and_shrinks_back_when_idle(daemon):
    assert wait_for(lambda: _pool(daemon)["standbys"] == MINIMUM)
    seen: list[dict] = []
    done = threading.Event()

    def watch():
        while not done.is_set():
            seen.append(_pool(daemon))

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        # eight at once (each holds its agent a while, so they overlap): twice the cap
        with cf.ThreadPoolExecutor(8) as pool:
            code = "import time; time.sleep(2); 6 * 7"
            results = list(pool.map(lambda _: _execute(daemon, code), range(8)))
        assert [r["result"] for r in results] == [42] * 8
        grown = wait_for(lambda: (p := _pool(daemon))["standbys"] == MAXIMUM and p)
        assert grown, _pool(daemon)
        assert grown["demand"] > MAXIMUM and grown["target"] == MAXIMUM
        # nothing claims for a window: back to the minimum, the surplus agents destroyed
        idle = wait_for(lambda: (p := _pool(daemon))["standbys"] == MINIMUM and p["target"] == MINIMUM and p)
        assert idle, _pool(daemon)
        assert wait_for(lambda: len(_slots(daemon)) == MINIMUM), _slots(daemon)
    finally:
        done.set()
        watcher.join()
    assert seen and max(p["standbys"] + p["starting"] for p in seen) <= MAXIMUM


def test_a_timed_out_execution_leaves_no_process_cgroup_or_slot(daemon):
    """The code starts a setsid'd daemon ignoring SIGTERM, then overruns its timeout: after the answer
    the agent's sandbox is gone - no process of it, no cgroup, no slot dir."""
    assert wait_for(lambda: _pool(daemon)["standbys"] == MINIMUM and len(_slots(daemon)) == MINIMUM)
    (standby,) = _slots(daemon)  # the one agent the execution will take
    marker = f"6{secrets.randbelow(10**6):06d}.5"
    code = (
        "import os, subprocess, time\n"
        f"subprocess.Popen(['/bin/sh', '-c', 'setsid sh -c \"trap : TERM; sleep {marker}\" &'])\n"
        "def up():\n"
        "    for p in filter(str.isdigit, os.listdir('/proc')):\n"
        "        try:\n"
        f"            if b'sleep\\x00{marker}' in open(f'/proc/{{p}}/cmdline', 'rb').read(): return True\n"
        "        except OSError: pass\n"
        "while not up(): time.sleep(0.01)\n"
        "print('up')\n"
        "time.sleep(600)\n"
    )
    result = _execute(daemon, code, timeout=5)
    assert result["stdout"] == "up\n" and result["error"]["name"] == "TimeoutError", result

    def running() -> list[int]:
        found = []
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    if marker.encode() in Path(f"/proc/{entry}/cmdline").read_bytes():
                        found.append(int(entry))
                except OSError:
                    continue
        return found

    def cgroups() -> list[Path]:
        parents = sandbox._cgroups().parents.values()
        return [path for parent in parents for path in parent.glob(f"session-{standby}-*")]

    assert wait_for(lambda: not running() and not cgroups() and standby not in _slots(daemon))
    assert not running() and not cgroups() and standby not in _slots(daemon)


def test_the_code_holds_nothing_of_its_agent_but_its_pipes(daemon):
    """The kernel is forked from the agent (session_agent.py): it must hold neither the agent's listening
    socket (it could answer the portal's requests, token and all) nor the agent's stdin (the token)."""
    code = (
        "import os\n"
        "fds = sorted(int(f) for f in os.listdir('/proc/self/fd'))\n"
        "links = {}\n"
        "for f in fds:\n"
        "    try: links[f] = os.readlink(f'/proc/self/fd/{f}')\n"
        "    except OSError: pass\n"
        "links\n"
    )
    links = _execute(daemon, code)["result"]
    assert links["0"] == "/dev/null"
    assert not [link for link in links.values() if link.startswith("socket:")], links
    assert {int(fd) for fd in links} <= {0, 1, 2, 3, 4}, links  # stdio and the kernel's two pipes
