"""Pure functions building the Kubernetes objects of the Knative backend, as plain dicts.

No API calls and no Django here: ``knative.py`` reads settings into ``ClusterSettings`` and talks to the
cluster. Every manifest must validate against the real schemas (Kubernetes' own, strict, and Knative's
CRDs) - ``tests/backends/test_k8s_manifests.py`` checks them. The image recipe (Dockerfiles) is in
``k8s_images``; the NetworkPolicies are built here (``function_network_policy``, ``build_network_policy``)
and may be reused by project provisioning: they take only their arguments.

Everything a function owns carries the label ``hks.dev/function=<name>``, so that deleting a function is
one label selector per kind.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from functions.backends.base import BuildSpec, FunctionRef, ServiceSpec
from functions.backends.k8s_images import FUNCTION_PORT, FUNCTION_UID, dockerfile  # noqa: F401 (re-exported)

MANAGED_BY = "hks-functions"
LABEL_FUNCTION = "hks.dev/function"
LABEL_PROJECT = "hks.dev/project"
LABEL_REVISION = "hks.dev/revision"
LABEL_COMPONENT = "hks.dev/component"
LABEL_SCHEDULE = "hks.dev/schedule"
ANNOTATION_REVISION = "hks.dev/revision"
KNATIVE_RESERVED_ENV = {"PORT", "K_SERVICE", "K_CONFIGURATION", "K_REVISION"}
# Knative names revisions "{service}-{generation:05d}" and revision names are DNS labels (63).
MAX_SERVICE_NAME = 57
# Namespaces Knative's data path comes from: the activator (knative-serving), Kourier's gateways
# (kourier-system), Istio, and Contour's external and internal (cluster-local) Envoys. A setting.
KNATIVE_INGRESS_NAMESPACES = (
    "knative-serving",
    "kourier-system",
    "istio-system",
    "contour-external",
    "contour-internal",
)
# What "the cluster's private ranges" means for egress: RFC 1918, CGNAT, loopback, link-local (cloud
# metadata at 169.254.169.254), "this network", multicast and reserved; IPv6 unique-local, link-local,
# loopback and IPv4-mapped. Pod and Service CIDRs of every usual distribution fall in them.
PRIVATE_IPV4 = (
    "0.0.0.0/8",
    "10.0.0.0/8",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "224.0.0.0/4",
    "240.0.0.0/4",
)
PRIVATE_IPV6 = ("::1/128", "::ffff:0:0/96", "fc00::/7", "fe80::/10")
CLUSTER_DNS = {"namespace": "kube-system", "labels": {"k8s-app": "kube-dns"}}  # CoreDNS, K3s included
CURL_UID = 100  # curlimages/curl's own user
# Where the build pod mounts things: all below /kaniko, which Kaniko leaves out of every image it builds.
BUILD_SOURCE_DIR = "/kaniko/hks-src"
BUILD_DOCKERFILE_DIR = "/kaniko/hks-dockerfile"
BUILD_CERTS_DIR = "/kaniko/hks-certs"
PORTAL_CA_DIR = "/kaniko/hks-portal-ca"
TERMINATION_LOG = "/dev/termination-log"


@dataclass(frozen=True)
class ClusterSettings:
    """The knobs of the manifests (from ``HKS_*`` settings), so the builders stay pure."""

    kaniko_image: str = "ghcr.io/osscontainertools/kaniko:v1.28.3"
    curl_image: str = "curlimages/curl:8.17.0"
    registry: str = "registry.local/hks"
    registry_secret: str = ""
    # Plain-HTTP registry (a K3s in-cluster one): Kaniko pushes with --insecure-registry.
    registry_insecure: bool = False
    # A ConfigMap (key ca.crt) with the CA of a registry whose certificate is not publicly trusted.
    registry_ca_configmap: str = ""
    registry_mirrors: tuple[str, ...] = ()
    # A ConfigMap (key ca.crt) with the CA of the portal's certificate, for the source fetch (the curl
    # image trusts only the Mozilla bundle).
    portal_ca_configmap: str = ""
    build_retries: int = 3  # Kaniko's --push-retry and --image-download-retry (its default is 0)
    # --cache with --cache-repo=<registry>/<project>/cache/kaniko (kaniko_cache_repo)
    build_cache: bool = False
    kaniko_extra_args: tuple[str, ...] = ()
    node_arch: str = ""  # "amd64", "arm64": builds and functions on nodes of that architecture only
    agent_runtime_class: str = ""
    # Agent sessions (k8s_sessions.py): their image, the namespace the portal runs in (the one outside
    # Knative's data path allowed to reach them) and Knative's max-revision-timeout-seconds.
    session_image: str = ""
    platform_namespace: str = "hks"
    max_timeout_seconds: int = 600
    build_timeout_seconds: int = 900
    build_ttl_seconds: int = 3600
    schedule_timeout_seconds: int = 300
    schedule_history: int = 3
    ingress_namespaces: tuple[str, ...] = KNATIVE_INGRESS_NAMESPACES
    # What operators add to a standard function's egress: CIDRs (a database on the LAN) and namespaces
    # (kourier-system, for calls through Knative's own gateway).
    function_egress_cidrs: tuple[str, ...] = ()
    function_egress_namespaces: tuple[str, ...] = ()
    # Builds reach the registry, package mirrors and the portal (the source archive): their CIDRs, and
    # the public internet (npm, PyPI, Docker Hub) unless the operator turns it off for mirrors only.
    build_egress_cidrs: tuple[str, ...] = ()
    build_egress_internet: bool = True


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


def object_meta(name: str, ref: FunctionRef, labels: dict[str, str], **extra) -> dict:
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
    """A project namespace. Pod Security: ``baseline`` is enforced (Kaniko unpacks images as root, which
    ``restricted`` refuses); function pods meet ``restricted``, which is what the namespace warns about."""
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {
            "name": name,
            "labels": {
                "app.kubernetes.io/managed-by": MANAGED_BY,
                "pod-security.kubernetes.io/enforce": "baseline",
                "pod-security.kubernetes.io/warn": "restricted",
            },
        },
    }


def service_account_name(ref: FunctionRef) -> str:
    return k8s_name("hks-fn", ref.function)


def service_account(ref: FunctionRef) -> dict:
    """A dedicated identity per function with no API token mounted: function code never talks to the API."""
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": object_meta(service_account_name(ref), ref, function_labels(ref)),
        "automountServiceAccountToken": False,
    }


# NetworkPolicies ------------------------------------------------------------------------------------


def _namespaces_peer(names) -> dict:
    return {
        "namespaceSelector": {
            "matchExpressions": [
                {"key": "kubernetes.io/metadata.name", "operator": "In", "values": sorted(names)}
            ]
        }
    }


def dns_egress_rule() -> dict:
    """Name lookups through the cluster's DNS, and nothing else of kube-system."""
    return {
        "to": [
            {
                "namespaceSelector": {
                    "matchLabels": {"kubernetes.io/metadata.name": CLUSTER_DNS["namespace"]}
                },
                "podSelector": {"matchLabels": dict(CLUSTER_DNS["labels"])},
            }
        ],
        "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}],
    }


