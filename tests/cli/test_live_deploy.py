"""The developer workflow with the real executables against a live portal, worker and local runtime:
create -> deploy -> invoke -> logs -> redeploy (unchanged: the build is reused) -> change -> rollback ->
env -> delete, for Node and Python; and a failing build that shows its failing lines."""

import json
import queue
import subprocess
import threading
import time
import uuid

import pytest

from tests.support.needs import require_binary

from .conftest import HKS, HKS_FUNC, login, run_cli

pytestmark = [
    pytest.mark.runtime,
]


@pytest.fixture
def dev_env(cli_users, cli_env):
    require_binary("bwrap", hint="apt-get install bubblewrap")
    env = login(cli_users, cli_env, "dana")
    assert run_cli(HKS, "project", "select", "acme", env=env).returncode == 0
    return env


def _ok(result):
    assert result.returncode == 0, (
        f"exit {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    )
    return result


def _json(result):
    return json.loads(_ok(result).stdout)


def _wait_for_log(env, name, text, timeout=30):
    deadline = time.monotonic() + timeout
    while True:
        logs = _ok(run_cli(HKS_FUNC, "logs", name, "--tail", "500", env=env)).stdout
        if text in logs or time.monotonic() > deadline:
            return logs
        time.sleep(0.5)


def _follow_until(env, name, text, trigger, timeout=30) -> bool:
    """Run ``hks-func logs -f``, call ``trigger``, and report whether ``text`` shows up while following."""
    proc = subprocess.Popen(
        [HKS_FUNC, "logs", "-f", "--tail", "1", name],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout], daemon=True).start()
    try:
        time.sleep(1.5)  # let the first snapshot pass, so what we see next is followed, not listed
        trigger()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if text in lines.get(timeout=1):
                    return True
            except queue.Empty:
                continue
        return False
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.mark.parametrize("language", ["node", "python"])
def test_create_deploy_invoke_logs_redeploy_rollback_delete(dev_env, tmp_path, language):
    env, name = dev_env, f"wf-{language}-{uuid.uuid4().hex[:6]}"
    _ok(run_cli(HKS_FUNC, "create", "-l", language, name, env=env, cwd=tmp_path))
    fn_dir = tmp_path / name

    first = _ok(run_cli(HKS_FUNC, "deploy", env=env, cwd=fn_dir))
    url = first.stdout.strip().splitlines()[-1]
    assert url.startswith("http") and name in url
    assert "Building revision 1" in first.stderr

    answer = _json(run_cli(HKS_FUNC, "invoke", "--data", '{"x": 1}', env=env, cwd=fn_dir))
    assert answer == {"received": {"x": 1}}
    greeting = _ok(run_cli(HKS_FUNC, "invoke", "--route", "/?name=Ada", env=env, cwd=fn_dir))
    assert json.loads(greeting.stdout) == {"message": "Hello, Ada!"}
    assert "HTTP 200" in greeting.stderr
    logs = _wait_for_log(env, name, "received a POST")
    assert f"{name} received a POST with" in logs and '"x":' in logs
    assert _follow_until(
        env,
        name,
        "followed",
        lambda: _ok(run_cli(HKS_FUNC, "invoke", name, "--data", '{"followed": true}', env=env)),
    )

    again = _json(run_cli(HKS_FUNC, "deploy", "-o", "json", env=env, cwd=fn_dir))
    assert (again["revision"], again["reused_build"], again["url"]) == (2, True, url)

    entry = fn_dir / ("index.js" if language == "node" else "function/func.py")
    entry.write_text(entry.read_text().replace("Hello, ", "Howdy, "))
    changed = _json(run_cli(HKS_FUNC, "deploy", "-o", "json", env=env, cwd=fn_dir))
    assert (changed["revision"], changed["reused_build"]) == (3, False)
    assert _json(run_cli(HKS_FUNC, "invoke", env=env, cwd=fn_dir)) == {"message": "Howdy, world!"}

    revisions = _json(run_cli(HKS_FUNC, "revisions", "-o", "json", env=env, cwd=fn_dir))
    assert [(r["number"], r["current"]) for r in revisions] == [(3, True), (2, False), (1, False)]
    assert revisions[1]["content_hash"] == revisions[2]["content_hash"] != revisions[0]["content_hash"]

    _ok(run_cli(HKS_FUNC, "rollback", "1", env=env, cwd=fn_dir))
    assert _json(run_cli(HKS_FUNC, "invoke", env=env, cwd=fn_dir)) == {"message": "Hello, world!"}

    assert _json(
        run_cli(HKS_FUNC, "env", "set", "GREETING=hi", "MODE=test", "-o", "json", env=env, cwd=fn_dir)
    ) == {"GREETING": "hi", "MODE": "test"}
    assert _json(run_cli(HKS_FUNC, "env", "unset", "MODE", "-o", "json", env=env, cwd=fn_dir)) == {
        "GREETING": "hi"
    }
    secret = run_cli(HKS_FUNC, "env", "set", "--secret", "API_TOKEN=s3cr3t-value", env=env, cwd=fn_dir)
    assert secret.returncode == 0, secret.stderr
    assert "API_TOKEN=******** (secret)" in secret.stdout and "s3cr3t-value" not in secret.stdout
    listed_env = _json(run_cli(HKS_FUNC, "env", "list", "-o", "json", env=env, cwd=fn_dir))
    assert listed_env == {"GREETING": "hi", "API_TOKEN": "********"}
    assert _json(run_cli(HKS_FUNC, "env", "unset", "API_TOKEN", "-o", "json", env=env, cwd=fn_dir)) == {
        "GREETING": "hi"
    }

    listed = _json(run_cli(HKS_FUNC, "list", "-o", "json", env=env))
    assert name in [f["name"] for f in listed]
    refused = run_cli(HKS_FUNC, "delete", env=env, cwd=fn_dir, input="")
    assert refused.returncode == 2 and "--yes" in refused.stderr
    _ok(run_cli(HKS_FUNC, "delete", "--yes", env=env, cwd=fn_dir))
    assert name not in [f["name"] for f in _json(run_cli(HKS_FUNC, "list", "-o", "json", env=env))]
    gone = run_cli(HKS_FUNC, "describe", name, env=env)
    assert gone.returncode == 5


