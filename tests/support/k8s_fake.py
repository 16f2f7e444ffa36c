"""A small stateful fake of a Kubernetes API server - the one fake the test suite allows.

The real ``kubernetes`` client talks HTTP to it (aiohttp on a background thread). It stores what is
written, checks the bearer token, and rejects what a real server would: every object written is validated
against the real schemas (Kubernetes' own with ``kubernetes-validate --strict``, Knative's through
``tests/support/knative_schemas.py``: a pinned package of Knative Serving's models, strict about unknown
fields), so an invalid manifest gets a 422 here too.

Two identities: ``kubeconfig`` (``token``) is a cluster admin, for tests arranging the cluster and for a
project's own kubeconfig; ``platform_kubeconfig`` (``platform_token``) is the platform's ServiceAccount
``hks/hks``, held by an RBAC authorizer to the rules of deploy/base/rbac.yaml (``rbac_objects``) and the
RoleBindings stored here, with the API server's escalation check on RoleBindings (403 as a cluster
answers); ``platform_allowed`` lists what it was allowed.

It also plays the controllers the platform relies on, as they behave on a real cluster (each behaviour is
cited where it is implemented, under "Controllers"):

- pods start Pending, then their containers wait (ContainerCreating, PodInitializing), then run - a pod
  whose image a test made slow to pull (``pull_slowly``) waits in ContainerCreating until it says; the log
  endpoint answers 400 for a container that has not started;
- Pod Security Admission enforces the namespace's ``pod-security.kubernetes.io/enforce`` level on every pod
  the fake creates: a refused Job pod is never created, the Job records a FailedCreate event and fails by
  deadline (``job_deadline_cap`` seconds at most here); a refused revision pod is never created either,
  its ReplicaSet records FailedCreate and the revision fails with the refusal (its queue-proxy carries
  Knative's own restricted-compliant security context);
- a Job runs its pod (init container, then the main one) and becomes Complete (conditions
  SuccessCriteriaMet, Complete) or Failed when a test called ``fail_next_job(message)``; a Kaniko
  container "pushes" an image into ``images`` that holds the code only if nothing the Dockerfile copies
  lies under one of the container's mount points, and reports the digest as its termination message
  when ``--digest-file`` is the termination log;
- a Knative Service gets a Revision (``spec.template.metadata.name`` or ``{name}-{generation:05d}``) and a
  pod with a ``user-container``; Ready=True with ``url`` ``http://{name}.{namespace}.example.test``
  (the internal URL for cluster-local Services), ``address.url`` and ``latestReadyRevisionName`` once the
  pod runs. The revision fails instead when its image is a tag of a registry Knative's controller cannot
  resolve (not in ``resolvable_registries``), when the image is one ``images`` holds without the code
  (the container exits, CrashLoopBackOff), or when a test called ``fail_next_revision(message)``;
- a revision pod naming a ``runtimeClassName`` no RuntimeClass (``runtimeclasses.node.k8s.io``) defines is
  refused as the RuntimeClass admission plugin does (FailedCreate, the revision fails);
- deleting a Job, a Knative Service or a Namespace deletes what they own.

A cluster without Knative Serving - a vCluster whose host runs Knative, say - is
``FakeKubernetes(knative=False)`` (the fixture ``fake_vcluster``): every request under
``/apis/serving.knative.dev/`` gets what a real API server answers for a group no CRD defines, a plain-text
``404 page not found`` (the apiextensions server hands a group without a CRD to the NotFound handler at the
end of the delegation chain, which calls Go's ``http.NotFound``: kubernetes
staging/src/k8s.io/apiserver/pkg/util/notfoundhandler/notfoundhandler.go and its test). With Knative,
``GET /apis/serving.knative.dev/v1`` is the group version's discovery document (an APIResourceList).

Fixtures: ``fake_k8s_server`` (one server per test session), ``fake_k8s`` (the same server, emptied
before each test), ``fake_vcluster`` (a second one, without Knative) and ``knative_project`` (the "acme"
project on the knative backend, pointing at it). The server object has ``url``, ``token``, ``kubeconfig``
(YAML text), ``objects`` (a snapshot ``{(resource, namespace, name): object}`` where ``resource`` is named
the way kubectl does: ``jobs.batch``, ``services.serving.knative.dev``, ``serviceaccounts``...),
``get``/``list``, ``append_log``, ``record_event``, ``fail_next_job``, ``fail_next_revision``,
``fail_next_request``, ``pull_slowly``/``finish_pulls``, ``route_services_to``, ``requests``, ``images``,
``resolvable_registries``, ``knative``,
``knative_controller`` (False: the CRDs without Knative running), and the controller
delays ``job_seconds``/``ready_seconds``/``job_deadline_cap`` (all back to their defaults at each reset).
"""

from __future__ import annotations

import asyncio
import copy
import datetime as dt
import hashlib
import itertools
import json
import re
import secrets
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml
from aiohttp import web

from . import knative_schemas

# kubernetes client 37.x speaks Kubernetes 1.37; validate against the same API version.
K8S_SCHEMA_VERSION = "1.37.0"


@dataclass(frozen=True)
class ResourceType:
    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool = True

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def name(self) -> str:
        return f"{self.plural}.{self.group}" if self.group else self.plural


RESOURCE_TYPES = {
    r.name: r
    for r in [
        ResourceType("", "v1", "namespaces", "Namespace", namespaced=False),
        ResourceType("", "v1", "serviceaccounts", "ServiceAccount"),
        ResourceType("", "v1", "secrets", "Secret"),
        ResourceType("", "v1", "configmaps", "ConfigMap"),
        ResourceType("", "v1", "pods", "Pod"),
        ResourceType("", "v1", "events", "Event"),
        ResourceType("batch", "v1", "jobs", "Job"),
        ResourceType("batch", "v1", "cronjobs", "CronJob"),
        ResourceType("networking.k8s.io", "v1", "networkpolicies", "NetworkPolicy"),
        ResourceType("serving.knative.dev", "v1", "services", "Service"),
        ResourceType("serving.knative.dev", "v1", "revisions", "Revision"),
        # A project's place on the cluster (functions/backends/knative_provision.py) and the preflight.
        ResourceType("", "v1", "resourcequotas", "ResourceQuota"),
        ResourceType("", "v1", "limitranges", "LimitRange"),
        ResourceType("rbac.authorization.k8s.io", "v1", "rolebindings", "RoleBinding"),
        # The sandbox runtimes a node offers (gVisor's "gvisor"); agent pods name one (runtimeClassName).
        ResourceType("node.k8s.io", "v1", "runtimeclasses", "RuntimeClass", namespaced=False),
        ResourceType(
            "apiextensions.k8s.io",
            "v1",
            "customresourcedefinitions",
            "CustomResourceDefinition",
            namespaced=False,
        ),
    ]
}
KNATIVE_GROUP = "serving.knative.dev"
PLATFORM_SA = ("hks", "hks")  # namespace, name: deploy/base/rbac.yaml
RBAC_MANIFEST = Path(__file__).resolve().parents[2] / "deploy" / "base" / "rbac.yaml"


def _platform_rbac() -> list[dict]:
    """The ServiceAccount's ClusterRoles, Roles and their bindings, as the install manifests make them."""
    kinds = ("ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding")
    objects = yaml.safe_load_all(RBAC_MANIFEST.read_text(encoding="utf-8"))
    return [o for o in objects if o and o.get("kind") in kinds]


KSVC = f"services.{KNATIVE_GROUP}"
CREATOR, LAST_MODIFIER = "serving.knative.dev/creator", "serving.knative.dev/lastModifier"
FAKE_USER = "system:serviceaccount:hks:fake"


# Validation -----------------------------------------------------------------------------------------


class ManifestInvalid(ValueError):
    """A manifest a real API server would refuse (HTTP 422)."""


LABEL_VALUE_RE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
DNS_LABEL_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def _check_metadata(obj, where: str = "") -> None:
    """What the API server checks beyond the schema: names and label values (length and characters)."""
    if not isinstance(obj, dict):
        if isinstance(obj, list):
            for i, item in enumerate(obj):
                _check_metadata(item, f"{where}.{i}")
        return
    for key, value in obj.items():
        path = f"{where}.{key}" if where else key
        if key == "metadata" and isinstance(value, dict):
            name = value.get("name")
            if name is not None and (len(name) > 63 or not DNS_LABEL_RE.match(name)):
                raise ManifestInvalid(f"{path}.name: Invalid value: {name!r}: must be a DNS-1123 label")
            for label, text in (value.get("labels") or {}).items():
                if not isinstance(text, str) or len(text) > 63 or not LABEL_VALUE_RE.match(text):
                    raise ManifestInvalid(
                        f"{path}.labels.{label}: Invalid value: {text!r}: a label value must be "
                        "63 characters or less, alphanumeric, '-', '_' or '.'"
                    )
        _check_metadata(value, path)