def internet_egress_rule() -> dict:
    """Every address outside the private ranges (``PRIVATE_IPV4``/``PRIVATE_IPV6``)."""
    return {
        "to": [
            {"ipBlock": {"cidr": "0.0.0.0/0", "except": list(PRIVATE_IPV4)}},
            {"ipBlock": {"cidr": "::/0", "except": list(PRIVATE_IPV6)}},
        ]
    }


def cidr_egress_rule(cidrs) -> dict:
    return {"to": [{"ipBlock": {"cidr": cidr}} for cidr in cidrs]}


def ingress_rule(namespaces) -> dict:
    """Traffic from Knative's data path (``namespaces``) and from the project's own namespace: on Knative
    ``cluster-local`` means the project's namespace. Kubelet probes are always allowed."""
    return {"from": [_namespaces_peer(namespaces), {"podSelector": {}}]}


def network_policy_name(ref: FunctionRef) -> str:
    return k8s_name("hks-net", ref.function)


def function_network_policy(
    ref: FunctionRef,
    *,
    restricted: bool,
    ingress_namespaces=KNATIVE_INGRESS_NAMESPACES,
    egress_cidrs=(),
    egress_namespaces=(),
) -> dict:
    """The policy of one function's pods. Ingress: Knative's data path and the project's namespace.
    Egress: none at all for agent code (``restricted``); otherwise DNS, the internet outside the private
    ranges, the project's own pods, and what the operator adds (``egress_cidrs``, ``egress_namespaces``) -
    never the cluster's private ranges or other namespaces by default."""
    egress: list[dict] = []
    if not restricted:
        egress = [dns_egress_rule(), internet_egress_rule(), {"to": [{"podSelector": {}}]}]
        if egress_cidrs:
            egress.append(cidr_egress_rule(egress_cidrs))
        if egress_namespaces:
            egress.append({"to": [_namespaces_peer(egress_namespaces)]})
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": object_meta(network_policy_name(ref), ref, function_labels(ref)),
        "spec": {
            "podSelector": {"matchLabels": {"serving.knative.dev/service": ref.function}},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [ingress_rule(ingress_namespaces)],
            "egress": egress,
        },
    }


