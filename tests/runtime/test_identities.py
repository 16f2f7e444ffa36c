"""Every project's builds and instances run as the project's own unprivileged uid (issue 11).

What one tenant's code could do if it left its sandbox is what that uid may do on the host: these tests
take the very uid and gid a build hook of project A ran as and try, from the host, to read project B's
artifact and dependency cache and to signal B's running instance (all refused), while B's own uid may.
Debian packages: bubblewrap, slirp4netns, nftables, iproute2.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from hks_runtime import builder, identities, sandbox
from tests.support.needs import require_binary
from tests.support.sample_functions import (
    LAYERS_DIR,
    REPO,
    build_files,
    fixture_files,
    request,
    scratch_fixture,
    serving,
    wait_ready,
)

pytestmark = pytest.mark.runtime

ID_HOOK = "echo HOOK-ID $(id -u) $(id -g) $(stat -c '%u %a' /build)"


@pytest.fixture(scope="module", autouse=True)
def _root_and_bwrap():
    require_binary("bwrap", hint="apt-get install bubblewrap")
    if not sandbox.runs_unprivileged():
        pytest.skip("per-project uids need a root daemon and unprivileged user namespaces (docs/runtime.md)")


work = scratch_fixture("identities-")


def _build(work, project: str, runtime: str, files: dict, logs: list):
    name = f"{project}-{runtime}"
    return build_files(files, runtime, work, logs, name=name, scope=project, deps_cache=True)


def _hooked_node(project: str) -> dict:
    package = {
        "name": f"ids-{project}",
        "version": "1.0.0",
        "main": "index.js",
        "dependencies": {"cloudevents": "8.0.2"},
        "scripts": {"preinstall": ID_HOOK},
    }
    return {**fixture_files("node-http"), "package.json": json.dumps(package)}


def _as(identity: identities.Identity, code: str, *args: str) -> subprocess.CompletedProcess:
    """Run Python on the host with exactly ``identity``'s credentials: what an escaped sandbox would be."""
    setpriv = ["setpriv", f"--reuid={identity.uid}", f"--regid={identity.gid}", "--clear-groups", "--"]
    return subprocess.run([*setpriv, sys.executable, "-c", code, *args], capture_output=True, text=True)


READ = "import os, sys; p = sys.argv[1]; print(os.listdir(p) if os.path.isdir(p) else open(p).read()[:20])"
SIGNAL = "import os, sys; os.kill(int(sys.argv[1]), 0)"


def _descendants(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True).stdout
    kids = [int(p) for p in out.split()]
    return kids + [d for k in kids for d in _descendants(k)]


def _uids(pid: int) -> set[int]:
    """Real uids of ``pid`` and everything under it."""
    found = set()
    for current in [pid, *_descendants(pid)]:
        with open(f"/proc/{current}/status") as handle:
            found.add(int(next(line for line in handle if line.startswith("Uid:")).split()[1]))
    return found


def test_each_project_gets_a_recorded_uid_of_its_own(tmp_path, monkeypatch):
    a, b = identities.project_identity(tmp_path, "alpha"), identities.project_identity(tmp_path, "beta")
    base, count = identities.uid_range()
    assert a != b and all(base <= i.uid < base + count and i.gid == i.uid for i in (a, b))
    identities._cache.clear()  # a restarted daemon reads the table: the same uids
    assert identities.project_identity(tmp_path, "alpha") == a
    assert json.loads((tmp_path / identities.TABLE_NAME).read_text()) == {"alpha": a.uid, "beta": b.uid}


def test_uids_taken_by_a_project_or_a_host_account_are_skipped(tmp_path, monkeypatch):
    monkeypatch.setenv("HKS_SANDBOX_UID_BASE", str(sandbox.SANDBOX_UID))  # "nobody" is a host account
    monkeypatch.setenv("HKS_SANDBOX_UID_COUNT", "3")
    got = {identities.project_identity(tmp_path, p).uid for p in ("p1", "p2")}
    assert len(got) == 2 and sandbox.SANDBOX_UID not in got
    with pytest.raises(RuntimeError, match="no free uid"):
        identities.project_identity(tmp_path, "p3")


