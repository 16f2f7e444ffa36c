"""The one-shot kernels' pool on a real daemon (oneshot.py): sized by recent demand within its cap
(pool_policy.py), apart from the session agents' pool, and one-shot executions that leave nothing behind.
Debian package: bubblewrap."""

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
from tests.support.sandboxes import descendants

pytestmark = pytest.mark.runtime

MINIMUM, MAXIMUM, WINDOW = 1, 4, 10.0


@pytest.fixture(scope="module")
def daemon():
    require_binary("bwrap", hint="apt-get install bubblewrap")
    data_dir = scratch_dir("session-pool-")
    extra = ("--execute-pool-size", str(MINIMUM), "--session-pool-max", str(MAXIMUM))
    extra += ("--session-pool-window", str(WINDOW), "--session-libraries", "off")
    # only the Python kernels' pool: its kernels are the ones counted (and one session agent, apart)
    extra += ("--session-pool-size", "1", "--node-pool-size", "0", "--execute-node-pool-size", "0")
    running = start_daemon(data_dir, secrets.token_urlsafe(16), *extra)
    yield running
    stop_daemon(running)
    remove_dir(data_dir)


def _pools(daemon) -> dict:
    return httpx.get(f"{daemon.control_url}/v1/session-pool", headers=daemon.headers, timeout=30).json()


def _pool(daemon) -> dict:
    return _pools(daemon)["execute"]["python"]


def _execute(daemon, code: str, timeout: float = 60) -> dict:
    body = {"code": code, "namespace": "pool-test", "timeout_seconds": timeout}
    response = httpx.post(f"{daemon.control_url}/v1/execute", json=body, headers=daemon.headers, timeout=120)
    assert response.status_code == 200, response.text
    return response.json()


def _kernels(daemon) -> set[int]:
    """The one-shot kernels running under the daemon (its session agents' kernels are forked, unnamed in
    their command line)."""
    found = set()
    for pid in descendants(daemon.process.pid):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            comm = Path(f"/proc/{pid}/comm").read_text().strip()
        except OSError:
            continue
        if comm == "session_kernel" and b"session_kernel.standalone()" in cmdline:  # (not its bwrap)
            found.add(pid)
    return found


def _cgroup_of(pid: int) -> set[Path]:
    """The cgroup directories ``pid`` is in (its sandbox's), on the host."""
    parents = sandbox._cgroups().parents.values()
    try:
        lines = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
    except OSError:
        return set()
    names = {line.rsplit("/", 1)[-1] for line in lines} & {
        p.name for d in parents for p in d.glob("oneshot-*")
    }
    return {parent / name for parent in parents for name in names if (parent / name).exists()}


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
        assert wait_for(lambda: len(_kernels(daemon)) == MAXIMUM), _kernels(daemon)
        # one-shot runs are no demand for the session agents: their pool stays at its size
        assert (_pools(daemon)["demand"], _pools(daemon)["standbys"]) == (0, 1)
        # nothing claims for a window: back to the minimum, the surplus kernels destroyed
        idle = wait_for(lambda: (p := _pool(daemon))["standbys"] == MINIMUM and p["target"] == MINIMUM and p)
        assert idle, _pool(daemon)
        assert wait_for(lambda: len(_kernels(daemon)) == MINIMUM), _kernels(daemon)
    finally:
        done.set()
        watcher.join()
    assert seen and max(p["standbys"] + p["starting"] for p in seen) <= MAXIMUM


def test_a_timed_out_execution_leaves_no_process_cgroup_or_slot(daemon):
    """The code starts a setsid'd daemon ignoring SIGTERM, then overruns its timeout: after the answer
    the kernel's sandbox is gone - no process of it, no cgroup."""
    assert wait_for(lambda: _pool(daemon)["standbys"] == MINIMUM and len(_kernels(daemon)) == MINIMUM)
    (standby,) = _kernels(daemon)  # the one kernel the execution will take
    its_cgroups = _cgroup_of(standby)
    assert its_cgroups or not sandbox._cgroups().parents  # (the rlimit fallback has none)
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
        return [path for path in its_cgroups if path.exists()]

    def gone() -> bool:
        return not running() and not cgroups() and not Path(f"/proc/{standby}").exists()

    assert wait_for(gone)
    assert not running() and not cgroups() and standby not in _kernels(daemon)


