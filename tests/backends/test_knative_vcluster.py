"""A vCluster whose host runs Knative, but which has no Knative Serving of its own: the one tenancy that
cannot work (docs/operations.md, "Tenancy on the cluster"). Knative Services written there are answered
404 (no CRD defines the group), and host Knative never sees them - so the platform must refuse, saying
why, before it builds or writes anything there; not fail later with "Not Found" or wait for a revision
that never comes. The host is ``fake_k8s`` (Knative served), the vCluster ``fake_vcluster`` (not)."""

from __future__ import annotations

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from functions.backends import BackendError, get_backend
from functions.backends import knative_preflight as kpf
from functions.backends import knative_provision as kp
from functions.backends.base import FunctionRef
from functions.models import Backend, ClusterState, FunctionStatus, Project
from functions.services import functions as services
from functions.services import projects as services_projects
from functions.services.projects import project_set_kubeconfig
from functions.sources.archives import pack_files
from functions.tasks import provision as tasks_provision
from tests.backends.test_knative import BUILD, NODE_SOURCE, service_spec, wait_for_status
from tests.support.k8s_fake import KSVC

WRITES = ("POST", "PUT", "PATCH", "DELETE")


@pytest.fixture
def host(fake_k8s, settings, tmp_path):
    """The platform's own identity on the (fake) host cluster, which has Knative."""
    path = tmp_path / "platform.kubeconfig"
    path.write_text(fake_k8s.platform_kubeconfig)  # held to deploy/base/rbac.yaml
    settings.HKS_KNATIVE_KUBECONFIG = str(path)
    settings.HKS_REGISTRY_SECRET = ""
    return fake_k8s


@pytest.fixture
def vcluster_project(project, host, fake_vcluster):
    """acme on the knative backend with a vCluster's kubeconfig; the vCluster has no Knative."""
    project.backend = Backend.KNATIVE
    project.save()
    return project_set_kubeconfig(project=project, kubeconfig_text=fake_vcluster.kubeconfig, actor=None)


def _writes(fake) -> list[tuple[str, str]]:
    return [(method, path) for method, path in fake.requests if method in WRITES]


def _says_why(message: str) -> None:
    assert "does not have Knative Serving" in message
    assert "though the host cluster has it" in message
    assert "Install Knative Serving inside the vCluster" in message
    assert "namespace of the host cluster" in message
    assert "Tenancy on the cluster" in message


def test_a_cluster_without_knative_answers_its_api_with_a_plain_404_as_a_real_server_does(
    fake_vcluster, fake_k8s
):
    vcluster = kp.api_client(fake_vcluster.kubeconfig)
    with pytest.raises(ApiException) as missing:
        client.CustomObjectsApi(vcluster).create_namespaced_custom_object(
            "serving.knative.dev",
            "v1",
            "acme",
            "services",
            {"apiVersion": "serving.knative.dev/v1", "kind": "Service", "metadata": {"name": "hello"}},
        )
    assert (missing.value.status, missing.value.body) == (404, "404 page not found\n")
    assert fake_vcluster.list(KSVC) == []
    assert kpf.serves_knative(vcluster) is False
    assert kpf.serves_knative(kp.api_client(fake_k8s.kubeconfig)) is True


def test_building_for_such_a_vcluster_is_refused_before_any_build_job(vcluster_project, fake_vcluster):
    backend = get_backend(vcluster_project)
    with pytest.raises(BackendError) as refused:
        backend.build(BUILD)
    assert refused.value.permanent
    _says_why(refused.value.message)
    assert fake_vcluster.list("jobs.batch") == []
    assert _writes(fake_vcluster) == []


def test_applying_to_such_a_vcluster_is_refused_before_writing_anything(vcluster_project, fake_vcluster):
    with pytest.raises(BackendError) as refused:
        get_backend(vcluster_project).apply(service_spec())
    assert refused.value.permanent
    _says_why(refused.value.message)
    assert _writes(fake_vcluster) == []


