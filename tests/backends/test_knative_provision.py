"""A knative project's place on the cluster, against the schema-validating fake API server: what
provisioning creates (exactly), a second run writing nothing, quota changes, drift repair by the beat task
on a real worker, teardown, orphans, and namespaces that are not the project's."""

from __future__ import annotations

import base64
import os
import time

import pytest
import yaml
from django.core.exceptions import ValidationError
from django.db import transaction
from kubernetes import client

from functions.backends import BackendError, get_backend, k8s_api
from functions.backends import k8s_manifests as manifests
from functions.backends import knative_provision as kp
from functions.backends import project_manifests as pm
from functions.backends.base import BuildSpec, FunctionRef, Resources, Scale, ServiceSpec
from functions.models import Backend, ClusterState, Project
from functions.services import projects as services_projects
from tests.support.factories import ProjectFactory
from tests.support.k8s_fake import platform_namespace

LABELS = {
    "app.kubernetes.io/managed-by": "hks-functions",
    "hks.dev/project": "acme",
    "hks.dev/component": "project",
}
DOCKER_CONFIG = base64.b64encode(
    b'{"auths": {"registry.k3s.test:5000": {"auth": "aGtzOnNlY3JldA=="}}}'
).decode()
WRITES = ("POST", "PUT", "PATCH", "DELETE")


@pytest.fixture
def host(fake_k8s, settings, tmp_path):
    """The platform's own identity on the (fake) host cluster, and its registry Secret in namespace hks."""
    path = tmp_path / "platform.kubeconfig"
    path.write_text(fake_k8s.platform_kubeconfig)  # held to deploy/base/rbac.yaml
    settings.HKS_KNATIVE_KUBECONFIG = str(path)
    settings.HKS_REGISTRY_SECRET = "hks-registry"
    settings.HKS_PLATFORM_NAMESPACE = "hks"
    settings.HKS_QUOTA_INSTANCES = 3
    core = client.CoreV1Api(kp.api_client(fake_k8s.kubeconfig))
    platform_namespace(core, docker_config=DOCKER_CONFIG)
    return core


@pytest.fixture
def acme(project):
    project.backend = Backend.KNATIVE
    project.max_functions, project.max_agent_functions = 4, 2
    project.max_cpu_millicores, project.max_memory_mb = 500, 256
    project.save()
    return project


def _content(obj: dict) -> dict:
    """What a test compares: the object without the server's bookkeeping."""
    meta = obj["metadata"]
    kept = {k: meta[k] for k in ("name", "namespace", "labels") if k in meta}
    return {**{k: v for k, v in obj.items() if k not in ("metadata", "status")}, "metadata": kept}


def _writes(fake_k8s, since: int) -> list[tuple[str, str]]:
    return [r for r in fake_k8s.requests[since:] if r[0] in WRITES]


EXPECTED_POLICIES = {
    "hks-default-deny": {
        "podSelector": {},
        "policyTypes": ["Ingress", "Egress"],
        "ingress": [],
        "egress": [],
    },
    "hks-allow-metrics": {
        "podSelector": {"matchExpressions": [{"key": "serving.knative.dev/revision", "operator": "Exists"}]},
        "policyTypes": ["Ingress"],
        "ingress": [
            {
                "from": [
                    {
                        "namespaceSelector": {
                            "matchExpressions": [
                                {
                                    "key": "kubernetes.io/metadata.name",
                                    "operator": "In",
                                    "values": ["hks", "monitoring"],
                                }
                            ]
                        }
                    }
                ],
                "ports": [{"protocol": "TCP", "port": 9091}],
            }
        ],
    },
    "hks-schedules": {
        "podSelector": {"matchLabels": {"hks.dev/component": "schedule"}},
        "policyTypes": ["Ingress", "Egress"],
        "ingress": [],
        "egress": [
            {
                "to": [
                    {
                        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
                        "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}},
                    }
                ],
                "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}],
            },
            {
                "to": [
                    {
                        "namespaceSelector": {
                            "matchExpressions": [
                                {
                                    "key": "kubernetes.io/metadata.name",
                                    "operator": "In",
                                    "values": sorted(manifests.KNATIVE_INGRESS_NAMESPACES),
                                }
                            ]
                        }
                    },
                    {"podSelector": {}},
                ]
            },
        ],
    },
}