BUILD_POLICY_NAME = "hks-builds"


def build_network_policy(
    namespace_name: str, project: str, *, egress_cidrs=(), internet: bool = True
) -> dict:
    """The policy of every build pod in a namespace: nothing comes in; out go DNS, ``egress_cidrs`` (the
    registry, package mirrors, the portal serving the source) and - unless ``internet`` is off, for
    clusters that build from mirrors only - the public internet. Never the rest of the cluster."""
    egress = [dns_egress_rule()]
    if egress_cidrs:
        egress.append(cidr_egress_rule(egress_cidrs))
    if internet:
        egress.append(internet_egress_rule())
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {
            "name": BUILD_POLICY_NAME,
            "namespace": namespace_name,
            "labels": {"app.kubernetes.io/managed-by": MANAGED_BY, LABEL_PROJECT: project},
        },
        "spec": {
            "podSelector": {"matchLabels": {LABEL_COMPONENT: "build"}},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [],
            "egress": egress,
        },
    }


# Knative Service ------------------------------------------------------------------------------------


KNATIVE_RESPONSE_START_DEFAULT = 300


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
    if spec.timeout_seconds > KNATIVE_RESPONSE_START_DEFAULT:
        # Knative caps the wait for a first byte at revision-response-start-timeout-seconds (300) unless
        # the revision says otherwise (knative/serving pkg/apis/serving/v1/revision_defaults.go).
        pod_spec["responseStartTimeoutSeconds"] = spec.timeout_seconds
    if settings.node_arch:  # needs Knative's kubernetes.podspec-nodeselector flag
        pod_spec["nodeSelector"] = {"kubernetes.io/arch": settings.node_arch}
    if is_restricted(spec) and settings.agent_runtime_class:
        pod_spec["runtimeClassName"] = settings.agent_runtime_class
    if settings.registry_secret:
        pod_spec["imagePullSecrets"] = [{"name": settings.registry_secret}]
    return {
        "apiVersion": "serving.knative.dev/v1",
        "kind": "Service",
        "metadata": object_meta(
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


FUNCTION_EPHEMERAL_STORAGE = "1Gi"  # a function's or session's writable layer and logs on the node
BUILD_EPHEMERAL_STORAGE = "8Gi"  # a Kaniko build's


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
        "resources": {
            "requests": {"cpu": cpu, "memory": memory},
            # without a limit, a function (or an agent's session) writing without end fills the node's disk
            # for every tenant on it; past this the kubelet evicts the pod (locally: /tmp's size cap)
            "limits": {"cpu": cpu, "memory": memory, "ephemeral-storage": FUNCTION_EPHEMERAL_STORAGE},
        },
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
        "metadata": object_meta(env_secret_name(spec.ref), spec.ref, function_labels(spec.ref)),
        "stringData": dict(spec.secret_env),
    }


# Builds ---------------------------------------------------------------------------------------------


def build_name(spec: BuildSpec) -> str:
    # The content hash makes a rebuild of changed source a new Job, and a retried task the same one.
    return k8s_name("hks-build", spec.revision, spec.content_hash[:8])


def image_repository(spec: BuildSpec, settings: ClusterSettings) -> str:
    return f"{settings.registry.rstrip('/')}/{spec.ref.project}/{spec.ref.function}"


def image_ref(spec: BuildSpec, settings: ClusterSettings) -> str:
    """The tag Kaniko pushes; what the Knative Service runs is the digest (``image_with_digest``)."""
    tag = k8s_name(spec.revision, spec.content_hash[:12], max_length=128)
    return f"{image_repository(spec, settings)}:{tag}"


DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")


def image_with_digest(spec: BuildSpec, settings: ClusterSettings, digest: str) -> str:
    """``repository@sha256:...``: Knative's controller resolves no tag for it (so it needs no access to
    the registry), and a rollback runs exactly the image that was built."""
    digest = digest.strip()
    if not DIGEST_RE.match(digest):
        raise ValueError(f"not an image digest: {digest[:100]!r}")
    return f"{image_repository(spec, settings)}@{digest}"


def registry_host(settings: ClusterSettings) -> str:
    return settings.registry.split("/", 1)[0]


def build_labels(spec: BuildSpec) -> dict[str, str]:
    return function_labels(spec.ref, **{LABEL_REVISION: k8s_name(spec.revision), LABEL_COMPONENT: "build"})


def build_config_map(spec: BuildSpec) -> dict:
    """The Dockerfile for the function's runtime and kind (Knative Functions carry none of their own)."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": object_meta(build_name(spec), spec.ref, build_labels(spec)),
        "data": {"Dockerfile": dockerfile(spec.runtime, spec.kind)},
    }


def build_secret(spec: BuildSpec) -> dict:
    """The source URL holds a short-lived, few-use token: in a Secret, not the Job spec, out of sight."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": object_meta(build_name(spec), spec.ref, build_labels(spec)),
        "stringData": {"archive-url": spec.archive_url},
    }