def validate_manifest(obj: dict) -> None:
    """Raise ``ManifestInvalid`` unless ``obj`` is valid against the real schema of its kind."""
    kind, name = obj.get("kind", "?"), obj.get("metadata", {}).get("name", "?")
    if kind == "CustomResourceDefinition":  # named <plural>.<group>: a DNS subdomain, not a label
        if not all(DNS_LABEL_RE.match(part) for part in str(name).split(".")) or len(name) > 253:
            raise ManifestInvalid(f"metadata.name: Invalid value: {name!r}: must be a DNS-1123 subdomain")
        obj = {**obj, "metadata": {**obj["metadata"], "name": "crd"}}
    _check_metadata(obj)
    try:
        if str(obj.get("apiVersion", "")).startswith("serving.knative.dev/"):
            knative_schemas.validate(obj)
            # CRD schemas leave metadata open; check it as the ObjectMeta it really is.
            meta_probe = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": obj.get("metadata", {})}
            kubernetes_validate.validate(meta_probe, K8S_SCHEMA_VERSION, strict=True)
        else:
            kubernetes_validate.validate(obj, K8S_SCHEMA_VERSION, strict=True)
    except knative_schemas.KnativeInvalid as exc:
        raise ManifestInvalid(f"{kind} {name} is invalid: {exc}") from exc
    except jsonschema.ValidationError as exc:
        where = ".".join(str(p) for p in exc.absolute_path) or "(root)"
        raise ManifestInvalid(f"{kind} {name} is invalid: {where}: {exc.message}") from exc
    except (kubernetes_validate.SchemaNotFoundError, kubernetes_validate.InvalidSchemaError) as exc:
        raise ManifestInvalid(f"{kind} {name}: {exc}") from exc


def _knative_webhook_problem(ksvc: dict) -> str:
    """The checks of Knative's validating webhook that the platform's manifests could trip (defaults of
    ``config-autoscaler`` and ``config-defaults``)."""
    template = ksvc.get("spec", {}).get("template", {})
    annotations = template.get("metadata", {}).get("annotations", {})
    spec = template.get("spec", {})
    try:
        low = int(annotations.get("autoscaling.knative.dev/min-scale", "0"))
        high = int(annotations.get("autoscaling.knative.dev/max-scale", "0"))
        target = float(annotations.get("autoscaling.knative.dev/target", "100"))
    except ValueError as exc:
        return f"invalid value: {exc}: spec.template.metadata.annotations"
    if low < 0 or high < 0 or (high and low > high):
        return f"min-scale={low} max-scale={high}: expected 0 <= min-scale <= max-scale"
    if target < 0.01:
        return f"target={target}: expected target >= 0.01"
    for container in spec.get("containers", []):
        reserved = {e["name"] for e in container.get("env", [])} & {
            "PORT",
            "K_SERVICE",
            "K_CONFIGURATION",
            "K_REVISION",
        }
        if reserved:
            return f"must not set the field(s): spec.template.spec.containers[0].env: {sorted(reserved)}"
    if not 0 <= spec.get("containerConcurrency", 0) <= 1000:
        return (
            f"expected 0 <= {spec['containerConcurrency']} <= 1000: spec.template.spec.containerConcurrency"
        )
    if not 0 <= spec.get("timeoutSeconds", 300) <= 600:
        return f"expected 0 <= {spec['timeoutSeconds']} <= 600: spec.template.spec.timeoutSeconds"
    return ""


# Helpers --------------------------------------------------------------------------------------------

# What the kubelet itself mounts into every container (https://kubernetes.io/docs/tasks/debug/
# debug-application/determine-reason-pod-failure/ for the termination log; /etc/hosts, hostname and
# resolv.conf are the pod's, https://kubernetes.io/docs/concepts/services-networking/dns-pod-service/).
KUBELET_MOUNTS = ("/dev/termination-log", "/etc/hosts", "/etc/hostname", "/etc/resolv.conf")
# Capabilities the baseline Pod Security Standard allows to add.
# What Knative copies from a Service's template into its revision's pods (knative/serving
# pkg/reconciler/revision/resources/deploy.go makePodSpec) and the fake keeps.
REVISION_POD_FIELDS = (
    "serviceAccountName",
    "securityContext",
    "runtimeClassName",
    "automountServiceAccountToken",
    "enableServiceLinks",
    "imagePullSecrets",
    "nodeSelector",
    "volumes",
)
# Knative's queue-proxy sidecar, with the security context Knative gives it (knative/serving
# pkg/reconciler/revision/resources/queue.go queueSecurityContext): it passes "restricted".
QUEUE_PROXY = {
    "name": "queue-proxy",
    "image": "gcr.io/knative-releases/queue",
    "securityContext": {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    },
}
BASELINE_CAPABILITIES = {
    "AUDIT_WRITE",
    "CHOWN",
    "DAC_OVERRIDE",
    "FOWNER",
    "FSETID",
    "KILL",
    "MKNOD",
    "NET_BIND_SERVICE",
    "SETFCAP",
    "SETGID",
    "SETPCAP",
    "SETUID",
    "SYS_CHROOT",
}


def _under(path: str, mount: str) -> bool:
    mount = mount.rstrip("/") or "/"
    return path == mount or path.startswith(mount + "/") or mount == "/"


def _repository(reference: str) -> str:
    """``registry:5000/a/b:tag`` -> ``registry:5000/a/b`` (a colon after the last slash is a tag)."""
    head, _, tail = reference.rpartition(":")
    return head if head and "/" not in tail else reference


def _dockerfile_recipe(text: str) -> dict:
    """What the fake Kaniko needs from a Dockerfile: where COPY puts files (resolved against WORKDIR),
    the start command, and how that command fails when the files are missing."""
    workdir, copies, cmd = "/", [], []
    for raw in text.replace("\\\n", " ").splitlines():
        parts = raw.strip().split(None, 1)
        if len(parts) < 2:
            continue
        instruction, rest = parts[0].upper(), parts[1]
        if instruction == "WORKDIR":
            workdir = rest if rest.startswith("/") else f"{workdir.rstrip('/')}/{rest}"
        elif instruction in ("COPY", "ADD"):
            dest = rest.split()[-1]
            dest = workdir if dest in (".", "./") else dest
            copies.append(dest if dest.startswith("/") else f"{workdir.rstrip('/')}/{dest}")
        elif instruction == "CMD":
            cmd = json.loads(rest) if rest.startswith("[") else ["/bin/sh", "-c", rest]
    if cmd[:1] == ["faas-js-runtime"]:
        missing = f"Error: Cannot find module '{workdir.rstrip('/')}/{cmd[-1].removeprefix('./')}'"
    elif cmd[:1] == ["python"]:
        missing = "ModuleNotFoundError: No module named 'function'"
    else:
        missing = f"exec: {cmd[:1]}: no such file or directory"
    return {"workdir": workdir, "copies": copies, "cmd": cmd, "missing": missing}


def _waiting_reason(pod: dict, container: str) -> str:
    """Why the kubelet has no log for ``container`` yet (kubernetes pkg/kubelet/kubelet_pods.go
    validateContainerLogStatus): no status yet, or waiting without a previous run."""
    status = pod.get("status", {})
    statuses = [*status.get("initContainerStatuses", []), *status.get("containerStatuses", [])]
    found = next((s for s in statuses if s["name"] == container), None)
    if found is None:
        return "ContainerCreating"
    waiting = found["state"].get("waiting")
    if waiting is None or found.get("lastState", {}).get("terminated"):
        return ""
    return waiting.get("reason") or "ContainerCreating"


def _container_terminated(pod: dict, container: str) -> bool:
    status = pod.get("status", {})
    if status.get("phase") in ("Succeeded", "Failed"):
        return True
    statuses = [*status.get("initContainerStatuses", []), *status.get("containerStatuses", [])]
    return any(s["name"] == container and "terminated" in s["state"] for s in statuses)


