"""Pure functions building a project's place on the cluster, as plain dicts: its namespace, the platform's
rights in it, its quota and container limits, its default NetworkPolicies and the registry Secret.

No API calls and no Django (``knative_provision.py`` applies them). Everything here carries the labels
``hks.dev/project=<slug>`` and ``hks.dev/component=project``, so that what provisioning owns is one label
selector away, apart from what the functions own (``hks.dev/function``).

The quota. A project allows ``max_functions`` functions and ``max_agent_functions`` agent functions, each
up to ``max_cpu_millicores`` and ``max_memory_mb``. Its namespace's ResourceQuota leaves room for every one
of them running ``instances`` instances at that size (each with Knative's queue-proxy beside it, at the
LimitRange's default), plus one build at the build container's limits; it counts Knative Services too. The
LimitRange gives containers that set nothing (queue-proxy, the build's fetch container) a default, and
caps one container at the larger of a function's maximum and a build's limits.
"""

from __future__ import annotations

from dataclasses import dataclass

from functions.backends.k8s_manifests import (
    KNATIVE_INGRESS_NAMESPACES,
    LABEL_COMPONENT,
    LABEL_PROJECT,
    MANAGED_BY,
    dns_egress_rule,
)

COMPONENT = "project"
PLATFORM_BINDING = "hks-platform"
PROJECT_CLUSTER_ROLE = "hks-project"  # deploy/base/rbac.yaml
QUOTA_NAME = "hks-quota"
LIMITS_NAME = "hks-limits"
# The build container's limits (k8s_manifests.kaniko_job; a test keeps the two equal).
BUILD_CPU_MILLICORES = 2000
BUILD_MEMORY_MB = 4096
# What a container that says nothing gets (queue-proxy sets requests only).
DEFAULT_CPU_MILLICORES, DEFAULT_MEMORY_MB = 100, 128
DEFAULT_REQUEST_CPU_MILLICORES, DEFAULT_REQUEST_MEMORY_MB = 25, 64
QUEUE_PROXY_METRICS_PORT = 9091  # Knative's queue-proxy: http-usermetric


@dataclass(frozen=True)
class ProjectQuota:
    functions: int
    agent_functions: int
    cpu_millicores: int  # per function
    memory_mb: int  # per function


@dataclass(frozen=True)
class ProvisionSettings:
    """The knobs (from ``HKS_*`` settings), so the builders stay pure."""

    platform_namespace: str = "hks"
    platform_service_account: str = "hks"
    prometheus_namespace: str = "monitoring"
    instances: int = 3
    registry_secret: str = ""
    ingress_namespaces: tuple[str, ...] = tuple(KNATIVE_INGRESS_NAMESPACES)
    bind_platform: bool = True  # False in a vCluster: the project's kubeconfig is the platform's identity


def labels(slug: str) -> dict[str, str]:
    return {"app.kubernetes.io/managed-by": MANAGED_BY, LABEL_PROJECT: slug, LABEL_COMPONENT: COMPONENT}


def selector(slug: str) -> str:
    return ",".join(f"{key}={value}" for key, value in labels(slug).items())


def _meta(name: str, namespace: str, slug: str) -> dict:
    return {"name": name, "namespace": namespace, "labels": labels(slug)}


def namespace(name: str, slug: str) -> dict:
    """Build pods run Kaniko as root, so the namespace enforces the baseline Pod Security profile and
    warns about (and audits) what falls short of restricted; functions meet restricted."""
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {
            "name": name,
            "labels": {
                **labels(slug),
                "pod-security.kubernetes.io/enforce": "baseline",
                "pod-security.kubernetes.io/warn": "restricted",
                "pod-security.kubernetes.io/audit": "restricted",
            },
        },
    }


def platform_role_binding(ns: str, slug: str, settings: ProvisionSettings) -> dict:
    """The platform's rights in this namespace and nowhere else: the ClusterRole hks-project, bound here."""
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": _meta(PLATFORM_BINDING, ns, slug),
        "roleRef": {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "ClusterRole",
            "name": PROJECT_CLUSTER_ROLE,
        },
        "subjects": [
            {
                "kind": "ServiceAccount",
                "name": settings.platform_service_account,
                "namespace": settings.platform_namespace,
            }
        ],
    }


def quota_totals(quota: ProjectQuota, settings: ProvisionSettings) -> tuple[int, int]:
    """(millicores, MiB) the namespace may hold at once; see the module docstring."""
    pods = (quota.functions + quota.agent_functions) * settings.instances
    cpu = pods * (quota.cpu_millicores + DEFAULT_CPU_MILLICORES) + BUILD_CPU_MILLICORES
    memory = pods * (quota.memory_mb + DEFAULT_MEMORY_MB) + BUILD_MEMORY_MB
    return cpu, memory