def test_provisioning_creates_exactly_the_projects_objects_and_a_second_run_writes_nothing(
    host, acme, fake_k8s
):
    changes = services_projects.project_provision_run(project=acme)

    assert changes == [
        "created Namespace acme",
        "created RoleBinding hks-platform",
        "created ResourceQuota hks-quota",
        "created LimitRange hks-limits",
        "created NetworkPolicy hks-default-deny",
        "created NetworkPolicy hks-allow-metrics",
        "created NetworkPolicy hks-schedules",
        "created Secret hks-registry",
    ]
    assert _content(fake_k8s.get("namespaces", "", "acme")) == {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {
            "name": "acme",
            "labels": {
                **LABELS,
                "pod-security.kubernetes.io/enforce": "baseline",
                "pod-security.kubernetes.io/warn": "restricted",
                "pod-security.kubernetes.io/audit": "restricted",
            },
        },
    }
    meta = {"namespace": "acme", "labels": LABELS}
    assert _content(fake_k8s.get("rolebindings.rbac.authorization.k8s.io", "acme", "hks-platform")) == {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {"name": "hks-platform", **meta},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "hks-project"},
        "subjects": [{"kind": "ServiceAccount", "name": "hks", "namespace": "hks"}],
    }
    # 6 functions x 3 instances of (500m + 100m queue-proxy, 256Mi + 128Mi), plus one build (2 CPUs, 4 GiB)
    assert _content(fake_k8s.get("resourcequotas", "acme", "hks-quota")) == {
        "apiVersion": "v1",
        "kind": "ResourceQuota",
        "metadata": {"name": "hks-quota", **meta},
        "spec": {
            "hard": {
                "requests.cpu": "12800m",
                "limits.cpu": "12800m",
                "requests.memory": "11008Mi",
                "limits.memory": "11008Mi",
                "count/services.serving.knative.dev": "6",
            }
        },
    }
    assert _content(fake_k8s.get("limitranges", "acme", "hks-limits")) == {
        "apiVersion": "v1",
        "kind": "LimitRange",
        "metadata": {"name": "hks-limits", **meta},
        "spec": {
            "limits": [
                {
                    "type": "Container",
                    "default": {"cpu": "100m", "memory": "128Mi"},
                    "defaultRequest": {"cpu": "25m", "memory": "64Mi"},
                    "max": {"cpu": "2000m", "memory": "4096Mi"},
                }
            ]
        },
    }
    policies = {p["metadata"]["name"]: p for p in fake_k8s.list("networkpolicies.networking.k8s.io", "acme")}
    assert {name: p["spec"] for name, p in policies.items()} == EXPECTED_POLICIES
    assert all(p["metadata"]["labels"] == LABELS for p in policies.values())
    assert _content(fake_k8s.get("secrets", "acme", "hks-registry")) == {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "hks-registry", **meta},
        "type": "kubernetes.io/dockerconfigjson",
        "data": {".dockerconfigjson": DOCKER_CONFIG},
    }
    acme.refresh_from_db()
    assert acme.cluster_state == ClusterState.READY

    before, snapshot = len(fake_k8s.requests), fake_k8s.objects
    assert services_projects.project_provision_run(project=acme) == []
    assert _writes(fake_k8s, before) == []
    assert fake_k8s.objects == snapshot
    acme.refresh_from_db()
    assert acme.cluster_message == "up to date"


def test_changing_the_quotas_updates_the_quota_and_the_limits_only(host, acme, fake_k8s):
    services_projects.project_provision_run(project=acme)
    acme.max_functions, acme.max_memory_mb = 9, 8192
    acme.save()

    before = len(fake_k8s.requests)
    changes = services_projects.project_provision_run(project=acme)

    assert changes == ["updated ResourceQuota hks-quota", "updated LimitRange hks-limits"]
    assert {method for method, _ in _writes(fake_k8s, before)} == {"PUT"}
    # 11 functions x 3 x (600m, 8320Mi) + the build
    assert fake_k8s.get("resourcequotas", "acme", "hks-quota")["spec"]["hard"] == {
        "requests.cpu": "21800m",
        "limits.cpu": "21800m",
        "requests.memory": "278656Mi",
        "limits.memory": "278656Mi",
        "count/services.serving.knative.dev": "11",
    }
    assert fake_k8s.get("limitranges", "acme", "hks-limits")["spec"]["limits"][0]["max"] == {
        "cpu": "2000m",
        "memory": "8192Mi",
    }
    before = len(fake_k8s.requests)
    assert services_projects.project_provision_run(project=acme) == []  # and again: nothing to write
    assert _writes(fake_k8s, before) == []


