"""Puts a ``knative`` project's place on the cluster (``project_manifests``) and takes it away again.

Two ways a project reaches Knative:

- **namespace** (the default): the platform's own identity on the host cluster (``HKS_KNATIVE_KUBECONFIG``,
  or the pod's ServiceAccount when the platform runs there, deploy/) creates the project's namespace and
  binds itself the ClusterRole ``hks-project`` in it - its only rights there - then the quota, limits,
  default NetworkPolicies and the registry Secret. The project's functions then run with that identity.
- **vCluster**: the operator creates the vCluster and registers its kubeconfig (``manage.py
  set_kubeconfig``); the same objects are put inside it with that kubeconfig, without the RoleBinding
  (the vCluster's kubeconfig is the platform's identity there).

``apply`` first checks that the cluster serves Knative Serving (``knative_presence.require_knative``): a
vCluster without it - Knative only on its host - cannot run the project's functions, and is refused with
why. It then reads each object and writes only what differs from what it should be (quantities compared as
quantities), so running it twice changes nothing and running it later repairs drift. A namespace that
exists without this project's label is never taken over or deleted.
"""

from __future__ import annotations

import copy
import time

from django.conf import settings
from kubernetes import client
from kubernetes.utils import parse_quantity

from functions.backends import project_manifests as pm
from functions.backends.base import BackendError
from functions.backends.k8s_api import TIMEOUT, api_client, backend_error, platform_kubeconfig  # noqa: F401
from functions.backends.k8s_manifests import KNATIVE_INGRESS_NAMESPACES, LABEL_PROJECT, MANAGED_BY
from functions.backends.knative_presence import require_knative
from functions.validators import reserved_namespace

# kind -> (API attribute, method suffix, namespaced)
KINDS = {
    "Namespace": ("core", "namespace", False),
    "RoleBinding": ("rbac", "namespaced_role_binding", True),
    "ResourceQuota": ("core", "namespaced_resource_quota", True),
    "LimitRange": ("core", "namespaced_limit_range", True),
    "NetworkPolicy": ("networking", "namespaced_network_policy", True),
    "Secret": ("core", "namespaced_secret", True),
}
RBAC_GRACE_SECONDS = 10


def _empty(value) -> bool:
    return value is None or value == [] or value == {}


def _same(want, have) -> bool:
    """``want`` equals ``have``, quantities ("2000m" and "2") compared by value, and an absent field the
    same as an empty one (the API server leaves out empty lists: ``egress: []`` comes back absent)."""
    if _empty(want) or _empty(have):
        return _empty(want) and _empty(have)
    if isinstance(want, dict):
        return isinstance(have, dict) and all(
            _same(want.get(k), have.get(k)) for k in want.keys() | have.keys()
        )
    if isinstance(want, list):
        return isinstance(have, list) and len(want) == len(have) and all(map(_same, want, have))
    if isinstance(want, str) and isinstance(have, str) and want != have:
        try:
            return parse_quantity(want) == parse_quantity(have)
        except ValueError:
            return False
    return want == have


def _content(obj: dict) -> dict:
    return {k: v for k, v in obj.items() if k not in ("apiVersion", "kind", "metadata", "status")}


def up_to_date(want: dict, have: dict) -> bool:
    """What provisioning manages is as it should be: the object's content and its labels (other labels and
    the server's annotations may be there too)."""
    have_labels = have.get("metadata", {}).get("labels") or {}
    labels_ok = all(have_labels.get(k) == v for k, v in want["metadata"].get("labels", {}).items())
    have_content = {k: v for k, v in _content(have).items() if k in _content(want)}
    return labels_ok and _same(_content(want), have_content)


