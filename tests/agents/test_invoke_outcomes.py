"""The internal invoke answers what happened to the code - also when the portal itself gave up waiting or
could not connect - and the SDK turns each answer into an ``Execution`` with a named error. A real TCP
server stands in for a function that never answers."""

import socket
import threading

import pytest
from django.test import Client

from functions.models import Revision
from hks_sdk.functions import _execution
from tests.support.factories import FunctionFactory


@pytest.fixture
def silent_function(project, settings):
    """An agent function whose address accepts connections and never answers."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    held = []
    stop = threading.Event()

    def accept():
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    settings.HKS_GATEWAY_URL = f"http://127.0.0.1:{server.getsockname()[1]}"
    function = FunctionFactory(
        project=project, name="agent-silent", status="ready", ephemeral=True, timeout_seconds=1
    )
    revision = Revision.objects.create(function=function, number=1, archive="x.tar.gz", content_hash="a" * 64)
    function.current_revision = revision
    function.save()
    yield function
    stop.set()
    thread.join()
    for conn in held:
        conn.close()
    server.close()


def _invoke(secret, name):
    client = Client()
    token = client.post("/internal/v1/token", {"credential": secret}, content_type="application/json").json()
    return client.post(
        "/internal/v1/operations/invoke-function",
        {"name": name},
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {token['token']}",
    )


def test_a_function_that_never_answers_is_a_timeout_outcome(agent_credential, silent_function):
    _, secret = agent_credential
    response = _invoke(secret, silent_function.name)
    assert response.status_code == 200, response.content  # the old code: a 504 refusal, HksError in the SDK
    body = response.json()
    assert body["status"] == 504 and body["headers"]["x-hks-failure"] == "timeout"
    execution = _execution(body, silent_function.name, {}, timeout=1)
    assert execution.error.name == "TimeoutError" and "1 s" in execution.error.value


def test_a_function_that_cannot_be_reached_is_an_outcome(agent_credential, project, settings):
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]  # nothing listens here once closed
    settings.HKS_GATEWAY_URL = f"http://127.0.0.1:{port}"
    function = FunctionFactory(project=project, name="agent-gone", status="ready", ephemeral=True)
    function.current_revision = Revision.objects.create(
        function=function, number=1, archive="x.tar.gz", content_hash="a" * 64
    )
    function.save()
    _, secret = agent_credential
    body = _invoke(secret, function.name).json()
    assert body["status"] == 502 and body["headers"]["x-hks-failure"] == "unreachable"
    assert _execution(body, function.name, {}).error.name == "ExecutionError"


@pytest.mark.parametrize(
    ("status", "failure", "name", "words"),
    [
        (504, "timeout", "TimeoutError", "did not finish within 7 s"),
        (502, "out-of-memory", "MemoryError", "out of memory"),
        (502, "process-limit", "ProcessLimitError", "process limit"),
        (504, "process-limit", "ProcessLimitError", "process limit"),
        (502, "crashed", "ExecutionError", "ended without answering"),
        (504, "", "TimeoutError", "did not finish"),  # a backend without the header (Knative)
    ],
)
def test_the_sdk_names_each_failure_the_gateway_reports(status, failure, name, words):
    headers = {"X-Hks-Failure": failure} if failure else {}
    execution = _execution({"status": status, "headers": headers, "body": "detail\n"}, "f", {}, timeout=7)
    assert (execution.error.name, execution.exit_code) == (name, 1)
    assert words in execution.error.value