def test_quantities_written_back_in_canonical_form_are_not_drift():
    want = pm.resource_quota(
        "acme", "acme", pm.ProjectQuota(1, 0, 1000, 1024), pm.ProvisionSettings(instances=1)
    )
    have = {**want, "spec": {"hard": {**want["spec"]["hard"], "requests.cpu": "3100m", "limits.cpu": "3.1"}}}
    have["spec"]["hard"]["requests.memory"] = have["spec"]["hard"]["limits.memory"] = "5248Mi"
    assert kp.up_to_date(want, have)
    have["spec"]["hard"]["limits.cpu"] = "3"
    assert not kp.up_to_date(want, have)


def test_empty_lists_the_api_server_leaves_out_are_not_drift():
    want = pm.network_policies("acme", "acme", pm.ProvisionSettings())[0]  # ingress: [], egress: []
    have = {**want, "spec": {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}}
    assert kp.up_to_date(want, have)
    have["spec"]["egress"] = [{"to": [{"podSelector": {}}]}]  # someone opened it
    assert not kp.up_to_date(want, have)


def _drift(host, fake_k8s):
    """What an operator's kubectl or a tenant could do: loosen the quota, drop a policy and the platform's
    binding, change the registry Secret."""
    api = kp.api_client(fake_k8s.kubeconfig)
    quota = host.read_namespaced_resource_quota("hks-quota", "acme")
    quota.spec.hard["limits.cpu"] = "1000"
    host.replace_namespaced_resource_quota("hks-quota", "acme", quota)
    client.NetworkingV1Api(api).delete_namespaced_network_policy("hks-default-deny", "acme")
    client.RbacAuthorizationV1Api(api).delete_namespaced_role_binding("hks-platform", "acme")
    host.patch_namespaced_secret("hks-registry", "acme", {"data": {".dockerconfigjson": "e30="}})


def _wait(predicate, seconds: float = 30):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return False


def test_the_beat_task_repairs_drift_on_a_real_worker(host, acme, fake_k8s, celery_worker):
    from functions.tasks import provision as tasks_provision

    services_projects.project_provision_run(project=acme)
    wanted = fake_k8s.objects
    _drift(host, fake_k8s)

    assert tasks_provision.reconcile_projects.delay().get(timeout=30) == {
        "provision": 1,
        "teardown": 0,
        "orphans": 0,
    }

    keys = [k for k in wanted if k[1] == "acme"]

    def repaired():
        now = fake_k8s.objects
        return all(k in now and _content(now[k]) == _content(wanted[k]) for k in keys)

    assert _wait(repaired), "drift not repaired"
    # the task records what it repaired once it is done
    assert _wait(lambda: "updated" in Project.objects.get(pk=acme.pk).cluster_message)
    message = Project.objects.get(pk=acme.pk).cluster_message
    assert message.split("; ") == [
        "created RoleBinding hks-platform",
        "updated ResourceQuota hks-quota",
        "created NetworkPolicy hks-default-deny",
        "updated Secret hks-registry",
    ]
    before = len(fake_k8s.requests)
    assert services_projects.project_provision_run(project=acme) == []  # repaired: nothing left to write
    assert _writes(fake_k8s, before) == []
    assert {k: _content(v) for k, v in fake_k8s.objects.items() if k[1] == "acme"} == {
        k: _content(wanted[k]) for k in keys
    }


def test_deleting_the_project_removes_its_namespace_and_then_the_project(
    host, acme, owner, fake_k8s, celery_worker
):
    from functions.tasks import provision as tasks_provision

    services_projects.project_provision_run(project=acme)
    assert fake_k8s.list("resourcequotas", "acme")
    with transaction.atomic():
        services_projects.project_delete(project=acme, actor=owner)

    assert _wait(lambda: not Project.objects.filter(pk=acme.pk).exists())
    assert fake_k8s.get("namespaces", "", "acme") is None
    assert [k for k in fake_k8s.objects if k[1] == "acme"] == []
    assert fake_k8s.get("secrets", "hks", "hks-registry") is not None  # the platform's own is untouched

    before = len(fake_k8s.requests)
    tasks_provision.teardown_project.delay(acme.pk).get(timeout=30)  # delivered again: nothing to do
    assert _writes(fake_k8s, before) == []


