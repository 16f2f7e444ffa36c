"""Pure functions building the Kubernetes objects of the Knative backend, as plain dicts.

No API calls and no Django here: ``knative.py`` reads settings into ``ClusterSettings`` and talks to the
cluster. Every manifest must validate against the real schemas (Kubernetes' own, strict, and Knative's
CRDs) - ``tests/backends/test_k8s_manifests.py`` checks them.

Everything a function owns carries the label ``hks.dev/function=<name>``, so that deleting a function is
one label selector per kind.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from .base import BuildSpec, FunctionRef, ScheduleSpec, ServiceSpec

MANAGED_BY = "hks-functions"
LABEL_FUNCTION = "hks.dev/function"
LABEL_PROJECT = "hks.dev/project"
LABEL_REVISION = "hks.dev/revision"
LABEL_COMPONENT = "hks.dev/component"
LABEL_SCHEDULE = "hks.dev/schedule"
ANNOTATION_REVISION = "hks.dev/revision"
FUNCTION_PORT = 8080
KNATIVE_RESERVED_ENV = {"PORT", "K_SERVICE", "K_CONFIGURATION", "K_REVISION"}
# Knative names revisions "{service}-{generation:05d}" and revision names are DNS labels (63).
MAX_SERVICE_NAME = 57
# Namespaces Knative's data path comes from (activator, and the usual networking layers); agent functions
# accept traffic only from them.
KNATIVE_INGRESS_NAMESPACES = ["knative-serving", "kourier-system", "istio-system", "contour-external"]
# Functions run as this non-root user; the Dockerfiles below create nothing that needs another.
FUNCTION_UID = 1001
CURL_UID = 100  # curlimages/curl's own user

DOCKERFILES = {
    "node": f"""\
FROM node:24-slim
WORKDIR /workspace/function
COPY . .
RUN npm install --global faas-js-runtime@4.0.1 \\
 && if [ -f package.json ]; then npm install --omit=dev --no-audit --no-fund; fi
USER {FUNCTION_UID}
ENV FUNC_PORT={FUNCTION_PORT}
CMD ["faas-js-runtime", "./index.js"]
""",
    "python": f"""\
FROM python:3.12-slim
WORKDIR /workspace/function
COPY . .
RUN pip install --no-cache-dir func-python==0.8.1 \\
 && if [ -f requirements.txt ]; then pip install --no-cache-dir -r requirements.txt; fi
