"""Agent sessions on Knative: the session operations of ``FunctionBackend`` (manifests in ``k8s_sessions``).

Before anything is written the cluster is asked whether it can run one: Knative Serving present
(``knative_presence``), a session image configured (``HKS_AGENT_SESSION_IMAGE``), and - with
``HKS_AGENT_RUNTIME_CLASS`` set - that RuntimeClass present (a namespace-scoped kubeconfig may not read
RuntimeClasses: then the pod's own refusal, ``RuntimeClass "x" not found``, is reported instead). A create
waits for the Knative Service to become Ready (its one pod pulled, started and accepting connections) for
at most ``HKS_KNATIVE_SESSION_CREATE_WAIT_SECONDS`` - less than the clients wait for an answer - and
deletes what it wrote when the revision fails in that time. A session not ready by then is returned
*starting* (no host): ``ready()`` is asked again later (the data plane, the reaper) until it is Ready or
has failed.

Nothing in the cluster enforces the deadline: it is an annotation, and the portal's beat
(``sessions_collect_expired``) deletes the session once it is past.
"""

from __future__ import annotations

import copy
import datetime as dt
import time
from urllib.parse import urlsplit

import urllib3
from django.conf import settings
from kubernetes import client
from kubernetes.client.rest import ApiException

from functions.backends import k8s_sessions as manifests
from functions.backends.base import BackendError, SessionEndpoint, SessionSpec
from functions.backends.k8s_api import TIMEOUT, backend_error
from functions.backends.k8s_manifests import LABEL_PROJECT, MANAGED_BY

MAX_HOST = 100  # AgentSession.agent_host


