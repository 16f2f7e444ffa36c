"""Hostile code in the real sandbox: each test runs an attack, checks it is contained and the host is fine.

Debian package: bubblewrap. The attacks are real (a fork bomb, a memory bomb...), bounded by the sandbox.
"""

from __future__ import annotations

import io
import os
import signal
import subprocess
import tarfile
import time
from pathlib import Path

import pytest

from hks_runtime import builder, sandbox, seccomp
from tests.support.needs import require, require_binary
from tests.support.sample_functions import (
    LAYERS_DIR,
    REPO,
    listening_socket,
    pid_alive,
    remove_dir,
    run,
    scratch_dir,
)

pytestmark = pytest.mark.runtime

PY = "/usr/bin/python3"


@pytest.fixture(scope="module", autouse=True)
def _bwrap():
    require_binary("bwrap", hint="apt-get install bubblewrap")


@pytest.fixture(autouse=True)
def host_stays_healthy():
    """After every attack: no sandbox cgroup left behind; the host still starts sandboxes and processes."""
    before = _sandbox_cgroups()
    yield
    assert _sandbox_cgroups() <= before
    assert subprocess.run(["/bin/true"], timeout=10).returncode == 0
    assert run(["/bin/echo", "alive"])[1] == "alive\n"


def _sandbox_cgroups() -> set[Path]:
    """This test process's sandbox cgroups (a daemon under test may run its own next to them)."""
    layout = sandbox._cgroups()
    mine = f"-{os.getpid()}-"
    return {child for parent in layout.parents.values() for child in parent.iterdir() if mine in child.name}


def _spawn(argv, profile="restricted", **fields) -> sandbox.SandboxedProcess:
    spec = sandbox.SandboxSpec(
        argv=argv,
        env=fields.pop("env", {"PATH": "/usr/bin:/bin"}),
        profile=profile,
        limits=fields.pop("limits", sandbox.PROFILES[profile]),
        ro_binds=fields.pop("ro_binds", []),
        cwd=fields.pop("cwd", "/tmp"),
        name="hostile",
        **fields,
    )
    return sandbox.spawn(spec)


def _tree(proc) -> set[int]:
    return set(sandbox._descendants(proc.pid, sandbox._children_map()))


