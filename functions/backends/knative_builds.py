"""Image builds of the Knative backend: a Kaniko Job per revision, watched until it ends.

The wait ends on the Job's own conditions (``Complete``, ``Failed``, ``FailureTarget``): a Job whose pod is
never created (Pod Security, quota) fails by condition only, with no pod counted as failed
(https://kubernetes.io/docs/concepts/workloads/controllers/job/#job-termination-and-cleanup). Its pod's
waiting reasons and the events of the Job and its pod go into the build log, and a refusal that cannot
clear by waiting (Pod Security, a container the kubelet cannot configure) ends the build at once.

The image reference handed back is ``repository@sha256:...``: Kaniko writes the digest to
``/dev/termination-log`` (``--digest-file``), which Kubernetes reports as the kaniko container's
``state.terminated.message``.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from functions.backends import k8s_manifests as manifests
from functions.backends.base import BackendError, BuildSpec
from functions.backends.knative_logs import BuildLog

# Job conditions (https://kubernetes.io/docs/concepts/workloads/controllers/job/#terminal-job-conditions).
DONE = {"Complete": True, "SuccessCriteriaMet": True, "Failed": False, "FailureTarget": False}
# Pod creation refusals and container states that waiting does not cure.
FATAL_EVENT_MARKERS = ("violates PodSecurity", "must specify limits", "must specify requests")
FATAL_WAITING = {"CreateContainerConfigError", "InvalidImageName", "CreateContainerError"}


def job_outcome(job) -> bool | None:
    """True once the Job completed, False once it failed, None while it runs."""
    status = job.status
    if status is None:
        return None
    for condition in status.conditions or []:
        if condition.status == "True" and condition.type in DONE:
            return DONE[condition.type]
    if status.succeeded:
        return True
    if status.failed:
        return False
    return None


def job_failure_message(job, log: list[str]) -> str:
    conditions = [
        c
        for c in (job.status.conditions or [])
        if c.type in ("Failed", "FailureTarget") and c.status == "True"
    ]
    reason = next((c.message for c in conditions if c.message), "") or "the build Job failed"
    tail = "\n".join(log[-20:])
    return f"{reason}\n{tail}" if tail else reason


class KanikoBuild:
    """One build: its Secret and ConfigMap, the Job (joined when it already exists), the wait, the digest."""

    def __init__(self, backend, spec: BuildSpec, on_log):
        self.backend, self.spec, self.cluster = backend, spec, backend.cluster
        self.call: Callable = backend._call
        self.core, self.batch = backend.core, backend.batch
        self.namespace, self.name = spec.ref.namespace, manifests.build_name(spec)
        self.log = BuildLog(self.call, self.core, self.name, self.namespace, on_log)

    def run(self) -> str:
        """Build and push; return the image by digest. Raises BackendError."""
        self._check_registry_secret()
        self.backend._upsert_typed(
            manifests.build_network_policy(
                self.namespace,
                self.spec.ref.project,
                egress_cidrs=self.cluster.build_egress_cidrs,
                internet=self.cluster.build_egress_internet,
            ),
            self.backend.networking,
            "network_policy",
        )
        self.backend._upsert_typed(manifests.build_secret(self.spec), self.core, "secret")
        self.backend._upsert_typed(manifests.build_config_map(self.spec), self.core, "config_map")
        try:
            job = self._wait(self._start())
            self.log.finish()
        finally:
            # The Job is done with its inputs (or never will be); the token in the Secret is spent anyway.
            self.call(self.core.delete_namespaced_secret, self.name, self.namespace, ok=(404,))
            self.call(self.core.delete_namespaced_config_map, self.name, self.namespace, ok=(404,))
        if not job_outcome(job):
            raise BackendError(job_failure_message(job, self.log.lines), permanent=True)
        return self._image_with_digest()

    def _check_registry_secret(self) -> None:
        """A pod mounting a missing Secret waits in ContainerCreating until the deadline, with no log
        (https://kubernetes.io/docs/concepts/configuration/secret/#restriction-secret-must-exist)."""
        secret = self.cluster.registry_secret
        if not secret:
            return
        if self.call(self.core.read_namespaced_secret, secret, self.namespace, ok=(403, 404)) is None:
            # 403: this kubeconfig may not read Secrets; the build will show a mount failure if it is absent.
            found = self.call(self.core.list_namespaced_secret, self.namespace, ok=(403,))
            if found is None or any(item.metadata.name == secret for item in found.items):
                return
            raise BackendError(
                f"namespace {self.namespace} has no Secret {secret} (HKS_REGISTRY_SECRET): create a "
                "kubernetes.io/dockerconfigjson Secret with the registry's credentials there before building",
                permanent=True,
            )

    def _start(self):
        manifest = manifests.kaniko_job(self.spec, self.cluster)
        job = self.call(self.batch.create_namespaced_job, self.namespace, manifest, ok=(409,))
        if job is not None:
            return job
        job = self.call(self.batch.read_namespaced_job, self.name, self.namespace)
        if job_outcome(job) is False:
            # An earlier attempt at the same source failed: build afresh rather than report the old failure.
            self._delete_job()
            return self.call(self.batch.create_namespaced_job, self.namespace, manifest)
        return job

    def _delete_job(self) -> None:
        self.call(
            self.batch.delete_namespaced_job,
            self.name,
            self.namespace,
            propagation_policy="Background",
            ok=(404,),
        )

    def _wait(self, job):
        deadline = time.monotonic() + self.cluster.build_timeout_seconds + 60
        while job_outcome(job) is None:
            if time.monotonic() > deadline:
                raise BackendError(f"build {self.name} did not finish in time", permanent=True)
            time.sleep(self.backend.poll_interval)
            self.log.poll()
            self._check_refusals()
            job = self.call(self.batch.read_namespaced_job_status, self.name, self.namespace)
        return job

    def _check_refusals(self) -> None:
        for event in self.log.events:
            if event.reason == "FailedCreate" and any(
                m in (event.message or "") for m in FATAL_EVENT_MARKERS
            ):
                self._delete_job()
                raise BackendError(f"the cluster refused the build pod: {event.message}", permanent=True)
        for container, reason, message in self.log.waiting:
            if reason in FATAL_WAITING:
                self._delete_job()
                raise BackendError(
                    f"build container {container} cannot start: {reason}: {message}", permanent=True
                )

    def _image_with_digest(self) -> str:
        terminated = self.log.terminated().get("kaniko")
        if terminated is None:
            # The pod is gone (a joined Job whose pod was collected): build again rather than guess a tag.
            self._delete_job()
            raise BackendError(
                f"build {self.name} finished but its pod no longer reports the image digest; building again",
                permanent=False,
            )
        try:
            return manifests.image_with_digest(self.spec, self.cluster, terminated.message or "")
        except ValueError as exc:
            raise BackendError(
                f"the build wrote no image digest to {manifests.TERMINATION_LOG} ({exc}): "
                "HKS_KANIKO_IMAGE must be a Kaniko that supports --digest-file",
                permanent=True,
            ) from exc