class Provisioner:
    """Talks to one cluster (the host's API, or a vCluster's)."""

    def __init__(self, api: client.ApiClient, *, own_kubeconfig: bool = False):
        self.api = api
        self.own_kubeconfig = own_kubeconfig  # a project's own cluster (a vCluster's), not the platform's
        self.core = client.CoreV1Api(api)
        self.rbac = client.RbacAuthorizationV1Api(api)
        self.networking = client.NetworkingV1Api(api)

    def _call(self, method, *args, ok: tuple[int, ...] = (), **kwargs):
        kwargs.setdefault("_request_timeout", TIMEOUT)
        try:
            return method(*args, **kwargs)
        except client.ApiException as exc:
            if exc.status in ok:
                return None
            raise backend_error(exc) from exc
        except Exception as exc:  # unreachable server, bad response
            raise backend_error(exc) from exc

    def _method(self, kind: str, verb: str):
        api, suffix, _ = KINDS[kind]
        return getattr(getattr(self, api), f"{verb}_{suffix}")

    def _read(self, kind: str, name: str, namespace: str) -> dict | None:
        args = (name, namespace) if KINDS[kind][2] else (name,)
        found = self._call(self._method(kind, "read"), *args, ok=(404,))
        return None if found is None else self.api.sanitize_for_serialization(found)

    def _delete(self, kind: str, name: str, namespace: str) -> None:
        # The answer is not read: the client types it as the deleted object (V1ResourceQuota...), while the
        # server may answer a Status, which that type refuses.
        self._call(self._method(kind, "delete"), name, namespace, ok=(404,), _preload_content=False)

    def read_secret(self, namespace: str, name: str) -> dict | None:
        return self._read("Secret", name, namespace)

    # apply ---------------------------------------------------------------------------------------------

    def apply(self, objects: list[dict], slug: str) -> list[str]:
        """Create or repair ``objects`` (the namespace first) and delete what provisioning made before
        and no longer wants; returns what changed ("created ResourceQuota hks-quota", ...)."""
        # A place for functions on a cluster that cannot run them (a vCluster without Knative) is refused.
        require_knative(self.api, own_kubeconfig=self.own_kubeconfig)
        namespace = objects[0]["metadata"]["name"]
        if not self.own_kubeconfig and reserved_namespace(namespace):
            raise BackendError(
                f"namespace {namespace} is reserved for the cluster and the platform (functions/validators"
                ".reserved_namespace): the platform never provisions it for a project - give the project "
                "another namespace",
                permanent=True,
            )
        self._check_ours(namespace, slug)
        changes: list[str] = []
        for obj in objects:
            # Rights a RoleBinding just granted reach the API server's authorizer a moment later.
            grace = RBAC_GRACE_SECONDS if f"created RoleBinding {pm.PLATFORM_BINDING}" in changes else 0
            if change := self._apply_one(obj, grace=grace):
                changes.append(change)
        wanted = {(o["kind"], o["metadata"]["name"]) for o in objects}
        for kind, (_, _, namespaced) in KINDS.items():
            if not namespaced:
                continue
            listed = self._call(self._method(kind, "list"), namespace, label_selector=pm.selector(slug))
            for item in listed.items:
                if (kind, item.metadata.name) not in wanted:
                    self._delete(kind, item.metadata.name, namespace)
                    changes.append(f"deleted {kind} {item.metadata.name}")
        return changes

    def _check_ours(self, namespace: str, slug: str) -> None:
        current = self._read("Namespace", namespace, "")
        if current is None:
            return
        found = current["metadata"].get("labels") or {}
        # The Knative backend labels a namespace it had to create itself with managed-by only.
        if found.get("app.kubernetes.io/managed-by") != MANAGED_BY or found.get(LABEL_PROJECT, slug) != slug:
            raise BackendError(
                f"namespace {namespace} already exists and is not project {slug}'s (it lacks the label "
                f"{LABEL_PROJECT}={slug}); the platform neither takes it over nor deletes it - give the "
                "project another namespace",
                permanent=True,
            )

    def _apply_one(self, want: dict, *, grace: float = 0) -> str:
        deadline = time.monotonic() + grace
        while True:
            try:
                return self._apply_once(want)
            except BackendError as exc:
                forbidden = isinstance(exc.__cause__, client.ApiException) and exc.__cause__.status == 403
                if not forbidden or time.monotonic() > deadline:
                    raise
            time.sleep(0.25)

    def _apply_once(self, want: dict) -> str:
        kind, name = want["kind"], want["metadata"]["name"]
        namespace = want["metadata"].get("namespace", "")
        namespaced = KINDS[kind][2]
        have = self._read(kind, name, namespace)
        if have is None:
            args = (namespace, want) if namespaced else (want,)
            if self._call(self._method(kind, "create"), *args, ok=(409,)) is None:
                raise BackendError(f"{kind} {name} appeared while being created; will retry", permanent=False)
            return f"created {kind} {name}"
        if up_to_date(want, have):
            return ""
        body = copy.deepcopy(want)
        meta = body["metadata"]
        meta["resourceVersion"] = have["metadata"]["resourceVersion"]
        meta["labels"] = {**(have["metadata"].get("labels") or {}), **meta["labels"]}
        if have["metadata"].get("annotations"):
            meta["annotations"] = have["metadata"]["annotations"]
        args = (name, namespace, body) if namespaced else (name, body)
        if self._call(self._method(kind, "replace"), *args, ok=(409,)) is None:
            raise BackendError(f"{kind} {name} changed while being repaired; will retry", permanent=False)
        return f"updated {kind} {name}"

    # teardown ------------------------------------------------------------------------------------------

    def teardown(self, namespace: str, slug: str) -> list[str]:
        """Delete the project's namespace (and with it everything in it) if provisioning made it; in a
        namespace that is not the project's own, only what provisioning put there."""
        current = self._read("Namespace", namespace, "")
        if current is None:
            return []
        found = current["metadata"].get("labels") or {}
        if found.get(LABEL_PROJECT) == slug and found.get("app.kubernetes.io/managed-by") == MANAGED_BY:
            self._call(self.core.delete_namespace, namespace, propagation_policy="Background", ok=(404,))
            return [f"deleted Namespace {namespace}"]
        changes = []
        for kind, (_, _, namespaced) in KINDS.items():
            if namespaced:
                # 403: the platform has no rights there (a namespace it never provisioned), so nothing of
                # the project's either; refusing here would keep the project "deleting" for ever.
                selector = pm.selector(slug)
                listed = self._call(self._method(kind, "list"), namespace, label_selector=selector, ok=(403,))
                for item in listed.items if listed is not None else []:
                    self._delete(kind, item.metadata.name, namespace)
                    changes.append(f"deleted {kind} {item.metadata.name}")
        return changes

    def project_namespaces(self) -> dict[str, str]:
        """Namespaces provisioning made on this cluster: {namespace: project slug}."""
        selector = f"app.kubernetes.io/managed-by={MANAGED_BY},{pm.LABEL_COMPONENT}={pm.COMPONENT}"
        listed = self._call(self.core.list_namespace, label_selector=selector)
        return {ns.metadata.name: (ns.metadata.labels or {}).get(LABEL_PROJECT, "") for ns in listed.items}