def _wait_for_tree(proc, size: int, timeout: float = 30) -> set[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        members = _tree(proc)
        if len(members) >= size:
            return members
        time.sleep(0.05)
    raise AssertionError(f"sandbox did not start its processes: {_tree(proc)}")


def _comm(pid: int) -> str:
    return Path(f"/proc/{pid}/comm").read_text().strip()


def _wchan(pid: int) -> str:
    return Path(f"/proc/{pid}/wchan").read_text().strip()


def _needs_cgroups():
    if sandbox.check_sandbox() == "rlimit":
        pytest.skip("cgroups are not writable here: the rlimit fallback cannot bound this")


# --- resources -----------------------------------------------------------------------------------------


def test_fork_bomb_is_contained_by_the_process_limit():
    _needs_cgroups()
    limits = sandbox.limits_for("restricted", max_pids=32)
    bomb = (
        "import os, time\n"
        "children = 0\n"
        "try:\n"
        "    while True:\n"
        "        if os.fork() == 0:\n"
        "            time.sleep(120)\n"
        "            os._exit(0)\n"
        "        children += 1\n"
        "except OSError as exc:\n"
        "    print('fork refused after', children, exc.strerror, flush=True)\n"
        "time.sleep(120)\n"
    )
    proc = _spawn([PY, "-c", bomb], limits=limits)
    try:
        line = proc.stdout.readline().decode()
        assert line.startswith("fork refused after")
        assert int(line.split()[3]) < 32
        assert len(_tree(proc)) <= 32 + 2  # plus bwrap outside the cgroup's view and its init
    finally:
        proc.terminate(grace=0)
        proc.cleanup()
    assert not [pid for pid in _tree(proc) if pid_alive(pid)]


def test_shell_fork_bomb_is_contained_and_fully_killed():
    _needs_cgroups()
    limits = sandbox.limits_for("restricted", max_pids=40)
    # the sleep is started first: forked after the bomb, it could find no pid left, and its shell would end
    # the sandbox (and its cgroup, with the counter read below) before the loop looks
    proc = _spawn(["/bin/sh", "-c", "sleep 120 & b() { b | b & }; b; wait"], limits=limits)
    seen: set[int] = set()
    try:
        deadline = time.monotonic() + 5
        while proc.poll() is None and time.monotonic() < deadline:
            members = _tree(proc)
            assert len(members) <= 40 + 1  # the cgroup's limit (+ bwrap's outer process, counted too)
            seen |= members
            time.sleep(0.02)
        assert _pids_limit_hits(proc) > 0
    finally:
        proc.terminate(grace=0)
        proc.cleanup()
    assert len(seen) > 3
    assert not [pid for pid in seen if pid_alive(pid)]


def _pids_limit_hits(proc) -> int:
    events = (proc.cgroups.get("pids") or proc.cgroups["unified"]) / "pids.events"
    return sandbox._stat_value(events.read_text(), "max") or 0


def test_memory_bomb_is_killed_and_reported_as_out_of_memory():
    _needs_cgroups()
    limits = sandbox.limits_for("restricted", memory_mb=64)
    bomb = "chunks = []\nwhile True:\n    chunks.append(bytearray(8 << 20))\n"
    proc = _spawn([PY, "-c", bomb], limits=limits)
    try:
        code = proc.wait(timeout=60)
        assert code == 128 + signal.SIGKILL
        assert proc.oom_killed()
    finally:
        proc.terminate(grace=0)
        proc.cleanup()


def test_a_well_behaved_process_is_not_reported_as_out_of_memory():
    code = run([PY, "-c", "x = bytearray(8 << 20)"])[0]
    assert code == 0
    proc = _spawn([PY, "-c", "import sys; sys.exit(9)"])
    assert proc.wait(timeout=30) == 9
    assert not proc.oom_killed()
    proc.cleanup()


def test_filling_tmp_is_bounded_by_the_file_size_limit():
    limits = sandbox.limits_for("restricted", max_file_size_mb=8)
    script = "dd if=/dev/zero of=/tmp/big bs=1M count=100 2>&1; stat -c %s /tmp/big"
    code, out, _ = run(["/bin/sh", "-c", script], limits=limits)
    assert "File too large" in out or "File size limit exceeded" in out  # EFBIG or SIGXFSZ
    assert int(out.split()[-1]) == 8 * 1024 * 1024


def test_many_files_in_tmp_are_bounded_by_the_memory_limit():
    """A private /tmp is a tmpfs capped at half the sandbox's memory (and charged to it): many small files
    cannot fill the host; past the cap the writes fail (ENOSPC) rather than the sandbox being OOM-killed."""
    limits = sandbox.limits_for("restricted", memory_mb=64, max_file_size_mb=8)
    script = (
        "i=0; while [ $i -lt 40 ]; do dd if=/dev/zero of=/tmp/f$i bs=1M count=4 2>/dev/null || break;"
        " i=$((i+1)); done; echo written $i; du -sm /tmp"
    )
    proc = _spawn(["/bin/sh", "-c", script], limits=limits)
    try:
        out = proc.stdout.read().decode()
        code = proc.wait(timeout=120)
        # 160 MB of files do not fit: the writes stop at the cap (32 MiB), and the sandbox lives on to say so
        assert code == 0 and not proc.oom_killed(), out
        lines = out.split("\n")
        assert lines[0].startswith("written ") and int(lines[0].split()[1]) < 40, out
        assert int(lines[1].split()[0]) <= 32, out
    finally:
        proc.terminate(grace=0)
        proc.cleanup()


def test_an_output_flood_is_bounded_by_the_pipe_and_stopped_by_terminate():
    proc = _spawn(["/usr/bin/yes", "flood"])
    try:
        received = 0
        while received < 4 << 20:  # the reader decides how much it takes (the daemon caps its logs)
            received += len(os.read(proc.stdout.fileno(), 1 << 16))
        # Nobody reads any more: the writer blocks on the full pipe instead of growing anything.
        writer = next(pid for pid in _wait_for_tree(proc, 3) if _comm(pid) == "yes")
        deadline = time.monotonic() + 30
        while not _wchan(writer).endswith("pipe_write") and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _wchan(writer).endswith("pipe_write")
    finally:
        proc.terminate(grace=1)
        proc.cleanup()
    assert proc.returncode is not None


def test_busy_loop_and_its_grandchildren_are_stopped_by_terminate():
    script = (
        "trap '' TERM\n"  # ignores the polite request: SIGKILL after the grace period
        f"{PY} -c 'while True: pass' &\n"
        "setsid sh -c 'sleep 600 & while :; do :; done' &\n"
        "while :; do :; done\n"
    )
    proc = _spawn(["/bin/sh", "-c", script])
    members = _wait_for_tree(proc, 6)  # bwrap, init, sh, python, setsid'd sh, sleep
    started = time.monotonic()
    proc.terminate(grace=0.5)  # the wall-time limit is enforced by whoever holds the process
    assert time.monotonic() - started < 30
    assert proc.returncode is not None
    assert not [pid for pid in members if pid_alive(pid)]
    proc.cleanup()


@pytest.mark.parametrize("mode", ["cgroups", "rlimit"])
def test_an_immediate_kill_reaches_children_of_threads_and_setsid_daemons(mode, monkeypatch):
    """terminate(grace=0) - a one-shot execution's teardown - kills at once, with the sandbox's process
    tree read from its own /proc/PID/task/*/children rather than a scan of the host: a child forked by a
    thread other than the main one, and a double-forked setsid'd daemon, are killed too (without cgroups,
    where the tree is all there is, as well)."""
    if mode == "rlimit":
        monkeypatch.setenv("HKS_SANDBOX_LIMITS", "rlimit")
    sandbox._cgroups.cache_clear()
    try:
        script = (
            "import os, subprocess, threading, time\n"
            "def spawn():\n"
            "    subprocess.Popen(['/bin/sleep', '600'])\n"  # a child of this thread, not of the main one
            "threading.Thread(target=spawn).start()\n"
            "subprocess.Popen(['/bin/sh', '-c', 'setsid sh -c \"trap : TERM; sleep 600\" & :'])\n"
            "time.sleep(600)\n"
        )
        proc = _spawn([PY, "-c", script])
        members = _wait_for_tree(proc, 6)  # bwrap, init, python, sleep, the setsid'd sh and its sleep
        for _ in range(600):
            if sum(_comm(pid) == "sleep" for pid in members if pid_alive(pid)) == 2:
                break
            time.sleep(0.05)
            members = _tree(proc)
        assert set(sandbox._descendants(proc.pid, sandbox._process_tree(proc.pid))) == members
        proc.terminate(grace=0)
        assert proc.returncode is not None
        assert not [pid for pid in members if pid_alive(pid)]
        dirs = list(proc.cgroups.values())
        proc.cleanup()
        assert not any(path.exists() for path in dirs)
    finally:
        sandbox._cgroups.cache_clear()


# --- isolation -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def two_functions():
    """Two functions' artifacts side by side, as the runtime keeps them, plus a stand-in portal database."""
    work = scratch_dir("hostile-")
    artifacts = work / "artifacts"
    artifacts.mkdir()
    for name in ("mine", "theirs"):
        (artifacts / name).mkdir()
        (artifacts / name / "index.js").write_text(f"// {name}: secret-of-{name}\n")
    portal_db = work / "db.sqlite3"
    portal_db.write_text("portal-database-contents")
    portal_db.chmod(0o644)
    yield artifacts, portal_db
    remove_dir(work)


def test_reading_files_outside_its_own_dir_fails(two_functions):
    artifacts, portal_db = two_functions
    real_db = REPO / "var" / "db.sqlite3"
    targets = [
        str(artifacts / "theirs" / "index.js"),
        "/app/../theirs/index.js",
        str(portal_db),
        str(real_db),
        "/etc/shadow",
        "/root/.bashrc",
        "/proc/1/root/etc/shadow",
        str(LAYERS_DIR),
        str(REPO / "hks_portal" / "settings.py"),
    ]
    assert (
        Path(targets[0]).read_text() and portal_db.read_text() and Path("/etc/shadow").exists()
    )  # on the host
    script = (
        "import sys\n"
        "for path in sys.argv[1:]:\n"
        "    try:\n"
        "        open(path).read(1)\n"
        "        print('READ', path)\n"
        "    except OSError as exc:\n"
        "        print('denied', path, type(exc).__name__)\n"
        "print(open('/app/index.js').read().strip())\n"
    )
    code, out, err = run(
        [PY, "-c", script, *targets], ro_binds=[(str(artifacts / "mine"), "/app")], cwd="/app"
    )
    assert code == 0, err
    assert "READ" not in out
    assert out.count("denied") == len(targets)
    assert out.splitlines()[-1] == "// mine: secret-of-mine"


def test_other_processes_are_invisible():
    script = (
        "import os\n"
        "pids = [p for p in os.listdir('/proc') if p.isdigit()]\n"
        "cmdlines = [open(f'/proc/{p}/cmdline', 'rb').read() for p in pids]\n"
        "print(len(pids), any(b'py' b'test' in c for c in cmdlines), os.getpid())\n"
    )
    code, out, err = run([PY, "-c", script])
    count, sees_pytest, own_pid = out.split()
    assert code == 0, err
    assert int(count) <= 3  # bwrap's init, python itself (and maybe a reaper)
    assert sees_pytest == "False"
    assert int(own_pid) <= 3
    assert os.getpid() > 0 and Path(f"/proc/{os.getpid()}").exists()  # the host does see us


def test_restricted_code_cannot_open_any_outbound_connection():
    host_listener = listening_socket()
    port = host_listener.getsockname()[1]
    script = (
        "import socket\n"
        f"targets = [('127.0.0.1', {port}), ('1.1.1.1', 443), ('8.8.8.8', 53), ('::1', {port})]\n"
        "for host, port in targets:\n"
        "    family = socket.AF_INET6 if ':' in host else socket.AF_INET\n"
        "    s = socket.socket(family, socket.SOCK_STREAM)\n"
        "    s.settimeout(3)\n"
        "    try:\n"
        "        s.connect((host, port))\n"
        "        print('CONNECTED', host)\n"
        "    except OSError as exc:\n"
        "        print('failed', host, exc.errno)\n"
        "u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
        "try:\n"
        "    u.sendto(b'x', ('8.8.8.8', 53)); print('SENT udp')\n"
        "except OSError as exc:\n"
        "    print('failed udp', exc.errno)\n"
        "print(sorted(name for _, name in socket.if_nameindex()))\n"
    )
    try:
        code, out, err = run([PY, "-c", script], profile="restricted")
    finally:
        host_listener.close()
    assert code == 0, err
    assert "CONNECTED" not in out and "SENT" not in out
    assert out.count("failed") == 5
    assert out.splitlines()[-1] == "['lo']"  # a fresh network namespace with nothing in it


def test_restricted_cannot_escape_through_an_inherited_socket():
    """The one socket it gets is a listener: it can accept, not connect anywhere."""
    server = listening_socket()
    target = listening_socket()
    script = (
        "import socket, sys\n"
        "s = socket.socket(fileno=int(sys.argv[1]))\n"
        "try:\n"
        f"    s.connect(('127.0.0.1', {target.getsockname()[1]})); print('CONNECTED')\n"
        "except OSError as exc:\n"
        "    print('failed', exc.errno)\n"
    )
    try:
        code, out, _ = run([PY, "-c", script, str(server.fileno())], pass_fds=(server.fileno(),))
    finally:
        server.close()
        target.close()
    assert out.startswith("failed")


def test_namespaces_cannot_be_reentered_or_escalated():
    script = (
        "unshare -r true 2>&1 && echo UNSHARED; "
        "mount -t tmpfs x /usr 2>&1 || echo mount-refused; "
        "chroot / true 2>&1 || echo chroot-refused; "
        "kill -9 1 2>&1; echo still-here"
    )
    code, out, _ = run(["/bin/sh", "-c", script])
    assert "mount-refused" in out and "chroot-refused" in out and "still-here" in out
    assert "UNSHARED" not in out  # bwrap --disable-userns


def test_built_function_archive_cannot_smuggle_links_into_the_artifact(tmp_path):
    """A link in an archive is refused at build time too (the upload check is not the only line)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        info = tarfile.TarInfo("secret")
        info.type, info.linkname = tarfile.SYMTYPE, "/etc/shadow"
        tar.addfile(info)
    archive = tmp_path / "evil.tar.gz"
    archive.write_bytes(buffer.getvalue())
    with pytest.raises(builder.BuildError, match="not a regular file"):
        builder.build(
            runtime="node",
            archive_path=archive,
            artifacts_dir=tmp_path / "artifacts",
            layers_dir=LAYERS_DIR,
            content_hash="evil",
            on_log=lambda line: None,
        )
    assert not (tmp_path / "artifacts" / "evil").exists()


SYSCALL_PROBE = """
import ctypes
libc = ctypes.CDLL(None, use_errno=True)
calls = {"io_uring_setup": (425, 1, 0), "keyctl": (250, 0, -4, 0), "userfaultfd": (323, 0),
         "perf_event_open": (298, 0, 0, -1, -1, 0), "unshare": (272, 0x20000000), "getpid": (39,)}
for name, (nr, *args) in calls.items():
    ctypes.set_errno(0)
    result = libc.syscall(nr, *args)
    print(name, result, ctypes.get_errno())
"""


def test_kernel_attack_surface_calls_are_refused_by_seccomp():
    """io_uring, the keyrings every nobody shares, userfaultfd, perf events, new namespaces: EPERM; ordinary
    calls work. (x86_64 system call numbers.)"""
    if os.uname().machine != "x86_64":
        pytest.skip("the probe uses x86_64 system call numbers")
    require(seccomp.program() is not None, "no seccomp filter: apt-get install python3-seccomp")
    proc = _spawn([PY, "-c", SYSCALL_PROBE], profile="standard")
    try:
        out, err = proc.stdout.read().decode(), proc.stderr.read().decode()
        assert proc.wait(timeout=60) == 0, err
    finally:
        proc.cleanup()  # wait() drops the cgroups only if the last tasks are gone; cleanup() waits for them
    answers = {
        name: (int(result), int(errno)) for name, result, errno in (line.split() for line in out.splitlines())
    }
    for name in ("io_uring_setup", "keyctl", "userfaultfd", "perf_event_open", "unshare"):
        assert answers[name] == (-1, 1), (name, answers[name])  # EPERM
    assert answers["getpid"][0] > 0