def test_the_status_of_a_function_there_is_an_error_not_a_missing_service(vcluster_project):
    with pytest.raises(BackendError) as refused:
        get_backend(vcluster_project).status(FunctionRef("acme", "acme", "hello"))
    _says_why(refused.value.message)


def test_a_deploy_there_fails_at_once_with_why_on_a_real_worker(vcluster_project, owner, celery_worker):
    function = services.function_create(project=vcluster_project, name="hello", runtime="node", user=owner)
    services.function_deploy(function=function, archive=pack_files(NODE_SOURCE), user=owner)

    function = wait_for_status(function, {FunctionStatus.READY, FunctionStatus.FAILED})
    assert function.status == FunctionStatus.FAILED
    _says_why(function.status_message)


def test_provisioning_such_a_vcluster_fails_the_project_with_why(vcluster_project, fake_vcluster):
    tasks_provision.provision_project.apply(args=(vcluster_project.pk,))

    project = Project.objects.get(pk=vcluster_project.pk)
    assert project.cluster_state == ClusterState.FAILED
    _says_why(project.cluster_message)
    assert _writes(fake_vcluster) == []


def test_the_projects_preflight_says_knative_is_on_the_host_only(vcluster_project):
    where, checks = kpf.preflight(vcluster_project)
    crds = next(check for check in checks if check.name == "Knative Serving CRDs")
    assert crds.state == kpf.MISSING
    assert "in the project's vCluster, though the host cluster has them" in crds.detail
    assert "Install Knative Serving inside the vCluster" in crds.fix


def test_a_host_without_knative_is_told_to_install_it(project, fake_vcluster, settings, tmp_path):
    """A namespace on a host cluster that lacks Knative: the plain install hint, no vCluster talk."""
    path = tmp_path / "platform.kubeconfig"
    path.write_text(fake_vcluster.kubeconfig)
    settings.HKS_KNATIVE_KUBECONFIG = str(path)
    settings.HKS_REGISTRY_SECRET = ""
    project.backend = Backend.KNATIVE
    project.save()
    with pytest.raises(BackendError) as refused:
        services_projects.project_provision_run(project=project)
    assert "does not have Knative Serving" in refused.value.message
    assert f"Install it: {kpf.INSTALL}" in refused.value.message
    assert "vCluster" not in refused.value.message
    assert _writes(fake_vcluster) == []


def test_a_vcluster_with_knative_inside_is_provisioned_and_deploys(project, host, owner, fake_k8s):
    """The model that works: Knative inside the project's own cluster (here the fake with Knative)."""
    project.backend = Backend.KNATIVE
    project.save()
    project = project_set_kubeconfig(project=project, kubeconfig_text=fake_k8s.kubeconfig, actor=None)
    assert "created ResourceQuota hks-quota" in services_projects.project_provision_run(project=project)
    get_backend(project).apply(service_spec())
    assert fake_k8s.get(KSVC, "acme", "hello") is not None


def test_knative_crds_without_knative_running_are_named_when_the_deploy_gives_up(
    fake_k8s, knative_project, monkeypatch, db
):
    """A cluster with Knative's CRDs but no Knative running (a vCluster whose CRDs are synced from its
    host, say): the Service is stored and never reconciled. The deploy's error says so, rather than
    "deploying" for ever."""
    from functions.backends.knative import KnativeBackend
    from functions.models import Revision
    from tests.support.factories import FunctionFactory

    fake_k8s.knative_controller = False
    monkeypatch.setattr(KnativeBackend, "reconcile_grace_seconds", 1.0)
    function = FunctionFactory(project=knative_project, name="hello", status=FunctionStatus.DEPLOYING)
    revision = Revision.objects.create(
        function=function, number=1, archive="x", artifact=f"registry.local/hks/acme/hello@sha256:{'e' * 64}"
    )
    with pytest.raises(BackendError) as stuck:
        services.revision_deploy_run(revision=revision, wait_seconds=3)
    assert "no Knative controller has looked at this Service" in stuck.value.message
    assert "A vCluster needs Knative inside it" in stuck.value.message
    (ksvc,) = fake_k8s.list(KSVC)
    assert "status" not in ksvc
