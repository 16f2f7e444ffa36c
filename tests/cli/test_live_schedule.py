"""End to end on a running platform (portal, worker, beat, local runtime): a schedule every minute on a
deployed function fires by itself — Celery beat runs the dispatcher, the worker sends the request through
the runtime's gateway — the function's log shows the request and the history records it. Driven with the
real ``hks-func`` executable. Waits for the next minute boundary (at most ~65 s)."""

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from tests.support.needs import require_binary

HKS = str(Path(sys.executable).parent / "hks")
HKS_FUNC = str(Path(sys.executable).parent / "hks-func")
PASSWORD = "schedule-live-password"
pytestmark = [
    pytest.mark.runtime,
]


def run_cli(exe: str, *args: str, env: dict, cwd=None, input: str | None = None):
    return subprocess.run(
        [exe, *args], env=env, cwd=cwd, input=input, capture_output=True, text=True, timeout=600
    )


@pytest.fixture
def cli(live_platform, tmp_path):
    """CLI environment of "sam", a developer in acme, logged in to the session's running platform."""
    live_platform.create_user("sam", PASSWORD, project="acme", role="developer")
    env = {k: v for k, v in os.environ.items() if not k.startswith("HKS_")}
    env.update(XDG_CONFIG_HOME=str(tmp_path / "xdg"), HOME=str(tmp_path), HKS_URL=live_platform.portal_url)
    ok(run_cli(HKS, "login", "--username", "sam", "--password-stdin", env=env, input=PASSWORD + "\n"))
    ok(run_cli(HKS, "project", "select", "acme", env=env))
    return env


def ok(result):
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    return result


def poll(fetch, done, timeout):
    deadline = time.monotonic() + timeout
    while True:
        value = fetch()
        if done(value) or time.monotonic() > deadline:
            return value
        time.sleep(1)


def test_a_minutely_schedule_fires_the_function_and_records_the_run(cli, tmp_path):
    require_binary("bwrap", hint="apt-get install bubblewrap")
    env = cli
    name = f"cron-{uuid.uuid4().hex[:6]}"
    ok(run_cli(HKS_FUNC, "create", "-l", "node", name, env=env, cwd=tmp_path))
    fn_dir = tmp_path / name
    ok(run_cli(HKS_FUNC, "deploy", env=env, cwd=fn_dir))

    created = ok(
        run_cli(
            HKS_FUNC,
            "schedule",
            "set",
            "minutely",
            "--cron",
            "* * * * *",
            "-X",
            "POST",
            "-H",
            "Content-Type: application/json",
            "-d",
            '{"scheduled": "yes"}',
            "--concurrency",
            "Forbid",
            env=env,
            cwd=fn_dir,
        )
    )
    assert "Created schedule minutely: * * * * * in UTC" in created.stdout

    def history():
        return json.loads(
            ok(
                run_cli(HKS_FUNC, "schedule", "list", "--runs", "minutely", "-o", "json", env=env, cwd=fn_dir)
            ).stdout
        )

    runs = poll(history, lambda rs: any(r["outcome"] not in ("pending", "running") for r in rs), timeout=100)
    finished = [r for r in runs if r["outcome"] not in ("pending", "running")]
    assert finished, f"no run finished: {runs}"
    run = finished[-1]
    assert (run["outcome"], run["status_code"], run["error"]) == ("succeeded", 200, "")
    assert run["duration_ms"] is not None and run["scheduled_for"].endswith(":00Z")

    def logs():
        return ok(run_cli(HKS_FUNC, "logs", name, "--tail", "500", env=env)).stdout

    text = poll(logs, lambda t: "scheduled" in t, timeout=30)
    assert f"{name} received a POST with" in text and '"scheduled":' in text

    listed = ok(run_cli(HKS_FUNC, "schedule", "list", env=env, cwd=fn_dir)).stdout
    assert "minutely" in listed and "succeeded 200" in listed

    ok(run_cli(HKS_FUNC, "schedule", "remove", "minutely", env=env, cwd=fn_dir))
    ok(run_cli(HKS_FUNC, "delete", "--yes", env=env, cwd=fn_dir))
