"""``hks_sdk.functions.execute`` end to end: a running platform, the real sandbox, cleanup after."""

import pytest

from hks_sdk import Client, functions
from tests.support.daemon_helpers import wait_for
from tests.support.machine import host_targets, reach_py
from tests.support.needs import require_binary

pytestmark = pytest.mark.runtime


@pytest.fixture(scope="module")
def agent_client(live_platform):  # noqa: F811
    require_binary("bwrap", hint="apt-get install bubblewrap")
    secret = live_platform.agent_secret("sdk-tests")
    with Client(url=live_platform.portal_url, credential=secret) as client:
        yield client


def _function_status(platform, name):
    return (
        platform.manage(
            "shell",
            "-c",
            (
                "from functions.models import Function; "
                f"row = Function.objects.filter(name={name!r}).first(); print(row.status if row else 'gone')"
            ),
            capture=True,
        )
        .strip()
        .splitlines()[-1]
    )


def test_python_code_runs_and_its_function_is_deleted(agent_client, live_platform):  # noqa: F811
    # Extra files take the deploy path (without them, Python takes the fast path: test_sessions_live.py).
    code = "print('hello from the sandbox')\nsum(range(10))"
    execution = functions.execute(code=code, files={"data.txt": "x"}, client=agent_client)
    assert execution.stdout == "hello from the sandbox\n"
    assert execution.result == 45
    assert execution.ok
    # An agent's function row goes with its storage as soon as the deletion finishes.
    assert _function_status(live_platform, execution.function) in ("deleting", "deleted", "gone")


def test_node_code_reports_its_exception(agent_client):
    execution = functions.execute(
        code="console.log('before'); null.boom", language="node", client=agent_client
    )
    assert execution.stdout == "before\n"
    assert execution.error.name == "TypeError"
    assert execution.exit_code == 1


def test_agent_code_has_no_network(agent_client, live_platform):  # noqa: F811
    """Nothing on the host answers agent code: not the platform (portal, runtime, gateway), not the
    machine's other services, not the internet - each of them answering the host itself, as the control."""
    targets = host_targets(live_platform.ports)
    code = reach_py(targets)
    execution = functions.execute(code=code, client=agent_client, timeout=60)
    assert execution.ok, execution.error
    assert set(execution.result) == {*targets, "internet"}
    assert "connected" not in execution.result.values(), execution.result


def test_agent_files_with_npm_lifecycle_scripts_do_not_run_them(agent_client):
    """Issue 11: agent code's build runs no hooks - npm installs its dependencies with --ignore-scripts."""
    import json

    package = {
        "name": "agent-hooks",
        "version": "1.0.0",
        "dependencies": {"cloudevents": "8.0.2"},
        "scripts": {"postinstall": "echo ran > node_modules/hook-ran.txt"},
    }
    code = (
        "const fs = require('fs'); require('cloudevents');"
        "console.log(fs.existsSync('/app/node_modules/hook-ran.txt') ? 'hook ran' : 'no hook')"
    )
    execution = functions.execute(
        code=code, language="node", files={"package.json": json.dumps(package)}, client=agent_client
    )
    assert execution.ok, execution.error
    assert execution.stdout == "no hook\n"  # the dependency is there, the script never ran


def test_a_burst_leaves_no_database_connection_open(agent_client, live_platform):  # noqa: F811
    """The portal serves ASGI: each request's code runs on a thread of its own, so a persistent connection
    was never reused and stayed open - every call left one PostgreSQL connection behind, until the server
    refused everyone. Connections are per request now (hks_portal/settings.py)."""
    import concurrent.futures as cf

    import dj_database_url
    import psycopg

    url = live_platform.env["DATABASE_URL"]
    if not url.startswith("postgres"):
        pytest.skip("SQLite has no server connections (CI runs this on PostgreSQL)")
    config = dj_database_url.parse(url)

    def connections() -> int:
        with psycopg.connect(
            host=config["HOST"], port=config["PORT"] or 5432, user=config["USER"], dbname="postgres"
        ) as conn:
            query = "SELECT count(*) FROM pg_stat_activity WHERE datname = %s"
            return conn.execute(query, (config["NAME"],)).fetchone()[0]

    functions.execute(code="1", client=agent_client)
    before = connections()
    with cf.ThreadPoolExecutor(3) as pool:  # within the project's quota of executions at once
        calls = pool.map(lambda _: functions.execute(code="6 * 7", client=agent_client), range(12))
        results = [execution.result for execution in calls]
    assert results == [42] * 12
    assert wait_for(lambda: connections() <= before + 2, timeout=10), (before, connections())
