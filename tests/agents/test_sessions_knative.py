"""Agent sessions of a project on Knative, against the fake API server (tests/k8s_fake.py): what the portal
writes validates against the real schemas, passes Pod Security and waits for the pod as on a cluster.

No real cluster here: that the session pod's agent answers through Knative's cluster-local route, that the
NetworkPolicy is enforced and that gVisor runs it are not shown by these tests (docs/operations.md)."""

import datetime as dt
import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from django.test import Client
from django.utils import timezone
from kubernetes import client

from functions import selectors
from functions.agents import sessions
from functions.backends import get_backend
from functions.models import AgentSession, SessionStatus
from functions.services.projects import project_set_kubeconfig

IMAGE = "registry.local/hks/session@sha256:" + "5" * 64
KSVC = "services.serving.knative.dev"


@pytest.fixture
def cluster_settings(settings):
    settings.HKS_KNATIVE_PORTAL_IN_CLUSTER = True
    settings.HKS_AGENT_SESSION_IMAGE = IMAGE
    settings.HKS_AGENT_RUNTIME_CLASS = "gvisor"
    settings.HKS_PLATFORM_NAMESPACE = "hks"
    return settings


@pytest.fixture
def gvisor(knative_project, fake_k8s):
    """The cluster offers the gvisor RuntimeClass (written through the real client, validated)."""
    api = get_backend(knative_project)._api
    client.NodeV1Api(api).create_runtime_class(
        {
            "apiVersion": "node.k8s.io/v1",
            "kind": "RuntimeClass",
            "metadata": {"name": "gvisor"},
            "handler": "runsc",
        }
    )
    return "gvisor"


def _e2b(method, path, secret, body=None):
    data = json.dumps(body) if body is not None else ""
    return getattr(Client(), method)(
        f"/e2b/{path}", data=data, content_type="application/json", HTTP_X_API_KEY=secret
    )


def _of_session(fake, resource, sandbox_id):
    return fake.list(resource, None, f"hks.dev/session={sandbox_id}")


def _create(agent_credential, timeout=300):
    response = _e2b(
        "post", "sandboxes", agent_credential[1], {"timeout": timeout, "templateID": "code-interpreter-v1"}
    )
    assert response.status_code == 201, response.content
    return response.json()["sandboxID"]


