"""The Knative backend: functions as ``serving.knative.dev/v1`` Services in the project's cluster.

Each project brings a kubeconfig (a vCluster's, or one scoped to a namespace), stored encrypted; this is
the one module that imports ``kubernetes`` and the one place that talks to a cluster. Manifests come from
the pure builders in ``k8s_manifests``.

What the cluster needs is in docs/operations.md ("What the cluster must have"): Knative Serving 1.19 or
later on Kubernetes 1.32 or later, a registry Kaniko can push to and nodes can pull from (``HKS_REGISTRY``,
credentials in the Secret ``HKS_REGISTRY_SECRET`` of each namespace), a CNI that enforces NetworkPolicy,
and - with ``HKS_AGENT_RUNTIME_CLASS`` set - that RuntimeClass plus Knative's feature flag
``kubernetes.podspec-runtimeclassname: enabled``. The build Job fetches the source from
``HKS_PUBLIC_URL``, which the cluster must reach. Built images are handed to Knative by digest (read back
from Kaniko's termination message), so Knative's controller never has to resolve a tag. Before it builds
or writes anything, the backend asks whether the cluster serves Knative Serving at all
(``knative_presence.require_knative``): a vCluster without it, Knative only on its host, is refused with
why.

Errors: a 4xx from the API server is permanent (the request is wrong or the credentials are refused), a
5xx, 429, conflict or an unreachable server is transient. 404 on delete and 409 on create are the normal
outcomes of running a task twice, not errors.
"""

from __future__ import annotations

import asyncio
import copy
import datetime as dt
from collections.abc import AsyncIterator, Callable

import pydantic
import urllib3
import yaml
from django.conf import settings
from kubernetes import client, config
from kubernetes.client.rest import ApiException

from functions.backends import k8s_manifests as manifests
from functions.backends import k8s_schedules
from functions.backends.base import (
    BackendError,
    BuildResult,
    BuildSpec,
    FunctionBackend,
    FunctionRef,
    LogLine,
    LogSink,
    OwnedFunction,
    ScheduleSpec,
    ServiceSpec,
    ServiceStatus,
    SessionEndpoint,
    SessionSpec,
)
from functions.backends.k8s_api import TIMEOUT, backend_error, platform_kubeconfig
from functions.backends.knative_builds import KanikoBuild
from functions.backends.knative_logs import PodFollower, log_params, parse_log
from functions.backends.knative_presence import KNATIVE, require_knative
from functions.backends.knative_sessions import KnativeSessions
from functions.validators import reserved_namespace


def cluster_settings() -> manifests.ClusterSettings:
    return manifests.ClusterSettings(
        kaniko_image=settings.HKS_KANIKO_IMAGE,
        curl_image=settings.HKS_CRON_IMAGE,
        registry=settings.HKS_REGISTRY,
        registry_secret=settings.HKS_REGISTRY_SECRET,
        registry_insecure=settings.HKS_REGISTRY_INSECURE,
        registry_ca_configmap=settings.HKS_REGISTRY_CA_CONFIGMAP,
        registry_mirrors=tuple(settings.HKS_REGISTRY_MIRRORS),
        portal_ca_configmap=settings.HKS_PORTAL_CA_CONFIGMAP,
        build_retries=settings.HKS_BUILD_RETRIES,
        build_cache=settings.HKS_BUILD_CACHE,
        kaniko_extra_args=tuple(settings.HKS_KANIKO_EXTRA_ARGS),
        node_arch=settings.HKS_KNATIVE_NODE_ARCH,
        agent_runtime_class=settings.HKS_AGENT_RUNTIME_CLASS,
        session_image=settings.HKS_AGENT_SESSION_IMAGE,
        platform_namespace=settings.HKS_PLATFORM_NAMESPACE,
        max_timeout_seconds=settings.HKS_KNATIVE_MAX_TIMEOUT_SECONDS,
        build_timeout_seconds=settings.HKS_BUILD_TIMEOUT_SECONDS,
        ingress_namespaces=tuple(settings.HKS_KNATIVE_INGRESS_NAMESPACES),
        function_egress_cidrs=tuple(settings.HKS_KNATIVE_EGRESS_CIDRS),
        function_egress_namespaces=tuple(settings.HKS_KNATIVE_EGRESS_NAMESPACES),
        build_egress_cidrs=tuple(settings.HKS_BUILD_EGRESS_CIDRS),
        build_egress_internet=settings.HKS_BUILD_EGRESS_INTERNET,
    )


