"""Runtime layers, function builds and the launchers, with real npm/pip installs and real sandboxed servers.

The first run downloads faas-js-runtime (npm) and func-python (PyPI) into var/test-layers/; later runs reuse
them. Debian package: bubblewrap.
"""

from __future__ import annotations

import json

import pytest

from hks_runtime import builder, identities, sandbox
from tests.support.machine import MACHINE_SERVICES, listening
from tests.support.needs import require_binary
from tests.support.sample_functions import (
    LAYERS_DIR,
    archive_from_files,
    build_files,
    build_fixture,
    fixture_files,
    remove_dir,
    request,
    run,
    scratch_dir,
    scratch_fixture,
    serving,
    wait_ready,
)

pytestmark = pytest.mark.runtime

CE_HEADERS = {
    "content-type": "application/json",
    "ce-id": "evt-1",
    "ce-source": "/tests",
    "ce-type": "com.example.test",
    "ce-specversion": "1.0",
}


@pytest.fixture(scope="module", autouse=True)
def _bwrap():
    require_binary("bwrap", hint="apt-get install bubblewrap")


work = scratch_fixture("builder-")


@pytest.fixture(scope="module")
def node_layer():
    return builder.ensure_layer("node", LAYERS_DIR, lambda line: None)


@pytest.fixture(scope="module")
def python_layer():
    return builder.ensure_layer("python", LAYERS_DIR, lambda line: None)


# --- layers --------------------------------------------------------------------------------------------


def test_node_layer_has_node_24_and_faas_js_runtime_visible_in_the_sandbox(node_layer):
    info = builder.layer_info(node_layer)
    package_json = "/layer/runtime/node_modules/faas-js-runtime/package.json"
    script = f"console.log(process.version, require('{package_json}').version)"
    code, out, err = run([info["node"], "-e", script], ro_binds=[(str(node_layer), "/layer")])
    assert code == 0, err
    node_version, runtime_version = out.split()
    assert int(node_version.lstrip("v").split(".")[0]) >= 20
    assert runtime_version == "4.0.1"


def test_python_layer_has_func_python_visible_in_the_sandbox(python_layer):
    info = builder.layer_info(python_layer)
    binds = [(str(python_layer), "/layer")] + [(p, p) for p in info["extra_ro_binds"]]
    script = "import importlib.metadata as m, func_python.http; print(m.version('func-python'))"
    code, out, err = run([info["python"], "-c", script], ro_binds=binds)
    assert (code, out.strip()) == (0, "0.8.1"), err


def test_a_built_layer_is_reused(node_layer):
    logs = []
    assert builder.ensure_layer("node", LAYERS_DIR, logs.append) == node_layer
    assert not any("building" in line for line in logs)


def test_unknown_runtime_is_a_build_error(tmp_path):
    with pytest.raises(builder.BuildError, match="unknown runtime"):
        builder.ensure_layer("cobol", tmp_path, lambda line: None)
    assert list(tmp_path.iterdir()) == []


# --- builds --------------------------------------------------------------------------------------------


def test_build_unpacks_the_archive_and_is_idempotent(work, node_layer):
    artifact = build_fixture("node-http", "node", work)
    assert (artifact / "index.js").exists()
    assert (artifact / "func.yaml").exists()
    logs = []
    assert build_fixture("node-http", "node", work, logs) == artifact
    assert any("already built" in line for line in logs)


def test_node_dependencies_are_installed_sandboxed_and_cached_by_lock_hash(work, node_layer):
    logs = []
    artifact = build_fixture("node-cloudevents", "node", work, logs)
    assert (artifact / "node_modules" / "cloudevents" / "package.json").exists()
    # Same package.json, different code: a new artifact, but the install is reused.
    logs.clear()
    other = build_fixture("node-cloudevents", "node", work, logs, **{"extra.txt": "changed"})
    assert other != artifact
    assert (other / "node_modules" / "cloudevents" / "package.json").exists()
    assert any("dependencies unchanged" in line for line in logs)
    assert not any("installing dependencies" in line for line in logs)


