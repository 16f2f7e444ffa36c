"""Session endpoints refuse bad input, over-quota and cross-project requests before any sandbox starts
(no runtime is running here: a request that got past the checks would fail with 503, not these codes)."""

import asyncio
import datetime as dt
import json
import time

import httpx
import pytest
from django.test import Client
from django.utils import timezone

from functions.agents import sessions
from functions.agents.e2b_data_plane import SandboxDataPlane
from functions.models import AgentSession, Backend
from tests.support.sandboxes import kernels_in


def _e2b(client, method, path, secret="", body=None, **headers):
    extra = {f"HTTP_{k.upper().replace('-', '_')}": v for k, v in headers.items()}
    if secret:
        extra["HTTP_X_API_KEY"] = secret
    data = json.dumps(body) if body is not None else ""
    return getattr(client, method)(f"/e2b/{path}", data=data, content_type="application/json", **extra)


def _row(project, sandbox_id="abcdefghij0123456789"):
    return AgentSession.objects.create(
        project=project,
        sandbox_id=sandbox_id,
        agent_host="127.0.0.1",
        agent_port=9,
        expires_at=timezone.now() + dt.timedelta(minutes=5),
    )


def test_e2b_control_plane_needs_a_credential(db):
    response = _e2b(Client(), "post", "v2/sandboxes", body={"templateID": "base"})
    assert response.status_code == 401
    assert isinstance(response.json()["code"], int)


def test_e2b_create_over_quota_is_429_and_creates_nothing(agent_credential, project):
    project.max_sessions = 0
    project.save()
    response = _e2b(Client(), "post", "v2/sandboxes", agent_credential[1], {"templateID": "base"})
    assert response.status_code == 429
    assert response["Should-Retry"] == "false" and int(response["Retry-After"]) >= 1
    assert not AgentSession.objects.exists()


def test_e2b_create_with_a_bad_timeout_is_400(agent_credential):
    response = _e2b(Client(), "post", "v2/sandboxes", agent_credential[1], {"timeout": "soon"})
    assert response.status_code == 400
    assert "timeout" in response.json()["message"]
    assert not AgentSession.objects.exists()


def test_sessions_need_the_local_runtime(agent_credential, project):
    project.backend = Backend.KNATIVE
    project.save()
    response = _e2b(Client(), "post", "v2/sandboxes", agent_credential[1], {})
    assert response.status_code == 501
    assert not AgentSession.objects.exists()


def test_another_projects_sandbox_is_not_found(outsider_credential, project):
    row = _row(project)
    secret = outsider_credential[1]
    assert _e2b(Client(), "get", f"sandboxes/{row.sandbox_id}", secret).status_code == 404
    assert _e2b(Client(), "delete", f"sandboxes/{row.sandbox_id}", secret).status_code == 404
    assert (
        _e2b(Client(), "post", f"sandboxes/{row.sandbox_id}/timeout", secret, {"timeout": 9}).status_code
        == 404
    )
    listed = _e2b(Client(), "get", "v2/sandboxes", secret)
    assert listed.status_code == 200 and listed.json() == []
    row.refresh_from_db()
    assert row.status == "running"


async def _inner(scope, receive, send):  # stands for Django: what the data plane passes on
    await send({"type": "http.response.start", "status": 418, "headers": []})
    await send({"type": "http.response.body", "body": b""})


def _data_plane(method, path, **headers):
    async def call():
        transport = httpx.ASGITransport(app=SandboxDataPlane(_inner))
        async with httpx.AsyncClient(transport=transport, base_url="http://portal") as client:
            return await client.request(method, path, headers=headers)

    return asyncio.run(call())


@pytest.mark.django_db(transaction=True)
def test_the_data_plane_needs_the_sandboxs_access_token(project):
    row = _row(project)
    headers = {"E2b-Sandbox-Id": row.sandbox_id, "E2b-Sandbox-Port": "49983"}
    assert _data_plane("GET", "/e2b/files?path=x", **headers).status_code == 401
    wrong = sessions.access_token("somebodyelse00000000")
    assert _data_plane("GET", "/e2b/files?path=x", **headers, **{"X-Access-Token": wrong}).status_code == 401


