"""The manifests of an agent session on Knative (pure builders, like ``k8s_manifests``).

A session is one Knative Service in the project's namespace, held at exactly one replica (min-scale =
max-scale = 1, so its kernel's state is never split or scaled away), ``cluster-local`` (no route outside
the cluster), under the agent RuntimeClass (``HKS_AGENT_RUNTIME_CLASS``, gVisor say) with the restricted
Pod Security context agent functions get, and a NetworkPolicy denying all egress and allowing ingress only
from Knative's data path and the platform's namespace (not from the project's own functions). The agent's
token reaches the container through a Secret. Everything carries ``hks.dev/session`` and
``hks.dev/project``; the deadline is an annotation the reaper reads.

The container runs ``hks_runtime/launchers/session_pod.py`` from the session image
(``deploy/session-image/Dockerfile``): the same agent and kernel as on the local runtime, listening on
Knative's ``$PORT``.
"""

from __future__ import annotations

import datetime as dt

from functions.backends.base import SessionSpec
from functions.backends.k8s_images import FUNCTION_UID
from functions.backends.k8s_manifests import (
    KNATIVE_RESPONSE_START_DEFAULT,
    LABEL_COMPONENT,
    LABEL_PROJECT,
    MANAGED_BY,
    ClusterSettings,
    restricted_security_context,
)

LABEL_SESSION = "hks.dev/session"
ANNOTATION_DEADLINE = "hks.dev/session-deadline"
SESSION_PORT = 8080
TOKEN_KEY = "agent-token"
TOKEN_ENV = "HKS_AGENT_TOKEN"


def session_name(session_id: str) -> str:
    """The Knative Service's name (the session id is [a-z0-9]{8,40}: 47 characters at most, under
    Knative's 57)."""
    return f"hks-s-{session_id}"


def session_labels(project: str, session_id: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/managed-by": MANAGED_BY,
        LABEL_PROJECT: project,
        LABEL_SESSION: session_id,
        LABEL_COMPONENT: "session",
    }


def session_selector(session_id: str, project: str = "") -> str:
    selector = f"{LABEL_SESSION}={session_id}"
    return f"{LABEL_PROJECT}={project},{selector}" if project else selector


def deadline_text(deadline: dt.datetime) -> str:
    return deadline.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_deadline(text: str) -> dt.datetime | None:
    try:
        return dt.datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC)
    except (TypeError, ValueError):
        return None


def _meta(name: str, spec: SessionSpec, **extra) -> dict:
    labels = {**spec.labels, **session_labels(spec.project, spec.session_id)}
    return {"name": name, "namespace": spec.namespace, "labels": labels, **extra}


def token_secret_name(session_id: str) -> str:
    return f"{session_name(session_id)}-token"


def token_secret(spec: SessionSpec) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": _meta(token_secret_name(spec.session_id), spec),
        "stringData": {TOKEN_KEY: spec.token},
    }


def network_policy_name(session_id: str) -> str:
    return f"{session_name(session_id)}-net"


def session_network_policy(spec: SessionSpec, settings: ClusterSettings) -> dict:
    """No egress at all (not even DNS); ingress from Knative's data path (the activator, the internal
    gateway) and from the platform's namespace, where the portal runs. Kubelet probes are always allowed."""
    sources = {*settings.ingress_namespaces, settings.platform_namespace}
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": _meta(network_policy_name(spec.session_id), spec),
        "spec": {
            "podSelector": {"matchLabels": {"serving.knative.dev/service": session_name(spec.session_id)}},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [
                {
                    "from": [
                        {
                            "namespaceSelector": {
                                "matchExpressions": [
                                    {
                                        "key": "kubernetes.io/metadata.name",
                                        "operator": "In",
                                        "values": sorted(sources),
                                    }
                                ]
                            }
                        }
                    ]
                }
            ],
            "egress": [],
        },
    }


def session_service(spec: SessionSpec, settings: ClusterSettings, deadline: dt.datetime) -> dict:
    """The session's Knative Service: one replica, cluster-local, restricted, on the session image."""
    name = session_name(spec.session_id)
    cpu, memory = f"{spec.resources.cpu_millicores}m", f"{spec.resources.memory_mb}Mi"
    labels = {**_meta(name, spec)["labels"], "networking.knative.dev/visibility": "cluster-local"}
    # A request (a long run_code stream) may last as long as the cluster allows a revision's requests.
    timeout = settings.max_timeout_seconds
    pod_spec = {
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "containerConcurrency": 0,  # the agent serves streams, files and commands side by side
        "timeoutSeconds": timeout,
        "containers": [
            {
                "name": "user-container",
                "image": settings.session_image,
                "ports": [{"containerPort": SESSION_PORT, "name": "http1"}],
                "env": [
                    {
                        "name": TOKEN_ENV,
                        "valueFrom": {
                            "secretKeyRef": {"name": token_secret_name(spec.session_id), "key": TOKEN_KEY}
                        },
                    }
                ],
                "resources": {
                    "requests": {"cpu": cpu, "memory": memory},
                    "limits": {"cpu": cpu, "memory": memory},
                },
                "securityContext": restricted_security_context(run_as_user=FUNCTION_UID),
                # No probe of our own: every agent route needs the token, so Knative's default TCP
                # readiness probe on the port is the one that fits.
            }
        ],
    }
    if timeout > KNATIVE_RESPONSE_START_DEFAULT:
        pod_spec["responseStartTimeoutSeconds"] = timeout
    if settings.agent_runtime_class:
        pod_spec["runtimeClassName"] = settings.agent_runtime_class
    if settings.node_arch:
        pod_spec["nodeSelector"] = {"kubernetes.io/arch": settings.node_arch}
    if settings.registry_secret:
        pod_spec["imagePullSecrets"] = [{"name": settings.registry_secret}]
    return {
        "apiVersion": "serving.knative.dev/v1",
        "kind": "Service",
        "metadata": {
            **_meta(name, spec),
            "labels": labels,
            "annotations": {ANNOTATION_DEADLINE: deadline_text(deadline)},
        },
        "spec": {
            "template": {
                "metadata": {
                    "labels": session_labels(spec.project, spec.session_id),
                    "annotations": {
                        "autoscaling.knative.dev/min-scale": "1",
                        "autoscaling.knative.dev/max-scale": "1",
                        "autoscaling.knative.dev/initial-scale": "1",
                    },
                },
                "spec": pod_spec,
            },
            "traffic": [{"latestRevision": True, "percent": 100}],
        },
    }