def test_install_scripts_run_inside_the_sandbox(work, node_layer):
    """npm runs the package's own lifecycle scripts: untrusted code that must not see the host."""
    package = {
        "name": "nosy",
        "version": "1.0.0",
        "dependencies": {"cloudevents": "8.0.2"},
        "scripts": {"preinstall": "id -u; ls /root 2>&1 || true; cat /etc/shadow 2>&1 || true"},
    }
    logs = []
    archive, content_hash = archive_from_files(
        {"func.yaml": "name: nosy\nruntime: node\n", "index.js": "", "package.json": json.dumps(package)},
        work / "nosy.tar.gz",
    )
    builder.build(
        runtime="node",
        archive_path=archive,
        artifacts_dir=work / "artifacts",
        layers_dir=LAYERS_DIR,
        content_hash=content_hash,
        on_log=logs.append,
        deps_cache_dir=work / "fresh-deps",  # not the shared cache: the scripts must really run
    )
    text = "\n".join(logs)
    assert "/root" in text and "No such file or directory" in text
    assert "root:" not in text  # no shadow entries
    if sandbox.runs_unprivileged():  # the project's own uid (no scope here: the "" project's)
        uid = identities.project_identity(LAYERS_DIR, "").uid
        assert uid != sandbox.SANDBOX_UID and str(uid) in [line.strip() for line in logs]


def test_a_failed_npm_install_raises_with_npms_own_error(work, node_layer):
    package = {"name": "broken", "version": "1.0.0", "dependencies": {"cloudevents": "^999.0.0"}}
    archive, content_hash = archive_from_files(
        {"func.yaml": "name: broken\n", "index.js": "", "package.json": json.dumps(package)},
        work / "broken-node.tar.gz",
    )
    with pytest.raises(builder.BuildError, match="npm error") as failure:
        builder.build(
            runtime="node",
            archive_path=archive,
            artifacts_dir=work / "artifacts",
            layers_dir=LAYERS_DIR,
            content_hash=content_hash,
            on_log=lambda line: None,
        )
    assert "No matching version found for cloudevents@^999.0.0" in str(failure.value)
    assert not (work / "artifacts" / content_hash).exists()


def test_a_failed_pip_install_raises_with_pips_own_error(work, python_layer):
    archive, content_hash = archive_from_files(
        {"func.yaml": "name: broken\n", "requirements.txt": "this is not a requirement!!\n"},
        work / "broken-python.tar.gz",
    )
    with pytest.raises(builder.BuildError, match="ERROR") as failure:
        builder.build(
            runtime="python",
            archive_path=archive,
            artifacts_dir=work / "artifacts",
            layers_dir=LAYERS_DIR,
            content_hash=content_hash,
            on_log=lambda line: None,
        )
    assert "this is not a requirement" in str(failure.value)
    assert not (work / "artifacts" / content_hash).exists()


def test_python_requirements_are_installed_into_the_artifact(work, python_layer):
    logs = []
    artifact = build_fixture("python-http", "python", work, logs)
    assert (artifact / ".hks" / "site-packages" / "six.py").exists()
    assert any(line.startswith("Successfully installed") or "dependencies unchanged" in line for line in logs)


def test_python_pyproject_dependencies_are_installed_like_kn_funcs_template(work, python_layer):
    """knative/func's current Python template declares its dependencies in pyproject.toml (hatchling)."""
    files = {name: data for name, data in fixture_files("python-http").items() if name != "requirements.txt"}
    files["README.md"] = "# hello\n"
    files["pyproject.toml"] = PYPROJECT
    artifact = build_files(files, "python", work, name="pyproject")
    assert (artifact / ".hks" / "site-packages" / "six.py").exists()
    with serving("python", "http", artifact) as (url, proc):
        wait_ready(url, proc)
        status, _, body = request(url + "/", data=b"from pyproject")
        assert status == 200 and json.loads(body) == {"echo": "from pyproject", "six": "1.16.0"}


PYPROJECT = """[project]
name = "function"
version = "0.1.0"
requires-python = ">=3.9"
readme = "README.md"
dependencies = ["six==1.16.0"]

[build-system]
requires = ["hatchling"]
build-backend = "hatchling.build"
"""