USER {FUNCTION_UID}
ENV LISTEN_ADDRESS=0.0.0.0:{FUNCTION_PORT}
CMD ["python", "-c", "from function.func import new; from func_python.http import serve; serve(new)"]
""",
}


@dataclass(frozen=True)
class ClusterSettings:
    """The knobs of the manifests (from ``HKS_*`` settings), so the builders stay pure."""

    kaniko_image: str = "ghcr.io/osscontainertools/kaniko:latest"
    curl_image: str = "curlimages/curl:8.17.0"
    registry: str = "registry.local/hks"
    registry_secret: str = ""
    agent_runtime_class: str = ""
    build_timeout_seconds: int = 900
    build_ttl_seconds: int = 3600
    schedule_timeout_seconds: int = 300
    schedule_history: int = 3


def k8s_name(*parts: str, max_length: int = 63) -> str:
    """A DNS-1123 label from ``parts``; shortened with a hash suffix when too long, so it stays unique."""
    name = re.sub(r"[^a-z0-9-]+", "-", "-".join(p for p in parts if p).lower()).strip("-")
    if len(name) <= max_length:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    return f"{name[: max_length - 9].rstrip('-')}-{digest}"


def function_labels(ref: FunctionRef, **extra: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/managed-by": MANAGED_BY,
        LABEL_PROJECT: ref.project,
        LABEL_FUNCTION: ref.function,
        **extra,
    }


def _meta(name: str, ref: FunctionRef, labels: dict[str, str], **extra) -> dict:
    return {"name": name, "namespace": ref.namespace, "labels": labels, **extra}


def restricted_security_context(*, run_as_user: int | None = None) -> dict:
    """The Pod Security Standards 'restricted' profile for one container."""
    context = {
        "runAsNonRoot": True,
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    if run_as_user is not None:
        context["runAsUser"] = run_as_user
    return context


# Namespace and identity -----------------------------------------------------------------------------


def namespace(name: str) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": name, "labels": {"app.kubernetes.io/managed-by": MANAGED_BY}},
    }


def service_account_name(ref: FunctionRef) -> str:
    return k8s_name("hks-fn", ref.function)


def service_account(ref: FunctionRef) -> dict:
    """A dedicated identity per function with no API token mounted: function code never talks to the API."""
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": _meta(service_account_name(ref), ref, function_labels(ref)),
        "automountServiceAccountToken": False,
    }


def network_policy(ref: FunctionRef) -> dict:
    """Default deny for agent code: no egress at all, ingress only from Knative's data path."""
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": _meta(k8s_name("hks-deny", ref.function), ref, function_labels(ref)),
        "spec": {
            "podSelector": {"matchLabels": {"serving.knative.dev/service": ref.function}},
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
                                        "values": KNATIVE_INGRESS_NAMESPACES,
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


# Knative Service ------------------------------------------------------------------------------------


def is_restricted(spec: ServiceSpec) -> bool:
    return spec.sandbox_profile == "restricted"


def knative_service(spec: ServiceSpec, settings: ClusterSettings) -> dict:
    """The ``serving.knative.dev/v1`` Service running ``spec.artifact`` (an image reference)."""
    labels = function_labels(spec.ref, **spec.labels)
    if spec.visibility == "cluster-local" or is_restricted(spec):
        labels["networking.knative.dev/visibility"] = "cluster-local"
    scale = spec.scale
    template_annotations = {
        "autoscaling.knative.dev/min-scale": str(scale.min),
        "autoscaling.knative.dev/max-scale": str(scale.max),
        "autoscaling.knative.dev/target": str(scale.target_concurrency),
        ANNOTATION_REVISION: spec.revision,
    }
    if spec.secret_env:  # new secret values roll out as a new Knative revision
        template_annotations["hks.dev/secret-env-version"] = spec.secret_env_version
    pod_spec = {
        "serviceAccountName": service_account_name(spec.ref),
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "containerConcurrency": scale.container_concurrency,
        "timeoutSeconds": spec.timeout_seconds,
        "containers": [_function_container(spec)],
    }
    if is_restricted(spec) and settings.agent_runtime_class:
        pod_spec["runtimeClassName"] = settings.agent_runtime_class
    if settings.registry_secret:
        pod_spec["imagePullSecrets"] = [{"name": settings.registry_secret}]
    return {
        "apiVersion": "serving.knative.dev/v1",
        "kind": "Service",
        "metadata": _meta(
            spec.ref.function, spec.ref, labels, annotations={ANNOTATION_REVISION: spec.revision}
        ),
        "spec": {
            "template": {
                "metadata": {
                    "labels": function_labels(spec.ref, **{LABEL_REVISION: k8s_name(spec.revision)}),
                    "annotations": template_annotations,
                },
                "spec": pod_spec,
            },
            "traffic": [{"latestRevision": True, "percent": 100}],
        },
    }


def _function_container(spec: ServiceSpec) -> dict:
    cpu, memory = f"{spec.resources.cpu_millicores}m", f"{spec.resources.memory_mb}Mi"
    # Knative sets these itself and refuses a Service that sets them; the platform's values win, as locally.
    env = [{"name": k, "value": v} for k, v in sorted(spec.env.items()) if k not in KNATIVE_RESERVED_ENV]
    env += [
        {"name": k, "valueFrom": {"secretKeyRef": {"name": env_secret_name(spec.ref), "key": k}}}
        for k in sorted(spec.secret_env)
        if k not in KNATIVE_RESERVED_ENV
    ]
    return {
        "name": "user-container",
        "image": spec.artifact,
        "ports": [{"containerPort": FUNCTION_PORT, "name": "http1"}],
        "env": env,
        "resources": {"requests": {"cpu": cpu, "memory": memory}, "limits": {"cpu": cpu, "memory": memory}},
        "securityContext": restricted_security_context(run_as_user=FUNCTION_UID),
        "readinessProbe": {"httpGet": {"path": "/health/readiness"}},
        "livenessProbe": {"httpGet": {"path": "/health/liveness"}},
    }


def env_secret_name(ref: FunctionRef) -> str:
    return k8s_name(ref.function, "env")


def env_secret(spec: ServiceSpec) -> dict:
    """The function's secret env values, which its container reads with ``secretKeyRef``."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": _meta(env_secret_name(spec.ref), spec.ref, function_labels(spec.ref)),
        "stringData": dict(spec.secret_env),
    }


# Builds ---------------------------------------------------------------------------------------------


def build_name(spec: BuildSpec) -> str:
    # The content hash makes a rebuild of changed source a new Job, and a retried task the same one.
    return k8s_name("hks-build", spec.revision, spec.content_hash[:8])


def image_ref(spec: BuildSpec, settings: ClusterSettings) -> str:
    tag = k8s_name(spec.revision, spec.content_hash[:12], max_length=128)
    return f"{settings.registry.rstrip('/')}/{spec.ref.project}/{spec.ref.function}:{tag}"


def build_labels(spec: BuildSpec) -> dict[str, str]:
    return function_labels(spec.ref, **{LABEL_REVISION: k8s_name(spec.revision), LABEL_COMPONENT: "build"})


def build_config_map(spec: BuildSpec) -> dict:
    """The Dockerfile for the function's runtime (Knative Functions carry none of their own)."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _meta(build_name(spec), spec.ref, build_labels(spec)),
        "data": {"Dockerfile": DOCKERFILES[spec.runtime]},
    }


