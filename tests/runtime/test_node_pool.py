"""The runtime's Node-ready agents (hks_runtime/sessions.py), through its control API: a one-shot JavaScript
run and a JavaScript session get Node without asking for it in their code; with no Node-ready pool
(``--node-pool-size 0``) they take a Python agent, which starts Node at once; nothing is left behind."""

from __future__ import annotations

import secrets
import time
from pathlib import Path

import httpx
import pytest

from tests.support.daemon import start_daemon, stop_daemon
from tests.support.needs import require_binary
from tests.support.sample_functions import remove_dir, scratch_dir
from tests.support.sandboxes import kernels_in

pytestmark = pytest.mark.runtime
JS_AND_PYTHON = ["session_kernel.js", "session_kernel.py"]


@pytest.fixture(scope="module", params=["2", "0"], ids=["node-pool", "no-node-pool"])
def daemon(request):
    require_binary("bwrap", hint="apt-get install bubblewrap")
    data_dir = scratch_dir("nodepool-")
    args = ("--node-pool-size", request.param, "--session-libraries", "off")
    daemon = start_daemon(data_dir, secrets.token_urlsafe(16), *args)
    time.sleep(1)  # its pools fill
    yield daemon
    stop_daemon(daemon)
    remove_dir(data_dir)


def _call(daemon, method: str, path: str, **body) -> httpx.Response:
    return httpx.request(
        method, daemon.control_url + path, headers=daemon.headers, json=body or None, timeout=60
    )


def test_a_one_shot_javascript_run(daemon):
    answer = _call(daemon, "POST", "/v1/execute", code="console.log('hi'); 6 * 7", language="javascript")
    assert answer.status_code == 200, answer.text
    assert (answer.json()["stdout"], answer.json()["result"], answer.json()["error"]) == ("hi\n", 42, None)
    typed = _call(daemon, "POST", "/v1/execute", code="const n: number = 6; n * 7", language="typescript")
    assert (typed.status_code, typed.json()["result"], typed.json()["stderr"]) == (200, 42, ""), typed.text
    refused = _call(daemon, "POST", "/v1/execute", code="1", language="ruby")
    assert refused.status_code == 400 and "language" in refused.json()["error"]


def test_a_javascript_session_has_node_before_its_first_run(daemon):
    created = _call(
        daemon,
        "POST",
        "/v1/sessions",
        id=secrets.token_hex(10),
        namespace="node-pool",
        token=secrets.token_urlsafe(24),
        timeout_seconds=60,
        language="javascript",
    )
    assert created.status_code == 201, created.text
    session = created.json()
    deadline = time.monotonic() + 15  # a Node-ready agent has it; a Python one starts it at the create
    while kernels_in(session["sandbox_pid"]) != JS_AND_PYTHON and time.monotonic() < deadline:
        time.sleep(0.1)
    assert kernels_in(session["sandbox_pid"]) == JS_AND_PYTHON
    assert _call(daemon, "DELETE", f"/v1/sessions/{session['id']}").json()["deleted"] is True
    assert not Path(session["slot"]).exists()
    assert kernels_in(session["sandbox_pid"]) == []