# --- launchers: the function answers as under `kn func` -------------------------------------------------


@pytest.mark.parametrize("runtime", ["node", "python"])
def test_http_function_serves_requests_and_health_endpoints(work, runtime):
    artifact = build_fixture(f"{runtime}-http", runtime, work)
    with serving(runtime, "http", artifact) as (url, proc):
        wait_ready(url, proc)
        status, headers, body = request(url + "/")
        assert (status, body) == (200, b"OK")
        assert headers["content-type"].startswith("text/plain")
        wait_ready(url, proc, timeout=30, probe="/health/liveness")
        status, _, body = request(url + "/?env=1")
        env = json.loads(body)
        assert {env.get("service", env.get("K_SERVICE")), env.get("revision", env.get("K_REVISION"))} == {
            "hello",
            "hello-00001",
        }
        status, _, body = request(url + "/", data=b"hi there", headers={"content-type": "text/plain"})
        assert status == 200 and b"hi there" in body


@pytest.mark.parametrize("runtime", ["node", "python"])
def test_cloudevents_function_answers_an_event_with_an_event(work, runtime):
    artifact = build_fixture(f"{runtime}-cloudevents", runtime, work)
    with serving(runtime, "cloudevents", artifact) as (url, proc):
        wait_ready(url, proc)
        status, headers, body = request(url + "/", data=b'{"n": 42}', headers=CE_HEADERS)
        assert status == 200
        if headers["content-type"].startswith("application/cloudevents+json"):
            event = json.loads(body)  # structured mode (func-python)
            data, event_type = event["data"], event["type"]
        else:
            data, event_type = json.loads(body), headers["ce-type"]  # binary mode (faas-js-runtime)
        assert event_type == "function.response"
        assert data == {"message": "OK", "received": {"n": 42}}


def test_python_cloudevents_function_rejects_a_plain_request_like_func_python(work):
    artifact = build_fixture("python-cloudevents", "python", work)
    with serving("python", "cloudevents", artifact) as (url, proc):
        wait_ready(url, proc)
        status, _, body = request(url + "/")
        assert status == 400 and b"CloudEvent" in body


@pytest.mark.parametrize("runtime", ["node", "python"])
def test_prewarmed_instance_loads_the_function_on_a_signal(work, runtime):
    artifact = build_fixture(f"{runtime}-http", runtime, work)
    with serving(runtime, "http", artifact, prewarm=True) as (url, proc):
        assert proc.poll() is None
        proc.stdin.write(b"go\n")
        proc.stdin.flush()
        wait_ready(url, proc)
        assert request(url + "/")[2] == b"OK"


@pytest.mark.parametrize("runtime", ["node", "python"])
def test_prewarmed_instance_is_specialised_with_code_and_environment_after_start(work, runtime):
    """Start the runtime before the function is known; link its code into the slot; send its environment."""
    artifact = build_fixture(f"{runtime}-http", runtime, work)
    slot = scratch_dir("slot-")
    try:
        with serving(runtime, "http", slot, prewarm=True) as (url, proc):
            builder.fill_slot(artifact_dir=artifact, slot_dir=slot)
            env = {"K_SERVICE": "late-bound", "K_REVISION": "late-bound-00007"}
            proc.stdin.write(json.dumps({"env": env}).encode() + b"\n")
            proc.stdin.flush()
            wait_ready(url, proc)
            body = json.loads(request(url + "/?env=1")[2])
            assert body.get("service", body.get("K_SERVICE")) == "late-bound"
            assert body.get("revision", body.get("K_REVISION")) == "late-bound-00007"
    finally:
        remove_dir(slot)


def test_a_slot_must_be_empty(work):
    artifact = build_fixture("node-http", "node", work)
    with pytest.raises(builder.BuildError, match="not empty"):
        builder.fill_slot(artifact_dir=artifact, slot_dir=artifact)


def test_instance_terminates_gracefully_on_sigterm(work):
    artifact = build_fixture("python-http", "python", work)
    with serving("python", "http", artifact) as (url, proc):
        wait_ready(url, proc)
        proc.terminate(grace=10)
        assert proc.returncode == 0  # hypercorn's own shutdown, not a SIGKILL