def build_secret(spec: BuildSpec) -> dict:
    """The source URL holds a short-lived, few-use token: in a Secret, not the Job spec, out of sight."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": _meta(build_name(spec), spec.ref, build_labels(spec)),
        "stringData": {"archive-url": spec.archive_url},
    }


def kaniko_job(spec: BuildSpec, settings: ClusterSettings) -> dict:
    """A Job that fetches the source archive (init container) and builds and pushes the image with Kaniko."""
    name = build_name(spec)
    volumes = [
        {"name": "workspace", "emptyDir": {"sizeLimit": "1Gi"}},
        {"name": "dockerfile", "configMap": {"name": name}},
    ]
    mounts = [
        {"name": "workspace", "mountPath": "/workspace"},
        {"name": "dockerfile", "mountPath": "/build", "readOnly": True},
    ]
    if settings.registry_secret:
        volumes.append(
            {
                "name": "registry",
                "secret": {
                    "secretName": settings.registry_secret,
                    "items": [{"key": ".dockerconfigjson", "path": "config.json"}],
                },
            }
        )
        mounts.append({"name": "registry", "mountPath": "/kaniko/.docker", "readOnly": True})
    fetch = {
        "name": "fetch-source",
        "image": settings.curl_image,
        "args": [
            "--fail",
            "--silent",
            "--show-error",
            "--location",
            "--retry",
            "3",
            "--max-time",
            "120",
            "--output",
            "/workspace/context.tar.gz",
            "$(ARCHIVE_URL)",
        ],
        "env": [{"name": "ARCHIVE_URL", "valueFrom": {"secretKeyRef": {"name": name, "key": "archive-url"}}}],
        "volumeMounts": [{"name": "workspace", "mountPath": "/workspace"}],
        "securityContext": restricted_security_context(run_as_user=CURL_UID),
    }
    kaniko = {
        "name": "kaniko",
        "image": settings.kaniko_image,
        "args": [
            "--context=tar:///workspace/context.tar.gz",
            "--dockerfile=/build/Dockerfile",
            f"--destination={image_ref(spec, settings)}",
            "--single-snapshot",
        ],
        "volumeMounts": mounts,
        "resources": {"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"cpu": "2", "memory": "4Gi"}},
        # Kaniko unpacks images as root inside its container; it needs no privileges beyond that.
        "securityContext": {"allowPrivilegeEscalation": False, "seccompProfile": {"type": "RuntimeDefault"}},
    }
    labels = build_labels(spec)
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": _meta(name, spec.ref, labels),
        "spec": {
            "backoffLimit": 0,
            "activeDeadlineSeconds": settings.build_timeout_seconds,
            "ttlSecondsAfterFinished": settings.build_ttl_seconds,
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "restartPolicy": "Never",
                    "automountServiceAccountToken": False,
                    "enableServiceLinks": False,
                    "initContainers": [fetch],
                    "containers": [kaniko],
                    "volumes": volumes,
                },
            },
        },
    }


# Schedules ------------------------------------------------------------------------------------------


def cron_job_name(ref: FunctionRef, schedule: str) -> str:
    # CronJob names are capped at 52 characters: the Jobs they create append 11.
    return k8s_name("hks-cron", ref.function, schedule, max_length=52)


def cron_job(spec: ScheduleSpec, settings: ClusterSettings) -> dict:
    """A CronJob that sends the schedule's HTTP request to the function with curl."""
    labels = function_labels(spec.ref, **{LABEL_SCHEDULE: spec.name, LABEL_COMPONENT: "schedule"})
    url = spec.target_url
    if not url.startswith(("http://", "https://")):
        url = f"http://{spec.ref.function}.{spec.ref.namespace}.svc.cluster.local{spec.path}"
    args = [
        "--silent",
        "--show-error",
        "--fail",
        "--max-time",
        str(settings.schedule_timeout_seconds),
        "--request",
        spec.method.upper(),
    ]
    for key, value in sorted(spec.headers.items()):
        args += ["--header", f"{key}: {value}"]
    args += ["--header", f"X-HKS-Schedule: {spec.name}"]
    if spec.body:
        args += ["--data-binary", spec.body]
    args.append(url)
    cron_spec = {
        "schedule": spec.cron,
        "timeZone": spec.timezone,
        "concurrencyPolicy": spec.concurrency_policy,
        "suspend": not spec.enabled,
        "successfulJobsHistoryLimit": settings.schedule_history,
        "failedJobsHistoryLimit": settings.schedule_history,
        "jobTemplate": {
            "metadata": {"labels": labels},
            "spec": {
                "backoffLimit": 0,
                "activeDeadlineSeconds": settings.schedule_timeout_seconds + 30,
                "ttlSecondsAfterFinished": 24 * 3600,
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "restartPolicy": "Never",
                        "automountServiceAccountToken": False,
                        "enableServiceLinks": False,
                        "containers": [
                            {
                                "name": "trigger",
                                "image": settings.curl_image,
                                "args": args,
                                "resources": {
                                    "requests": {"cpu": "10m", "memory": "16Mi"},
                                    "limits": {"cpu": "100m", "memory": "64Mi"},
                                },
                                "securityContext": restricted_security_context(run_as_user=CURL_UID),
                            }
                        ],
                    },
                },
            },
        },
    }
    if spec.starting_deadline_seconds is not None:
        cron_spec["startingDeadlineSeconds"] = spec.starting_deadline_seconds
    return {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": _meta(cron_job_name(spec.ref, spec.name), spec.ref, labels),
        "spec": cron_spec,
    }