def _container_status(container: dict, *, waiting: str = "", running: bool = False, terminated=None) -> dict:
    if terminated is not None:
        code, reason, message = terminated
        state = {
            "terminated": {
                "exitCode": code,
                "reason": reason,
                "startedAt": _ts(_now()),
                "finishedAt": _ts(_now()),
                **({"message": message} if message else {}),
            }
        }
    elif running:
        state = {"running": {"startedAt": _ts(_now())}}
    else:
        state = {"waiting": {"reason": waiting}}
    return {
        "name": container["name"],
        "image": container.get("image", ""),
        "imageID": "",
        "ready": running,
        "restartCount": 0,
        "started": running,
        "state": state,
    }


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _ts(moment: dt.datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _ts_nano(moment: dt.datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%f") + "000Z"


def _parse_ts(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


def _status(code: int, reason: str, message: str, **details) -> web.Response:
    body = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure" if code >= 400 else "Success",
        "message": message,
        "reason": reason,
        "code": code,
    }
    if details:
        body["details"] = details
    return web.json_response(body, status=code)


def _merge_patch(target, patch):
    """RFC 7386 JSON merge patch (strategic merge patches are treated the same, which covers dicts)."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = _merge_patch(result.get(key), value)
    return result


def _matches(labels: dict, selector: str) -> bool:
    for term in filter(None, (t.strip() for t in selector.split(","))):
        if "!=" in term:
            key, value = term.split("!=", 1)
            if labels.get(key.strip()) == value.strip():
                return False
        elif "=" in term:
            key, value = term.replace("==", "=").split("=", 1)
            if labels.get(key.strip()) != value.strip():
                return False
        elif term.startswith("!"):
            if term[1:] in labels:
                return False
        elif term not in labels:
            return False
    return True


def _matches_fields(obj: dict, selector: str) -> bool:
    """Equality field selectors (``involvedObject.name=x``, ``metadata.name=y``)."""
    for term in filter(None, (t.strip() for t in selector.split(","))):
        path, _, wanted = term.replace("==", "=").partition("=")
        value = obj
        for part in path.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        if str(value if value is not None else "") != wanted:
            return False
    return True


def _omit_empty(meta: dict) -> None:
    """Go's ``omitempty``: the server stores no empty labels or annotations map."""
    for field in ("labels", "annotations"):
        if field in meta and not meta[field]:
            del meta[field]


def _rand(n: int = 5) -> str:
    return "".join(secrets.choice("bcdfghjklmnpqrstvwxz2456789") for _ in range(n))


# The server -----------------------------------------------------------------------------------------


class FakeKubernetes:
    """See the module docstring. Thread-safe: tests read and arrange while the server thread serves."""

    def __init__(self, *, job_seconds: float = 0.2, ready_seconds: float = 0.1, knative: bool = True):
        self._defaults = (job_seconds, ready_seconds, knative)
        self.token = "fake-" + secrets.token_hex(16)  # a cluster admin: tests arrange with it
        # The platform's ServiceAccount (deploy/base/rbac.yaml): its requests pass the RBAC authorizer.
        self.platform_token = "platform-" + secrets.token_hex(16)
        self._lock = threading.RLock()
        self._rv = itertools.count(1)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self.url = ""
        self.reset()

    # arranging and inspecting (test thread) ---------------------------------------------------------

    def reset(self) -> None:
        """Forget every object and arrangement; controller delays go back to their defaults."""
        with self._lock:
            # How long a Job runs before it completes, a Knative Service takes to become ready, and
            # whether the cluster has Knative Serving's CRDs (so serves its API group).
            self.job_seconds, self.ready_seconds, self.knative = self._defaults
            # False: Knative's CRDs without Knative running - Services are stored and never get a status.
            self.knative_controller = True
            self._store: dict[tuple[str, str, str], dict] = {}
            self._logs: dict[tuple[str, str, str], list[tuple[dt.datetime, str]]] = {}
            self._job_failures: list[str] = []
            self._revision_failures: list[str] = []
            # What the fake registry holds: image reference (tag and digest) -> what Kaniko put in it.
            self.images: dict[str, dict] = {}
            # Registries Knative's controller can resolve tags from (public, trusted TLS, in its DNS).
            self.resolvable_registries = {"docker.io", "index.docker.io", "ghcr.io", "gcr.io", "quay.io"}
            # A Job whose pod is never created fails at min(activeDeadlineSeconds, this).
            self.job_deadline_cap = 3.0
            self.unpullable: list[str] = []
            # Images whose pull is slow: the pod's containers stay ContainerCreating until released.
            self.slow_pulls: list[str] = []
            # Where Knative Services' address points (None: their cluster-local name); see route_services_to.
            self.service_address: str | None = None
            self._request_failures: list[tuple[str, str, int, str]] = []
            self.requests: list[tuple[str, str]] = []
            # The RBAC objects the platform's token is authorized by (besides stored RoleBindings), and
            # every (verb, group, resource, namespace) the authorizer allowed it.
            self.rbac_objects: list[dict] = [copy.deepcopy(o) for o in _platform_rbac()]
            self.platform_allowed: list[tuple[str, str, str, str, str]] = []

    @property
    def objects(self) -> dict[tuple[str, str, str], dict]:
        with self._lock:
            return copy.deepcopy(self._store)

    def get(self, resource: str, namespace: str, name: str) -> dict | None:
        with self._lock:
            obj = self._store.get((resource, namespace, name))
            return copy.deepcopy(obj) if obj else None

    def list(self, resource: str, namespace: str | None = None, selector: str = "") -> list[dict]:
        with self._lock:
            return [
                copy.deepcopy(obj)
                for (res, ns, _), obj in sorted(self._store.items())
                if res == resource
                and namespace in (None, ns)
                and _matches(obj["metadata"].get("labels", {}), selector)
            ]

    def fail_next_job(self, message: str = "kaniko: error building image") -> None:
        """The next Job created fails (status.failed=1, condition Failed) with ``message`` in its log."""
        with self._lock:
            self._job_failures.append(message)

    def fail_next_revision(self, message: str = "container failed to start") -> None:
        """The next Knative revision does not become ready: Ready=False with ``message``."""
        with self._lock:
            self._revision_failures.append(message)

    def nodes_cannot_pull(self, image_prefix: str) -> None:
        """Nodes cannot pull images starting with ``image_prefix`` (no registries.yaml entry, say): the
        pod's user-container stays waiting in ImagePullBackOff and Knative keeps the revision Unknown until
        its progress deadline (600 s by default, config-deployment), longer than any test waits."""
        with self._lock:
            self.unpullable.append(image_prefix)

    def pull_slowly(self, image_prefix: str) -> None:
        """Pulling images starting with ``image_prefix`` takes until ``finish_pulls()``: a cold pull of a
        large image. The revision's pod stays Pending with its containers waiting in ContainerCreating (the
        kubelet's reason while it pulls), and the Service's Ready stays Unknown, as on a cluster."""
        with self._lock:
            self.slow_pulls.append(image_prefix)

    def finish_pulls(self) -> None:
        """The slow pulls are done: their pods start at the controller's next step."""
        with self._lock:
            self.slow_pulls.clear()

    def route_services_to(self, url: str) -> None:
        """Knative Services made ready from now on report ``url`` as their ``address.url``: a test standing
        in for the cluster's network with a server of its own (a real agent on 127.0.0.1), so that what the
        portal does with a ready Service's address reaches something."""
        with self._lock:
            self.service_address = url

    def fail_next_request(
        self, method: str, path_contains: str, status: int = 500, message: str = "injected failure"
    ) -> None:
        """The next ``method`` request whose path contains ``path_contains`` gets ``status``."""
        with self._lock:
            self._request_failures.append((method.upper(), path_contains, status, message))

    def append_log(
        self, namespace: str, pod: str, container: str, text: str, at: dt.datetime | None = None
    ) -> None:
        with self._lock:
            self._logs.setdefault((namespace, pod, container), []).append((at or _now(), text))

    def kubeconfig_dict(self, namespace: str = "") -> dict:
        return {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
            "users": [{"name": "fake", "user": {"token": self.token}}],
            "contexts": [
                {
                    "name": "fake",
                    "context": {
                        "cluster": "fake",
                        "user": "fake",
                        **({"namespace": namespace} if namespace else {}),
                    },
                }
            ],
            "current-context": "fake",
        }

    @property
    def kubeconfig(self) -> str:
        return yaml.safe_dump(self.kubeconfig_dict())

    @property
    def platform_kubeconfig(self) -> str:
        """The platform's ServiceAccount ``hks/hks``, held to the RBAC of deploy/base/rbac.yaml."""
        config = self.kubeconfig_dict()
        config["users"][0]["user"]["token"] = self.platform_token
        return yaml.safe_dump(config)

    # lifecycle -----------------------------------------------------------------------------------------

    def start(self) -> FakeKubernetes:
        ready = threading.Event()
        threading.Thread(target=self._serve, args=(ready,), name="fake-k8s", daemon=True).start()
        if not ready.wait(10):
            raise RuntimeError("the fake Kubernetes API server did not start")
        return self

    def _serve(self, ready: threading.Event) -> None:
        self._loop = asyncio.new_event_loop()
        app = web.Application(client_max_size=32 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None)
        self._loop.run_until_complete(self._runner.setup())
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        self._loop.run_until_complete(site.start())
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"
        ready.set()
        self._loop.run_forever()

    def stop(self) -> None:
        if self._loop is None:
            return
        future = asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop)
        future.result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)

    # HTTP --------------------------------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        with self._lock:
            self.requests.append((request.method, request.path))
        authorization = request.headers.get("Authorization")
        if authorization == f"Bearer {self.platform_token}":
            refused = await self._authorize(request)
            if refused:
                return refused
        elif authorization != f"Bearer {self.token}":
            return _status(401, "Unauthorized", "Unauthorized")
        injected = self._injected_failure(request)
        if injected:
            return injected
        parts = [p for p in request.path.split("/") if p]
        if parts[:2] == ["apis", KNATIVE_GROUP]:
            if not self.knative:
                return web.Response(status=404, text="404 page not found\n", content_type="text/plain")
            if len(parts) == 3 and request.method == "GET":
                return self._discovery(KNATIVE_GROUP, parts[2])
        try:
            route = self._route(request.path)
        except LookupError as exc:
            return _status(404, "NotFound", str(exc))
        rtype, namespace, name, sub = route
        if sub == "log":
            return await self._pod_log(request, namespace, name)
        if sub and sub != "status":
            return _status(404, "NotFound", f"the fake does not serve the {sub} subresource")
        if request.query.get("watch") in ("true", "1"):
            return _status(400, "BadRequest", "the fake Kubernetes API does not support watch")
        body = None
        if request.method in ("POST", "PUT", "PATCH", "DELETE") and request.body_exists:
            try:
                body = json.loads(await request.read() or b"null")
            except ValueError:
                return _status(400, "BadRequest", "the request body is not JSON")
        with self._lock:
            if sub == "status":
                return self._status_subresource(request, rtype, namespace, name, body)
            return self._dispatch(request, rtype, namespace, name, body)

    # RBAC (the platform's token) ---------------------------------------------------------------------
    # As the API server's RBAC authorizer decides: the union of the rules of every ClusterRoleBinding and
    # RoleBinding naming the subject; a rule with resourceNames never allows create, list or
    # deletecollection; writing a RoleBinding needs "bind" on its role (escalation check,
    # https://kubernetes.io/docs/reference/access-authn-authz/rbac/#restrictions-on-role-binding-creation-or-update).
    # Discovery documents are allowed to every authenticated user (ClusterRole system:discovery).

    def _rules_in(self, namespace: str) -> list[dict]:
        """The rules that apply to the platform in ``namespace`` ("" : cluster-wide ones only)."""
        roles = {
            (o["kind"], o["metadata"].get("namespace", ""), o["metadata"]["name"]): o
            for o in self.rbac_objects
        }
        bindings = [o for o in self.rbac_objects if o["kind"] in ("ClusterRoleBinding", "RoleBinding")]
        bindings += [
            o for (res, _, _), o in self._store.items() if res == "rolebindings.rbac.authorization.k8s.io"
        ]
        rules = []
        for binding in bindings:
            where = binding["metadata"].get("namespace", "") if binding["kind"] == "RoleBinding" else None
            if where is not None and where != namespace:
                continue
            if not any(
                s.get("kind") == "ServiceAccount" and (s.get("namespace"), s.get("name")) == PLATFORM_SA
                for s in binding.get("subjects") or []
            ):
                continue
            ref = binding["roleRef"]
            role = roles.get((ref["kind"], (where or "") if ref["kind"] == "Role" else "", ref["name"]))
            rules += (role or {}).get("rules") or []
        return rules

    @staticmethod
    def _rule_allows(rule: dict, verb: str, group: str, resource: str, name: str) -> bool:
        names = rule.get("resourceNames") or []
        return (
            bool({group, "*"} & set(rule.get("apiGroups") or []))
            and bool({resource, "*"} & set(rule.get("resources") or []))
            and bool({verb, "*"} & set(rule.get("verbs") or []))
            and (not names or (name in names and verb not in ("create", "list", "deletecollection")))
        )

    def _allowed(self, verb: str, group: str, resource: str, namespace: str, name: str) -> bool:
        with self._lock:
            rules = self._rules_in(namespace)
        if any(self._rule_allows(r, verb, group, resource, name) for r in rules):
            with self._lock:
                self.platform_allowed.append((verb, group, resource, namespace, name))
            return True
        return False

    async def _authorize(self, request: web.Request) -> web.Response | None:
        try:
            rtype, namespace, name, sub = self._route(request.path)
        except LookupError:
            return None  # discovery, or what the fake does not serve (it answers 404 itself)
        verb = {"POST": "create", "PUT": "update", "PATCH": "patch"}.get(request.method)
        if verb is None:
            if request.method == "GET":
                verb = "watch" if request.query.get("watch") in ("true", "1") else ("get" if name else "list")
            else:
                verb = "delete" if name else "deletecollection"
        resource = f"{rtype.plural}/{sub}" if sub else rtype.plural
        user = f"system:serviceaccount:{PLATFORM_SA[0]}:{PLATFORM_SA[1]}"
        if not self._allowed(verb, rtype.group, resource, namespace, name):
            where = f' in the namespace "{namespace}"' if namespace else " at the cluster scope"
            what = f"{rtype.plural}.{rtype.group}" if rtype.group else rtype.plural
            return _status(
                403,
                "Forbidden",
                f'{what} "{name}" is forbidden: User "{user}" cannot {verb} resource "{resource}" '
                f'in API group "{rtype.group}"{where}',
            )
        if rtype.plural == "rolebindings" and verb in ("create", "update") and request.body_exists:
            try:
                ref = (json.loads(await request.read() or b"null") or {}).get("roleRef") or {}
            except ValueError:
                return None
            kind = "clusterroles" if ref.get("kind") == "ClusterRole" else "roles"
            if not self._allowed("bind", "rbac.authorization.k8s.io", kind, namespace, ref.get("name", "")):
                return _status(
                    403,
                    "Forbidden",
                    f'rolebindings.rbac.authorization.k8s.io "{name}" is forbidden: user "{user}" is '
                    "attempting to grant RBAC permissions not currently held",
                )
        return None

    @staticmethod
    def _discovery(group: str, version: str) -> web.Response:
        """The APIResourceList of ``group/version`` (what ``kubectl api-resources`` reads)."""
        resources = [
            {
                "name": r.plural,
                "singularName": r.kind.lower(),
                "namespaced": r.namespaced,
                "kind": r.kind,
                "verbs": ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"],
            }
            for r in RESOURCE_TYPES.values()
            if r.group == group and r.version == version
        ]
        if not resources:
            return web.Response(status=404, text="404 page not found\n", content_type="text/plain")
        return web.json_response(
            {
                "kind": "APIResourceList",
                "apiVersion": "v1",
                "groupVersion": f"{group}/{version}",
                "resources": resources,
            }
        )

    def _injected_failure(self, request: web.Request) -> web.Response | None:
        with self._lock:
            for i, (method, needle, status, message) in enumerate(self._request_failures):
                if method == request.method and needle in request.path:
                    del self._request_failures[i]
                    return _status(status, "InternalError" if status >= 500 else "BadRequest", message)
        return None

    def _route(self, path: str) -> tuple[ResourceType, str, str, str]:
        parts = [p for p in path.split("/") if p]
        if parts[:1] == ["api"] and len(parts) >= 2:
            group, version, rest = "", parts[1], parts[2:]
        elif parts[:1] == ["apis"] and len(parts) >= 3:
            group, version, rest = parts[1], parts[2], parts[3:]
        else:
            raise LookupError(f"the fake does not serve {path}")
        namespace = ""
        if rest[:1] == ["namespaces"] and len(rest) >= 3:
            namespace, rest = rest[1], rest[2:]
        if not rest:
            raise LookupError(f"the fake does not serve {path}")
        plural, name, sub = rest[0], rest[1] if len(rest) > 1 else "", rest[2] if len(rest) > 2 else ""
        rtype = RESOURCE_TYPES.get(f"{plural}.{group}" if group else plural)
        if rtype is None or rtype.version != version:
            raise LookupError(f"the server could not find the requested resource ({path})")
        return rtype, namespace, name, sub

    def _dispatch(self, request, rtype, namespace, name, body) -> web.Response:
        method = request.method
        if not name:
            if method == "GET":
                return self._list(
                    rtype,
                    namespace,
                    request.query.get("labelSelector", ""),
                    request.query.get("fieldSelector", ""),
                )
            if method == "POST":
                return self._create(rtype, namespace, body)
            if method == "DELETE":
                return self._delete_collection(rtype, namespace, request.query.get("labelSelector", ""))
        elif method == "GET":
            obj = self._store.get((rtype.name, namespace, name))
            if obj is None:
                return self._not_found(rtype, name)
            return web.json_response(obj)
        elif method in ("PUT", "PATCH"):
            return self._update(rtype, namespace, name, body, request)
        elif method == "DELETE":
            policy = request.query.get("propagationPolicy") or (body or {}).get("propagationPolicy")
            return self._delete(rtype, namespace, name, policy)
        return _status(405, "MethodNotAllowed", f"{method} is not supported here")

    @staticmethod
    def _not_found(rtype: ResourceType, name: str) -> web.Response:
        return _status(404, "NotFound", f'{rtype.name} "{name}" not found', name=name, kind=rtype.plural)

    def _status_subresource(self, request, rtype, namespace, name, body) -> web.Response:
        obj = self._store.get((rtype.name, namespace, name))
        if obj is None:
            return self._not_found(rtype, name)
        if request.method in ("PUT", "PATCH"):
            new = (
                body.get("status", {})
                if request.method == "PUT"
                else _merge_patch(obj, body).get("status", {})
            )
            obj["status"] = new
            obj["metadata"]["resourceVersion"] = str(next(self._rv))
        elif request.method != "GET":
            return _status(405, "MethodNotAllowed", f"{request.method} is not supported on status")
        return web.json_response(obj)

    def _list(self, rtype, namespace, selector, fields: str = "") -> web.Response:
        items = [
            obj
            for (res, ns, _), obj in sorted(self._store.items())
            if res == rtype.name
            and namespace in ("", ns)
            and _matches(obj["metadata"].get("labels", {}), selector)
            and _matches_fields(obj, fields)
        ]
        return web.json_response(
            {
                "apiVersion": rtype.api_version,
                "kind": rtype.kind + "List",
                "metadata": {"resourceVersion": str(next(self._rv))},
                "items": items,
            }
        )

    def _create(self, rtype, namespace, body) -> web.Response:
        if not isinstance(body, dict):
            return _status(400, "BadRequest", "the body must be a JSON object")
        if body.get("apiVersion") != rtype.api_version or body.get("kind") != rtype.kind:
            return _status(
                400,
                "BadRequest",
                f"expected {rtype.api_version} {rtype.kind}, got {body.get('apiVersion')} {body.get('kind')}",
            )
        meta = body.setdefault("metadata", {})
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = meta["generateName"] + _rand()
        name = meta.get("name")
        if not name:
            return _status(422, "Invalid", f"{rtype.kind}: metadata.name: Required value")
        if meta.get("namespace", namespace) != namespace:
            return _status(400, "BadRequest", "the namespace of the object does not match the request")
        if rtype.namespaced and not self._store.get(("namespaces", "", namespace)) and namespace != "default":
            return _status(404, "NotFound", f'namespaces "{namespace}" not found')
        key = (rtype.name, namespace, name)
        if key in self._store:
            return _status(409, "AlreadyExists", f'{rtype.name} "{name}" already exists', name=name)
        body.pop("status", None)
        invalid = self._invalid(body)
        if invalid:
            return invalid
        if rtype.name == KSVC:  # Knative's webhook records who created and last changed a Service
            meta.setdefault("annotations", {}).update({CREATOR: FAKE_USER, LAST_MODIFIER: FAKE_USER})
        meta.update(
            uid=str(uuid.uuid4()),
            resourceVersion=str(next(self._rv)),
            generation=1,
            creationTimestamp=_ts(_now()),
        )
        if rtype.namespaced:
            meta["namespace"] = namespace
        _omit_empty(meta)
        self._store[key] = body
        self._on_written(rtype, body)
        return web.json_response(body, status=201)

    @staticmethod
    def _invalid(obj: dict) -> web.Response | None:
        try:
            validate_manifest(obj)
        except ManifestInvalid as exc:
            return _status(422, "Invalid", str(exc))
        problem = (
            _knative_webhook_problem(obj) if obj.get("apiVersion", "").startswith("serving.knative") else ""
        )
        if problem:
            return _status(
                400,
                "BadRequest",
                f'admission webhook "validation.webhook.serving.knative.dev" '
                f"denied the request: validation failed: {problem}",
            )
        return None

    def _update(self, rtype, namespace, name, body, request) -> web.Response:
        key = (rtype.name, namespace, name)
        stored = self._store.get(key)
        if stored is None:
            return self._not_found(rtype, name)
        if request.method == "PATCH":
            if "json-patch" in request.content_type or "apply-patch" in request.content_type:
                return _status(415, "UnsupportedMediaType", "the fake supports merge patches only")
            updated = _merge_patch(stored, body)
        else:
            wanted_rv = (body or {}).get("metadata", {}).get("resourceVersion")
            if wanted_rv and wanted_rv != stored["metadata"]["resourceVersion"]:
                return _status(
                    409,
                    "Conflict",
                    f'Operation cannot be fulfilled on {rtype.name} "{name}": '
                    "the object has been modified; please apply your changes "
                    "to the latest version and try again",
                )
            updated = copy.deepcopy(body)
        updated.pop("status", None)
        meta = updated.setdefault("metadata", {})
        for field in ("uid", "creationTimestamp", "namespace", "generation"):
            if field in stored["metadata"]:
                meta[field] = stored["metadata"][field]
        invalid = self._invalid(updated)
        if invalid:
            return invalid
        if "status" in stored:
            updated["status"] = stored["status"]
        spec_changed = {k: v for k, v in updated.items() if k not in ("metadata", "status")} != {
            k: v for k, v in stored.items() if k not in ("metadata", "status")
        }
        if rtype.name == KSVC:
            refused = self._knative_annotations(stored, updated, spec_changed)
            if refused:
                return refused
        meta["generation"] = stored["metadata"].get("generation", 1) + (1 if spec_changed else 0)
        _omit_empty(meta)
        meta["resourceVersion"] = stored["metadata"]["resourceVersion"]
        if updated == stored:
            return web.json_response(stored)  # nothing changed: a real server skips the write
        meta["resourceVersion"] = str(next(self._rv))
        self._store[key] = updated
        if spec_changed:
            self._on_written(rtype, updated)
        return web.json_response(updated)

    @staticmethod
    def _knative_annotations(stored: dict, updated: dict, spec_changed: bool) -> web.Response | None:
        """Knative's webhook: the creator annotation is immutable; lastModifier changes with the spec."""
        old = stored["metadata"].get("annotations", {})
        new = updated["metadata"].setdefault("annotations", {})
        if new.get(CREATOR) != old.get(CREATOR):
            return _status(
                400,
                "BadRequest",
                'admission webhook "validation.webhook.serving.knative.dev" denied '
                f"the request: validation failed: annotation value is immutable: "
                f"metadata.annotations.{CREATOR}",
            )
        if spec_changed:
            new[LAST_MODIFIER] = FAKE_USER
        elif new.get(LAST_MODIFIER) != old.get(LAST_MODIFIER):
            return _status(
                400,
                "BadRequest",
                f"invalid value: {new.get(LAST_MODIFIER, '')}: metadata.annotations.{LAST_MODIFIER}",
            )
        return None

    def _delete(self, rtype, namespace, name, policy=None) -> web.Response:
        obj = self._store.pop((rtype.name, namespace, name), None)
        if obj is None:
            return self._not_found(rtype, name)
        # batch/v1 Jobs orphan their pods unless asked otherwise, as on a real server.
        if policy != "Orphan" and (rtype.name != "jobs.batch" or policy in ("Background", "Foreground")):
            self._cascade(rtype, obj)
        return _status(200, "", "", name=name, kind=rtype.plural, uid=obj["metadata"]["uid"])

    def _delete_collection(self, rtype, namespace, selector) -> web.Response:
        for (res, ns, name), obj in list(self._store.items()):
            if (
                res == rtype.name
                and namespace in ("", ns)
                and _matches(obj["metadata"].get("labels", {}), selector)
            ):
                self._delete(rtype, ns, name, "Background")
        return _status(200, "", "", kind=rtype.plural)

    def _cascade(self, rtype: ResourceType, obj: dict) -> None:
        """Garbage collection: what an object owns goes with it."""
        namespace, name = obj["metadata"].get("namespace", ""), obj["metadata"]["name"]
        if rtype.name == "namespaces":
            owned = [key for key in self._store if key[1] == name]
        elif rtype.name == "jobs.batch":
            owned = [
                key
                for key, o in self._store.items()
                if key[0] == "pods"
                and key[1] == namespace
                and o["metadata"].get("labels", {}).get("job-name") == name
            ]
        elif rtype.name == KSVC:
            owned = [
                key
                for key, o in self._store.items()
                if key[0] in ("pods", "revisions.serving.knative.dev")
                and key[1] == namespace
                and o["metadata"].get("labels", {}).get("serving.knative.dev/service") == name
            ]
        else:
            owned = []
        for key in owned:
            self._store.pop(key, None)

    # Controllers ---------------------------------------------------------------------------------
    #
    # Each behaviour below is what the real component does, with where it is written down:
    # - pods go Pending (unscheduled, no container statuses), then their containers wait
    #   (ContainerCreating, or PodInitializing behind an init container), then run
    #   (https://kubernetes.io/docs/concepts/workloads/pods/pod-lifecycle/#container-states);
    # - the log endpoint answers 400 "container ... is waiting to start" until a container has started
    #   (kubernetes pkg/kubelet/kubelet_pods.go validateContainerLogStatus);
    # - Pod Security Admission enforces the level of the namespace's pod-security.kubernetes.io/enforce
    #   label when a pod is created; a Job whose pod is refused records a FailedCreate event, counts no
    #   failed pod and fails only by its deadline, with condition Failed/DeadlineExceeded
    #   (https://kubernetes.io/docs/concepts/security/pod-security-admission/,
    #   https://kubernetes.io/docs/concepts/workloads/controllers/job/#job-termination-and-cleanup);
    # - Kaniko leaves every mount point of its container out of the image it builds (osscontainertools/
    #   kaniko pkg/util/fs_util.go DetectFilesystemIgnoreList), and writes the digest to --digest-file,
    #   which Kubernetes reports as state.terminated.message when that file is the container's
    #   terminationMessagePath (https://kubernetes.io/docs/tasks/debug/debug-application/
    #   determine-reason-pod-failure/);
    # - Knative's controller resolves an image tag to a digest itself, with its own trust and DNS, not the
    #   nodes'; a registry it cannot reach fails the revision with ContainerMissing, and a digest is not
    #   resolved at all (https://knative.dev/docs/serving/tag-resolution/, knative/serving
    #   pkg/reconciler/revision/resolve.go);
    # - a container whose image lacks the code exits at start; Knative marks the revision
    #   ContainerHealthy=False "Container failed with: ..." (knative/serving
    #   pkg/reconciler/revision/reconcile_resources.go).

    def _on_written(self, rtype: ResourceType, obj: dict) -> None:
        key = (rtype.name, obj["metadata"].get("namespace", ""), obj["metadata"]["name"])
        uid, generation = obj["metadata"]["uid"], obj["metadata"]["generation"]
        if rtype.name == "jobs.batch":
            failure = self._job_failures.pop(0) if self._job_failures else None
            obj["status"] = {"active": 1, "startTime": _ts(_now())}
            self._start_job(key, obj, failure)
        elif rtype.name == KSVC and self.knative_controller:
            failure = self._revision_failures.pop(0) if self._revision_failures else None
            obj["status"] = {
                "observedGeneration": generation,
                "conditions": [
                    {"type": t, "status": "Unknown", "reason": "Deploying", "lastTransitionTime": _ts(_now())}
                    for t in ("ConfigurationsReady", "Ready", "RoutesReady")
                ],
            }
            self._loop.call_later(self.ready_seconds, self._reconcile_ksvc, key, uid, generation, failure)

    def _current(self, key, uid, generation=None) -> dict | None:
        obj = self._store.get(key)
        if obj is None or obj["metadata"]["uid"] != uid:
            return None
        if generation is not None and obj["metadata"]["generation"] != generation:
            return None  # a newer write superseded this one; its own reconcile will run
        return obj

    def _later(self, seconds: float, callback, *args) -> None:
        def locked():
            with self._lock:
                callback(*args)

        self._loop.call_later(seconds, locked)

    # Events ----------------------------------------------------------------------------------------

    def record_event(self, namespace: str, kind: str, name: str, reason: str, message: str, type_="Warning"):
        event_name = f"{name}.{uuid.uuid4().hex[:16]}"
        self._store[("events", namespace, event_name)] = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {
                "name": event_name,
                "namespace": namespace,
                "uid": str(uuid.uuid4()),
                "resourceVersion": str(next(self._rv)),
                "creationTimestamp": _ts(_now()),
            },
            "involvedObject": {"kind": kind, "name": name, "namespace": namespace},
            "reason": reason,
            "message": message,
            "type": type_,
            "count": 1,
            "firstTimestamp": _ts(_now()),
            "lastTimestamp": _ts(_now()),
        }

    # Pod Security Admission ------------------------------------------------------------------------

    def _pod_security_violations(self, namespace: str, pod_spec: dict) -> tuple[str, list[str]]:
        """(level, violations) of ``pod_spec`` against the namespace's enforced level (the checks of the
        Pod Security Standards the platform's pods could trip)."""
        ns = self._store.get(("namespaces", "", namespace)) or {}
        level = (
            ns.get("metadata", {}).get("labels", {}).get("pod-security.kubernetes.io/enforce", "privileged")
        )
        if level == "privileged":
            return level, []
        pod_context = pod_spec.get("securityContext", {})
        problems = []
        containers = [*pod_spec.get("initContainers", []), *pod_spec.get("containers", [])]
        for container in containers:
            context = container.get("securityContext", {})
            if context.get("privileged"):
                problems.append(f'privileged (container "{container["name"]}" must not set privileged=true)')
            added = set(context.get("capabilities", {}).get("add", [])) - BASELINE_CAPABILITIES
            if added:
                problems.append(
                    f'non-default capabilities (container "{container["name"]}": {sorted(added)})'
                )
            if level != "restricted":
                continue
            if context.get("allowPrivilegeEscalation") is not False:
                problems.append(f'allowPrivilegeEscalation != false (container "{container["name"]}")')
            if "ALL" not in context.get("capabilities", {}).get("drop", []):
                problems.append(f'unrestricted capabilities (container "{container["name"]}" must drop ALL)')
            if not context.get("runAsNonRoot", pod_context.get("runAsNonRoot")):
                problems.append(f'runAsNonRoot != true (container "{container["name"]}")')
            if context.get("runAsUser", pod_context.get("runAsUser")) == 0:
                problems.append(f'runAsUser=0 (container "{container["name"]}" must not run as root)')
            if set(context.get("capabilities", {}).get("add", [])) - {"NET_BIND_SERVICE"}:
                problems.append(
                    f'unrestricted capabilities (container "{container["name"]}" adds more '
                    "than NET_BIND_SERVICE)"
                )
            seccomp = context.get("seccompProfile", pod_context.get("seccompProfile", {})).get("type")
            if seccomp not in ("RuntimeDefault", "Localhost"):
                problems.append(f'seccompProfile (container "{container["name"]}")')
        for flag in ("hostNetwork", "hostPID", "hostIPC"):
            if pod_spec.get(flag):
                problems.append(f"host namespaces ({flag}=true)")
        return level, problems

    # Jobs and the build pod ------------------------------------------------------------------------

    def _start_job(self, key, job: dict, failure: str | None) -> None:
        namespace, name, uid = key[1], key[2], job["metadata"]["uid"]
        pod_spec = copy.deepcopy(job["spec"]["template"]["spec"])
        pod_name = f"{name}-{_rand()}"
        level, problems = self._pod_security_violations(namespace, pod_spec)
        if problems:
            self.record_event(
                namespace,
                "Job",
                name,
                "FailedCreate",
                f'Error creating: pods "{pod_name}" is forbidden: violates PodSecurity "{level}:latest": '
                + ", ".join(problems),
            )
            deadline = min(job["spec"].get("activeDeadlineSeconds", 3600), self.job_deadline_cap)
            self._later(deadline, self._job_deadline, key, uid)
            return
        labels = {"job-name": name, "batch.kubernetes.io/job-name": name, "controller-uid": uid}
        self._make_pod(namespace, pod_name, labels, pod_spec)
        step = self.job_seconds / 4
        self._later(step, self._job_pod_initializing, namespace, pod_name)
        self._later(2 * step, self._job_pod_running, namespace, pod_name)
        self._later(self.job_seconds, self._finish_job, key, uid, pod_name, failure)

    def _job_deadline(self, key, uid) -> None:
        job = self._current(key, uid)
        if job is None or "conditions" in job["status"]:
            return
        now = _ts(_now())
        message = "Job was active longer than specified deadline"
        job["status"] = {
            "startTime": job["status"]["startTime"],
            "conditions": [
                {
                    "type": t,
                    "status": "True",
                    "reason": "DeadlineExceeded",
                    "message": message,
                    "lastTransitionTime": now,
                }
                for t in ("FailureTarget", "Failed")
            ],
        }
        job["metadata"]["resourceVersion"] = str(next(self._rv))

    def _job_pod_initializing(self, namespace, pod_name) -> None:
        pod = self._store.get(("pods", namespace, pod_name))
        if pod is None:
            return
        spec = pod["spec"]
        pod["status"]["initContainerStatuses"] = [
            _container_status(c, running=True) for c in spec.get("initContainers", [])
        ]
        pod["status"]["containerStatuses"] = [
            _container_status(
                c, waiting="PodInitializing" if spec.get("initContainers") else "ContainerCreating"
            )
            for c in spec["containers"]
        ]
        for container in spec.get("initContainers", []):
            self.append_log(namespace, pod_name, container["name"], "fetched the build context")
        pod["metadata"]["resourceVersion"] = str(next(self._rv))

    def _job_pod_running(self, namespace, pod_name) -> None:
        pod = self._store.get(("pods", namespace, pod_name))
        if pod is None:
            return
        spec = pod["spec"]
        pod["status"]["phase"] = "Running"
        pod["status"]["initContainerStatuses"] = [
            _container_status(c, terminated=(0, "Completed", "")) for c in spec.get("initContainers", [])
        ]
        pod["status"]["containerStatuses"] = [_container_status(c, running=True) for c in spec["containers"]]
        for container in spec["containers"]:
            self.append_log(
                namespace, pod_name, container["name"], f"INFO Retrieving build context ({container['name']})"
            )
            self.append_log(namespace, pod_name, container["name"], "INFO Building the image")
        pod["metadata"]["resourceVersion"] = str(next(self._rv))

    def _finish_job(self, key, uid, pod_name: str, failure: str | None) -> None:
        job = self._current(key, uid)
        if job is None:
            return
        namespace = key[1]
        pod = self._store.get(("pods", namespace, pod_name))
        if pod is None or pod["status"]["phase"] != "Running":
            return
        statuses = []
        for container in pod["spec"]["containers"]:
            message = ""
            if failure:
                self.append_log(namespace, pod_name, container["name"], f"error building image: {failure}")
            else:
                message = self._kaniko_push(namespace, pod, container)
            statuses.append(
                _container_status(
                    container, terminated=(1 if failure else 0, "Error" if failure else "Completed", message)
                )
            )
        pod["status"]["containerStatuses"] = statuses
        pod["status"]["phase"] = "Failed" if failure else "Succeeded"
        pod["metadata"]["resourceVersion"] = str(next(self._rv))
        now = _ts(_now())
        if failure:
            job["status"] = {
                "failed": 1,
                "startTime": job["status"]["startTime"],
                "conditions": [
                    {
                        "type": "FailureTarget",
                        "status": "True",
                        "reason": "BackoffLimitExceeded",
                        "message": failure,
                        "lastTransitionTime": now,
                    },
                    {
                        "type": "Failed",
                        "status": "True",
                        "reason": "BackoffLimitExceeded",
                        "message": f"Job has reached the specified backoff limit: {failure}",
                        "lastTransitionTime": now,
                    },
                ],
            }
        else:
            job["status"] = {
                "succeeded": 1,
                "startTime": job["status"]["startTime"],
                "completionTime": now,
                "conditions": [
                    {"type": "SuccessCriteriaMet", "status": "True", "lastTransitionTime": now},
                    {"type": "Complete", "status": "True", "lastTransitionTime": now},
                ],
            }
        job["metadata"]["resourceVersion"] = str(next(self._rv))

    def _kaniko_push(self, namespace: str, pod: dict, container: dict) -> str:
        """Play Kaniko: the image gets what the Dockerfile puts outside the container's mount points.
        Returns the termination message (the digest, when --digest-file names the termination log)."""
        args = {a.split("=", 1)[0]: a.split("=", 1)[1] for a in container.get("args", []) if "=" in a}
        destination = args.get("--destination", "")
        if not destination:
            self.append_log(namespace, pod["metadata"]["name"], container["name"], "INFO Done")
            return ""
        dockerfile = self._mounted_file(namespace, pod["spec"], container, args.get("--dockerfile", ""))
        mounts = [m["mountPath"] for m in container.get("volumeMounts", [])] + list(KUBELET_MOUNTS)
        recipe = _dockerfile_recipe(dockerfile or "")
        has_code = bool(recipe["copies"]) and not any(
            _under(path, mount) for path in recipe["copies"] for mount in mounts
        )
        digest = "sha256:" + hashlib.sha256(f"{destination}\n{dockerfile}\n{has_code}".encode()).hexdigest()
        repository = _repository(destination)
        self.images[f"{repository}@{digest}"] = {"tag": destination, "has_code": has_code, **recipe}
        self.images[destination] = self.images[f"{repository}@{digest}"]
        self.append_log(namespace, pod["metadata"]["name"], container["name"], f"INFO Pushed {destination}")
        path = container.get("terminationMessagePath", "/dev/termination-log")
        return digest if args.get("--digest-file") == path else ""

    def _mounted_file(self, namespace: str, pod_spec: dict, container: dict, path: str) -> str | None:
        """The text of ``path`` when it is a file of a ConfigMap volume the container mounts."""
        volumes = {v["name"]: v for v in pod_spec.get("volumes", [])}
        for mount in container.get("volumeMounts", []):
            prefix = mount["mountPath"].rstrip("/") + "/"
            volume = volumes.get(mount["name"], {})
            if path.startswith(prefix) and "configMap" in volume:
                config_map = self._store.get(("configmaps", namespace, volume["configMap"]["name"]))
                return (config_map or {}).get("data", {}).get(path[len(prefix) :])
        return None

    # Knative ---------------------------------------------------------------------------------------

    def _image_problem(self, image: str) -> str:
        """Why Knative's controller cannot take ``image``: a tag it cannot resolve (ContainerMissing)."""
        if "@sha256:" in image:
            return ""
        first = image.split("/", 1)[0]
        host = (
            first if "/" in image and ("." in first or ":" in first or first == "localhost") else "docker.io"
        )
        if host in self.resolvable_registries:
            return ""
        return (
            f'Unable to fetch image "{image}": failed to resolve image to digest: '
            f'Get "https://{host}/v2/": dial tcp: lookup {host.split(":")[0]}: no such host'
        )

    def _reconcile_ksvc(self, key, uid, generation, failure: str | None) -> None:
        with self._lock:
            ksvc = self._current(key, uid, generation)
            if ksvc is None:
                return
            namespace, name = key[1], key[2]
            template = ksvc["spec"]["template"]
            revision = template.get("metadata", {}).get("name") or f"{name}-{generation:05d}"
            image = template["spec"]["containers"][0].get("image", "")
            failure = failure or self._image_problem(image)
            if failure:
                self._revision_failed(ksvc, generation, revision, failure)
                return
            pod_spec = self._revision_pod_spec(template)
            level, problems = self._pod_security_violations(namespace, pod_spec)
            runtime_class = pod_spec.get("runtimeClassName")
            if runtime_class and ("runtimeclasses.node.k8s.io", "", runtime_class) not in self._store:
                # The RuntimeClass admission plugin refuses the pod (kubernetes plugin/pkg/admission/
                # runtimeclass/admission.go: "pod rejected: RuntimeClass %q not found"); the ReplicaSet
                # records FailedCreate and Knative fails the revision as for a Pod Security refusal.
                replica_set = f"{revision}-deployment-{_rand(10)}"
                refusal = (
                    f'pods "{replica_set}-{_rand()}" is forbidden: pod rejected: '
                    f'RuntimeClass "{runtime_class}" not found'
                )
                self.record_event(
                    namespace, "ReplicaSet", replica_set, "FailedCreate", f"Error creating: {refusal}"
                )
                self._revision_failed(ksvc, generation, revision, refusal)
                return
            if problems:
                # The Deployment's ReplicaSet cannot create the pod: FailedCreate, and the Deployment's
                # ReplicaFailure condition, which Knative turns into the revision's failure (knative/serving
                # pkg/apis/serving/k8s_lifecycle.go TransformDeploymentStatus).
                replica_set = f"{revision}-deployment-{_rand(10)}"
                refusal = (
                    f'pods "{replica_set}-{_rand()}" is forbidden: violates PodSecurity "{level}:latest": '
                    + ", ".join(problems)
                )
                self.record_event(
                    namespace, "ReplicaSet", replica_set, "FailedCreate", f"Error creating: {refusal}"
                )
                self._revision_failed(ksvc, generation, revision, refusal)
                return
            pod = self._make_revision(namespace, name, revision, ksvc, generation, pod_spec)
            step = self.ready_seconds / 2
            self._later(step, self._revision_pod_creating, namespace, pod)
            self._later(2 * step, self._revision_pod_started, key, uid, generation, revision, pod, image)

    def _revision_failed(self, ksvc: dict, generation: int, revision: str, message: str) -> None:
        now = _ts(_now())
        status = {"observedGeneration": generation, "latestCreatedRevisionName": revision}
        status["conditions"] = [
            {
                "type": t,
                "status": "False",
                "reason": "RevisionFailed",
                "message": f'Revision "{revision}" failed with message: {message}',
                "lastTransitionTime": now,
            }
            for t in ("ConfigurationsReady", "Ready")
        ]
        previous = ksvc.get("status", {})
        for field in ("url", "address", "latestReadyRevisionName", "traffic"):
            if field in previous:
                status[field] = previous[field]
        ksvc["status"] = status
        ksvc["metadata"]["resourceVersion"] = str(next(self._rv))

    def _revision_pod_creating(self, namespace: str, pod_name: str) -> None:
        pod = self._store.get(("pods", namespace, pod_name))
        if pod is None:
            return
        pod["status"]["containerStatuses"] = [
            _container_status(c, waiting="ContainerCreating") for c in pod["spec"]["containers"]
        ]
        pod["metadata"]["resourceVersion"] = str(next(self._rv))

    def _revision_pod_started(self, key, uid, generation, revision, pod_name, image) -> None:
        ksvc = self._current(key, uid, generation)
        namespace, name = key[1], key[2]
        pod = self._store.get(("pods", namespace, pod_name))
        if ksvc is None or pod is None:
            return
        if any(image.startswith(prefix) for prefix in self.slow_pulls):  # still pulling: look again soon
            args = (key, uid, generation, revision, pod_name, image)
            self._later(0.05, self._revision_pod_started, *args)
            return
        if any(image.startswith(prefix) for prefix in self.unpullable):
            user, queue = pod["spec"]["containers"]
            message = f'Back-off pulling image "{image}"'
            pod["status"]["containerStatuses"] = [
                {
                    **_container_status(user, waiting="ImagePullBackOff"),
                    "state": {"waiting": {"reason": "ImagePullBackOff", "message": message}},
                },
                _container_status(queue, running=True),
            ]
            pod["metadata"]["resourceVersion"] = str(next(self._rv))
            return
        built = self.images.get(image)
        if built is not None and not built["has_code"]:
            crash = built["missing"]
            self.append_log(namespace, pod_name, "user-container", crash)
            user, queue = pod["spec"]["containers"]
            pod["status"]["phase"] = "Running"
            pod["status"]["containerStatuses"] = [
                {
                    **_container_status(user, waiting="CrashLoopBackOff"),
                    "restartCount": 1,
                    "lastState": {"terminated": {"exitCode": 1, "reason": "Error", "message": crash}},
                },
                _container_status(queue, running=True),
            ]
            pod["metadata"]["resourceVersion"] = str(next(self._rv))
            self._revision_failed(ksvc, generation, revision, f"Container failed with: {crash}")
            return
        pod["status"]["phase"] = "Running"
        pod["status"]["containerStatuses"] = [
            _container_status(c, running=True) for c in pod["spec"]["containers"]
        ]
        pod["metadata"]["resourceVersion"] = str(next(self._rv))
        self.append_log(namespace, pod_name, "user-container", f"listening on :8080 ({revision})")
        self.append_log(namespace, pod_name, "queue-proxy", "queue-proxy started")
        now = _ts(_now())
        ksvc["status"] = {
            "observedGeneration": generation,
            "latestCreatedRevisionName": revision,
            "latestReadyRevisionName": revision,
            "url": self._public_url(ksvc, name, namespace),
            "address": {"url": self.service_address or f"http://{name}.{namespace}.svc.cluster.local"},
            "traffic": [{"revisionName": revision, "latestRevision": True, "percent": 100}],
            "conditions": [
                {"type": t, "status": "True", "lastTransitionTime": now}
                for t in ("ConfigurationsReady", "Ready", "RoutesReady")
            ],
        }
        ksvc["metadata"]["resourceVersion"] = str(next(self._rv))

    def _public_url(self, ksvc: dict, name: str, namespace: str) -> str:
        """A cluster-local Service's URL is its internal one (https://knative.dev/docs/serving/services/
        private-services/); others get the config-domain's."""
        labels = ksvc["metadata"].get("labels", {})
        if labels.get("networking.knative.dev/visibility") == "cluster-local":
            return f"http://{name}.{namespace}.svc.cluster.local"
        return f"http://{name}.{namespace}.example.test"

    @staticmethod
    def _revision_pod_spec(template: dict) -> dict:
        """The pod Knative's Deployment asks for: the template's pod fields, the user's container as
        ``user-container`` (its probes' port filled in) and the queue-proxy sidecar."""
        spec = template["spec"]
        user = copy.deepcopy({**spec["containers"][0], "name": "user-container"})
        port = (user.get("ports") or [{}])[0].get("containerPort", 8080)
        for probe in ("readinessProbe", "livenessProbe"):  # Knative fills in the port of the user's probes
            if "httpGet" in user.get(probe, {}):
                user[probe]["httpGet"].setdefault("port", port)
        pod = {k: copy.deepcopy(v) for k, v in spec.items() if k in REVISION_POD_FIELDS}
        return {**pod, "containers": [user, copy.deepcopy(QUEUE_PROXY)]}

    def _make_revision(self, namespace, service, revision, ksvc, generation, pod_spec) -> str:
        labels = {
            "serving.knative.dev/service": service,
            "serving.knative.dev/configuration": service,
            "serving.knative.dev/revision": revision,
        }
        template = ksvc["spec"]["template"]
        self._store[("revisions.serving.knative.dev", namespace, revision)] = {
            "apiVersion": "serving.knative.dev/v1",
            "kind": "Revision",
            "metadata": {
                "name": revision,
                "namespace": namespace,
                "uid": str(uuid.uuid4()),
                "labels": {**template.get("metadata", {}).get("labels", {}), **labels},
                "annotations": template.get("metadata", {}).get("annotations", {}),
                "generation": 1,
                "resourceVersion": str(next(self._rv)),
                "creationTimestamp": _ts(_now()),
            },
            "spec": template["spec"],
            "status": {"conditions": [{"type": "Ready", "status": "True"}]},
        }
        # Scale the old revisions' pods away and start one for the new revision.
        for key, obj in list(self._store.items()):
            if (
                key[0] == "pods"
                and key[1] == namespace
                and obj["metadata"].get("labels", {}).get("serving.knative.dev/service") == service
            ):
                del self._store[key]
        return self._make_pod(namespace, f"{revision}-deployment-{_rand(10)}-{_rand()}", labels, pod_spec)

    def _make_pod(self, namespace, name, labels, pod_spec) -> str:
        """A pod as the scheduler first sees it: Pending, no container has a status yet."""
        keep = (
            "containers",
            "initContainers",
            "serviceAccountName",
            "restartPolicy",
            "securityContext",
            "volumes",
        )
        self._store[("pods", namespace, name)] = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": name,
                "namespace": namespace,
                "labels": labels,
                "uid": str(uuid.uuid4()),
                "resourceVersion": str(next(self._rv)),
                "creationTimestamp": _ts(_now()),
            },
            "spec": {k: v for k, v in pod_spec.items() if k in keep},
            "status": {"phase": "Pending"},
        }
        return name

    # Pod logs ------------------------------------------------------------------------------------

    def _log_lines(self, namespace, pod, container, query) -> list[str]:
        lines = self._logs.get((namespace, pod, container), [])
        if "sinceTime" in query:
            since = _parse_ts(query["sinceTime"])
            lines = [entry for entry in lines if entry[0] >= since]
        elif "sinceSeconds" in query:
            since = _now() - dt.timedelta(seconds=int(query["sinceSeconds"]))
            lines = [entry for entry in lines if entry[0] >= since]
        if "tailLines" in query:
            lines = lines[-int(query["tailLines"]) :] if int(query["tailLines"]) else []
        stamp = query.get("timestamps") in ("true", "1")
        return [f"{_ts_nano(moment)} {text}\n" if stamp else f"{text}\n" for moment, text in lines]

    async def _pod_log(self, request: web.Request, namespace: str, name: str) -> web.StreamResponse:
        with self._lock:
            pod = self._store.get(("pods", namespace, name))
            if pod is None:
                return _status(404, "NotFound", f'pods "{name}" not found')
            names = [c["name"] for c in pod["spec"]["containers"]]
            names += [c["name"] for c in pod["spec"].get("initContainers", [])]
            container = request.query.get("container") or (names[0] if len(names) == 1 else "")
            if not container:
                return _status(
                    400,
                    "BadRequest",
                    f"a container name must be specified for pod {name}, choose one of: {names}",
                )
            if container not in names:
                return _status(400, "BadRequest", f"container {container} is not valid for pod {name}")
            waiting = _waiting_reason(pod, container)
            if waiting:  # the kubelet's answer for a container that has not started yet
                return _status(
                    400,
                    "BadRequest",
                    f'container "{container}" in pod "{name}" is waiting to start: {waiting}',
                )
            lines = self._log_lines(namespace, name, container, request.query)
            sent = len(self._logs.get((namespace, name, container), []))
        if request.query.get("follow") not in ("true", "1"):
            return web.Response(text="".join(lines), content_type="text/plain")
        return await self._follow(request, namespace, name, container, lines, sent)

    async def _follow(self, request, namespace, name, container, lines, sent) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/plain"})
        await response.prepare(request)
        stamp = request.query.get("timestamps") in ("true", "1")
        try:
            await response.write("".join(lines).encode())
            while True:
                with self._lock:
                    pod = self._store.get(("pods", namespace, name))
                    fresh = self._logs.get((namespace, name, container), [])[sent:]
                    sent += len(fresh)
                    # the kubelet ends a followed log when the container exits
                    ended = pod is None or _container_terminated(pod, container)
                for moment, text in fresh:
                    await response.write((f"{_ts_nano(moment)} {text}\n" if stamp else f"{text}\n").encode())
                if ended and not fresh:
                    break
                await asyncio.sleep(0.05)
            await response.write_eof()
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        return response