def test_the_code_holds_nothing_of_its_agent_but_its_pipes(daemon):
    """A one-shot kernel is its sandbox's only program (oneshot.py): it holds stdin /dev/null, its stdout and
    stderr and its two pipes, and nothing else the runtime had open (no socket: it could answer requests
    meant for the runtime's other sandboxes)."""
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


def test_a_timed_out_run_is_interrupted_first_and_one_ignoring_it_still_ends(daemon):
    """At its timeout a run gets a TimeoutError and a SIGINT: its ``finally`` still runs (its output is in
    the answer); code that ignores SIGINT is ended by the teardown, two seconds later at most."""
    code = "import time\ntry:\n    print('start')\n    time.sleep(100)\nfinally:\n    print('cleanup')\n"
    result = _execute(daemon, code, timeout=1)
    assert result["error"]["name"] == "TimeoutError", result
    assert result["stdout"] == "start\ncleanup\n", result
    stubborn = "import signal\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\nprint('deaf')\nwhile 1: pass\n"
    result = _execute(daemon, stubborn, timeout=1)  # (it answers: the interrupt's grace is 2 s)
    assert (result["stdout"], result["error"]["name"]) == ("deaf\n", "TimeoutError"), result


def test_output_past_the_bound_stops_the_run(daemon):
    """A run's output is bounded where it enters the runtime (oneshot.MAX_OUTPUT_BYTES): past it the run is
    stopped with OutputLimitExceeded, and the next run is served."""
    code = "import os\nchunk = b'x' * 65536\nwhile True: os.write(1, chunk)\n"
    result = _execute(daemon, code, timeout=60)
    error = result["error"]
    assert error["name"] == "OutputLimitExceeded", {k: v for k, v in result.items() if k != "stdout"}
    assert len(result["stdout"]) <= 33 * 1024 * 1024
    assert _execute(daemon, "6 * 7")["result"] == 42


def test_a_standby_that_died_is_never_given_a_run(daemon):
    """A kernel killed while it waits (here from the host) is skipped: the run goes to a live one."""
    assert wait_for(lambda: len(_kernels(daemon)) >= MINIMUM)
    for pid in _kernels(daemon):
        os.kill(pid, 9)
    result = _execute(daemon, "6 * 7")
    assert (result["result"], result["error"]) == (42, None), result


def test_session_creates_grow_the_agents_pool_and_it_shrinks_back(daemon):
    """The session agents' pool is sized by session creates (standbys.py with its own policy): six at once
    grow it to its cap, and a window later it is back at its size."""
    assert wait_for(lambda: _pools(daemon)["standbys"] == 1)

    def create(_):
        body = {"id": secrets.token_hex(10), "namespace": "pool-test", "token": secrets.token_urlsafe(24)}
        response = httpx.post(
            f"{daemon.control_url}/v1/sessions",
            json={**body, "timeout_seconds": 60},
            headers=daemon.headers,
            timeout=120,
        )
        assert response.status_code == 201, response.text
        return response.json()["id"]

    with cf.ThreadPoolExecutor(6) as pool:
        created = list(pool.map(create, range(6)))
    try:
        grown = wait_for(lambda: (p := _pools(daemon))["standbys"] == MAXIMUM and p)
        assert grown and grown["demand"] >= MAXIMUM and grown["target"] == MAXIMUM, _pools(daemon)
    finally:
        for session_id in created:
            httpx.delete(f"{daemon.control_url}/v1/sessions/{session_id}", headers=daemon.headers, timeout=60)
    idle = wait_for(lambda: (p := _pools(daemon))["standbys"] == 1 and p["target"] == 1 and p)
    assert idle, _pools(daemon)


def test_bursts_of_fifty_on_a_small_pool_all_answer(daemon):
    """Fifty at once, twice, on a pool of one: each claim that finds it empty starts a kernel of its own,
    the daemon opening and closing pipes on several threads at once (a double close of a reused fd number
    once took another start's pipe: "Bad file descriptor", about 1 in 50)."""
    for _ in range(2):
        with cf.ThreadPoolExecutor(50) as pool:
            results = list(pool.map(lambda _: _execute(daemon, "6 * 7"), range(50)))
        assert [(r["result"], r["error"]) for r in results] == [(42, None)] * 50