def resource_quota(ns: str, slug: str, quota: ProjectQuota, settings: ProvisionSettings) -> dict:
    cpu, memory = quota_totals(quota, settings)
    return {
        "apiVersion": "v1",
        "kind": "ResourceQuota",
        "metadata": _meta(QUOTA_NAME, ns, slug),
        "spec": {
            "hard": {
                "requests.cpu": f"{cpu}m",
                "limits.cpu": f"{cpu}m",
                "requests.memory": f"{memory}Mi",
                "limits.memory": f"{memory}Mi",
                "count/services.serving.knative.dev": str(quota.functions + quota.agent_functions),
            }
        },
    }


def limit_range(ns: str, slug: str, quota: ProjectQuota) -> dict:
    largest_cpu = max(quota.cpu_millicores, BUILD_CPU_MILLICORES)
    largest_memory = max(quota.memory_mb, BUILD_MEMORY_MB)
    return {
        "apiVersion": "v1",
        "kind": "LimitRange",
        "metadata": _meta(LIMITS_NAME, ns, slug),
        "spec": {
            "limits": [
                {
                    "type": "Container",
                    "default": {"cpu": f"{DEFAULT_CPU_MILLICORES}m", "memory": f"{DEFAULT_MEMORY_MB}Mi"},
                    "defaultRequest": {
                        "cpu": f"{DEFAULT_REQUEST_CPU_MILLICORES}m",
                        "memory": f"{DEFAULT_REQUEST_MEMORY_MB}Mi",
                    },
                    "max": {"cpu": f"{largest_cpu}m", "memory": f"{largest_memory}Mi"},
                }
            ]
        },
    }


# NetworkPolicies ------------------------------------------------------------------------------------
# A namespace's defaults, beside the policies the Knative backend applies to every function and to the
# builds (k8s_manifests.function_network_policy, build_network_policy): a pod that no other policy selects
# can neither receive nor send anything.


def _namespaces(names) -> dict:
    return {
        "namespaceSelector": {
            "matchExpressions": [
                {"key": "kubernetes.io/metadata.name", "operator": "In", "values": sorted(names)}
            ]
        }
    }


def _policy(name: str, ns: str, slug: str, spec: dict) -> dict:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": _meta(name, ns, slug),
        "spec": spec,
    }


def network_policies(ns: str, slug: str, settings: ProvisionSettings) -> list[dict]:
    """The namespace's defaults: deny everything; let Prometheus scrape queue-proxy's metrics; let the
    schedules' trigger pods reach the functions through Knative's data path."""
    dns = dns_egress_rule()  # the isolation work's own rule (k8s_manifests)
    return [
        _policy(
            "hks-default-deny",
            ns,
            slug,
            {"podSelector": {}, "policyTypes": ["Ingress", "Egress"], "ingress": [], "egress": []},
        ),
        _policy(
            "hks-allow-metrics",
            ns,
            slug,
            {
                "podSelector": {
                    "matchExpressions": [{"key": "serving.knative.dev/revision", "operator": "Exists"}]
                },
                "policyTypes": ["Ingress"],
                "ingress": [
                    {
                        "from": [_namespaces({settings.prometheus_namespace, settings.platform_namespace})],
                        "ports": [{"protocol": "TCP", "port": QUEUE_PROXY_METRICS_PORT}],
                    }
                ],
            },
        ),
        _policy(
            "hks-schedules",
            ns,
            slug,
            {
                "podSelector": {"matchLabels": {LABEL_COMPONENT: "schedule"}},
                "policyTypes": ["Ingress", "Egress"],
                "ingress": [],
                "egress": [dns, {"to": [_namespaces(settings.ingress_namespaces), {"podSelector": {}}]}],
            },
        ),
    ]


def registry_secret(ns: str, slug: str, name: str, source: dict) -> dict:
    """A copy of the platform's registry push Secret (``source``: its ``type`` and base64 ``data``)."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": _meta(name, ns, slug),
        "type": source.get("type") or "kubernetes.io/dockerconfigjson",
        "data": dict(source.get("data") or {}),
    }


def project_objects(
    ns: str, slug: str, quota: ProjectQuota, settings: ProvisionSettings, registry_source: dict | None
) -> list[dict]:
    """Everything provisioning keeps in place, in the order it is applied (the namespace first; then the
    RoleBinding that gives the platform its rights there)."""
    objects = [namespace(ns, slug)]
    if settings.bind_platform:
        objects.append(platform_role_binding(ns, slug, settings))
    objects += [resource_quota(ns, slug, quota, settings), limit_range(ns, slug, quota)]
    objects += network_policies(ns, slug, settings)
    if settings.registry_secret and registry_source is not None:
        objects.append(registry_secret(ns, slug, settings.registry_secret, registry_source))
    return objects
