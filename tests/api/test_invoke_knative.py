"""Invoking a Knative function from a portal outside the cluster (the documented way to run it): the
request goes to the function's public URL, never to ``*.svc.cluster.local``, which resolves only inside
the cluster (https://kubernetes.io/docs/concepts/services-networking/dns-pod-service/)."""

import pytest

from functions.models import Backend, Function

from .test_invoke import invoke, upstream  # noqa: F401  (the function is a real local HTTP server)

INTERNAL = "http://hello.acme.svc.cluster.local"


@pytest.fixture
def knative_served(project, built_revision, upstream):  # noqa: F811
    project.backend = Backend.KNATIVE
    project.save()
    host, port = upstream.server_address
    Function.objects.filter(pk=built_revision.function_id).update(
        url=f"http://{host}:{port}", internal_url=INTERNAL
    )
    return upstream


def test_a_portal_outside_the_cluster_invokes_the_public_url(developer, knative_served, api_client_for):
    response = invoke(api_client_for(developer), method="GET", path="/", headers={}, body="")
    assert response.status_code == 200, response.json()
    assert response.json()["body"] == "OK"
    assert len(knative_served.seen) == 1


def test_a_cluster_local_function_is_409_with_the_reason(developer, knative_served, api_client_for):
    Function.objects.filter(name="hello").update(url=INTERNAL)  # Knative's url for a cluster-local Service
    response = invoke(api_client_for(developer), method="GET", path="/", headers={}, body="")
    assert response.status_code == 409
    assert "cannot reach it" in response.json()["detail"]
    assert knative_served.seen == []


def test_a_portal_inside_the_cluster_uses_the_internal_address(
    developer, knative_served, api_client_for, settings
):
    settings.HKS_KNATIVE_PORTAL_IN_CLUSTER = True
    host, port = knative_served.server_address
    Function.objects.filter(name="hello").update(
        internal_url=f"http://{host}:{port}", url="http://unused.invalid"
    )
    response = invoke(api_client_for(developer), method="GET", path="/", headers={}, body="")
    assert response.status_code == 200