def _upload(path: str, size: int, **headers):
    """Send ``size`` bytes in 1 MiB chunks; return (status, bytes the data plane read before answering)."""
    read = {"bytes": 0}

    async def call():
        chunk = b"x" * (1 << 20)
        sent = {"n": 0}

        async def receive():
            if sent["n"] * len(chunk) >= size:
                return {"type": "http.disconnect"}
            sent["n"] += 1
            read["bytes"] += len(chunk)
            return {"type": "http.request", "body": chunk, "more_body": sent["n"] * len(chunk) < size}

        answers = []

        async def send(message):
            answers.append(message)

        scope = {
            "type": "http",
            "method": "POST",
            "path": path,
            "query_string": b"",
            "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
        }
        await SandboxDataPlane(_inner)(scope, receive, send)
        return answers[0]["status"]

    return asyncio.run(call()), read["bytes"]


@pytest.mark.django_db(transaction=True)
def test_the_data_plane_reads_no_body_before_the_token_is_checked(project):
    """A caller without the sandbox's token (or with an unknown sandbox) cannot make the portal buffer a big
    body: it is answered before a byte of the body is read."""
    row = _row(project)
    big = 50 << 20
    headers = {"E2b-Sandbox-Id": row.sandbox_id, "E2b-Sandbox-Port": "49983", "Content-Length": str(big)}
    assert _upload("/e2b/files?path=x", big, **headers) == (401, 0)
    unknown = {**headers, "E2b-Sandbox-Id": "nosuchsandbox0000000"}
    assert _upload("/e2b/files?path=x", big, **unknown) == (502, 0)
    contexts = {**headers, "E2b-Sandbox-Port": "49999"}  # the code interpreter's calls need a token too
    assert _upload("/e2b/contexts", big, **contexts) == (401, 0)


@pytest.mark.django_db(transaction=True)
def test_the_code_interpreters_context_calls_need_the_traffic_token(project):
    """Knowing a sandbox's id is not enough to create, list, restart or remove its kernels' contexts: E2B's
    SDK sends the create answer's trafficAccessToken there, and only the right one passes."""
    row = _row(project)
    base = {"E2b-Sandbox-Id": row.sandbox_id, "E2b-Sandbox-Port": "49999"}
    for method, path in (("GET", "/e2b/contexts"), ("DELETE", "/e2b/contexts/c1"), ("POST", "/e2b/contexts")):
        assert _data_plane(method, path, **base).status_code == 401
        wrong = {"E2B-Traffic-Access-Token": sessions.access_token("somebodyelse00000000")}
        assert _data_plane(method, path, **base, **wrong).status_code == 401


@pytest.mark.django_db(transaction=True)
def test_the_data_plane_of_an_unknown_or_ended_sandbox_is_502_not_found(project):
    unknown = _data_plane("GET", "/e2b/health", **{"E2b-Sandbox-Id": "nosuchsandbox0000000"})
    assert unknown.status_code == 502
    assert "was not found" in unknown.json()["message"]
    row = _row(project)
    row.status = "killed"
    row.save()
    token = sessions.access_token(row.sandbox_id)
    ended = _data_plane("GET", "/e2b/health", **{"E2b-Sandbox-Id": row.sandbox_id, "X-Access-Token": token})
    assert ended.status_code == 502


def test_other_requests_pass_through_to_django():
    assert _data_plane("GET", "/e2b/v2/sandboxes").status_code == 418
    assert _data_plane("GET", "/p/acme/", **{"E2b-Sandbox-Id": "x"}).status_code == 418


def _bearer(client, secret):
    response = client.post("/internal/v1/token", {"credential": secret}, content_type="application/json")
    return {"HTTP_AUTHORIZATION": f"Bearer {response.json()['token']}"}


