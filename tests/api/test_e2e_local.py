"""The API end to end on the local runtime: upload a source archive (what ``hks-func deploy`` sends), the
real worker builds and deploys it onto the real runtime daemon (sandboxed), the build log is followed by
offset, the function is invoked through the portal and answers, its log snapshot shows the call, and a
DELETE takes it away. Debian package: bubblewrap."""

import time

import pytest

from functions.models import Function, FunctionStatus
from tests.support.archive_samples import node_archive
from tests.support.daemon_helpers import wait_until

pytestmark = [pytest.mark.runtime, pytest.mark.usefixtures("local_backend_settings")]

BASE = "/api/v1/projects/acme/functions/hello"
INDEX = b"""module.exports = { handle: async (context, body) => {
  console.log(`called ${context.method} with ${JSON.stringify(body)}`);
  return { greeting: `hello ${body.name}` };
} };
"""


def follow_build(client, build_id: int) -> str:
    """Read the build log the way the CLI does: from the last offset until the build is finished."""
    text, offset = "", 0
    deadline = time.monotonic() + 600
    while True:
        chunk = client.get(f"{BASE}/builds/{build_id}/log?offset={offset}").json()
        text = text[: chunk["offset"]] + chunk["text"]
        offset = chunk["next_offset"]
        if chunk["finished"]:
            assert chunk["status"] == "succeeded", text
            return text
        assert time.monotonic() < deadline, "the build did not finish"
        time.sleep(0.2)


def test_deploy_invoke_logs_delete_through_the_api(
    celery_worker, project, developer, api_client_for, media_root
):
    client = api_client_for(developer)
    uploaded = client.post(
        f"{BASE}/revisions?create=true&runtime=node",
        node_archive(body=INDEX),
        content_type="application/gzip",
    )
    assert uploaded.status_code == 201, uploaded.json()
    assert uploaded.json()["created_function"] is True
    follow_build(client, uploaded.json()["revision"]["build"]["id"])
    function = wait_until(
        lambda: (f := client.get(BASE).json())["status"] in ("ready", "failed") and f, 300, "the deploy"
    )
    assert function["status"] == "ready", function["status_message"]
    assert function["current_revision"] == 1

    answer = client.post(
        f"{BASE}/invoke",
        {
            "method": "POST",
            "path": "/",
            "headers": {"Content-Type": "application/json"},
            "body": '{"name": "api"}',
        },
        content_type="application/json",
    ).json()
    assert answer["status"] == 200, answer
    assert "hello api" in answer["body"]

    lines = wait_until(
        lambda: [x for x in client.get(f"{BASE}/logs?tail=50").json() if "called POST" in x["text"]],
        30,
        "the log",
    )
    assert lines[-1]["stream"] == "stdout"

    assert client.delete(BASE).status_code == 202
    wait_until(lambda: Function.objects.get(name="hello").status == FunctionStatus.DELETED, 60, "the delete")
    assert client.get(BASE).status_code == 404
