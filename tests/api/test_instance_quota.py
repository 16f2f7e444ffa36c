"""A project's ``max_instances`` reaches the local runtime: with every spec a deploy applies, and at once when
an owner lowers it or an operator raises it. What the runtime holds back shows on the portal (the function's
status message, the usage figures). Real worker, real runtime daemon. Debian package: bubblewrap."""

import time

import pytest

from functions.backends import function_ref, get_backend
from functions.models import Function, FunctionStatus, Role
from functions.services import usage as services_usage
from functions.services.observe import project_observe
from tests.support.archive_samples import node_archive
from tests.support.factories import MembershipFactory, ProjectFactory, UserFactory

pytestmark = [pytest.mark.runtime, pytest.mark.usefixtures("local_backend_settings")]

MIN_TWO = "deploy:\n  options:\n    scale:\n      min: 2\n      max: 2\n"


def wait_for(check, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while not (value := check()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)
    return value


def test_the_portal_gives_the_runtime_the_projects_instance_quota(celery_worker, api_client_for):
    # A project of this test's own: the session's daemon still runs other tests' functions in acme.
    capped = ProjectFactory(slug="capped", name="Capped", max_instances=1)
    owner = MembershipFactory(project=capped, user=UserFactory(username="cap-owner"), role=Role.OWNER).user
    client = api_client_for(owner)
    body = f"// {time.time()}\nmodule.exports = {{ handle: async () => ({{ ok: true }}) }};\n".encode()
    uploaded = client.post(
        "/api/v1/projects/capped/functions/warm/revisions?create=true&runtime=node",
        node_archive("warm", body=body, extra=MIN_TWO),
        content_type="application/gzip",
    )
    assert uploaded.status_code == 201, uploaded.json()

    def ready():
        function = Function.objects.get(project=capped, name="warm")
        assert function.status != FunctionStatus.FAILED, function.status_message
        return function if function.status == FunctionStatus.READY else None

    function = wait_for(ready, 300, "warm to serve")
    backend = get_backend(capped)
    held = "held at 1 instance: project quota of 1 instance reached"
    assert wait_for(lambda: backend.status(function_ref(function)).message == held, 30, "the hold")
    assert backend.status(function_ref(function)).replicas == 1  # min-scale 2, quota 1

    project_observe(project=capped)  # beat's observer writes down what the runtime says
    function.refresh_from_db()
    assert (function.status_message, function.replicas) == (held, 1)
    usage = client.get("/api/v1/projects/capped/usage").json()
    assert (usage["instances_running"], usage["max_instances"]) == (1, 1)
    page = client.get("/api/v1/projects/capped/functions/warm").json()
    assert page["status_message"] == held

    # An operator raises the quota: the runtime learns it at once (a task), not at the next deploy.
    operator = UserFactory(username="cap-operator", is_staff=True)
    services_usage.project_quotas_update(project=capped, user=operator, max_instances=2)
    assert wait_for(lambda: backend.status(function_ref(function)).replicas == 2, 60, "the second instance")
    assert backend.status(function_ref(function)).message == ""
    project_observe(project=capped)
    function.refresh_from_db()
    assert (function.status_message, function.replicas) == ("", 2)