def test_instance_command_refuses_unknown_kinds(work, node_layer):
    with pytest.raises(builder.BuildError, match="kind"):
        builder.instance_command(
            runtime="node", kind="grpc", artifact_dir=work, layer_dir=node_layer, listen_fd=3
        )


def test_broken_function_exits_with_its_error_on_stderr(work):
    logs = []
    archive, content_hash = archive_from_files(
        {"func.yaml": "name: oops\n", "index.js": "throw new Error('boom at load');\n"}, work / "oops.tar.gz"
    )
    artifact = builder.build(
        runtime="node",
        archive_path=archive,
        artifacts_dir=work / "artifacts",
        layers_dir=LAYERS_DIR,
        content_hash=content_hash,
        on_log=logs.append,
    )
    with serving("node", "http", artifact) as (_, proc):
        assert proc.wait(timeout=60) == 1
        assert "boom at load" in proc.stderr.read().decode()


# --- what a build may run (issue 11) ---------------------------------------------------------------------

HOOK_PACKAGE = {
    "name": "hooked",
    "version": "1.0.0",
    "dependencies": {"cloudevents": "8.0.2"},
    "scripts": {
        "preinstall": "echo HOOK-RAN-preinstall; touch node_modules/.hook-ran || touch .hook-ran",
        "install": "echo HOOK-RAN-install",
        "postinstall": "echo HOOK-RAN-postinstall",
    },
}


def _build(work, files: dict, name: str, logs: list, **options):
    archive, content_hash = archive_from_files(
        {"func.yaml": f"name: {name}\n", **files}, work / f"{name}.tar.gz"
    )
    return builder.build(
        runtime=options.pop("runtime"),
        archive_path=archive,
        artifacts_dir=work / "artifacts",
        layers_dir=LAYERS_DIR,
        content_hash=content_hash,
        on_log=logs.append,
        deps_cache_dir=options.pop("deps_cache_dir", work / f"deps-{name}"),
        **options,
    )


def test_agent_builds_do_not_run_npm_lifecycle_scripts(work, node_layer):
    """Agent code (restricted) with preinstall/install/postinstall scripts: npm runs none of them."""
    logs = []
    files = {"index.js": "", "package.json": json.dumps(HOOK_PACKAGE)}
    artifact = _build(
        work, files, "agent-npm-hooks", logs, runtime="node", profile="restricted", scope="acme"
    )
    assert (artifact / "node_modules" / "cloudevents" / "package.json").exists()  # dependencies installed
    assert not any("HOOK-RAN" in line for line in logs), "a lifecycle script ran"
    assert not list(artifact.rglob(".hook-ran"))


def test_owner_builds_run_their_hooks(work, node_layer):
    logs = []
    files = {"index.js": "", "package.json": json.dumps(HOOK_PACKAGE)}
    _build(work, files, "owner-npm-hooks", logs, runtime="node", profile="standard", scope="acme")
    assert any("HOOK-RAN-preinstall" in line for line in logs)


def test_an_install_that_writes_without_end_is_stopped_before_it_fills_the_disk(
    work, node_layer, monkeypatch
):
    """An owner's install script runs with /build on the host's disk: past HKS_BUILD_MAX_DISK_MB of it the
    build stops with the reason, and nothing of it is kept (no cache entry, no work dir)."""
    monkeypatch.setattr(builder, "BUILD_MAX_DISK_MB", 32)
    filler = {
        **HOOK_PACKAGE,
        "name": "filler",
        "scripts": {"preinstall": "i=0; while :; do head -c 4194304 /dev/zero > fill$i; i=$((i+1)); done"},
    }
    deps = work / "deps-filler"
    logs = []
    with pytest.raises(builder.BuildError, match="wrote more than 32 MiB: stopped"):
        _build(
            work,
            {"index.js": "", "package.json": json.dumps(filler)},
            "filler",
            logs,
            runtime="node",
            profile="standard",
            scope="acme",
            deps_cache_dir=deps,
        )
    assert [p.name for p in (deps / "acme").iterdir() if not p.name.endswith(".lock")] == []


