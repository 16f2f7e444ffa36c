import pytest
from django.test import Client

from tests.support.factories import FunctionFactory
from tests.support.k8s_fake import fake_k8s, fake_k8s_server  # noqa: F401 - fixtures for the consumer tests


@pytest.fixture
def client_for(db):
    """A browser-like client signed in as ``user`` (session cookie, CSRF enforced)."""

    def make(user):
        client = Client(enforce_csrf_checks=False)
        client.force_login(user)
        return client

    return make


@pytest.fixture
def hello(project):
    return FunctionFactory(
        project=project, name="hello", status="ready", url="http://hello.acme.localhost:8080"
    )


@pytest.fixture
def no_prometheus(settings):
    """Point the portal at a port where nothing listens: metrics are "unavailable", fast."""
    from tests.support.ports import free_port

    settings.HKS_PROMETHEUS_URL = f"http://127.0.0.1:{free_port()}"
