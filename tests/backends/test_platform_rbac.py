"""The least RBAC of the platform's ServiceAccount (deploy/base/rbac.yaml), against the fake API server's
RBAC authorizer (its platform token): a project's whole life on the host cluster - provisioning, drift
repair, a build, a deploy and its update, status, logs, a schedule, an agent session, the preflight, the
function's and the project's deletion - is allowed, and every right the manifests grant is used by it."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt

import pytest
import yaml
from kubernetes import client

from functions.backends import BackendError, get_backend
from functions.backends import k8s_manifests as m
from functions.backends import knative_preflight as kpf
from functions.backends import knative_provision as kp
from functions.backends import project_manifests as pm
from functions.backends.base import FunctionRef, SessionSpec
from functions.models import Backend
from functions.services import projects as services_projects
from tests.backends.test_knative import BUILD, SCHEDULE, service_spec
from tests.backends.test_knative_preflight import install_knative
from tests.support.k8s_fake import RBAC_MANIFEST, platform_namespace

REF = FunctionRef(project="acme", namespace="acme", function="hello")


def _granted() -> set[tuple[str, str, str, str]]:
    """(group, resource, verb, resource name or "") for every rule of every Role and ClusterRole."""
    granted = set()
    for obj in yaml.safe_load_all(RBAC_MANIFEST.read_text()):
        for rule in (obj or {}).get("rules", []):
            for group in rule["apiGroups"]:
                for resource in rule["resources"]:
                    for verb in rule["verbs"]:
                        for name in rule.get("resourceNames") or [""]:
                            granted.add((group, resource, verb, name))
    return granted


@pytest.fixture
def platform(fake_k8s, settings, tmp_path, project):
    path = tmp_path / "platform.kubeconfig"
    path.write_text(fake_k8s.platform_kubeconfig)
    settings.HKS_KNATIVE_KUBECONFIG = str(path)
    settings.HKS_PLATFORM_NAMESPACE = "hks"
    settings.HKS_REGISTRY = "registry.k3s.test:5000/hks"
    settings.HKS_REGISTRY_SECRET = "hks-registry"
    settings.HKS_KANIKO_IMAGE = "ghcr.io/osscontainertools/kaniko:v1.28.3"
    settings.HKS_AGENT_RUNTIME_CLASS = "gvisor"
    settings.HKS_AGENT_SESSION_IMAGE = "registry.local/hks/session@sha256:" + "5" * 64
    settings.HKS_KNATIVE_PORTAL_IN_CLUSTER = True
    admin = kp.api_client(fake_k8s.kubeconfig)  # the operator, arranging the cluster
    install_knative(admin)
    core = client.CoreV1Api(admin)
    platform_namespace(core)
    client.NodeV1Api(admin).create_runtime_class(
        {
            "apiVersion": "node.k8s.io/v1",
            "kind": "RuntimeClass",
            "metadata": {"name": "gvisor"},
            "handler": "runsc",
        }
    )
    project.backend = Backend.KNATIVE
    project.save()
    return core


def _stale(kind: str, name: str, obj: dict) -> dict:
    """An object provisioning made once and no longer wants (the project's labels, another name)."""
    return {**obj, "kind": kind, "metadata": {"name": name, "labels": pm.labels("acme")}}


@pytest.mark.django_db(transaction=True)
def test_a_projects_whole_life_needs_every_right_the_platform_holds_and_no_other(
    platform, project, fake_k8s, settings
):
    assert services_projects.project_provision_run(project=project)  # a 403 anywhere would raise
    # Drift by someone with more rights: a label off the namespace, the binding gone, and objects with the
    # project's labels that provisioning does not want (one of each kind it manages).
    admin = platform
    rbac = client.RbacAuthorizationV1Api(admin.api_client)
    networking = client.NetworkingV1Api(admin.api_client)
    admin.patch_namespace("acme", {"metadata": {"labels": {"hks.dev/component": None}}})
    rbac.delete_namespaced_role_binding("hks-platform", "acme")
    wanted = {o["kind"]: o for o in kp.desired_objects(project)}
    admin.create_namespaced_resource_quota("acme", _stale("ResourceQuota", "old", wanted["ResourceQuota"]))
    admin.create_namespaced_limit_range("acme", _stale("LimitRange", "old", wanted["LimitRange"]))
    networking.create_namespaced_network_policy(
        "acme", _stale("NetworkPolicy", "old", wanted["NetworkPolicy"])
    )
    admin.create_namespaced_secret("acme", _stale("Secret", "old", wanted["Secret"]))
    rbac.create_namespaced_role_binding("acme", _stale("RoleBinding", "old", wanted["RoleBinding"]))
    assert set(services_projects.project_provision_run(project=project)) == {
        "updated Namespace acme",
        "created RoleBinding hks-platform",
        *(f"deleted {kind} old" for kind in ("RoleBinding", "ResourceQuota", "LimitRange", "NetworkPolicy")),
        "deleted Secret old",
    }
    binding = rbac.read_namespaced_role_binding("hks-platform", "acme")
    binding.subjects[0].name = "someone-else"
    rbac.replace_namespaced_role_binding("hks-platform", "acme", binding)
    project.max_memory_mb = 8192  # the operator's quota change
    project.save()
    assert set(services_projects.project_provision_run(project=project)) == {
        "updated RoleBinding hks-platform",
        "updated ResourceQuota hks-quota",
        "updated LimitRange hks-limits",
    }

    backend = get_backend(project)
    backend.poll_interval = 0.05
    fake_k8s.fail_next_job()
    with pytest.raises(BackendError):
        backend.build(BUILD)
    # A retried build finds the failed Job and what a crashed attempt left (its ConfigMap) and replaces both.
    admin.create_namespaced_config_map("acme", m.build_config_map(BUILD))
    artifact = backend.build(BUILD).artifact
    backend.apply(service_spec(artifact=artifact, secret_env={"TOKEN": "s3cret"}))
    backend.apply(service_spec(artifact=artifact, secret_env={"TOKEN": "s3cret"}, env={"GREETING": "ho"}))
    assert backend.status(REF).exists
    asyncio.run(_drain(backend.logs(REF)))
    backend.apply_schedule(SCHEDULE)
    backend.apply_schedule(dataclasses.replace(SCHEDULE, enabled=False))
    backend.delete_schedule(REF, SCHEDULE.name)

    session = SessionSpec(
        project="acme", namespace="acme", session_id="a" * 20, token="t" * 32, timeout_seconds=60
    )
    backend.session_create(session)
    assert backend.session_set_deadline("acme", session.session_id, dt.datetime.now(dt.UTC))
    assert [s.session_id for s in backend.session_list("acme", "acme")] == [session.session_id]
    assert backend.session_delete("acme", session.session_id)

    _, checks = kpf.preflight(project)
    assert [(c.name, c.detail) for c in checks if not c.ok] == []

    backend.delete(REF)
    assert services_projects._orphans_collect(kp.platform_provisioner()) == []  # the beat's sweep
    services_projects.project_teardown_run(project=project)
    assert fake_k8s.get("namespaces", "", "acme") is None

    used = {(g, r, v, n) for v, g, r, _, n in fake_k8s.platform_allowed}
    used.add(("rbac.authorization.k8s.io", "clusterroles", "bind", "hks-project"))  # the escalation check
    granted = _granted()
    # A rule with resourceNames is used by a request naming one of them; without, by any request.
    unused = {
        (g, r, v, n)
        for g, r, v, n in granted
        if not any(u[:3] == (g, r, v) and (not n or u[3] == n) for u in used)
    }
    print("UNUSED", sorted(unused))
    assert "\n".join(map(str, sorted(unused))) == "", "granted but never needed: excess privilege"


async def _drain(stream) -> None:
    async for _ in stream:
        pass


def test_the_fake_refuses_what_the_manifests_do_not_grant(fake_k8s):
    api = kp.api_client(fake_k8s.platform_kubeconfig)
    with pytest.raises(client.ApiException) as refused:
        client.CoreV1Api(api).list_namespaced_secret("kube-system")
    assert refused.value.status == 403
    # Binding a role other than hks-project is the escalation RBAC stops, even where it may write bindings.
    client.CoreV1Api(kp.api_client(fake_k8s.kubeconfig)).create_namespace(
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "acme"}}
    )
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {"name": "grab"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
        "subjects": [{"kind": "ServiceAccount", "name": "hks", "namespace": "hks"}],
    }
    with pytest.raises(client.ApiException) as escalation:
        client.RbacAuthorizationV1Api(api).create_namespaced_role_binding("acme", binding)
    assert escalation.value.status == 403 and "not currently held" in escalation.value.body