class KnativeSessions:
    poll_seconds = 0.1

    def __init__(self, backend):
        self.backend = backend
        self.node = client.NodeV1Api(backend._api)
        self._runtime_class_checked = False

    # checks -----------------------------------------------------------------------------------------

    def _require_session_support(self) -> None:
        cluster = self.backend.cluster
        if not cluster.session_image:
            raise BackendError(
                "agent sessions on Knative need the session image: set HKS_AGENT_SESSION_IMAGE to an image "
                "built from deploy/session-image/Dockerfile",
                permanent=True,
            )
        self.backend._require_knative()
        wanted = cluster.agent_runtime_class
        if wanted and not self._runtime_class_checked:
            try:
                self.node.read_runtime_class(wanted, _request_timeout=TIMEOUT)
            except ApiException as exc:
                if exc.status == 404:
                    raise BackendError(
                        f'the cluster has no RuntimeClass "{wanted}" (HKS_AGENT_RUNTIME_CLASS): agent '
                        "sessions run only under it; install it (docs/operations.md) or unset the setting",
                        permanent=True,
                    ) from exc
                if exc.status != 403:  # 403: a namespace-scoped kubeconfig; the pod will say
                    raise backend_error(exc) from exc
            except (urllib3.exceptions.HTTPError, OSError) as exc:
                raise backend_error(exc) from exc
            self._runtime_class_checked = True

    # operations -------------------------------------------------------------------------------------

    def create(self, spec: SessionSpec) -> SessionEndpoint:
        self._require_session_support()
        backend = self.backend
        backend._ensure_namespace(spec.namespace, spec.project)
        deadline = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=spec.timeout_seconds)
        backend._upsert_typed(manifests.token_secret(spec), backend.core, "secret")
        policy = manifests.session_network_policy(spec, backend.cluster)
        backend._upsert_typed(policy, backend.networking, "network_policy")
        backend._upsert_ksvc(manifests.session_service(spec, backend.cluster, deadline))
        try:
            url = self._wait_ready(
                spec.namespace, spec.session_id, settings.HKS_KNATIVE_SESSION_CREATE_WAIT_SECONDS
            )
        except BackendError:
            self.delete(spec.namespace, spec.session_id)
            raise
        where = _host_port(url, spec.namespace) if url else {"host": "", "port": 0}  # "": still starting
        return SessionEndpoint(
            session_id=spec.session_id,
            deadline=deadline,
            labels=manifests.session_labels(spec.project, spec.session_id),
            **where,
        )

    def ready(self, namespace: str, session_id: str) -> SessionEndpoint | None:
        """Where a started session's agent answers once its Service is Ready; None while it still starts;
        BackendError(permanent) when it cannot start (its revision failed, its pod is stuck) or is gone."""
        url = self._wait_ready(namespace, session_id, 0)
        if not url:
            return None
        return SessionEndpoint(session_id=session_id, **_host_port(url, namespace))

    def _wait_ready(self, namespace: str, session_id: str, wait: float) -> str:
        """The Service's address once it is Ready, or "" if it is not within ``wait`` seconds."""
        name = manifests.session_name(session_id)
        limit = time.monotonic() + wait
        while True:
            ksvc = self.backend._ksvc_call("get", namespace, name, ok=(404,))
            if ksvc is None:
                raise BackendError(f"session {session_id} was deleted while it started", permanent=True)
            status = ksvc.get("status", {})
            ready = {c["type"]: c for c in status.get("conditions", [])}.get("Ready", {})
            current = status.get("observedGeneration") == ksvc["metadata"].get("generation")
            if current and ready.get("status") == "True":
                return status.get("address", {}).get("url") or status.get("url", "")
            if current and ready.get("status") == "False":
                raise BackendError(
                    f"the session could not start: {ready.get('message', 'revision failed')}", permanent=True
                )
            _, trouble = self.backend._pods(_Ref(namespace, name))
            if trouble:
                raise BackendError(f"the session could not start: {trouble}", permanent=True)
            if time.monotonic() >= limit:
                return ""
            time.sleep(self.poll_seconds)

    def set_deadline(self, namespace: str, session_id: str, deadline: dt.datetime) -> bool:
        name = manifests.session_name(session_id)
        for _ in range(5):
            current = self.backend._ksvc_call("get", namespace, name, ok=(404,))
            if current is None:
                return False
            body = copy.deepcopy(current)
            body.pop("status", None)
            body["metadata"].setdefault("annotations", {})[manifests.ANNOTATION_DEADLINE] = (
                manifests.deadline_text(deadline)
            )
            if self.backend._ksvc_call("replace", namespace, name, body, ok=(409,)) is not None:
                return True
        raise BackendError(f"session {session_id} keeps changing under us; will retry", permanent=False)

    def delete(self, namespace: str, session_id: str) -> bool:
        backend, selector = self.backend, manifests.session_selector(session_id)
        found = backend._ksvc_call("delete", namespace, manifests.session_name(session_id), ok=(404,))
        background = {"label_selector": selector, "propagation_policy": "Background", "ok": (404,)}
        backend._call(backend.networking.delete_collection_namespaced_network_policy, namespace, **background)
        backend._call(backend.core.delete_collection_namespaced_secret, namespace, **background)
        return found is not None

    def list(self, project: str, namespace: str) -> list[SessionEndpoint]:
        selector = f"{LABEL_PROJECT}={project},app.kubernetes.io/managed-by={MANAGED_BY}"
        selector += f",{manifests.LABEL_SESSION}"
        ksvcs = self.backend._ksvc_call("list", namespace, label_selector=selector, ok=(404,))
        ksvcs = ksvcs or {"items": []}
        held = []
        for ksvc in ksvcs["items"]:
            meta = ksvc["metadata"]
            url = ksvc.get("status", {}).get("address", {}).get("url", "")
            where = _host_port(url, namespace) if url else {"host": "", "port": 0}
            held.append(
                SessionEndpoint(
                    session_id=meta["labels"][manifests.LABEL_SESSION],
                    deadline=manifests.parse_deadline(
                        meta.get("annotations", {}).get(manifests.ANNOTATION_DEADLINE, "")
                    ),
                    labels=dict(meta.get("labels", {})),
                    **where,
                )
            )
        return held


class _Ref:
    """What ``KnativeBackend._pods`` reads of a FunctionRef."""

    def __init__(self, namespace: str, function: str):
        self.namespace, self.function = namespace, function


def _host_port(url: str, namespace: str) -> dict:
    parts = urlsplit(url)
    host = parts.hostname or ""
    if len(host) > MAX_HOST and host.endswith(".cluster.local"):
        host = host.removesuffix(".cluster.local")  # name.namespace.svc: the portal pod's DNS search finds it
    if not host or len(host) > MAX_HOST:
        raise BackendError(f"the session's address {url!r} is not usable", permanent=True)
    return {"host": host, "port": parts.port or (443 if parts.scheme == "https" else 80)}