def test_the_builds_tmp_is_capped_too(work, node_layer):
    writer = {
        **HOOK_PACKAGE,
        "name": "tmp-filler",
        "scripts": {"preinstall": "head -c 2147483648 /dev/zero > /tmp/fill || echo TMP-FULL $(du -sm /tmp)"},
    }
    logs = []
    _build(
        work,
        {"index.js": "", "package.json": json.dumps(writer)},
        "tmp-filler",
        logs,
        runtime="node",
        profile="standard",
        scope="acme",
    )
    full = [line for line in logs if line.startswith("TMP-FULL")]
    assert full, logs[-20:]
    assert int(full[0].split()[1]) <= builder._BUILD_LIMITS.memory_mb // 2


LOCAL_BACKEND_PYPROJECT = """[project]
name = "function"
version = "0.1.0"
dependencies = ["six==1.16.0"]

[build-system]
requires = []
build-backend = "evil_backend"
backend-path = ["."]
"""

EVIL_BACKEND = """
import pathlib
print("HOOK-RAN-backend", flush=True)
for target in ("/build/out/hook-ran.txt", "/build/hook-ran.txt"):
    try:
        pathlib.Path(target).write_text("ran")
    except OSError:
        pass
def build_wheel(*a, **k): raise SystemExit("HOOK-RAN-build-wheel")
def get_requires_for_build_wheel(*a, **k): return []
"""


@pytest.mark.parametrize("profile", ["restricted", "standard"])
def test_a_local_build_backend_is_never_run(work, python_layer, profile):
    """The function's own pyproject is read for its dependencies; its build backend never runs."""
    logs = []
    files = {
        "pyproject.toml": LOCAL_BACKEND_PYPROJECT,
        "evil_backend.py": EVIL_BACKEND,
        "function/__init__.py": "",
        "function/func.py": "",
    }
    artifact = _build(work, files, f"py-backend-{profile}", logs, runtime="python", profile=profile)
    assert (artifact / builder.PYTHON_DEPS / "six.py").exists()
    assert not any("HOOK-RAN" in line for line in logs)
    assert not list(artifact.rglob("hook-ran.txt"))
    assert not (artifact / builder.PYTHON_DEPS / "function").exists()  # the function itself is not installed


@pytest.mark.parametrize(
    "requirement",
    [
        "./vendored",
        "-e .",
        "git+https://example.com/x.git",
        "pkg @ https://example.com/pkg.tar.gz",
        "--no-binary=:all:",
    ],
)
def test_agent_builds_install_only_registry_wheels(work, python_layer, requirement):
    with pytest.raises(builder.BuildError, match="not a plain registry requirement"):
        _build(
            work,
            {"requirements.txt": f"six==1.16.0\n{requirement}\n"},
            "agent-bad-req",
            [],
            runtime="python",
            profile="restricted",
        )


@pytest.mark.parametrize(
    "spec", ["file:../x", "git+https://example.com/x.git", "user/repo", "https://x.y/z.tgz"]
)
def test_agent_builds_install_only_npm_registry_packages(work, node_layer, spec):
    package = {"name": "x", "version": "1.0.0", "dependencies": {"dep": spec}}
    with pytest.raises(builder.BuildError, match="not a registry package"):
        _build(
            work,
            {"package.json": json.dumps(package)},
            "agent-bad-npm",
            [],
            runtime="node",
            profile="restricted",
        )


def test_dependency_caches_are_keyed_by_build_mode_and_project(work, node_layer):
    """No install is shared between projects (agents' neither: tests/runtime/test_build_cache.py says why);
    within one project, an owner's build (hooks may have run) never takes the agent entry."""
    package = {"name": "x", "version": "1.0.0", "dependencies": {"cloudevents": "8.0.2"}}
    files = {"package.json": json.dumps(package)}
    cache = work / "keyed-deps"

    def reused(name, **options) -> bool:
        logs = []
        _build(work, {**files, "x.txt": name}, name, logs, runtime="node", deps_cache_dir=cache, **options)
        return any("dependencies unchanged" in line for line in logs)

    assert not reused("k1", profile="restricted", scope="one")
    assert reused("k2", profile="restricted", scope="one")
    assert not reused("k3", profile="restricted", scope="two")  # another project's install: never
    assert not reused("k4", profile="standard", scope="one")  # hooks may have run: not the agent entry
    assert reused("k5", profile="standard", scope="one")
    assert not reused("k6", profile="standard", scope="two")


