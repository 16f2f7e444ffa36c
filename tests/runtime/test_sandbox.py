"""The sandbox contract, with real bubblewrap and real processes (Debian package: bubblewrap)."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path

import pytest

from hks_runtime import identities, netns, sandbox
from tests.support.needs import require_binary
from tests.support.sample_functions import (
    LAYERS_DIR,
    listening_socket,
    pid_alive,
    remove_dir,
    run,
    scratch_dir,
)

pytestmark = pytest.mark.runtime


@pytest.fixture(autouse=True)
def _bwrap():
    require_binary("bwrap", hint="apt-get install bubblewrap")


@pytest.fixture
def scratch():
    path = scratch_dir("sandbox-")
    yield path
    remove_dir(path)


def _spec(**fields) -> sandbox.SandboxSpec:
    defaults = dict(
        argv=["/bin/true"],
        env={},
        profile="restricted",
        limits=sandbox.PROFILES["restricted"],
        ro_binds=[],
        cwd="/tmp",
    )
    return sandbox.SandboxSpec(**{**defaults, **fields})


def test_check_sandbox_reports_the_limits_mode_in_force():
    mode = sandbox.check_sandbox()
    assert mode in ("cgroup-v2", "cgroup-v1", "rlimit")
    proc = sandbox.spawn(_spec())
    assert proc.wait() == 0
    assert proc.limits_mode == mode
    proc.cleanup()


def test_missing_bubblewrap_is_a_clear_error_not_an_unsandboxed_run(monkeypatch, fresh_probes, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # no bwrap anywhere
    with pytest.raises(sandbox.SandboxUnavailable, match="apt-get install bubblewrap"):
        sandbox.check_sandbox()
    marker = tmp_path / "ran"
    with pytest.raises(sandbox.SandboxUnavailable):
        sandbox.spawn(_spec(argv=["/bin/touch", str(marker)]))
    assert not marker.exists()


def test_the_environment_is_exactly_the_specs():
    env = {"PATH": "/usr/bin:/bin", "GREETING": "hello world", "MULTILINE": "a\nb"}
    code, out, _ = run(["/usr/bin/env", "-0"], env=env)
    assert code == 0
    seen = dict(item.split("=", 1) for item in out.split("\0") if item)
    seen.pop("PWD", None)  # set by bwrap's --chdir
    assert seen == env


def test_environment_values_never_appear_on_a_host_command_line(scratch):
    proc = sandbox.spawn(_spec(argv=["/bin/sleep", "30"], env={"API_SECRET": "s3cr3t-value"}))
    try:
        cmdlines = []
        for pid in sandbox._descendants(proc.pid, sandbox._children_map()):
            cmdlines.append(Path(f"/proc/{pid}/cmdline").read_bytes())
        assert cmdlines  # the sandbox is running
        assert not any(b"s3cr3t-value" in cmdline for cmdline in cmdlines)
    finally:
        proc.terminate(grace=0)
        proc.cleanup()


def test_code_runs_without_capabilities_and_as_nobody_when_possible(scratch):
    code, out, _ = run(
        ["/bin/sh", "-c", "grep ^Cap /proc/self/status; id -u"], ro_binds=[(str(scratch), "/app")]
    )
    assert code == 0
    caps = dict(line.split(":\t") for line in out.splitlines() if line.startswith("Cap"))
    assert caps["CapEff"] == caps["CapPrm"] == caps["CapBnd"] == "0000000000000000"
    if sandbox.runs_unprivileged():
        assert out.splitlines()[-1] == str(sandbox.SANDBOX_UID)


def test_system_dirs_are_read_only_and_the_root_holds_nothing_else(scratch):
    script = "ls -A /; touch /usr/x 2>&1; touch /app/x 2>&1; echo hi > /tmp/ok && cat /tmp/ok"
    code, out, _ = run(["/bin/sh", "-c", script], ro_binds=[(str(scratch), "/app")])
    lines = out.splitlines()
    root = set(lines[: lines.index("usr") + 1])
    assert root <= {"app", "bin", "dev", "etc", "lib", "lib64", "proc", "sbin", "tmp", "usr"}
    assert "Read-only file system" in out.split("usr\n", 1)[1]
    assert out.count("Read-only file system") == 2
    assert lines[-1] == "hi"
    assert not (scratch / "x").exists()


def test_tmp_is_private_to_each_sandbox():
    code, _, _ = run(["/bin/sh", "-c", "echo secret > /tmp/hks-private-marker"])
    assert code == 0
    assert not Path("/tmp/hks-private-marker").exists()
    code, out, _ = run(["/bin/sh", "-c", "cat /tmp/hks-private-marker 2>&1 || true"])
    assert "secret" not in out


def test_rw_binds_are_writable_by_the_code(scratch):
    out_dir = scratch / "out"
    out_dir.mkdir()
    code, _, err = run(["/bin/sh", "-c", "echo built > /build/result"], rw_binds=[(str(out_dir), "/build")])
    assert code == 0, err
    assert (out_dir / "result").read_text() == "built\n"


def test_restricted_has_no_network_but_serves_an_inherited_socket():
    """Socket activation: the parent listens on loopback, the sandbox accepts without a network of its own."""
    server = listening_socket()
    other = listening_socket()  # something on the host's loopback that the sandbox must not reach
    port = other.getsockname()[1]
    script = (
        "import socket, sys\n"
        "fd = int(sys.argv[1])\n"
        "try:\n"
        f"    socket.create_connection(('127.0.0.1', {port}), timeout=3); print('connected')\n"
        "except OSError as exc:\n"
        "    print('refused', exc.errno)\n"
        "listener = socket.socket(fileno=fd)\n"
        "conn, _ = listener.accept()\n"
        "conn.sendall(conn.recv(100).upper())\n"
    )
    proc = sandbox.spawn(
        _spec(argv=["/usr/bin/python3", "-c", script, str(server.fileno())], pass_fds=(server.fileno(),))
    )
    try:
        client = socket.create_connection(server.getsockname(), timeout=10)
        client.sendall(b"ping")
        assert client.recv(100) == b"PING"
        assert proc.wait(timeout=30) == 0
        assert proc.stdout.read().decode().startswith("refused")
    finally:
        proc.terminate(grace=0)
        proc.cleanup()
        server.close()
        other.close()


def test_standard_profile_has_a_network_of_its_own_without_the_host(monkeypatch):
    """Its own namespace (netns.py): the host's loopback is refused; only an operator's explicit
    ``HKS_SANDBOX_NETWORK=host`` brings back the shared host network."""
    other = listening_socket()
    port = other.getsockname()[1]
    script = (
        "import socket\n"
        f"try: socket.create_connection(('127.0.0.1', {port}), timeout=5); print('connected')\n"
        "except OSError as exc: print(type(exc).__name__)"
    )
    try:
        code, out, err = run(["/usr/bin/python3", "-c", script], profile="standard")
        assert (code, out.strip()) == (0, "ConnectionRefusedError"), err
        monkeypatch.setenv("HKS_SANDBOX_NETWORK", "host")
        code, out, err = run(["/usr/bin/python3", "-c", script], profile="standard")
        assert (code, out.strip()) == (0, "connected"), err
    finally:
        other.close()


def test_a_sandboxs_network_is_gone_with_it():
    mine = f"hks-*-{os.getpid()}-*"
    before = {p.name for p in netns.NETNS_DIR.glob(mine)}
    code, out, _ = run(["/usr/bin/cat", "/etc/resolv.conf"], profile="standard")
    assert code == 0 and "nameserver 10.0.2.3" in out  # DNS through slirp's forwarder, not the host's
    assert {p.name for p in netns.NETNS_DIR.glob(mine)} == before


def test_cgroup_limits_are_applied_and_metrics_read(fresh_probes):
    if sandbox.check_sandbox() == "rlimit":
        pytest.skip("no writable cgroups on this machine")
    limits = sandbox.limits_for("restricted", memory_mb=96, max_pids=12)
    script = (
        "import time; x = bytearray(40 << 20); sum(range(10**6)); print('ready', flush=True); time.sleep(60)"
    )
    proc = sandbox.spawn(_spec(argv=["/usr/bin/python3", "-c", script], limits=limits))
    try:
        assert proc.stdout.readline() == b"ready\n"
        memory_files = {
            "cgroup-v1": ("memory", "memory.limit_in_bytes"),
            "cgroup-v2": ("unified", "memory.max"),
        }[proc.limits_mode]
        pids_key = "pids" if proc.limits_mode == "cgroup-v1" else "unified"
        assert int((proc.cgroups[memory_files[0]] / memory_files[1]).read_text()) == 96 << 20
        assert int((proc.cgroups[pids_key] / "pids.max").read_text()) == 12
        assert proc.memory_bytes() >= 40 << 20  # the bytearray, touched by bytearray's zero fill
        assert proc.cpu_seconds() is None or proc.cpu_seconds() > 0
        assert not proc.oom_killed()
    finally:
        dirs = list(proc.cgroups.values())
        proc.cleanup()
    assert not any(path.exists() for path in dirs)


def test_rlimit_mode_still_bounds_open_files_and_memory(monkeypatch, fresh_probes):
    monkeypatch.setenv("HKS_SANDBOX_LIMITS", "rlimit")
    assert sandbox.check_sandbox() == "rlimit"
    limits = sandbox.limits_for("restricted", memory_mb=64, max_open_files=50)
    script = (
        "import resource\n"
        "print(resource.getrlimit(resource.RLIMIT_NOFILE)[0])\n"
        "try:\n"
        "    x = bytearray(200 << 20)\n"
        "    print('allocated')\n"
        "except MemoryError:\n"
        "    print('MemoryError')\n"
    )
    # a uid of its own: RLIMIT_NPROC counts every process of the uid on the host (others' sandboxes too)
    identity = identities.project_identity(LAYERS_DIR, "rlimit-test")
    code, out, err = run(["/usr/bin/python3", "-c", script], limits=limits, identity=identity)
    assert out.split() == ["50", "MemoryError"], err


def test_rlimit_mode_counts_the_processes_cpu_while_they_run_and_keeps_it_past_terminate(
    monkeypatch, fresh_probes
):
    """No cgroup to read: the figure is the sandbox's process tree's own clocks, a child's included once
    it has been reaped, and the last one read before the kill stays the final figure."""
    monkeypatch.setenv("HKS_SANDBOX_LIMITS", "rlimit")
    assert sandbox.check_sandbox() == "rlimit"
    burn = "import time\nt = time.process_time()\nwhile time.process_time() - t < {s}:\n    pass\n"
    script = (
        "import subprocess, sys, time\n"
        f"subprocess.run([sys.executable, '-c', {burn.format(s=0.4)!r}])\n"  # a child, reaped
        f"{burn.format(s=0.4)}"
        "print('burnt', flush=True)\n"
        "time.sleep(60)\n"
    )
    identity = identities.project_identity(LAYERS_DIR, "rlimit-test")
    proc = sandbox.spawn(_spec(argv=["/usr/bin/python3", "-c", script], identity=identity))
    try:
        assert proc.stdout.readline() == b"burnt\n"
        running = proc.cpu_seconds()
        assert running is not None and running >= 0.8  # the child's 0.4 s and its own
        proc.terminate(grace=0)
        assert proc.poll() is not None
        assert proc.cpu_seconds() >= running  # the figure read before the kill, kept
    finally:
        proc.cleanup()


def test_bad_specs_are_refused_before_anything_runs(scratch):
    marker = scratch / "ran"
    with pytest.raises(ValueError, match="profile"):
        sandbox.spawn(_spec(profile="wide-open", argv=["/bin/touch", str(marker)]))
    with pytest.raises(ValueError, match="environment"):
        sandbox.spawn(_spec(env={"A=B": "c"}))
    assert not marker.exists()


def test_exit_status_of_the_code_is_the_sandboxes():
    code, _, _ = run(["/bin/sh", "-c", "exit 7"])
    assert code == 7


def test_no_process_outlives_cleanup():
    proc = sandbox.spawn(_spec(argv=["/bin/sh", "-c", "sleep 300 & sleep 300"]))
    members = set()
    for _ in range(100):
        members = set(sandbox._descendants(proc.pid, sandbox._children_map()))
        if len(members) >= 4:  # bwrap, its init, sh, two sleeps
            break
        time.sleep(0.02)
    proc.cleanup()
    assert proc.poll() is not None
    assert len(members) >= 4
    assert not [pid for pid in members if pid_alive(pid)]  # zombies are left for the host's init to reap


def test_cgroups_go_away_when_the_exit_is_seen_and_the_figures_stay(fresh_probes):
    if sandbox.check_sandbox() == "rlimit":
        pytest.skip("no writable cgroups on this machine")
    proc = sandbox.spawn(_spec(argv=["/usr/bin/python3", "-c", "sum(range(3 * 10**6))"]))
    dirs = list(proc.cgroups.values())
    assert all(path.is_dir() for path in dirs)
    assert proc.wait(timeout=30) == 0
    deadline = time.monotonic() + 10
    while any(path.exists() for path in dirs) and time.monotonic() < deadline:
        proc.poll()  # a daemon's exit watcher polls; a dying task may hold the dir for a moment
        time.sleep(0.02)
    assert not any(path.exists() for path in dirs)
    assert proc.cpu_seconds() is None or proc.cpu_seconds() > 0
    assert proc.oom_killed() is False
    assert proc.memory_bytes() is None
    proc.cleanup()


def test_stale_cgroups_of_a_dead_daemon_are_swept_with_their_processes(fresh_probes):
    layout = sandbox._cgroups()
    if layout.mode == "rlimit":
        pytest.skip("no writable cgroups on this machine")
    ended = subprocess.Popen(["/bin/true"])  # a pid that has just ended stands for the crashed daemon
    ended.wait()
    name = f"stale-{ended.pid}-{time.monotonic_ns():x}"
    dirs = sandbox._create_cgroups(layout, name, sandbox.PROFILES["restricted"])
    procs = " ".join(f"echo $$ > {path / 'cgroup.procs'};" for path in dirs.values())
    orphan = subprocess.Popen(["/bin/sh", "-c", f"{procs} exec sleep 300"])
    for _ in range(200):
        if str(orphan.pid) in (dirs[next(iter(dirs))] / "cgroup.procs").read_text().split():
            break
        time.sleep(0.01)
    assert sandbox.sweep_stale_cgroups() >= 1
    assert orphan.wait(timeout=10) == -9
    assert not any(path.exists() for path in dirs.values())


def test_a_live_creators_cgroups_are_not_swept(fresh_probes):
    if sandbox.check_sandbox() == "rlimit":
        pytest.skip("no writable cgroups on this machine")
    proc = sandbox.spawn(_spec(argv=["/bin/sleep", "30"]))
    try:
        sandbox.sweep_stale_cgroups()
        assert all(path.is_dir() for path in proc.cgroups.values())
        assert proc.poll() is None
    finally:
        proc.cleanup()


def test_sandboxed_code_is_nobody_on_the_host_too(scratch):
    if not sandbox.runs_unprivileged():
        pytest.skip("unprivileged user namespaces are not available: code runs as root without capabilities")
    proc = sandbox.spawn(_spec(argv=["/bin/sleep", "30"], ro_binds=[(str(scratch), "/app")]))
    try:
        deadline = time.monotonic() + 10
        sleeper = None
        while sleeper is None and time.monotonic() < deadline:
            members = sandbox._descendants(proc.pid, sandbox._children_map())
            sleeper = next(
                (p for p in members if Path(f"/proc/{p}/comm").read_text().strip() == "sleep"), None
            )
        status = Path(f"/proc/{sleeper}/status").read_text()
        uids = next(line for line in status.splitlines() if line.startswith("Uid:")).split()[1:]
        assert uids == [str(sandbox.SANDBOX_UID)] * 4  # real, effective, saved, filesystem
        assert proc.unprivileged
    finally:
        proc.cleanup()


# A sandbox cannot fill the host's disk or memory through what it may write: /tmp and its memory dirs are
# size-capped tmpfs mounts (half the memory limit each), with or without cgroups.
_FILL = (
    "import errno, os, sys\n"
    "where = sys.argv[1]\n"
    "written = 0\n"
    "try:\n"
    "    for i in range(10_000):\n"
    "        with open(os.path.join(where, f'f{i}'), 'wb') as f:\n"
    "            f.write(b'x' * (8 << 20))\n"
    "        written += 8\n"
    "except OSError as e:\n"
    "    print(errno.errorcode[e.errno], written)\n"
)


@pytest.mark.parametrize("mode", ["cgroup", "rlimit"])
@pytest.mark.parametrize("where", ["/tmp", "/home/user"])
def test_writing_without_end_stops_at_the_memory_dirs_cap(monkeypatch, fresh_probes, where, mode):
    if mode == "rlimit":
        monkeypatch.setenv("HKS_SANDBOX_LIMITS", "rlimit")
    limits = sandbox.limits_for("restricted", memory_mb=128)
    identity = identities.project_identity(LAYERS_DIR, "fill-test")
    code, out, err = run(
        ["/usr/bin/python3", "-c", _FILL, where],
        limits=limits,
        identity=identity,
        memory_dirs=("/home/user",),
        cwd="/",
    )
    assert code == 0, err
    name, written = out.split()
    assert name == "ENOSPC"  # a clean "no space left", not an OOM kill, and not the host's disk
    assert int(written) <= 64  # half of the 128 MiB memory limit


def test_memory_dirs_are_private_writable_and_gone_with_the_sandbox():
    script = "echo mine > /home/user/note && cat /home/user/note && stat -c %U /home/user"
    code, out, err = run(["/bin/sh", "-c", script], memory_dirs=("/home/user",))
    assert code == 0, err
    assert out.splitlines()[0] == "mine"
    code, out, _ = run(["/bin/sh", "-c", "ls -A /home/user"], memory_dirs=("/home/user",))
    assert code == 0 and out.strip() == ""  # a new sandbox starts with an empty one


def test_a_memory_dir_must_be_a_path_of_its_own():
    with pytest.raises(ValueError, match="memory dir"):
        sandbox.spawn(_spec(memory_dirs=("/usr",)))
    with pytest.raises(ValueError, match="memory dir"):
        sandbox.spawn(_spec(memory_dirs=("relative",)))
