"""The dependency cache from the other tenant's side: project B never gets, sees or touches project A's.

An entry is made from what a tenant sent (its package.json and lock, its requirements), so a hit across
projects would serve one tenant's install to another and tell it, by a "reusing" line in its build log,
which dependency sets another project installed. Each project has a cache dir of its own, bounded by
``BUILD_DEPS_CACHE_MB``. Real npm/pip installs under the real sandbox. Debian packages: bubblewrap,
slirp4netns, nftables, iproute2.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from hks_runtime import builder, identities, sandbox
from tests.support.needs import require_binary
from tests.support.sample_functions import (
    LAYERS_DIR,
    build_files,
    scratch_fixture,
)

pytestmark = pytest.mark.runtime

NODE_DEPS = {
    "package.json": json.dumps({"name": "x", "version": "1.0.0", "dependencies": {"cloudevents": "8.0.2"}})
}
PYTHON_DEPS = {"requirements.txt": "six==1.16.0\n"}


@pytest.fixture(scope="module", autouse=True)
def _bwrap():
    require_binary("bwrap", hint="apt-get install bubblewrap")


work = scratch_fixture("build-cache-", scope="function")


def _build(work, project: str, runtime: str, files: dict, logs: list, *, profile: str = "standard"):
    files = {"func.yaml": f"name: f\nruntime: {runtime}\n", **files}
    name = f"{project}-{len(logs)}"
    return build_files(files, runtime, work, logs, name=name, scope=project, profile=profile, deps_cache=True)


def _entries(work, project: str) -> list:
    folder = work / "deps" / project
    return sorted(p for p in folder.iterdir() if not p.name.startswith(".")) if folder.exists() else []


def _reused(logs: list[str]) -> bool:
    return any("reusing" in line for line in logs)


def _installed(logs: list[str]) -> bool:
    return any("installing dependencies" in line for line in logs)


@pytest.mark.parametrize(
    ("runtime", "profile", "files", "linked"),
    [
        ("node", "restricted", NODE_DEPS, "node_modules/cloudevents/package.json"),
        ("node", "standard", NODE_DEPS, "node_modules/cloudevents/package.json"),
        ("python", "restricted", PYTHON_DEPS, ".hks/site-packages/six.py"),
    ],
)
def test_another_project_with_the_same_dependencies_installs_its_own(work, runtime, profile, files, linked):
    """B sends byte for byte A's dependency set: B's build installs it itself (no "reusing" line) into B's
    own cache dir, while A's own second build (code changed) still reuses A's entry."""
    first, again, other = [], [], []
    artifact_a = _build(work, "tenant-a", runtime, files, first, profile=profile)
    _build(work, "tenant-a", runtime, {**files, "code.txt": "changed"}, again, profile=profile)
    artifact_b = _build(work, "tenant-b", runtime, files, other, profile=profile)

    assert _installed(first) and not _reused(first)
    assert _reused(again) and not _installed(again)  # the same project's speedup stays
    assert _installed(other) and not _reused(other), other
    [entry_a], [entry_b] = _entries(work, "tenant-a"), _entries(work, "tenant-b")
    # Each artifact links the files of its own project's entry, never the other's.
    inner = linked.replace(".hks/site-packages", "out")
    assert os.stat(artifact_b / linked).st_ino == os.stat(entry_b / inner).st_ino
    assert os.stat(artifact_b / linked).st_ino != os.stat(entry_a / inner).st_ino
    assert os.stat(artifact_a / linked).st_ino == os.stat(entry_a / inner).st_ino


PROBE_HOOK = (
    "ls {entry} >/dev/null 2>&1 && echo PROBE read-ok || echo PROBE read-refused; "
    "touch {entry}/poison 2>/dev/null && echo PROBE write-ok || echo PROBE write-refused; "
    "touch {folder}/poison 2>/dev/null && echo PROBE plant-ok || echo PROBE plant-refused"
)


def test_a_build_of_another_project_can_neither_read_nor_write_an_entry(work):
    """B's build hook is told the host paths of A's entry and cache dir: it can read and change neither, and
    A's next build still reuses an untouched entry."""
    _build(work, "tenant-a", "node", NODE_DEPS, [])
    [entry_a] = _entries(work, "tenant-a")
    before = sorted(p.name for p in entry_a.rglob("*"))
    hook = PROBE_HOOK.format(entry=entry_a, folder=entry_a.parent)
    package = json.loads(NODE_DEPS["package.json"]) | {"name": "probe", "scripts": {"preinstall": hook}}
    logs = []
    _build(work, "tenant-b", "node", {"package.json": json.dumps(package)}, logs)
    probes = [line.split()[1] for line in logs if line.startswith("PROBE ")]
    assert probes == ["read-refused", "write-refused", "plant-refused"], logs
    assert sorted(p.name for p in entry_a.rglob("*")) == before
    assert not (entry_a.parent / "poison").exists()
    again = []
    _build(work, "tenant-a", "node", {**NODE_DEPS, "code.txt": "changed"}, again)
    assert _reused(again)


def _as(identity: identities.Identity, code: str, *args: str) -> subprocess.CompletedProcess:
    """Python on the host with exactly ``identity``'s credentials: what an escaped build hook would be."""
    setpriv = ["setpriv", f"--reuid={identity.uid}", f"--regid={identity.gid}", "--clear-groups", "--"]
    return subprocess.run([*setpriv, sys.executable, "-c", code, *args], capture_output=True, text=True)