# Fixtures -------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def fake_k8s_server():
    try:  # fail here, clearly, rather than as a 500 inside the server
        knative_schemas.validate(
            {"apiVersion": "serving.knative.dev/v1", "kind": "Service", "metadata": {"name": "probe"}}
        )
    except (OSError, ImportError, knative_schemas.KnativeInvalid) as exc:
        pytest.fail(f"Knative schemas ({knative_schemas.source()}) unusable: {exc}")
    server = FakeKubernetes().start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def fake_vcluster_server():
    server = FakeKubernetes(knative=False).start()
    yield server
    server.stop()


@pytest.fixture
def fake_vcluster(fake_vcluster_server):
    """A second API server without Knative Serving: a vCluster whose host (``fake_k8s``) runs Knative."""
    fake_vcluster_server.reset()
    yield fake_vcluster_server
    fake_vcluster_server.reset()


@pytest.fixture
def fake_k8s(fake_k8s_server):
    """The fake Kubernetes API server, empty at the start of the test."""
    fake_k8s_server.reset()
    yield fake_k8s_server
    fake_k8s_server.reset()


@pytest.fixture
def knative_project(project, fake_k8s):
    """The persona project "acme" on the ``knative`` backend; its encrypted kubeconfig points at the fake."""
    from functions.models import Backend
    from functions.services.projects import project_set_kubeconfig

    project.backend = Backend.KNATIVE
    project.save()
    return project_set_kubeconfig(project=project, kubeconfig_text=fake_k8s.kubeconfig, actor=None)