def test_internal_api_refuses_bad_timeouts_and_quota(agent_credential, project):
    client = Client()
    auth = _bearer(client, agent_credential[1])
    bad = client.post(
        "/internal/v1/sessions", {"timeout_seconds": 0}, content_type="application/json", **auth
    )
    assert bad.status_code == 422
    project.max_sessions = 0
    project.save()
    over = client.post("/internal/v1/sessions", {}, content_type="application/json", **auth)
    assert over.status_code == 429
    assert 1 <= int(over["Retry-After"]) <= 10
    assert not AgentSession.objects.exists()


def test_internal_api_hides_other_projects_sessions(outsider_credential, project):
    row = _row(project)
    client = Client()
    auth = _bearer(client, outsider_credential[1])
    assert client.get(f"/internal/v1/sessions/{row.sandbox_id}", **auth).status_code == 404
    assert client.delete(f"/internal/v1/sessions/{row.sandbox_id}", **auth).status_code == 404
    assert client.get("/internal/v1/sessions", **auth).json() == []


def test_internal_execute_refuses_other_languages(agent_credential):
    client = Client()
    auth = _bearer(client, agent_credential[1])
    body = {"code": "1", "language": "ruby"}
    response = client.post("/internal/v1/operations/execute", body, content_type="application/json", **auth)
    assert response.status_code == 422
    session = client.post(
        "/internal/v1/sessions", {"language": "ruby"}, content_type="application/json", **auth
    )
    assert session.status_code == 422
    assert not AgentSession.objects.exists()


@pytest.mark.runtime
def test_internal_execute_runs_code_in_the_runtime(agent_credential, local_backend_settings):
    client = Client()
    auth = _bearer(client, agent_credential[1])
    body = {"code": "print('hi')\n6 * 7"}
    response = client.post("/internal/v1/operations/execute", body, content_type="application/json", **auth)
    assert response.status_code == 200, response.content
    assert response.json()["result"] == 42 and response.json()["stdout"] == "hi\n"


@pytest.mark.runtime
@pytest.mark.parametrize(
    ("language", "code"),
    [("node", "console.log('hi')\n6 * 7"), ("ts", "const n: number = 6\nconsole.log('hi')\nn * 7")],
    ids=["node", "ts"],
)
def test_internal_execute_runs_node_code_in_the_runtime(
    agent_credential, local_backend_settings, language, code
):
    client = Client()
    auth = _bearer(client, agent_credential[1])
    body = {"code": code, "language": language}
    response = client.post("/internal/v1/operations/execute", body, content_type="application/json", **auth)
    assert response.status_code == 200, response.content
    assert response.json()["result"] == 42 and response.json()["stdout"] == "hi\n"


@pytest.mark.runtime
@pytest.mark.parametrize(
    ("language", "kernels"),
    [("node", ["session_kernel.js", "session_kernel.py"]), ("python", ["session_kernel.py"])],
)
def test_a_node_session_gets_its_node_kernel_before_its_first_run(
    agent_credential, local_backend_settings, language, kernels
):
    client = Client()
    auth = _bearer(client, agent_credential[1])
    body = {"language": language}
    response = client.post("/internal/v1/sessions", body, content_type="application/json", **auth)
    assert response.status_code == 201, response.content
    sandbox_id = response.json()["id"]
    try:
        held = httpx.get(
            f"{local_backend_settings.control_url}/v1/sessions/{sandbox_id}",
            headers=local_backend_settings.headers,
        ).json()
        deadline = time.monotonic() + 15  # a Node-ready standby has it already; a Python one starts it now
        while kernels_in(held["sandbox_pid"]) != kernels and time.monotonic() < deadline:
            time.sleep(0.1)
        assert kernels_in(held["sandbox_pid"]) == kernels  # no code has run in the session
    finally:
        client.delete(f"/internal/v1/sessions/{sandbox_id}", **auth)