OWNER_HOOK_PROBE = r"""
import json, socket, sys
for host, port in json.loads(bytes.fromhex(sys.argv[1])):
    try:
        socket.create_connection((host, port), timeout=5).close(); print("HOOK-NET", host, port, "connected")
    except OSError as exc:
        print("HOOK-NET", host, port, type(exc).__name__)
"""


def test_owner_build_hooks_cannot_reach_the_host(work, node_layer):
    """An owner's preinstall script runs in the build's own network namespace (it may reach a registry on
    the internet): nothing on the host answers it - a listener on loopback, the same through slirp's host
    alias, one on every address through the host's own address, nor the machine's PostgreSQL, Redis,
    MariaDB, RabbitMQ, NATS and Mosquitto that answer the host itself (the control)."""
    import socket

    with (
        socket.socket() as loopback,
        socket.socket() as everywhere,
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as route,
    ):
        loopback.bind(("127.0.0.1", 0))
        loopback.listen()
        everywhere.bind(("0.0.0.0", 0))
        everywhere.listen()
        route.connect(("198.51.100.1", 9))
        host_ip = route.getsockname()[0]
        services = [port for port in MACHINE_SERVICES.values() if listening(port)]
        targets = [("127.0.0.1", loopback.getsockname()[1]), ("10.0.2.2", loopback.getsockname()[1])]
        targets.append((host_ip, everywhere.getsockname()[1]))
        targets += [(host, port) for port in services for host in ("127.0.0.1", "10.0.2.2")]
        assert all(listening(port, host if host != "10.0.2.2" else "127.0.0.1") for host, port in targets)
        code = OWNER_HOOK_PROBE.encode().hex()  # no shell quoting to get wrong
        probe = f"python3 -c \"exec(bytes.fromhex('{code}'))\" {json.dumps(targets).encode().hex()}"
        package = {
            "name": "netprobe",
            "version": "1.0.0",
            "dependencies": {"cloudevents": "8.0.2"},
            "scripts": {"preinstall": probe},
        }
        logs = []
        files = {"package.json": json.dumps(package)}
        _build(work, files, "owner-net-hooks", logs, runtime="node", profile="standard", scope="acme")
    lines = [line for line in logs if line.startswith("HOOK-NET")]
    assert len(lines) == len(targets), logs
    assert all(line.endswith("ConnectionRefusedError") for line in lines), lines


@pytest.mark.parametrize("runtime", ["node", "python"])
def test_a_failed_build_names_sandbox_paths_not_the_hosts(work, node_layer, python_layer, runtime):
    """An upload whose dependency dir is a file: the error says /app/..., not where the platform keeps it."""
    if runtime == "node":
        manifest = {"name": "clash", "version": "1.0.0", "dependencies": {"cloudevents": "8.0.2"}}
        files, where = {"package.json": json.dumps(manifest), "node_modules": "a file"}, "/app/node_modules"
    else:
        files = {"requirements.txt": "six==1.16.0\n", ".hks/site-packages": "a file"}
        where = "/app/.hks/site-packages"
    with pytest.raises(OSError) as info:
        _build(work, files, f"clash-{runtime}", [], runtime=runtime, scope="acme")
    message = str(info.value)
    assert where in message
    assert str(work) not in message and str(LAYERS_DIR) not in message and "/var/" not in message


def test_an_archive_that_cannot_be_unpacked_names_no_host_path(work, node_layer):
    archive = work / "not-a-tarball.tar.gz"
    archive.write_bytes(b"not gzip at all")
    with pytest.raises(builder.BuildError, match="cannot unpack") as info:
        builder.build(
            runtime="node",
            archive_path=archive,
            artifacts_dir=work / "artifacts",
            layers_dir=LAYERS_DIR,
            content_hash="0123456789abcdef",
            on_log=lambda line: None,
        )
    assert str(work) not in str(info.value)