def test_a_build_hook_of_one_project_cannot_touch_another_projects_files_or_processes(work):
    logs_a, logs_b = [], []
    artifact_a = _build(work, "tenant-a", "node", _hooked_node("tenant-a"), logs_a)
    artifact_b = _build(work, "tenant-b", "node", _hooked_node("tenant-b"), logs_b)
    ids = {}
    for project, logs in (("tenant-a", logs_a), ("tenant-b", logs_b)):
        line = next(line for line in logs if line.startswith("HOOK-ID"))
        uid, gid, build_owner, build_mode = map(int, line.split()[1:])
        ids[project] = identities.Identity(uid, gid)
        assert ids[project] == identities.project_identity(LAYERS_DIR, project)
        assert (build_owner, build_mode) == (uid, 700)  # its build dir: its own uid's alone
    hook_a, hook_b = ids["tenant-a"], ids["tenant-b"]
    assert hook_a.uid != hook_b.uid and sandbox.SANDBOX_UID not in (hook_a.uid, hook_b.uid)

    entries = [p for p in (work / "deps" / "tenant-b").iterdir() if p.is_dir() and not p.name.startswith(".")]
    cache_b = next(p for p in entries if "ids-tenant-b" in (p / "package.json").read_text())
    with serving("node", "http", artifact_b, profile="standard", project="tenant-b") as (url, proc):
        wait_ready(url, proc)
        assert request(url + "/")[0] == 200
        assert proc.unprivileged and proc.identity == hook_b
        assert _uids(proc.pid) == {hook_b.uid}
        victim = _descendants(proc.pid)[-1]  # the function's own process, deepest in the sandbox
        for target in (artifact_b, artifact_b / "index.js", cache_b, cache_b / "package.json"):
            refused = _as(hook_a, READ, str(target))
            assert refused.returncode != 0 and "PermissionError" in refused.stderr, (target, refused)
        assert "PermissionError" in _as(hook_a, SIGNAL, str(victim)).stderr
        # B's own uid may read its artifact and signal its own instance; the cache is the platform's
        assert _as(hook_b, READ, str(artifact_b / "index.js")).returncode == 0
        assert _as(hook_b, SIGNAL, str(victim)).returncode == 0
        assert "PermissionError" in _as(hook_b, READ, str(cache_b)).stderr
    # and A's artifact is closed to B the same way
    assert "PermissionError" in _as(hook_b, READ, str(artifact_a)).stderr


@pytest.mark.parametrize("runtime", ["node", "python"])
def test_a_function_builds_and_serves_as_its_projects_uid(work, runtime):
    files = {**fixture_files(f"{runtime}-http")}
    if runtime == "python":
        files["requirements.txt"] = "six==1.16.0\n"
    logs = []
    artifact = _build(work, "tenant-serve", runtime, files, logs)
    identity = identities.project_identity(LAYERS_DIR, "tenant-serve")
    st = artifact.stat()
    assert (st.st_uid, st.st_gid, st.st_mode & 0o777) == (0, identity.gid, 0o750)
    with serving(runtime, "http", artifact, profile="standard", project="tenant-serve") as (url, proc):
        wait_ready(url, proc)
        status, _, body = request(url + "/")
        assert (status, body) == (200, b"OK")
        assert proc.unprivileged and _uids(proc.pid) == {identity.uid}


def _mountinfo_of_an_instance(artifact, project: str) -> str:
    layer = builder.ensure_layer("node", LAYERS_DIR, lambda line: None)
    _, env, binds = builder.instance_command(
        runtime="node", kind="http", artifact_dir=artifact, layer_dir=layer, listen_fd=0
    )
    spec = sandbox.SandboxSpec(
        argv=["/bin/cat", "/proc/self/mountinfo"],
        env=env,
        profile="restricted",
        limits=sandbox.PROFILES["restricted"],
        ro_binds=binds,
        name="test-mountinfo",
        identity=identities.project_identity(LAYERS_DIR, project),
    )
    proc = sandbox.spawn(spec)
    try:
        mountinfo = proc.stdout.read().decode()
        assert proc.wait() == 0 and proc.unprivileged
    finally:
        proc.cleanup()
    return mountinfo


def test_mountinfo_in_a_sandbox_shows_no_host_path_or_project(work):
    """/proc/self/mountinfo of an instance and of a build hook: no data dir, checkout or project name."""
    package = {
        "name": "mountinfo-probe",
        "version": "1.0.0",
        "dependencies": {"cloudevents": "8.0.2"},
        "scripts": {"preinstall": "sed 's/^/MOUNTINFO /' /proc/self/mountinfo"},
    }
    build_logs = []
    files = {**fixture_files("node-http"), "package.json": json.dumps(package)}
    artifact = _build(work, "tenant-m", "node", files, build_logs)
    seen = {
        "instance": _mountinfo_of_an_instance(artifact, "tenant-m"),
        "build": "\n".join(line for line in build_logs if line.startswith("MOUNTINFO")),
    }
    for where, mountinfo in seen.items():
        assert " /app " in mountinfo or " /build " in mountinfo, (where, mountinfo)
        assert str(REPO) not in mountinfo, (where, mountinfo)  # the checkout holds the data dirs here
        for secret in ("tenant-m", artifact.name.split("-")[0], "artifacts", "deps"):
            assert secret not in mountinfo, (where, secret, mountinfo)
        assert "/run/hks-views/" in mountinfo  # what is shown instead