def test_creating_a_knative_project_provisions_it_on_a_real_worker(host, owner, fake_k8s, celery_worker):
    from functions.services import projects as services

    with transaction.atomic():
        created = services.project_create(slug="globex", name="Globex", owner=owner, backend=Backend.KNATIVE)

    assert _wait(lambda: Project.objects.get(pk=created.pk).cluster_state == ClusterState.READY)
    assert fake_k8s.get("resourcequotas", "globex", "hks-quota") is not None
    assert fake_k8s.get("rolebindings.rbac.authorization.k8s.io", "globex", "hks-platform") is not None


def test_a_project_cannot_take_over_or_delete_a_namespace_that_is_not_its_own(host, acme, fake_k8s, db):
    services_projects.project_provision_run(project=acme)
    host.create_namespace({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team-a"}})
    # Rows made before the admin form checked namespaces: one on a namespace the operator made, one on acme's.
    unmanaged = ProjectFactory(slug="globex", namespace="team-a", backend=Backend.KNATIVE)
    squatter = ProjectFactory(slug="initech", namespace="acme", backend=Backend.KNATIVE)
    snapshot = fake_k8s.objects

    for intruder, namespace in ((unmanaged, "team-a"), (squatter, "acme")):
        with pytest.raises(BackendError) as refused:
            services_projects.project_provision_run(project=intruder)
        assert refused.value.permanent
        assert f"namespace {namespace} already exists and is not project {intruder.slug}'s" in (
            refused.value.message
        )
        services_projects.project_teardown_run(project=intruder)
    assert fake_k8s.objects == snapshot  # nothing written, nothing deleted


RESERVED = ["kube-system", "kube-node-lease", "default", "knative-serving", "kourier-system", "istio-system"]
RESERVED += ["monitoring", "hks", "registry"]


@pytest.mark.parametrize("slug", RESERVED)
def test_no_project_is_named_after_a_system_or_trusted_namespace(slug, owner, db):
    # Functions accept traffic from Knative's ingress namespaces and Prometheus' may scrape them: a project
    # living in one (istio-system does not exist on K3s, so provisioning would create it) would sit inside
    # every other project's trust.
    with pytest.raises(services_projects.ServiceError, match="reserved"):
        services_projects.project_create(slug=slug, name=slug, owner=owner, backend=Backend.KNATIVE)
    assert not Project.objects.filter(slug=slug).exists()


def test_no_project_takes_another_projects_namespace(acme, owner, db):
    acme.namespace = "acme-prod"
    acme.save()
    with pytest.raises(services_projects.ServiceError) as taken:
        services_projects.project_create(slug="acme-prod", name="x", owner=owner, backend=Backend.KNATIVE)
    assert taken.value.code == 409
    knative = {"name": "Globex", "backend": Backend.KNATIVE}
    with pytest.raises(ValidationError, match="belongs to another project"):
        Project(slug="globex", namespace="acme-prod", **knative).full_clean()  # the admin's form
    with pytest.raises(ValidationError, match="reserved"):
        Project(slug="globex", namespace="kube-system", **knative).full_clean()
    with pytest.raises(ValidationError, match="reserved"):
        Project(slug="monitoring", **knative).full_clean()
    Project(slug="globex", namespace="globex-prod", **knative).full_clean()
    Project(slug="monitoring", name="Monitoring").full_clean()  # a local project has no namespace


def test_a_kubeconfig_cannot_move_a_project_into_another_projects_namespace(acme, other_project, fake_k8s):
    with pytest.raises(services_projects.ServiceError, match="reserved or another project's"):
        services_projects.project_set_kubeconfig(
            project=acme, kubeconfig_text=yaml.safe_dump(fake_k8s.kubeconfig_dict("globex")), actor=None
        )
    acme.refresh_from_db()
    assert (acme.namespace, acme.has_kubeconfig) == ("", False)


@pytest.mark.parametrize("namespace", ["kube-system", "istio-system"])
def test_provisioning_never_makes_or_touches_a_reserved_namespace(host, fake_k8s, namespace, db):
    host.create_namespace({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "kube-system"}})
    intruder = ProjectFactory(slug=namespace, backend=Backend.KNATIVE)  # a row no form checked
    before = len(fake_k8s.requests)

    with pytest.raises(BackendError) as refused:
        services_projects.project_provision_run(project=intruder)

    assert refused.value.permanent and f"namespace {namespace} is reserved" in refused.value.message
    assert _writes(fake_k8s, before) == []
    assert fake_k8s.get("namespaces", "", "istio-system") is None
    services_projects.project_teardown_run(project=intruder)  # deleting the row leaves kube-system be
    assert _writes(fake_k8s, before) == []


def test_the_platform_writes_a_projects_functions_only_in_that_projects_namespace(host, acme, fake_k8s):
    services_projects.project_provision_run(project=acme)
    mine = FunctionRef(project="acme", namespace="acme", function="hello")
    get_backend(acme).apply(_service(mine))
    snapshot, before = fake_k8s.objects, len(fake_k8s.requests)
    squatter = ProjectFactory(slug="initech", namespace="acme", backend=Backend.KNATIVE)
    for ref in (
        FunctionRef(project="initech", namespace="acme", function="hello"),  # acme's namespace
        FunctionRef(project="initech", namespace="kube-system", function="hello"),
    ):
        with pytest.raises(BackendError) as refused:
            get_backend(squatter).apply(_service(ref))
        assert refused.value.permanent and "initech" in refused.value.message
    assert _writes(fake_k8s, before) == []
    assert fake_k8s.objects == snapshot


def test_the_platforms_rights_end_at_the_namespaces_it_provisioned(host, acme, fake_k8s):
    # What a cluster's RBAC would answer, had the platform's own guards been passed: deploy/base/rbac.yaml
    # gives it rights in a namespace only through the RoleBinding provisioning makes there.
    host.create_namespace(
        {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {
                "name": "unprovisioned",
                "labels": {"app.kubernetes.io/managed-by": "hks-functions"},
            },
        }
    )
    ref = FunctionRef(project="acme", namespace="unprovisioned", function="hello")
    with pytest.raises(BackendError) as refused:
        get_backend(acme).apply(_service(ref))
    assert 'User "system:serviceaccount:hks:hks" cannot create resource "serviceaccounts"' in (
        refused.value.message
    )
    assert fake_k8s.list("serviceaccounts", "unprovisioned") == []


def test_the_reconciler_deletes_the_namespace_of_a_project_that_is_gone(host, acme, fake_k8s, db):
    services_projects.project_provision_run(project=acme)
    other = ProjectFactory(slug="initech", backend=Backend.KNATIVE)
    services_projects.project_provision_run(project=other)
    Project.objects.filter(pk=acme.pk).delete()  # the row went without a teardown

    assert services_projects._orphans_collect(kp.platform_provisioner()) == ["deleted Namespace acme"]
    assert fake_k8s.get("namespaces", "", "acme") is None
    assert fake_k8s.get("namespaces", "", "initech") is not None


def test_a_vclusters_kubeconfig_gets_the_same_objects_without_the_platform_binding(
    knative_project, fake_k8s, db
):
    changes = services_projects.project_provision_run(project=knative_project)

    assert "created RoleBinding hks-platform" not in changes
    assert "created ResourceQuota hks-quota" in changes
    assert fake_k8s.list("rolebindings.rbac.authorization.k8s.io") == []
    assert fake_k8s.get("secrets", "acme", "hks-registry") is None  # no platform identity to copy it with


def test_without_cluster_credentials_provisioning_says_what_is_missing(acme, fake_k8s, settings):
    settings.HKS_KNATIVE_KUBECONFIG = ""
    with pytest.raises(BackendError) as missing:
        services_projects.project_provision_run(project=acme)
    assert "no kubeconfig and the platform has no cluster credentials" in missing.value.message


def _service(ref: FunctionRef) -> ServiceSpec:
    return ServiceSpec(
        ref=ref,
        revision=f"{ref.function}-00001",
        runtime="node",
        kind="http",
        artifact="img@sha256:" + "0" * 64,
        scale=Scale(0, 1, 10, 0),
        resources=Resources(100, 128),
    )


def test_a_provisioned_namespace_runs_functions_with_the_platforms_identity(host, acme, fake_k8s):
    services_projects.project_provision_run(project=acme)
    ref = FunctionRef(project="acme", namespace="acme", function="hello")
    get_backend(acme).apply(_service(ref))
    assert fake_k8s.get("services.serving.knative.dev", "acme", "hello") is not None


def test_the_build_limits_in_the_quota_are_the_build_jobs_own():
    spec = BuildSpec(
        ref=FunctionRef("acme", "acme", "hello"),
        revision="hello-00001",
        runtime="node",
        archive_path="/x",
        archive_url="http://portal/x",
        content_hash="a" * 64,
    )
    job = manifests.kaniko_job(spec, manifests.ClusterSettings())
    limits = job["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert (kp.parse_quantity(limits["cpu"]) * 1000, kp.parse_quantity(limits["memory"]) / 2**20) == (
        pm.BUILD_CPU_MILLICORES,
        pm.BUILD_MEMORY_MB,
    )


def test_the_admin_deletes_a_knative_project_through_its_teardown(
    acme, admin_client, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks() as callbacks:
        response = admin_client.post(f"/admin/functions/project/{acme.pk}/delete/", {"post": "yes"})

    assert response.status_code == 302
    acme.refresh_from_db()  # still there: the teardown task deletes the row once the namespace is gone
    assert acme.cluster_state == ClusterState.DELETING
    assert len(callbacks) == 1


def test_changing_a_knative_projects_quotas_in_the_admin_asks_for_provisioning(
    acme, admin_client, django_capture_on_commit_callbacks
):
    form = {
        "slug": "acme",
        "name": "Acme",
        "backend": "knative",
        "namespace": "",
        "max_functions": 12,
        "max_agent_functions": 2,
        "max_sessions": 5,
        "max_executions_per_minute": 120,
        "max_cpu_seconds_per_day": 0,
        "max_cpu_millicores": 500,
        "max_memory_mb": 256,
        "max_storage_mb": 5120,
        "max_instances": 20,
        "memberships-TOTAL_FORMS": 0,
        "memberships-INITIAL_FORMS": 0,
        "memberships-MIN_NUM_FORMS": 0,
        "memberships-MAX_NUM_FORMS": 1000,
    }
    with django_capture_on_commit_callbacks() as callbacks:
        response = admin_client.post(f"/admin/functions/project/{acme.pk}/change/", form)

    assert response.status_code == 302, response.content.decode()[:2000]
    acme.refresh_from_db()
    assert (acme.max_functions, acme.cluster_state) == (12, ClusterState.PENDING)
    assert len(callbacks) == 1  # the provisioning task, enqueued once the change is committed


def test_registering_a_vclusters_kubeconfig_asks_for_provisioning_inside_it(
    project, fake_k8s, tmp_path, django_capture_on_commit_callbacks
):
    from django.core.management import call_command

    path = tmp_path / "acme.kubeconfig"
    path.write_text(fake_k8s.kubeconfig)
    with django_capture_on_commit_callbacks() as callbacks:
        call_command("set_kubeconfig", "acme", str(path), stdout=open(os.devnull, "w"))  # noqa: SIM115

    project.refresh_from_db()
    assert (project.backend, project.has_kubeconfig, project.cluster_state) == (
        Backend.KNATIVE,
        True,
        ClusterState.PENDING,
    )
    assert len(callbacks) == 1


def test_rights_the_new_binding_grants_are_waited_for_not_taken_as_a_refusal(host, acme, fake_k8s):
    # A real API server's authorizer learns of a new RoleBinding a moment after it was created.
    fake_k8s.fail_next_request("POST", "/namespaces/acme/resourcequotas", 403, "forbidden: not yet")
    fake_k8s.fail_next_request("POST", "/namespaces/acme/resourcequotas", 403, "forbidden: not yet")

    changes = services_projects.project_provision_run(project=acme)

    assert "created ResourceQuota hks-quota" in changes


def test_a_refusal_without_a_new_binding_is_reported_at_once(host, acme, fake_k8s):
    services_projects.project_provision_run(project=acme)
    fake_k8s.fail_next_request(
        "GET", "/namespaces/acme/limitranges/hks-limits", 403, "limitranges is forbidden"
    )
    with pytest.raises(BackendError) as refused:
        services_projects.project_provision_run(project=acme)
    assert refused.value.permanent and "limitranges is forbidden" in refused.value.message


def test_outside_a_cluster_there_is_no_platform_identity_and_inside_it_is_the_pods(
    monkeypatch, tmp_path, settings
):
    settings.HKS_KNATIVE_KUBECONFIG = ""
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    assert kp.platform_kubeconfig() == ""

    (tmp_path / "token").write_text("pod-token\n")
    (tmp_path / "ca.crt").write_text("not checked here")
    monkeypatch.setattr(k8s_api, "SERVICE_ACCOUNT_DIR", tmp_path)
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.43.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")
    config = yaml.safe_load(kp.platform_kubeconfig())
    assert config["clusters"][0]["cluster"] == {
        "server": "https://10.43.0.1:443",
        "certificate-authority": str(tmp_path / "ca.crt"),
    }
    assert config["users"][0]["user"] == {"token": "pod-token"}