# Django side: which cluster, which settings ----------------------------------------------------------


def platform_provisioner() -> Provisioner | None:
    kubeconfig = platform_kubeconfig()
    return Provisioner(api_client(kubeconfig)) if kubeconfig else None


def provisioner_for(project) -> Provisioner:
    """The project's vCluster when it registered a kubeconfig, else the platform's host cluster."""
    if project.kubeconfig_encrypted:
        from functions.crypto import DecryptionError, decrypt_text

        try:
            api = api_client(decrypt_text(project.kubeconfig_encrypted))
            return Provisioner(api, own_kubeconfig=True)
        except DecryptionError as exc:
            raise BackendError(f"project {project.slug}: {exc}", permanent=True) from exc
    found = platform_provisioner()
    if found is None:
        raise BackendError(
            f"project {project.slug} has no kubeconfig and the platform has no cluster credentials "
            "(HKS_KNATIVE_KUBECONFIG, or run it on the cluster): nothing to provision with",
            permanent=True,
        )
    return found


def provision_settings(project) -> pm.ProvisionSettings:
    return pm.ProvisionSettings(
        platform_namespace=settings.HKS_PLATFORM_NAMESPACE,
        platform_service_account=settings.HKS_PLATFORM_SERVICE_ACCOUNT,
        prometheus_namespace=settings.HKS_PROMETHEUS_NAMESPACE,
        instances=settings.HKS_QUOTA_INSTANCES,
        registry_secret=settings.HKS_REGISTRY_SECRET,
        ingress_namespaces=tuple(
            getattr(settings, "HKS_KNATIVE_INGRESS_NAMESPACES", KNATIVE_INGRESS_NAMESPACES)
        ),
        bind_platform=not project.kubeconfig_encrypted,
    )


def project_quota(project) -> pm.ProjectQuota:
    return pm.ProjectQuota(
        functions=project.max_functions,
        agent_functions=project.max_agent_functions,
        cpu_millicores=project.max_cpu_millicores,
        memory_mb=project.max_memory_mb,
    )


def registry_source() -> dict | None:
    """The platform's registry push Secret (``HKS_REGISTRY_SECRET`` in ``HKS_PLATFORM_NAMESPACE``), read
    with the platform's identity; None when there is none to copy."""
    if not settings.HKS_REGISTRY_SECRET:
        return None
    platform = platform_provisioner()
    if platform is None:
        return None
    found = platform.read_secret(settings.HKS_PLATFORM_NAMESPACE, settings.HKS_REGISTRY_SECRET)
    if found is None:
        raise BackendError(
            f"the registry Secret {settings.HKS_PLATFORM_NAMESPACE}/{settings.HKS_REGISTRY_SECRET} does not "
            "exist: create it (kubectl create secret docker-registry, docs/install-k3s.md)",
            permanent=True,
        )
    return {"type": found.get("type"), "data": found.get("data") or {}}


def desired_objects(project) -> list[dict]:
    return pm.project_objects(
        project.effective_namespace,
        project.slug,
        project_quota(project),
        provision_settings(project),
        registry_source(),
    )
