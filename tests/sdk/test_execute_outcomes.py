"""Every outcome of the code is an ``Execution``, against the live platform (real sandbox and limits): a
run past its timeout, one killed at the memory limit, a fork bomb. ``execute`` raises only for refusals."""

import pytest

from hks_sdk import Client, HksError, functions
from tests.support.needs import require_binary

pytestmark = pytest.mark.runtime


@pytest.fixture(scope="module")
def agent_client(live_platform):  # noqa: F811
    require_binary("bwrap", hint="apt-get install bubblewrap")
    secret = live_platform.agent_secret("outcomes")
    with Client(url=live_platform.portal_url, credential=secret) as client:
        yield client


@pytest.mark.parametrize("run", range(6))  # the old race lost about 3 runs in 8
def test_a_run_past_its_timeout_is_a_timeout_error(agent_client, run):
    execution = functions.execute(code="import time\ntime.sleep(60)", timeout=2, client=agent_client)
    assert execution.error is not None and execution.error.name == "TimeoutError", execution.error
    assert "2 s" in execution.error.value
    assert not execution.ok


def test_code_killed_at_the_memory_limit_is_a_memory_error(agent_client):
    execution = functions.execute(code="hog = 'x' * (1 << 30)\nlen(hog)", timeout=30, client=agent_client)
    print("memory hog:", execution.error)
    assert execution.error is not None, execution
    assert execution.error.name == "MemoryError", execution.error
    # killed by the cgroup limit: the platform says so; under the rlimit fallback Python raises it itself
    assert "out of memory" in execution.error.value or "MemoryError" in execution.error.traceback


def test_a_fork_bomb_is_a_named_error_not_an_exception(agent_client):
    code = "import os\nwhile True:\n    os.fork()"
    try:
        execution = functions.execute(code=code, timeout=20, client=agent_client)
    except HksError as exc:  # the old behaviour: the SDK raised
        pytest.fail(f"execute raised {exc!r} (status {exc.status}) instead of returning an Execution")
    print("fork bomb:", execution.error)
    assert execution.error is not None
    assert execution.error.name in ("BlockingIOError", "ProcessLimitError", "TimeoutError"), execution.error
    if execution.error.name == "BlockingIOError":
        assert "Resource temporarily unavailable" in execution.error.value