LIST = "import os, sys; print(os.listdir(sys.argv[1]))"
PLANT = "import sys; open(sys.argv[1] + '/planted', 'w').write('x')"


def test_another_projects_uid_cannot_list_or_plant_in_a_projects_cache_dir(work):
    """Out of its sandbox, B's uid cannot list A's cache dir (the entries' names are hashes of A's
    dependency sets) nor create anything in it; nor list which projects have a cache at all."""
    if not sandbox.runs_unprivileged():
        pytest.skip("per-project uids need a root daemon and unprivileged user namespaces (docs/runtime.md)")
    _build(work, "tenant-a", "python", PYTHON_DEPS, [])
    _build(work, "tenant-b", "python", {"requirements.txt": "six==1.16.0  # b\n"}, [])
    a, b = (identities.project_identity(LAYERS_DIR, p) for p in ("tenant-a", "tenant-b"))
    folder_a, folder_b = work / "deps" / "tenant-a", work / "deps" / "tenant-b"
    assert "PermissionError" in _as(b, LIST, str(folder_a)).stderr
    assert "PermissionError" in _as(b, PLANT, str(folder_a)).stderr
    assert "PermissionError" in _as(b, LIST, str(work / "deps")).stderr
    assert not (folder_a / "planted").exists()
    # A's own uid reaches its dir (its builds' work dirs are there), still cannot plant an entry in it
    assert _as(a, LIST, str(folder_a)).returncode == 0
    assert "PermissionError" in _as(a, PLANT, str(folder_a)).stderr
    assert "PermissionError" in _as(a, LIST, str(folder_b)).stderr


def _python_variant(tag: str) -> dict:
    """The same install under another key (the requirements text differs): cheap distinct entries."""
    return {"requirements.txt": f"six==1.16.0  # {tag}\n"}


def test_a_projects_cache_is_bounded_by_evicting_its_least_recently_used_entries(work, monkeypatch):
    """Entries past BUILD_DEPS_CACHE_MB go, least recently used first; one reused lately stays; the entry
    just made stays even alone past the bound; another project's entries are never touched."""
    _build(work, "tenant-b", "python", _python_variant("outsider"), [])
    for tag in ("x", "y"):
        _build(work, "tenant-a", "python", _python_variant(tag), [])
    entry_x, entry_y = sorted(_entries(work, "tenant-a"), key=lambda p: p.stat().st_mtime)
    logs = []
    _build(work, "tenant-a", "python", {**_python_variant("x"), "code.txt": "changed"}, logs)
    assert _reused(logs)  # x is now the most recently used
    for entry in (entry_x, entry_y):  # count each as 1 MiB: two fit in the bound, three do not
        (entry / ".size").write_text(str(1 << 20))
    monkeypatch.setattr(builder, "BUILD_DEPS_CACHE_MB", 2)

    logs = []
    _build(work, "tenant-a", "python", _python_variant("z"), logs)
    remaining = _entries(work, "tenant-a")
    assert entry_x in remaining and entry_y not in remaining and len(remaining) == 2
    assert any("dependency cache: removed" in line for line in logs)

    monkeypatch.setattr(builder, "BUILD_DEPS_CACHE_MB", 0)
    logs = []
    artifact = _build(work, "tenant-a", "python", _python_variant("w"), logs)
    [kept] = _entries(work, "tenant-a")
    assert (kept / "out" / "six.py").exists() and (artifact / ".hks/site-packages/six.py").exists()
    assert len(_entries(work, "tenant-b")) == 1  # the outsider's entry is not A's to evict
    logs = []
    _build(work, "tenant-a", "python", {**_python_variant("x"), "code.txt": "again"}, logs)
    assert _installed(logs) and not _reused(logs)  # an evicted entry is installed again


def test_an_evicted_entry_breaks_no_artifact_linked_to_it(work, monkeypatch):
    monkeypatch.setattr(builder, "BUILD_DEPS_CACHE_MB", 0)
    artifact = _build(work, "tenant-a", "python", _python_variant("first"), [])
    _build(work, "tenant-a", "python", _python_variant("second"), [])
    assert len(_entries(work, "tenant-a")) == 1
    assert (artifact / ".hks/site-packages/six.py").read_text().count("def add_metaclass") == 1


def test_an_agent_artifact_is_never_an_owners_artifact_of_a_project_named_agent_something(work):
    """Project ``p``'s agent build and project ``agent-p``'s owner build of the very same content: two
    artifacts (the owner's may hold what its hooks made), neither found "already built" from the other."""
    files = {"index.js": "module.exports = () => 'same';\n"}
    owner_logs, agent_logs = [], []
    owners = _build(work, "agent-p", "node", files, owner_logs)
    agents = _build(work, "p", "node", files, agent_logs, profile="restricted")
    assert owners != agents
    assert not any("already built" in line for line in agent_logs)


@pytest.mark.parametrize(
    ("profile", "scope"), [("standard", ""), ("standard", "p"), ("restricted", ""), ("restricted", "p")]
)
def test_every_artifact_name_can_be_freed_through_the_control_api(profile, scope):
    """The portal frees an artifact by its name (DELETE /v1/artifacts/{name}): each kind must be accepted."""
    from hks_runtime.control import ARTIFACT_NAME

    assert ARTIFACT_NAME.fullmatch(builder.artifact_name("0123456789abcdef", profile, scope))