def kaniko_args(spec: BuildSpec, settings: ClusterSettings) -> list[str]:
    host = registry_host(settings)
    args = [
        f"--context=tar://{BUILD_SOURCE_DIR}/context.tar.gz",
        f"--dockerfile={BUILD_DOCKERFILE_DIR}/Dockerfile",
        f"--destination={image_ref(spec, settings)}",
        # Kubernetes keeps what a container writes here as its termination message: the digest comes back
        # in the Job's pod status, with no other channel (kaniko README, --digest-file).
        f"--digest-file={TERMINATION_LOG}",
        "--single-snapshot",
        f"--push-retry={settings.build_retries}",
        f"--image-download-retry={settings.build_retries}",
    ]
    if settings.registry_insecure:
        args.append(f"--insecure-registry={host}")
    if settings.registry_ca_configmap:
        args.append(f"--registry-certificate={host}={BUILD_CERTS_DIR}/ca.crt")
    args += [f"--registry-mirror={mirror}" for mirror in settings.registry_mirrors]
    if settings.build_cache:
        args += ["--cache=true", f"--cache-repo={kaniko_cache_repo(spec, settings)}"]
    return args + list(settings.kaniko_extra_args)


def kaniko_cache_repo(spec: BuildSpec, settings: ClusterSettings) -> str:
    """The project's own layer cache: a layer made by one tenant's build (its npm lifecycle scripts ran in
    it) is never another tenant's cache hit. Three path segments, so it is no function's image repository
    (``<registry>/<project>/<function>``)."""
    return f"{settings.registry.rstrip('/')}/{spec.ref.project}/cache/kaniko"