def test_a_failed_build_shows_the_failing_lines_and_exits_8(dev_env, tmp_path):
    env, name = dev_env, f"broken-{uuid.uuid4().hex[:6]}"
    _ok(run_cli(HKS_FUNC, "create", "-l", "python", name, env=env, cwd=tmp_path))
    pyproject = tmp_path / name / "pyproject.toml"
    pyproject.write_text(
        pyproject.read_text().replace(
            "dependencies = []", 'dependencies = ["hks-no-such-package-anywhere==0.0.1"]'
        )
    )
    result = run_cli(HKS_FUNC, "deploy", env=env, cwd=tmp_path / name)
    assert result.returncode == 8, result.stderr
    assert "the build of revision 1 failed" in result.stderr
    assert "hks-no-such-package-anywhere" in result.stderr.split("failed:", 1)[1]
    status = _json(run_cli(HKS_FUNC, "describe", name, "-o", "json", env=env))
    assert status["status"] == "failed"


def test_missing_revision_is_not_found_and_a_taken_name_is_a_conflict(dev_env, tmp_path):
    env, name = dev_env, f"rb-{uuid.uuid4().hex[:6]}"
    _ok(run_cli(HKS_FUNC, "create", "-l", "node", name, env=env, cwd=tmp_path))
    _ok(run_cli(HKS_FUNC, "deploy", env=env, cwd=tmp_path / name))
    result = run_cli(HKS_FUNC, "rollback", "7", env=env, cwd=tmp_path / name)
    assert result.returncode == 5
    other = tmp_path / "other"
    _ok(run_cli(HKS_FUNC, "create", "-l", "python", name, "--path", str(other), env=env, cwd=tmp_path))
    taken = run_cli(HKS_FUNC, "deploy", env=env, cwd=other)
    assert taken.returncode == 6
    assert f"the name '{name}' is taken in acme by a node function" in taken.stderr
    assert [r["number"] for r in _json(run_cli(HKS_FUNC, "revisions", name, "-o", "json", env=env))] == [1]
    _ok(run_cli(HKS_FUNC, "delete", "--yes", env=env, cwd=tmp_path / name))