@pytest.fixture
def knative_hello(project, owner, fake_k8s):
    """acme on the Knative backend with a running ``hello`` (so it has a pod with logs); the function has
    ``ns`` and ``pod`` set to where the fake keeps that pod."""
    import time

    from functions.backends import get_backend
    from functions.backends.base import Resources, Scale, ServiceSpec
    from functions.services.functions import function_ref
    from functions.services.projects import project_set_kubeconfig
    from tests.support.factories import FunctionFactory

    project.backend = "knative"
    project.save()
    project_set_kubeconfig(project=project, kubeconfig_text=fake_k8s.kubeconfig, actor=owner)
    function = FunctionFactory(project=project, name="hello", status="ready")
    backend = get_backend(project)
    backend.apply(
        ServiceSpec(
            ref=function_ref(function),
            revision="hello-00001",
            runtime="node",
            kind="http",
            artifact="img:1",
            scale=Scale(0, 1, 10, 0),
            resources=Resources(100, 128),
            labels={"hks.dev/project": "acme", "hks.dev/function": "hello"},
        )
    )
    for _ in range(400):  # the fake's Knative controller makes the pod as the revision becomes ready
        if backend.status(function_ref(function)).ready:
            break
        time.sleep(0.05)
    # the backend works in the kubeconfig's namespace ("default" in the fake's kubeconfig)
    function.ns = next(
        ns for ns in ("acme", "default") if fake_k8s.list("pods", ns, "serving.knative.dev/service=hello")
    )
    pods = fake_k8s.list("pods", function.ns, "serving.knative.dev/service=hello")
    function.pod = pods[0]["metadata"]["name"]
    return function


def platform_namespace(
    core, *, namespace: str = "hks", secret: str = "hks-registry", docker_config: str = "eyJhdXRocyI6IHt9fQ=="
) -> None:
    """What an operator makes before the platform runs on a cluster: its namespace and the registry's
    push secret in it (docs/install-k3s.md), through ``core`` (a CoreV1Api of the cluster's admin)."""
    core.create_namespace({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})
    core.create_namespaced_secret(
        namespace,
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": secret},
            "type": "kubernetes.io/dockerconfigjson",
            "data": {".dockerconfigjson": docker_config},  # base64; the default is {"auths": {}}
        },
    )
