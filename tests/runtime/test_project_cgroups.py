"""A project's function instances share one cgroup (sandbox.Group): its memory limit bounds them together,
so two sandboxes of one project that together go past it lose one to the OOM killer, while another
project's sandbox is untouched. Real sandboxes (bubblewrap) under the machine's cgroups. Debian package:
bubblewrap.
"""

from __future__ import annotations

import secrets
import subprocess
import time

import pytest

from hks_runtime import sandbox

pytestmark = pytest.mark.runtime

# Holds ``mb`` MiB (touched), says so, then waits.
HOLD = "import sys, time; x = bytearray({mb} << 20); print('holding', flush=True); time.sleep(60)"


def _spec(name: str, group: sandbox.Group | None, **fields) -> sandbox.SandboxSpec:
    limits = sandbox.limits_for("restricted", memory_mb=128, max_pids=16)
    return sandbox.SandboxSpec(
        argv=["/usr/bin/python3", "-c", fields.pop("code", "import time; time.sleep(60)")],
        env={},
        profile="restricted",
        limits=limits,
        ro_binds=[],
        cwd="/tmp",
        name=name,
        group=group,
        **fields,
    )


@pytest.fixture
def cgroups(fresh_probes):
    mode = sandbox.check_sandbox()
    if mode == "rlimit":
        pytest.skip("no writable cgroups on this machine")
    return mode


def _memory_dir(proc) -> object:
    return proc.cgroups["unified" if proc.limits_mode == "cgroup-v2" else "memory"]


def test_a_sandbox_of_a_project_is_in_the_projects_cgroup_with_its_limit(cgroups):
    group = sandbox.Group(f"cg-{secrets.token_hex(3)}", 96)
    proc = sandbox.spawn(_spec("inside", group))
    try:
        leaf = _memory_dir(proc)
        assert leaf.parent.name == f"project-{group.name}"
        assert leaf.parent.parent in sandbox._cgroups().parents.values()  # the daemon's own parent
        limit_file = "memory.max" if cgroups == "cgroup-v2" else "memory.limit_in_bytes"
        assert int((leaf.parent / limit_file).read_text()) == 96 << 20
        assert int((leaf / limit_file).read_text()) == 128 << 20  # its own limit, under the project's
        deadline = time.monotonic() + 10  # the sandbox's wrapper puts itself in before it execs bwrap
        while not (leaf / "cgroup.procs").read_text().split() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert str(proc.pid) in (leaf / "cgroup.procs").read_text().split()
    finally:
        proc.cleanup()
    assert not leaf.exists() and leaf.parent.is_dir()  # the project's group stays for its next sandbox


def test_two_sandboxes_of_a_project_share_its_memory_and_another_project_is_untouched(cgroups):
    ours = sandbox.Group(f"cg-{secrets.token_hex(3)}", 100)
    theirs = sandbox.Group(f"cg-{secrets.token_hex(3)}", 100)
    first = sandbox.spawn(_spec("ours-1", ours, code=HOLD.format(mb=60)))
    other = sandbox.spawn(_spec("theirs", theirs, code=HOLD.format(mb=60)))
    second = None
    try:
        assert first.stdout.readline() == b"holding\n"
        assert other.stdout.readline() == b"holding\n"
        # 60 + 60 MiB: each under its own 128 MiB, together past the project's 100 MiB
        second = sandbox.spawn(_spec("ours-2", ours, code=HOLD.format(mb=60)))
        deadline = time.monotonic() + 30
        while first.poll() is None and second.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        killed = [p for p in (first, second) if p.poll() is not None]
        assert len(killed) == 1, "one of the project's sandboxes is OOM-killed"
        assert killed[0].oom_killed()
        survivor = second if killed[0] is first else first
        assert survivor.poll() is None
        assert other.poll() is None and not other.oom_killed()  # the other project never noticed
    finally:
        for proc in (first, second, other):
            if proc is not None:
                proc.cleanup()


def test_a_dead_daemons_sandboxes_in_project_groups_are_swept(cgroups):
    layout = sandbox._cgroups()
    ended = subprocess.Popen(["/bin/true"])  # a pid that has just ended stands for the crashed daemon
    ended.wait()
    group = sandbox.Group(f"cg-{secrets.token_hex(3)}", 64)
    dirs = sandbox._create_cgroups(
        layout, f"stale-{ended.pid}-{time.monotonic_ns():x}", sandbox.PROFILES["restricted"], group
    )
    procs = " ".join(f"echo $$ > {path / 'cgroup.procs'};" for path in dirs.values())
    orphan = subprocess.Popen(["/bin/sh", "-c", f"{procs} exec sleep 300"])
    for _ in range(200):
        if str(orphan.pid) in (next(iter(dirs.values())) / "cgroup.procs").read_text().split():
            break
        time.sleep(0.01)
    assert sandbox.sweep_stale_cgroups() >= 1
    assert orphan.wait(timeout=10) == -9
    assert not any(path.exists() for path in dirs.values())
    assert not any(path.parent.exists() for path in dirs.values())  # the emptied project group too
