"""A Knative project through the API: its kubeconfig, and a log snapshot read from the cluster (the fake
Kubernetes API server, the one fake allowed)."""

import time

import pytest

from functions.backends import get_backend
from functions.services.functions import function_ref, service_spec
from functions.services.projects import project_set_kubeconfig


@pytest.fixture
def knative(project, owner, fake_k8s):
    project.backend = "knative"
    project.save()
    project_set_kubeconfig(project=project, kubeconfig_text=fake_k8s.kubeconfig, actor=owner)
    return project


def test_developer_gets_the_kubeconfig(knative, developer, fake_k8s, api_client_for):
    response = api_client_for(developer).get("/api/v1/projects/acme/kubeconfig")
    assert response.status_code == 200
    knative.refresh_from_db()  # the namespace comes from the kubeconfig's context
    assert response.json() == {
        "project": "acme",
        "namespace": knative.effective_namespace,
        "kubeconfig": fake_k8s.kubeconfig,
    }


def test_a_knative_project_without_kubeconfig_is_404_with_the_reason(project, developer, api_client_for):
    project.backend = "knative"
    project.save()
    response = api_client_for(developer).get("/api/v1/projects/acme/kubeconfig")
    assert response.status_code == 404 and "no kubeconfig" in response.json()["detail"]


def _running(function, fake_k8s) -> str:
    """Apply the function's built revision on the cluster and return its pod's name."""
    backend = get_backend(function.project)
    backend.apply(service_spec(function, function.current_revision))
    deadline = time.monotonic() + 10
    while not backend.status(function_ref(function)).ready:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    namespace = function_ref(function).namespace
    return fake_k8s.list("pods", namespace, "serving.knative.dev/service=hello")[0]["metadata"]["name"]


def test_logs_are_the_function_containers_lines_oldest_first(
    knative, viewer, built_revision, fake_k8s, api_client_for
):
    pod = _running(built_revision.function, fake_k8s)
    namespace = function_ref(built_revision.function).namespace
    fake_k8s.append_log(namespace, pod, "user-container", "first")
    fake_k8s.append_log(namespace, pod, "user-container", "second")
    fake_k8s.append_log(namespace, pod, "queue-proxy", "not the function's")
    client = api_client_for(viewer)
    lines = client.get("/api/v1/projects/acme/functions/hello/logs").json()
    assert [line["text"] for line in lines][-2:] == ["first", "second"]
    assert {line["instance"] for line in lines} == {pod}
    tail = client.get("/api/v1/projects/acme/functions/hello/logs?tail=1").json()
    assert [line["text"] for line in tail] == ["second"]


def test_logs_the_cluster_refuses_are_502_with_the_reason(
    knative, viewer, built_revision, fake_k8s, api_client_for
):
    fake_k8s.fail_next_request("GET", "/pods", status=403, message="pods is forbidden")
    response = api_client_for(viewer).get("/api/v1/projects/acme/functions/hello/logs")
    assert response.status_code == 502
    assert response.json()["detail"].startswith("logs are not available:")
    assert "forbidden" in response.json()["detail"]