def _build_volumes(name: str, settings: ClusterSettings) -> tuple[list[dict], list[dict]]:
    volumes = [
        {"name": "source", "emptyDir": {"sizeLimit": "1Gi"}},
        {"name": "dockerfile", "configMap": {"name": name}},
    ]
    mounts = [
        {"name": "source", "mountPath": BUILD_SOURCE_DIR},
        {"name": "dockerfile", "mountPath": BUILD_DOCKERFILE_DIR, "readOnly": True},
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
    if settings.registry_ca_configmap:
        volumes.append(
            {
                "name": "registry-ca",
                "configMap": {
                    "name": settings.registry_ca_configmap,
                    "items": [{"key": "ca.crt", "path": "ca.crt"}],
                },
            }
        )
        mounts.append({"name": "registry-ca", "mountPath": BUILD_CERTS_DIR, "readOnly": True})
    return volumes, mounts


def kaniko_job(spec: BuildSpec, settings: ClusterSettings) -> dict:
    """A Job that fetches the source archive (init container) and builds and pushes the image with Kaniko.

    Everything the build pod mounts is below /kaniko, which Kaniko leaves out of the image; the image's
    own paths (/app, /usr/local) are never mount points (see ``k8s_images``)."""
    name = build_name(spec)
    volumes, mounts = _build_volumes(name, settings)
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
            f"{BUILD_SOURCE_DIR}/context.tar.gz",
            "$(ARCHIVE_URL)",
        ],
        "env": [{"name": "ARCHIVE_URL", "valueFrom": {"secretKeyRef": {"name": name, "key": "archive-url"}}}],
        "volumeMounts": [{"name": "source", "mountPath": BUILD_SOURCE_DIR}],
        # A namespace with a cpu/memory ResourceQuota refuses any container without them.
        "resources": {
            "requests": {"cpu": "50m", "memory": "32Mi"},
            # it writes to the emptyDir (its own sizeLimit); its own layer stays small
            "limits": {"cpu": "500m", "memory": "128Mi", "ephemeral-storage": "64Mi"},
        },
        "securityContext": restricted_security_context(run_as_user=CURL_UID),
    }
    if settings.portal_ca_configmap:
        volumes.append(
            {
                "name": "portal-ca",
                "configMap": {
                    "name": settings.portal_ca_configmap,
                    "items": [{"key": "ca.crt", "path": "ca.crt"}],
                },
            }
        )
        fetch["volumeMounts"].append({"name": "portal-ca", "mountPath": PORTAL_CA_DIR, "readOnly": True})
        fetch["args"][:0] = ["--cacert", f"{PORTAL_CA_DIR}/ca.crt"]
    kaniko = {
        "name": "kaniko",
        "image": settings.kaniko_image,
        "args": kaniko_args(spec, settings),
        "volumeMounts": mounts,
        "terminationMessagePath": TERMINATION_LOG,
        "terminationMessagePolicy": "File",
        "resources": {
            "requests": {"cpu": "500m", "memory": "1Gi"},
            # the base image, the installed dependencies and the layers it pushes: bounded, as the node's disk
            # is shared with other tenants' pods (a postinstall script writing without end is evicted)
            "limits": {"cpu": "2", "memory": "4Gi", "ephemeral-storage": BUILD_EPHEMERAL_STORAGE},
        },
        # Kaniko unpacks images as root inside its container; it needs no privileges beyond that.
        "securityContext": {"allowPrivilegeEscalation": False, "seccompProfile": {"type": "RuntimeDefault"}},
    }
    labels = build_labels(spec)
    pod_spec = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "initContainers": [fetch],
        "containers": [kaniko],
        "volumes": volumes,
    }
    if settings.node_arch:  # the image is built for the node's own architecture: pin it
        pod_spec["nodeSelector"] = {"kubernetes.io/arch": settings.node_arch}
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": object_meta(name, spec.ref, labels),
        "spec": {
            "backoffLimit": 0,
            "activeDeadlineSeconds": settings.build_timeout_seconds,
            "ttlSecondsAfterFinished": settings.build_ttl_seconds,
            "template": {"metadata": {"labels": labels}, "spec": pod_spec},
        },
    }
