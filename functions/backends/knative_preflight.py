"""The preflight: does the cluster have what the Knative backend relies on? (``manage.py knative_check``,
and a section of the operators' page.)

Each prerequisite is reported ``ok``, ``missing`` or ``wrong``, with what was found and the fix:
Knative Serving's CRDs and their version (1.19 or later: the metric names the portal reads), the feature
flags for ``runtimeClassName`` (agent code under ``HKS_AGENT_RUNTIME_CLASS``) and secure pod defaults,
``max-revision-timeout-seconds`` against ``HKS_KNATIVE_MAX_TIMEOUT_SECONDS``, the domain functions get,
the registry and its push Secret, and the Kaniko image.

Whether Knative Serving is there at all is ``knative_presence``'s check, which the backend and provisioning
also make before they write anything.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from django.conf import settings
from kubernetes import client

from functions.backends.base import BackendError
from functions.backends.k8s_api import api_client, platform_kubeconfig
from functions.backends.knative_presence import (  # noqa: F401 - the preflight reports them too
    HOST_KNATIVE,
    INSIDE,
    INSTALL,
    KNATIVE_VERSION,
    TENANCY,
    host_has_knative,
    require_knative,
    serves_knative,
)
from functions.backends.knative_provision import Provisioner
from functions.crypto import decrypt_text

OK, MISSING, WRONG = "ok", "missing", "wrong"
KNATIVE_NS = "knative-serving"
MIN_VERSION = (1, 19)
CRDS = ("services", "configurations", "revisions", "routes")
PLACEHOLDER_REGISTRY = "registry.local/hks"
TIMEOUT = (2, 5)
PINNED_KANIKO = "ghcr.io/osscontainertools/kaniko:v1.28.3"


@dataclass(frozen=True)
class Check:
    name: str
    state: str  # ok | missing | wrong
    detail: str
    fix: str = ""

    @property
    def ok(self) -> bool:
        return self.state == OK


def _patch(configmap: str, key: str, value: str) -> str:
    body = json.dumps({"data": {key: value}})
    return f"kubectl patch configmap/{configmap} -n {KNATIVE_NS} --type merge -p '{body}'"


class Preflight:
    def __init__(self, api: client.ApiClient, *, namespace: str = "", own_kubeconfig: bool = False):
        self.api = api
        self.own_kubeconfig = own_kubeconfig  # a project's own cluster (a vCluster), not the platform's
        self.core = client.CoreV1Api(api)
        self.extensions = client.ApiextensionsV1Api(api)
        self.namespace = namespace  # a project's: where its registry Secret must be

    def _get(self, method, *args):
        """The object, None when absent; ``BackendError`` for anything else."""
        try:
            return method(*args, _request_timeout=TIMEOUT)
        except client.ApiException as exc:
            if exc.status == 404:
                return None
            raise BackendError(f"HTTP {exc.status}: {exc.reason}", permanent=exc.status < 500) from exc
        except Exception as exc:  # unreachable
            raise BackendError(f"cannot reach the cluster: {exc}") from exc

    def _config(self, name: str) -> dict[str, str] | None:
        found = self._get(self.core.read_namespaced_config_map, name, KNATIVE_NS)
        return None if found is None else dict(found.data or {})

    def run(self) -> list[Check]:
        try:
            checks = self._crds()
        except BackendError as exc:
            return [
                Check("Kubernetes API", WRONG, exc.message, "check the kubeconfig and the platform's RBAC")
            ]
        configured = {
            "runtimeClassName feature flag": self._runtime_class,
            "secure pod defaults feature flag": self._secure_pod_defaults,
            "max-revision-timeout-seconds": self._max_timeout,
            "domain": self._domain,
        }
        try:
            for name, check in configured.items():
                if checks[0].ok:
                    checks.append(check(name))
                else:
                    checks.append(Check(name, MISSING, "Knative Serving is not installed", INSTALL))
            checks.append(self._registry())
        except BackendError as exc:
            # The Role that lets the platform read Knative's settings lives in knative-serving: installed
            # before Knative, `kubectl apply -k` could not make it.
            fix = (
                "check the platform's RBAC (deploy/base/rbac.yaml); if Knative was installed after HKS, "
                "apply the HKS manifests again (kubectl apply -k) so that the Role hks-knative-config exists"
            )
            checks.append(Check("Kubernetes API", WRONG, exc.message, fix))
        return [*checks, kaniko_check()]

    def _crds(self) -> list[Check]:
        found = {
            name: self._get(self.extensions.read_custom_resource_definition, f"{name}.serving.knative.dev")
            for name in CRDS
        }
        absent = [name for name, crd in found.items() if crd is None]
        if absent:
            detail = "no CustomResourceDefinition " + ", ".join(f"{n}.serving.knative.dev" for n in absent)
            fix = INSTALL
            if self.own_kubeconfig and host_has_knative(self.api.configuration.host):
                detail += f" in the project's vCluster, though the host cluster has them. {HOST_KNATIVE}"
                fix = INSIDE.format(install=INSTALL) + f". See {TENANCY}."
            return [
                Check("Knative Serving CRDs", MISSING, detail, fix),
                Check("Knative Serving version", MISSING, "Knative Serving is not installed", INSTALL),
            ]
        crds = Check("Knative Serving CRDs", OK, ", ".join(f"{n}.serving.knative.dev" for n in CRDS))
        return [crds, self._version(found["services"])]

    @staticmethod
    def _version(crd) -> Check:
        labels = crd.metadata.labels or {}
        text = labels.get("app.kubernetes.io/version") or labels.get("serving.knative.dev/release", "")
        match = re.match(r"v?(\d+)\.(\d+)", text)
        upgrade = f"upgrade Knative Serving: {INSTALL}"
        if not match:
            return Check(
                "Knative Serving version",
                WRONG,
                f"cannot tell the version (labels: {text or 'none'})",
                upgrade,
            )
        version = (int(match[1]), int(match[2]))
        if version < MIN_VERSION:
            return Check(
                "Knative Serving version",
                WRONG,
                f"{text}: older than 1.19, whose metric names the portal reads",
                upgrade,
            )
        return Check("Knative Serving version", OK, text)

    def _runtime_class(self, name: str) -> Check:
        key = "kubernetes.podspec-runtimeclassname"
        value = (self._config("config-features") or {}).get(key, "disabled")
        wanted = settings.HKS_AGENT_RUNTIME_CLASS
        if value == "enabled":
            return Check(name, OK, f"{key}: enabled")
        if not wanted:
            return Check(name, OK, f"{key}: {value} (not needed: HKS_AGENT_RUNTIME_CLASS is unset)")
        return Check(
            name,
            WRONG,
            f"{key} is {value!r}, so Knative refuses agent functions with runtimeClassName {wanted!r}",
            _patch("config-features", key, "enabled"),
        )

    def _secure_pod_defaults(self, name: str) -> Check:
        key = "secure-pod-defaults"
        value = (self._config("config-features") or {}).get(key, "disabled")
        if value == "enabled":
            return Check(name, OK, f"{key}: enabled")
        return Check(
            name,
            WRONG,
            f"{key} is {value!r}: containers that set no security context run with Kubernetes' defaults",
            _patch("config-features", key, "enabled"),
        )

    def _max_timeout(self, name: str) -> Check:
        key = "max-revision-timeout-seconds"
        raw = (self._config("config-defaults") or {}).get(key, "600")  # Knative's default
        wanted = settings.HKS_KNATIVE_MAX_TIMEOUT_SECONDS
        try:
            value = int(raw)
        except ValueError:
            return Check(
                name, WRONG, f"{key} is {raw!r}, not a number", _patch("config-defaults", key, str(wanted))
            )
        if value < wanted:
            return Check(
                name,
                WRONG,
                f"{key} is {value} but HKS_KNATIVE_MAX_TIMEOUT_SECONDS allows {wanted}: longer timeouts fail",
                _patch("config-defaults", key, str(wanted))
                + f"  (or set HKS_KNATIVE_MAX_TIMEOUT_SECONDS={value})",
            )
        return Check(name, OK, f"{key}: {value} (HKS_KNATIVE_MAX_TIMEOUT_SECONDS={wanted})")

    def _domain(self, name: str) -> Check:
        data = self._config("config-domain")
        domains = sorted(k for k in (data or {}) if not k.startswith("_"))
        fix = _patch("config-domain", "functions.example.com", "") + "  (your wildcard DNS name)"
        if data is None:
            return Check(name, MISSING, f"no ConfigMap config-domain in {KNATIVE_NS}", fix)
        if not domains:
            return Check(name, MISSING, "no domain configured: functions get cluster-local URLs only", fix)
        return Check(name, OK, ", ".join(domains))

    def _registry(self) -> Check:
        name, registry = "registry", settings.HKS_REGISTRY
        if not registry or registry.rstrip("/") == PLACEHOLDER_REGISTRY:
            return Check(
                name,
                MISSING,
                f"HKS_REGISTRY is {registry or 'unset'}",
                "set HKS_REGISTRY to a registry Kaniko can push to and nodes pull from",
            )
        secret_name = settings.HKS_REGISTRY_SECRET
        if not secret_name:
            return Check(name, OK, f"{registry} (no push Secret: HKS_REGISTRY_SECRET is unset)")
        namespace = self.namespace or settings.HKS_PLATFORM_NAMESPACE
        create = (
            f"kubectl create secret docker-registry {secret_name} -n {namespace} "
            f"--docker-server={registry.split('/')[0]} --docker-username=... --docker-password=..."
        )
        found = Provisioner(self.api).read_secret(namespace, secret_name)
        if found is None:
            return Check(name, MISSING, f"{registry}: no Secret {namespace}/{secret_name}", create)
        if found.get("type") != "kubernetes.io/dockerconfigjson":
            return Check(
                name, WRONG, f"Secret {namespace}/{secret_name} is of type {found.get('type')}", create
            )
        return Check(name, OK, f"{registry}, push Secret {namespace}/{secret_name}")


def kaniko_check() -> Check:
    name, image = "Kaniko image", settings.HKS_KANIKO_IMAGE
    fix = "set HKS_KANIKO_IMAGE to a pinned release of a maintained fork, e.g. " + PINNED_KANIKO
    if not image:
        return Check(name, MISSING, "HKS_KANIKO_IMAGE is unset", fix)
    if image.startswith("gcr.io/kaniko-project/"):
        return Check(name, WRONG, f"{image}: upstream Kaniko was archived in 2025", fix)
    last = image.rsplit("/", 1)[-1]
    if "@sha256:" not in image and (":" not in last or last.endswith(":latest")):
        return Check(name, WRONG, f"{image}: not pinned (a new release could change every build)", fix)
    return Check(name, OK, image)


def preflight(project=None) -> tuple[str, list[Check]]:
    """Run every check against the platform's cluster, or the cluster of ``project``; returns a line
    saying which cluster, and the checks."""
    if project is not None and project.kubeconfig_encrypted:
        kubeconfig, where = decrypt_text(project.kubeconfig_encrypted), f"project {project.slug}'s kubeconfig"
    else:
        kubeconfig, where = platform_kubeconfig(), "the platform's credentials"
    namespace = project.effective_namespace if project is not None else ""
    if not kubeconfig:
        missing = Check(
            "cluster credentials",
            MISSING,
            "no HKS_KNATIVE_KUBECONFIG, not running on a cluster"
            + (f", and project {project.slug} has no kubeconfig" if project is not None else ""),
            "set HKS_KNATIVE_KUBECONFIG, or register a kubeconfig: manage.py set_kubeconfig <project> <file>",
        )
        return where, [missing, kaniko_check()]
    try:
        api = api_client(kubeconfig)
    except BackendError as exc:
        return where, [Check("cluster credentials", WRONG, exc.message, "fix the kubeconfig"), kaniko_check()]
    server = api.configuration.host
    own = project is not None and bool(project.kubeconfig_encrypted)
    return f"{server} ({where})", Preflight(api, namespace=namespace, own_kubeconfig=own).run()