class KnativeBackend(FunctionBackend):
    """See the module docstring. One instance per project (its kubeconfig); cheap to create."""

    poll_interval = 1.0  # seconds between looks at a running build
    reconcile_grace_seconds = 30.0  # a new Service no Knative controller has looked at for longer: say so
    log_rescan_seconds = 2.0  # how often a followed log looks for new pods

    def __init__(
        self,
        kubeconfig: str,
        *,
        cluster: manifests.ClusterSettings | None = None,
        own_kubeconfig: bool = False,
    ):
        """``own_kubeconfig``: the cluster is the project's own (a vCluster's), not the platform's."""
        try:
            kubeconfig_dict = yaml.safe_load(kubeconfig)
            configuration = client.Configuration()
            config.load_kube_config_from_dict(kubeconfig_dict, client_configuration=configuration)
        except Exception as exc:  # the loader raises many kinds; all mean the same to the caller
            raise BackendError(f"the project's kubeconfig is not usable: {exc}", permanent=True) from exc
        configuration.retries = 1
        self._api = client.ApiClient(configuration)
        self.core = client.CoreV1Api(self._api)
        self.batch = client.BatchV1Api(self._api)
        self.networking = client.NetworkingV1Api(self._api)
        self.custom = client.CustomObjectsApi(self._api)
        self.cluster = cluster or cluster_settings()
        self._namespaces_ready: set[str] = set()
        self.own_kubeconfig = own_kubeconfig
        self._knative_served = False

    @classmethod
    def for_project(cls, project) -> KnativeBackend:
        from functions.crypto import DecryptionError, decrypt_text

        if not project.kubeconfig_encrypted:
            # A project in its own namespace of the host cluster works with the platform's identity there.
            platform = platform_kubeconfig()
            if platform:
                return cls(platform)
            raise BackendError(
                f"project {project.slug} has no kubeconfig: an owner must upload one", permanent=True
            )
        try:
            return cls(decrypt_text(project.kubeconfig_encrypted), own_kubeconfig=True)
        except DecryptionError as exc:
            raise BackendError(f"project {project.slug}: {exc}", permanent=True) from exc

    def fires_schedules_itself(self) -> bool:
        return True

    # API plumbing -----------------------------------------------------------------------------------

    def _call(self, method: Callable, *args, ok: tuple[int, ...] = (), **kwargs):
        """Call the API with a timeout; statuses in ``ok`` give None, other errors become BackendError."""
        kwargs.setdefault("_request_timeout", TIMEOUT)
        try:
            return method(*args, **kwargs)
        except ApiException as exc:
            if exc.status in ok:
                return None
            raise backend_error(exc) from exc
        except (pydantic.ValidationError, urllib3.exceptions.HTTPError, OSError) as exc:
            raise backend_error(exc) from exc

    def _require_knative(self) -> None:
        """Refuse, saying why, a cluster without Knative Serving (a vCluster whose host has it, say) before
        anything is built or written there; asked once per backend."""
        if not self._knative_served:
            require_knative(self._api, own_kubeconfig=self.own_kubeconfig)
            self._knative_served = True

    def _ensure_namespace(self, name: str, project: str) -> None:
        if name in self._namespaces_ready:
            return
        # The platform's own identity serves every project on the host cluster: it writes for a project
        # only in that project's namespace - never a system or trusted one, never another project's.
        if not self.own_kubeconfig and reserved_namespace(name):
            raise BackendError(
                f"namespace {name} is reserved for the cluster and the platform; project {project} cannot "
                "run functions there",
                permanent=True,
            )
        # A namespace-scoped kubeconfig may not read namespaces (403): then the namespace is given.
        found = self._call(self.core.read_namespace, name, ok=(403, 404))
        if found is None:
            self._call(self.core.create_namespace, manifests.namespace(name), ok=(403, 409))
        elif not self.own_kubeconfig:
            labels = found.metadata.labels or {}
            ours = labels.get("app.kubernetes.io/managed-by") == manifests.MANAGED_BY
            if not ours or labels.get(manifests.LABEL_PROJECT, project) != project:
                raise BackendError(
                    f"namespace {name} is not project {project}'s (it lacks the label "
                    f"{manifests.LABEL_PROJECT}={project}): the platform does not write there for it",
                    permanent=True,
                )
        self._namespaces_ready.add(name)

    def _upsert(self, manifest: dict, create, read, replace, current_meta: Callable) -> None:
        """Create, or replace what is there (optimistic concurrency: retry on a conflicting write)."""
        name, namespace = manifest["metadata"]["name"], manifest["metadata"]["namespace"]
        for _ in range(5):
            if self._call(create, namespace, manifest, ok=(409,)) is not None:
                return
            current = self._call(read, name, namespace, ok=(404,))
            if current is None:
                continue  # deleted in between: create again
            body = copy.deepcopy(manifest)
            resource_version, annotations = current_meta(current)
            body["metadata"]["resourceVersion"] = resource_version
            # Keep what others annotated (Knative's webhook refuses an update that drops its creator).
            body["metadata"]["annotations"] = {**annotations, **manifest["metadata"].get("annotations", {})}
            if self._call(replace, name, namespace, body, ok=(409,)) is not None:
                return
        raise BackendError(f"{manifest['kind']} {name} keeps changing under us; will retry", permanent=False)

    def _upsert_typed(self, manifest: dict, api, kind: str) -> None:
        self._upsert(
            manifest,
            getattr(api, f"create_namespaced_{kind}"),
            getattr(api, f"read_namespaced_{kind}"),
            getattr(api, f"replace_namespaced_{kind}"),
            lambda current: (current.metadata.resource_version, current.metadata.annotations or {}),
        )

    def _ksvc_call(self, verb: str, namespace: str, *args, **kwargs):
        method = getattr(self.custom, f"{verb}_namespaced_custom_object")
        return self._call(method, *KNATIVE, namespace, "services", *args, **kwargs)

    def _upsert_ksvc(self, manifest: dict) -> None:
        self._upsert(
            manifest,
            lambda ns, body, **kw: self.custom.create_namespaced_custom_object(
                *KNATIVE, ns, "services", body, **kw
            ),
            lambda name, ns, **kw: self.custom.get_namespaced_custom_object(
                *KNATIVE, ns, "services", name, **kw
            ),
            lambda name, ns, body, **kw: self.custom.replace_namespaced_custom_object(
                *KNATIVE, ns, "services", name, body, **kw
            ),
            lambda current: (
                current["metadata"]["resourceVersion"],
                current["metadata"].get("annotations", {}),
            ),
        )

    # Build --------------------------------------------------------------------------------------------

    def build(self, spec: BuildSpec, on_log: LogSink | None = None) -> BuildResult:
        """Build and push the image with a Kaniko Job, waiting for it; a retried call joins the same Job.
        The artifact is the image by digest (see ``knative_builds``)."""
        try:
            manifests.dockerfile(spec.runtime, spec.kind)
        except ValueError as exc:
            raise BackendError(str(exc), permanent=True) from exc
        spec = self._with_archive_url(spec)
        self._require_knative()
        self._ensure_namespace(spec.ref.namespace, spec.ref.project)
        build = KanikoBuild(self, spec, on_log)
        artifact = build.run()
        return BuildResult(artifact=artifact, log="\n".join(build.log.lines))

    def _with_archive_url(self, spec: BuildSpec) -> BuildSpec:
        if spec.archive_url:
            return spec
        from dataclasses import replace

        from functions.sources.archive_links import archive_url_for

        return replace(spec, archive_url=archive_url_for(spec))

    # Serving ------------------------------------------------------------------------------------------

    def apply(self, spec: ServiceSpec) -> None:
        if len(spec.ref.function) > manifests.MAX_SERVICE_NAME:
            raise BackendError(
                f"function names on Knative have at most {manifests.MAX_SERVICE_NAME} characters "
                f"(its revisions append 6); {spec.ref.function!r} has {len(spec.ref.function)}",
                permanent=True,
            )
        namespace = spec.ref.namespace
        self._require_knative()
        self._ensure_namespace(namespace, spec.ref.project)
        self._upsert_typed(manifests.service_account(spec.ref), self.core, "service_account")
        policy = manifests.function_network_policy(
            spec.ref,
            restricted=manifests.is_restricted(spec),
            ingress_namespaces=self.cluster.ingress_namespaces,
            egress_cidrs=self.cluster.function_egress_cidrs,
            egress_namespaces=self.cluster.function_egress_namespaces,
        )
        self._upsert_typed(policy, self.networking, "network_policy")
        if spec.secret_env:
            self._upsert_typed(manifests.env_secret(spec), self.core, "secret")
        self._upsert_ksvc(manifests.knative_service(spec, self.cluster))

    def status(self, ref: FunctionRef) -> ServiceStatus:
        ksvc = self._ksvc_call("get", ref.namespace, ref.function, ok=(404,))
        if ksvc is None:
            self._require_knative()  # a 404 for the Service, or for Knative's whole API?
            return ServiceStatus(ready=False, exists=False, message="no Knative Service")
        status = ksvc.get("status", {})
        conditions = {c["type"]: c for c in status.get("conditions", [])}
        ready_condition = conditions.get("Ready", {})
        current = status.get("observedGeneration") == ksvc["metadata"].get("generation")
        ready = current and ready_condition.get("status") == "True"
        annotations = ksvc["spec"]["template"].get("metadata", {}).get("annotations", {})
        replicas, waiting = self._pods(ref)
        failed = current and ready_condition.get("status") == "False"
        message = ready_condition.get("message", "deploying")
        if "observedGeneration" not in status:
            message = self._unreconciled(ksvc) or message
        if not failed and waiting:
            # Knative reports an image it cannot pull only after its progress deadline (600 s); the pod
            # says so at once.
            message = waiting
        return ServiceStatus(
            ready=ready,
            url=status.get("url", ""),
            internal_url=status.get("address", {}).get("url", ""),
            replicas=replicas,
            latest_ready_revision=annotations.get(manifests.ANNOTATION_REVISION, "") if ready else "",
            message="" if ready else message,
            # "Unknown" while Knative is still trying; "False" once the revision has failed.
            failed=failed,
        )

    def status_poll_seconds(self, waited: float) -> float:
        """A status costs two API calls (the Service, its pods; through a vCluster's syncer too) and a
        revision takes seconds to start (image pull, cold start): a quarter second at first, then half
        the time waited so far, at most 2 s."""
        return min(2.0, max(0.25, waited / 2))

    def _unreconciled(self, ksvc: dict) -> str:
        """Why a Service no controller has ever given a status may stay that way: Knative's CRDs without
        Knative running (in a vCluster whose CRDs come from its host, host Knative never sees it)."""
        created = ksvc["metadata"].get("creationTimestamp")
        if not created:
            return ""
        waited = (
            dt.datetime.now(dt.UTC) - dt.datetime.fromisoformat(created.replace("Z", "+00:00"))
        ).total_seconds()
        if waited <= self.reconcile_grace_seconds:
            return ""
        return (
            f"no Knative controller has looked at this Service in {int(waited)} s: is Knative Serving "
            "running in this cluster? A vCluster needs Knative inside it: Knative on its host never sees the "
            'vCluster\'s Services (docs/operations.md, "Tenancy on the cluster")'
        )

    POD_TROUBLE = {"ErrImagePull", "ImagePullBackOff", "InvalidImageName", "CrashLoopBackOff"}

    def _pods(self, ref: FunctionRef) -> tuple[int, str]:
        """(running pods, why a pod's user-container cannot start - "" when none is stuck)."""
        pods = self._call(
            self.core.list_namespaced_pod,
            ref.namespace,
            label_selector=f"serving.knative.dev/service={ref.function}",
        )
        running, trouble = 0, ""
        for pod in pods.items:
            running += bool(pod.status and pod.status.phase == "Running")
            for status in (pod.status.container_statuses or []) if pod.status else []:
                waiting = status.state.waiting if status.state else None
                if status.name == "user-container" and waiting and waiting.reason in self.POD_TROUBLE:
                    trouble = f"{waiting.reason}: {waiting.message or ''}".rstrip(": ")
        return running, trouble

    def delete(self, ref: FunctionRef) -> float | None:
        """Remove everything labelled with the function; what is already gone is fine. Its CPU time is not
        measured here (None)."""
        namespace, selector = ref.namespace, self._selector(ref)
        ksvcs = self._ksvc_call("list", namespace, label_selector=selector, ok=(404,)) or {"items": []}
        for ksvc in ksvcs["items"]:
            self._ksvc_call("delete", namespace, ksvc["metadata"]["name"], ok=(404,))
        background = {"label_selector": selector, "propagation_policy": "Background", "ok": (404,)}
        self._call(self.batch.delete_collection_namespaced_cron_job, namespace, **background)
        self._call(self.batch.delete_collection_namespaced_job, namespace, **background)
        self._call(self.networking.delete_collection_namespaced_network_policy, namespace, **background)
        for kind in ("config_map", "secret", "service_account"):
            self._call(getattr(self.core, f"delete_collection_namespaced_{kind}"), namespace, **background)
        return None

    @staticmethod
    def _selector(ref: FunctionRef) -> str:
        return f"{manifests.LABEL_PROJECT}={ref.project},{manifests.LABEL_FUNCTION}={ref.function}"

    def list_owned(self, project: str, namespace: str) -> list[OwnedFunction]:
        selector = (
            f"{manifests.LABEL_PROJECT}={project},app.kubernetes.io/managed-by={manifests.MANAGED_BY},"
            "!hks.dev/session"  # agent sessions are not functions (knative_sessions.py)
        )
        ksvcs = self._ksvc_call("list", namespace, label_selector=selector, ok=(404,)) or {"items": []}
        owned = []
        for ksvc in ksvcs["items"]:
            meta = ksvc["metadata"]
            template_meta = ksvc["spec"]["template"].get("metadata", {})
            owned.append(
                OwnedFunction(
                    ref=FunctionRef(project=project, namespace=namespace, function=meta["name"]),
                    revision=template_meta.get("annotations", {}).get(manifests.ANNOTATION_REVISION, ""),
                    labels=dict(meta.get("labels", {})),
                )
            )
        return owned

    # Agent sessions (knative_sessions.py) ----------------------------------------------------------

    @property
    def sessions(self) -> KnativeSessions:
        if not hasattr(self, "_sessions"):
            self._sessions = KnativeSessions(self)
        return self._sessions

    def session_create(self, spec: SessionSpec) -> SessionEndpoint:
        return self.sessions.create(spec)

    def session_ready(self, namespace: str, session_id: str) -> SessionEndpoint | None:
        return self.sessions.ready(namespace, session_id)

    def session_set_deadline(self, namespace: str, session_id: str, deadline: dt.datetime) -> bool:
        return self.sessions.set_deadline(namespace, session_id, deadline)

    def session_delete(self, namespace: str, session_id: str) -> bool:
        return self.sessions.delete(namespace, session_id)

    def session_list(self, project: str, namespace: str) -> list[SessionEndpoint]:
        return self.sessions.list(project, namespace)

    # Schedules ----------------------------------------------------------------------------------------

    def apply_schedule(self, spec: ScheduleSpec) -> None:
        self._ensure_namespace(spec.ref.namespace, spec.ref.project)
        self._upsert_typed(k8s_schedules.cron_job(spec, self.cluster), self.batch, "cron_job")

    def delete_schedule(self, ref: FunctionRef, name: str) -> None:
        self._call(
            self.batch.delete_namespaced_cron_job,
            k8s_schedules.cron_job_name(ref, name),
            ref.namespace,
            propagation_policy="Background",
            ok=(404,),
        )

    # Logs ---------------------------------------------------------------------------------------------

    async def logs(
        self,
        ref: FunctionRef,
        since: dt.datetime | None = None,
        tail: int | None = None,
        follow: bool = False,
    ) -> AsyncIterator[LogLine]:
        """The ``user-container`` logs of the function's pods, oldest first; ``follow`` streams new lines
        (from pods that start later too) until the caller closes the iterator."""
        selector = f"serving.knative.dev/service={ref.function}"
        if follow:
            follower = PodFollower(
                self._call, self.core, ref.namespace, selector, since, tail, self.log_rescan_seconds
            )
            async for line in follower.lines():
                yield line
            return
        pods = await asyncio.to_thread(
            self._call, self.core.list_namespaced_pod, ref.namespace, label_selector=selector
        )
        lines: list[LogLine] = []
        for pod in pods.items:
            text = await asyncio.to_thread(self._read_log, ref.namespace, pod.metadata.name, since, tail)
            lines += [
                line
                for line in parse_log(pod.metadata.name, text)
                if since is None or line.timestamp >= since
            ]
        lines.sort(key=lambda line: line.timestamp)
        for line in lines[-tail:] if tail else lines:
            yield line

    def _read_log(self, namespace: str, pod: str, since, tail) -> str:
        params = log_params(since, tail)
        return self._call(self.core.read_namespaced_pod_log, pod, namespace, ok=(400, 404), **params) or ""