@pytest.mark.django_db(transaction=True)
def test_a_session_on_knative_is_a_one_replica_cluster_local_ksvc_without_egress(
    cluster_settings, knative_project, gvisor, fake_k8s, agent_credential
):
    namespace = knative_project.effective_namespace
    # The namespace enforces the strictest Pod Security level: the session's pod must meet "restricted".
    client.CoreV1Api(get_backend(knative_project)._api).create_namespace(
        {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": namespace, "labels": {"pod-security.kubernetes.io/enforce": "restricted"}},
        }
    )
    sandbox_id = _create(agent_credential)
    ksvc = fake_k8s.get(KSVC, namespace, f"hks-s-{sandbox_id}")
    assert ksvc is not None
    labels = ksvc["metadata"]["labels"]
    assert labels["networking.knative.dev/visibility"] == "cluster-local"
    assert labels["hks.dev/project"] == knative_project.slug and labels["hks.dev/session"] == sandbox_id
    annotations = ksvc["spec"]["template"]["metadata"]["annotations"]
    assert (
        annotations["autoscaling.knative.dev/min-scale"]
        == annotations["autoscaling.knative.dev/max-scale"]
        == "1"
    )
    pod_spec = ksvc["spec"]["template"]["spec"]
    assert pod_spec["runtimeClassName"] == "gvisor"
    assert pod_spec["automountServiceAccountToken"] is False
    container = pod_spec["containers"][0]
    assert container["image"] == IMAGE
    assert container["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    # Knative made it Ready: the revision's pod passed the namespace's Pod Security and ran
    assert ksvc["status"]["conditions"][1]["status"] == "True"
    pods = fake_k8s.list("pods", namespace, f"serving.knative.dev/service=hks-s-{sandbox_id}")
    assert len(pods) == 1 and pods[0]["status"]["phase"] == "Running"

    (policy,) = _of_session(fake_k8s, "networkpolicies.networking.k8s.io", sandbox_id)
    assert policy["metadata"]["namespace"] == namespace
    assert policy["spec"]["policyTypes"] == ["Ingress", "Egress"] and policy["spec"]["egress"] == []
    assert policy["spec"]["podSelector"] == {
        "matchLabels": {"serving.knative.dev/service": f"hks-s-{sandbox_id}"}
    }
    (peer,) = policy["spec"]["ingress"][0]["from"]
    sources = peer["namespaceSelector"]["matchExpressions"][0]["values"]
    assert "hks" in sources and "knative-serving" in sources and namespace not in sources

    (secret,) = _of_session(fake_k8s, "secrets", sandbox_id)
    assert secret["stringData"]["agent-token"] == sessions.agent_token(sandbox_id)

    row = AgentSession.objects.get(sandbox_id=sandbox_id)
    assert (row.agent_host, row.agent_port) == (f"hks-s-{sandbox_id}.{namespace}.svc.cluster.local", 80)
    # Sessions are not functions: reconciliation and orphan clean-up do not see them.
    assert get_backend(knative_project).list_owned(knative_project.slug, namespace) == []


@pytest.mark.django_db(transaction=True)
def test_an_outsider_cannot_see_or_kill_a_knative_session(
    cluster_settings, knative_project, gvisor, fake_k8s, agent_credential, outsider_credential
):
    sandbox_id = _create(agent_credential)
    secret = outsider_credential[1]
    assert _e2b("get", f"sandboxes/{sandbox_id}", secret).status_code == 404
    assert _e2b("delete", f"sandboxes/{sandbox_id}", secret).status_code == 404
    assert _e2b("post", f"sandboxes/{sandbox_id}/timeout", secret, {"timeout": 5}).status_code == 404
    assert _e2b("get", "v2/sandboxes", secret).json() == []
    assert fake_k8s.get(KSVC, knative_project.effective_namespace, f"hks-s-{sandbox_id}") is not None
    assert AgentSession.objects.get(sandbox_id=sandbox_id).status == SessionStatus.RUNNING


@pytest.mark.django_db(transaction=True)
def test_killing_a_knative_session_deletes_its_service_policy_and_secret(
    cluster_settings, knative_project, gvisor, fake_k8s, agent_credential
):
    fake_k8s.route_services_to(f"http://127.0.0.1:{_free_port()}")  # where no agent answers
    sandbox_id = _create(agent_credential)
    assert _e2b("delete", f"sandboxes/{sandbox_id}", agent_credential[1]).status_code == 204
    for resource in (KSVC, "networkpolicies.networking.k8s.io", "secrets"):
        assert _of_session(fake_k8s, resource, sandbox_id) == [], resource
    assert AgentSession.objects.get(sandbox_id=sandbox_id).status == SessionStatus.KILLED
    # its pod did not report its CPU: the usage says "not measured" for it, rather than counting 0
    today = selectors.project_agent_usage(project=knative_project)["today"]
    assert (today["cpu_seconds"], today["cpu_unmeasured"]) == (0.0, 1)


@pytest.mark.django_db(transaction=True)
def test_a_knative_sessions_deadline_moves_and_the_reaper_deletes_it_at_the_deadline(
    cluster_settings, knative_project, gvisor, fake_k8s, agent_credential
):
    sandbox_id = _create(agent_credential)
    namespace, name = knative_project.effective_namespace, f"hks-s-{sandbox_id}"
    assert (
        _e2b("post", f"sandboxes/{sandbox_id}/timeout", agent_credential[1], {"timeout": 3600}).status_code
        == 204
    )
    deadline = fake_k8s.get(KSVC, namespace, name)["metadata"]["annotations"]["hks.dev/session-deadline"]
    moved = dt.datetime.strptime(deadline, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC)
    assert moved > timezone.now() + dt.timedelta(minutes=50)

    assert sessions.sessions_collect_expired() == 0  # not yet
    assert fake_k8s.get(KSVC, namespace, name) is not None
    ended = sessions.sessions_collect_expired(now=timezone.now() + dt.timedelta(hours=2))
    assert ended == 1
    assert AgentSession.objects.get(sandbox_id=sandbox_id).status == SessionStatus.EXPIRED
    for resource in (KSVC, "networkpolicies.networking.k8s.io", "secrets"):
        assert _of_session(fake_k8s, resource, sandbox_id) == [], resource


@pytest.mark.django_db(transaction=True)
def test_the_reaper_deletes_a_knative_session_past_its_deadline_whatever_its_row_says(
    cluster_settings, knative_project, gvisor, fake_k8s, agent_credential
):
    """A kill whose delete failed leaves the row ended and the Service there: the next round removes it."""
    sandbox_id = _create(agent_credential, timeout=60)
    AgentSession.objects.filter(sandbox_id=sandbox_id).update(status=SessionStatus.KILLED)
    sessions.sessions_collect_expired()
    assert _of_session(fake_k8s, KSVC, sandbox_id) == []


@pytest.mark.django_db(transaction=True)
def test_a_cluster_without_the_agent_runtime_class_is_refused_and_left_clean(
    cluster_settings, knative_project, fake_k8s, agent_credential
):
    response = _e2b("post", "sandboxes", agent_credential[1], {"timeout": 60})
    assert response.status_code == 501
    assert 'RuntimeClass "gvisor"' in response.json()["message"]
    assert not AgentSession.objects.exists()
    assert fake_k8s.list(KSVC) == [] and fake_k8s.list("networkpolicies.networking.k8s.io") == []


@pytest.mark.django_db(transaction=True)
def test_a_pod_the_cluster_refuses_fails_the_create_and_leaves_nothing(
    cluster_settings, knative_project, gvisor, fake_k8s, agent_credential
):
    """The RuntimeClass could not be read beforehand (a namespace-scoped kubeconfig): the pod's refusal is
    what the agent is told, and what was written is deleted."""
    cluster_settings.HKS_AGENT_RUNTIME_CLASS = "kata"
    fake_k8s.fail_next_request("GET", "/runtimeclasses/kata", 403, "runtimeclasses is forbidden")
    response = _e2b("post", "sandboxes", agent_credential[1], {"timeout": 60})
    assert response.status_code == 501
    assert 'RuntimeClass "kata" not found' in response.json()["message"]
    assert not AgentSession.objects.exists()
    assert fake_k8s.list(KSVC) == [] and fake_k8s.list("secrets", None, "hks.dev/session") == []


@pytest.mark.django_db(transaction=True)
def test_a_cluster_without_knative_is_refused_with_why(
    cluster_settings, project, owner, fake_vcluster, agent_credential
):
    project.backend = "knative"
    project.save()
    project_set_kubeconfig(project=project, kubeconfig_text=fake_vcluster.kubeconfig, actor=owner)
    response = _e2b("post", "sandboxes", agent_credential[1], {"timeout": 60})
    assert response.status_code == 501
    assert "Knative" in response.json()["message"]
    assert not AgentSession.objects.exists()
    assert fake_vcluster.list("networkpolicies.networking.k8s.io") == []


@pytest.mark.django_db(transaction=True)
def test_sessions_on_knative_need_the_portal_in_the_cluster_and_a_session_image(
    cluster_settings, knative_project, gvisor, fake_k8s, agent_credential
):
    cluster_settings.HKS_KNATIVE_PORTAL_IN_CLUSTER = False
    response = _e2b("post", "sandboxes", agent_credential[1], {"timeout": 60})
    assert response.status_code == 501 and "HKS_KNATIVE_PORTAL_IN_CLUSTER" in response.json()["message"]
    cluster_settings.HKS_KNATIVE_PORTAL_IN_CLUSTER = True
    cluster_settings.HKS_AGENT_SESSION_IMAGE = ""
    response = _e2b("post", "sandboxes", agent_credential[1], {"timeout": 60})
    assert response.status_code == 501 and "HKS_AGENT_SESSION_IMAGE" in response.json()["message"]
    assert not AgentSession.objects.exists() and fake_k8s.list(KSVC) == []


# The session image's recipe and its entry point (what can be checked without building the image) ----------


def test_the_session_image_recipe_is_clean_and_copies_what_the_pod_runs():
    from tests.deploy.test_image import REPO, _hadolint

    dockerfile = REPO / "deploy" / "session-image" / "Dockerfile"
    done = subprocess.run(
        [_hadolint(), "--failure-threshold", "info", str(dockerfile)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    text = dockerfile.read_text()
    for launcher in ("session_agent.py", "session_kernel.py", "session_pod.py"):
        assert f"hks_runtime/launchers/{launcher}" in text
    assert "hks_runtime/agent_requirements.txt" in text
    assert "USER 1001:1001" in text  # the uid k8s_sessions' security context runs it as
    assert '"/hks/launchers/session_pod.py"' in text


def test_the_pod_entry_point_serves_the_agent_on_port_with_the_token_from_its_environment(tmp_path):
    """session_pod.py as Knative starts it ($PORT, HKS_AGENT_TOKEN), run here as a plain process: the
    agent answers only with the token, keeps state between runs, and its code does not inherit the token."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    launcher = Path(sessions.__file__).resolve().parents[2] / "hks_runtime" / "launchers" / "session_pod.py"
    env = {
        "PATH": "/usr/bin:/bin",
        "PORT": str(port),
        "HKS_AGENT_TOKEN": "tok",
        "HKS_SESSION_HOME": str(tmp_path),
    }
    proc = subprocess.Popen([sys.executable, "-u", str(launcher)], env=env)
    try:
        base, auth = f"http://127.0.0.1:{port}", {"X-HKS-Agent-Token": "tok"}
        for _ in range(200):
            try:
                health = httpx.get(f"{base}/health", headers=auth)
                break
            except httpx.ConnectError:
                time.sleep(0.05)
        assert health.status_code == 204
        assert httpx.get(f"{base}/health").status_code == 401
        httpx.post(f"{base}/execute", headers=auth, json={"code": "x = 41"}, timeout=30)
        code = "import os\nprint(os.environ.get('HKS_AGENT_TOKEN'))\nx + 1"
        events = [
            json.loads(line)
            for line in httpx.post(
                f"{base}/execute", headers=auth, json={"code": code}, timeout=30
            ).text.splitlines()
        ]
        assert "".join(e["text"] for e in events if e["type"] == "stdout") == "None\n"
        assert next(e for e in events if e["type"] == "result")["text"] == "42"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


# A pod slow to start: the create does not hold its request past its wait; the data plane waits for the pod --


def _plane(method, path, sandbox_id, port="49983", body=None):
    """A request to the sessions' data plane (the ASGI layer before Django), as E2B's SDK sends it."""
    from functions.agents.e2b_data_plane import SandboxDataPlane

    async def django(scope, receive, send):  # nothing here goes on to Django
        await send({"type": "http.response.start", "status": 418, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    headers = {
        "E2b-Sandbox-Id": sandbox_id,
        "E2b-Sandbox-Port": port,
        "X-Access-Token": sessions.access_token(sandbox_id),
    }

    async def call():
        transport = httpx.ASGITransport(app=SandboxDataPlane(django))
        async with httpx.AsyncClient(transport=transport, base_url="http://portal", timeout=120) as c:
            return await c.request(method, path, headers=headers, json=body)

    import asyncio

    return asyncio.run(call())


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _agent(port: int, token: str, home: Path) -> subprocess.Popen:
    """The session pod's entry point as a plain process: what the Service's address reaches."""
    launcher = Path(sessions.__file__).resolve().parents[2] / "hks_runtime" / "launchers" / "session_pod.py"
    env = {
        "PATH": "/usr/bin:/bin",
        "PORT": str(port),
        "HKS_AGENT_TOKEN": token,
        "HKS_SESSION_HOME": str(home),
    }
    proc = subprocess.Popen([sys.executable, "-u", str(launcher)], env=env)
    for _ in range(600):
        try:
            httpx.get(f"http://127.0.0.1:{port}/health", headers={"X-HKS-Agent-Token": token})
            return proc
        except httpx.ConnectError:
            time.sleep(0.05)
    proc.terminate()
    raise AssertionError("the session agent did not start")


def _ready(fake, namespace, sandbox_id) -> str:
    ksvc = fake.get(KSVC, namespace, f"hks-s-{sandbox_id}")
    return {c["type"]: c["status"] for c in ksvc["status"]["conditions"]}["Ready"]


@pytest.mark.django_db(transaction=True)
def test_a_create_past_its_wait_returns_the_session_starting_and_the_data_plane_waits_for_the_pod(
    cluster_settings, knative_project, gvisor, fake_k8s, agent_credential, tmp_path
):
    import threading

    cluster_settings.HKS_KNATIVE_SESSION_CREATE_WAIT_SECONDS = 0.3
    port = _free_port()
    fake_k8s.pull_slowly(IMAGE.split("@")[0])  # a cold pull of the session image
    fake_k8s.route_services_to(f"http://127.0.0.1:{port}")
    sandbox_id = _create(agent_credential)  # 201 although the pod is still pulling
    namespace = knative_project.effective_namespace
    assert _ready(fake_k8s, namespace, sandbox_id) == "Unknown"
    row = AgentSession.objects.get(sandbox_id=sandbox_id)
    assert row.status == SessionStatus.RUNNING and not row.agent_port
    (pod,) = fake_k8s.list("pods", namespace, f"serving.knative.dev/service=hks-s-{sandbox_id}")
    assert pod["status"]["phase"] == "Pending"
    assert pod["status"]["containerStatuses"][0]["state"]["waiting"]["reason"] == "ContainerCreating"

    agent = _agent(port, sessions.agent_token(sandbox_id), tmp_path)
    try:
        threading.Timer(1.0, fake_k8s.finish_pulls).start()
        # Sent while the pod still pulls: held until the Service is Ready, then the code runs in the agent.
        ran = _plane("POST", "/e2b/execute", sandbox_id, "49999", {"code": "6 * 7"})
        assert ran.status_code == 200, ran.text
        events = [json.loads(line) for line in ran.text.splitlines()]
        assert next(e for e in events if e["type"] == "result")["text"] == "42"
        row.refresh_from_db()
        assert (row.agent_host, row.agent_port) == ("127.0.0.1", port)
        assert _ready(fake_k8s, namespace, sandbox_id) == "True"
        # Killed: the pod's agent reports what it used before its Service goes (here its process tree's
        # clocks: not a container's init), and that is the session's CPU in the project's usage.
        assert _e2b("delete", f"sandboxes/{sandbox_id}", agent_credential[1]).status_code == 204
        today = selectors.project_agent_usage(project=knative_project)["today"]
        assert today["cpu_seconds"] > 0 and today["cpu_unmeasured"] == 0
        assert _of_session(fake_k8s, KSVC, sandbox_id) == []
    finally:
        agent.terminate()
        agent.wait(timeout=10)


@pytest.mark.django_db(transaction=True)
def test_a_session_whose_pod_is_not_ready_in_time_is_answered_starting_then_reaped_and_its_slot_freed(
    cluster_settings, knative_project, gvisor, fake_k8s, agent_credential
):
    cluster_settings.HKS_KNATIVE_SESSION_CREATE_WAIT_SECONDS = 0.2
    cluster_settings.HKS_KNATIVE_SESSION_START_WAIT_SECONDS = 0.6
    knative_project.max_sessions = 1
    knative_project.save()
    fake_k8s.pull_slowly(IMAGE.split("@")[0])  # and it never finishes
    sandbox_id = _create(agent_credential, timeout=3600)  # its deadline is not what ends it

    waiting = _plane("GET", "/e2b/health", sandbox_id)  # answered, not held past the wait
    assert waiting.status_code == 503 and waiting.headers["Retry-After"] == "5"
    assert waiting.json() == {
        "code": 503,
        "message": f"The sandbox {sandbox_id} is still starting (its pod is being pulled or started); "
        "try again in a few seconds",
    }
    # the starting session holds the project's one slot
    assert _e2b("post", "sandboxes", agent_credential[1], {"timeout": 60}).status_code == 429

    assert sessions.sessions_collect_expired() == 0  # not past HKS_KNATIVE_SESSION_READY_SECONDS yet
    later = timezone.now() + dt.timedelta(seconds=cluster_settings.HKS_KNATIVE_SESSION_READY_SECONDS + 1)
    assert sessions.sessions_collect_expired(now=later) == 1
    row = AgentSession.objects.get(sandbox_id=sandbox_id)
    assert row.status == SessionStatus.FAILED and row.ended_at is not None
    for resource in (KSVC, "networkpolicies.networking.k8s.io", "secrets"):
        assert _of_session(fake_k8s, resource, sandbox_id) == [], resource
    gone = _plane("GET", "/e2b/health", sandbox_id)
    assert gone.status_code == 502 and "was not found" in gone.json()["message"]
    # it never ran code: no CPU, and nothing "not measured" either
    assert selectors.project_agent_usage(project=knative_project)["today"]["cpu_unmeasured"] == 0
    assert _create(agent_credential)  # the slot is free again


@pytest.mark.django_db(transaction=True)
def test_a_pod_that_cannot_start_after_the_create_fails_the_request_clearly_and_frees_the_slot(
    cluster_settings, knative_project, gvisor, fake_k8s, agent_credential
):
    cluster_settings.HKS_KNATIVE_SESSION_CREATE_WAIT_SECONDS = 0  # the create answers at once
    knative_project.max_sessions = 1
    knative_project.save()
    fake_k8s.nodes_cannot_pull(IMAGE.split("@")[0])
    sandbox_id = _create(agent_credential)
    assert not AgentSession.objects.get(sandbox_id=sandbox_id).agent_port

    failed = _plane("POST", "/e2b/execute", sandbox_id, "49999", {"code": "1"})
    assert failed.status_code == 502
    message = failed.json()["message"]
    assert message.startswith(f"The sandbox {sandbox_id} was not found: it could not start")
    assert "ImagePullBackOff" in message
    assert AgentSession.objects.get(sandbox_id=sandbox_id).status == SessionStatus.FAILED
    for resource in (KSVC, "networkpolicies.networking.k8s.io", "secrets"):
        assert _of_session(fake_k8s, resource, sandbox_id) == [], resource
    assert _create(agent_credential)  # its slot was released
