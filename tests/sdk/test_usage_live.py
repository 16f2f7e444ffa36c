"""Accounting on a running platform (real runtime, real sandbox): a one-shot execution and a session add
to their project's usage, with the CPU seconds their sandboxes spent by the runtime's cgroup figures; a
session the runtime reaped at its deadline is accounted for too; another project's owner sees none of it."""

from __future__ import annotations

import time

import httpx
import pytest

from hks_runtime import sandbox
from hks_sdk import Client, functions
from tests.support.needs import require_binary

pytestmark = pytest.mark.runtime

# Half a second of CPU, by the process's own clock (not wall time: the machine may be loaded).
BURN = "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.5:\n    pass\n'burnt'"


@pytest.fixture(scope="module")
def accounts(live_platform):  # noqa: F811
    require_binary("bwrap", hint="apt-get install bubblewrap")
    live_platform.create_user("usage-owner", "usage-password-1", project="usage-live", role="owner")
    live_platform.create_user("usage-outsider", "usage-password-2", project="usage-other", role="owner")
    out = live_platform.manage(
        "shell",
        "-c",
        "from django.contrib.auth import get_user_model; from functions.models import ApiToken;"
        "U = get_user_model();"
        "print(ApiToken.issue(user=U.objects.get(username='usage-owner'), name='t')[1]);"
        "print(ApiToken.issue(user=U.objects.get(username='usage-outsider'), name='t')[1])",
        capture=True,
    )
    owner, outsider = out.strip().splitlines()[-2:]
    return {
        "agent": live_platform.agent_secret("usage", project="usage-live"),
        "owner": owner,
        "outsider": outsider,
    }


def _usage(platform, token: str, slug: str = "usage-live") -> httpx.Response:
    return httpx.get(
        f"{platform.portal_url}/api/v1/projects/{slug}/usage",
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )


def _cpu_accounted() -> bool:
    return sandbox._cgroups().mode != "rlimit"  # the runtime runs on this machine, with the same cgroups


def test_an_execution_and_a_session_add_to_the_projects_usage(live_platform, accounts):  # noqa: F811
    before = _usage(live_platform, accounts["owner"]).json()
    assert before["today"] == {"executions": 0, "sessions": 0, "cpu_seconds": 0.0, "cpu_unmeasured": 0}
    with Client(url=live_platform.portal_url, credential=accounts["agent"]) as client:
        execution = functions.execute(code=BURN, client=client)
        assert execution.result == "burnt", execution
        after_execution = _usage(live_platform, accounts["owner"]).json()
        assert after_execution["today"]["executions"] == 1
        assert after_execution["executions_this_minute"] >= 1
        if _cpu_accounted():
            assert 0.5 <= after_execution["today"]["cpu_seconds"] < 30
        with functions.session(client=client, timeout=120) as session:
            assert session.run(BURN).result == "burnt"
            running = _usage(live_platform, accounts["owner"]).json()
            assert running["sessions_running"] == 1 and running["today"]["sessions"] == 1
    ended = _usage(live_platform, accounts["owner"]).json()
    assert ended["sessions_running"] == 0
    assert ended["today"]["sessions"] == 1 and ended["month"]["sessions"] == 1
    if _cpu_accounted():  # the session's half second, counted when it was killed
        assert ended["today"]["cpu_seconds"] >= after_execution["today"]["cpu_seconds"] + 0.5
    assert _usage(live_platform, accounts["outsider"]).status_code == 404


def test_a_session_reaped_at_its_deadline_is_accounted_for(live_platform, accounts):  # noqa: F811
    before = _usage(live_platform, accounts["owner"]).json()
    with Client(url=live_platform.portal_url, credential=accounts["agent"]) as client:
        session = functions.session(client=client, timeout=4).__enter__()
        assert session.run(BURN).result == "burnt"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:  # the runtime's reaper kills it; the portal's beat (or this) ends it
        live_platform.manage(
            "shell",
            "-c",
            "from functions.agents.sessions import sessions_collect_expired; sessions_collect_expired()",
            capture=True,
        )
        now = _usage(live_platform, accounts["owner"]).json()
        if now["sessions_running"] == 0:
            break
        time.sleep(1)
    assert now["sessions_running"] == 0
    assert now["today"]["sessions"] == before["today"]["sessions"] + 1
    if _cpu_accounted():
        assert now["today"]["cpu_seconds"] >= before["today"]["cpu_seconds"] + 0.5


def test_code_taking_the_deploy_path_is_accounted_for_when_its_function_is_deleted(live_platform, accounts):  # noqa: F811
    """Code with ``files`` is deployed as a throwaway function; the runtime reports its instance's CPU
    (from its start: a pre-started instance's start-up is not counted) when the function is deleted."""
    before = _usage(live_platform, accounts["owner"]).json()
    code = BURN.replace("'burnt'", "print('burnt')")
    with Client(url=live_platform.portal_url, credential=accounts["agent"]) as client:
        execution = functions.execute(code=code, files={"data.txt": "x"}, client=client)
    assert execution.stdout == "burnt\n", execution
    assert execution.function.startswith("agent-")
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:  # the delete runs in Celery after execute() returned
        now = _usage(live_platform, accounts["owner"]).json()
        done = now["today"]["cpu_seconds"] > before["today"]["cpu_seconds"]
        if done or now["today"]["cpu_unmeasured"] > before["today"]["cpu_unmeasured"]:
            break
        time.sleep(0.5)
    assert now["today"]["executions"] == before["today"]["executions"] + 1
    # the half second it burnt, in its instance's figure (cgroup, or under the rlimit fallback the process
    # tree's clocks read before the kill); nothing unmeasured
    assert now["today"]["cpu_seconds"] >= before["today"]["cpu_seconds"] + 0.5
    assert now["today"]["cpu_unmeasured"] == before["today"]["cpu_unmeasured"]


NODE_BURN = (
    "const t = process.cpuUsage();\n"
    "while (process.cpuUsage(t).user + process.cpuUsage(t).system < 500000) {}\n"
    "'burnt'"
)


def test_a_node_execution_adds_to_the_projects_usage(live_platform, accounts):  # noqa: F811
    before = _usage(live_platform, accounts["owner"]).json()
    with Client(url=live_platform.portal_url, credential=accounts["agent"]) as client:
        execution = functions.execute(code=NODE_BURN, language="node", client=client)
    assert execution.result == "burnt" and execution.function == "", execution  # the fast path
    after = _usage(live_platform, accounts["owner"]).json()
    assert after["today"]["executions"] == before["today"]["executions"] + 1
    assert after["today"]["sessions"] == before["today"]["sessions"]
    if _cpu_accounted():
        assert after["today"]["cpu_seconds"] >= before["today"]["cpu_seconds"] + 0.5
    assert _usage(live_platform, accounts["outsider"]).status_code == 404
