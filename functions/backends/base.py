"""The contract between the platform and wherever functions run.

A backend takes and returns the plain dataclasses below - never Kubernetes objects or process handles -
so the portal, CLI and SDK cannot tell the local runtime from Knative. Every method is idempotent: the
Celery tasks that call them may run twice (acks late, retries), so ``apply`` of the same spec, or
``delete`` of something already gone, must succeed and leave the same state.

Errors are ``BackendError``; ``permanent=True`` means retrying cannot help (bad code, invalid spec), and
the task records the message on the function instead of retrying.
"""

from __future__ import annotations

import abc
import datetime as dt
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field


class BackendError(Exception):
    def __init__(self, message: str, *, permanent: bool = False):
        super().__init__(message)
        self.message = message
        self.permanent = permanent


@dataclass(frozen=True)
class FunctionRef:
    """Names a function on a backend: the project's namespace and the function's name."""

    project: str
    namespace: str
    function: str


@dataclass(frozen=True)
class Scale:
    min: int = 0
    max: int = 10
    target_concurrency: int = 100
    container_concurrency: int = 0


@dataclass(frozen=True)
class Resources:
    cpu_millicores: int = 500
    memory_mb: int = 256


@dataclass(frozen=True)
class BuildSpec:
    ref: FunctionRef
    revision: str  # Knative-style revision name, e.g. "hello-00003"
    runtime: str  # "node" | "python"
    archive_path: str  # the revision's validated source archive (.tar.gz)
    archive_url: str = ""  # where a remote builder fetches it (a short-lived, few-use token included)
    content_hash: str = ""
    kind: str = "http"  # "http" | "cloudevents": an image's start command differs (func-python)
    sandbox_profile: str = "standard"  # "restricted" (agent code): the build runs no hooks of the code's own


@dataclass(frozen=True)
class BuildResult:
    artifact: str  # local: prepared directory; cluster: image reference
    log: str = ""
    artifact_bytes: int = 0  # its size on disk (the local runtime measures it); 0: unknown (an image)


@dataclass(frozen=True)
class ServiceSpec:
    ref: FunctionRef
    revision: str
    runtime: str
    kind: str
    artifact: str
    env: dict[str, str] = field(default_factory=dict)
    scale: Scale = Scale()
    resources: Resources = Resources()
    timeout_seconds: int = 300
    sandbox_profile: str = "standard"  # "standard" | "restricted"
    visibility: str = "public"  # "public" | "cluster-local"
    labels: dict[str, str] = field(default_factory=dict)
    # Secret values, apart from ``env`` so a backend can keep them out of plain sight (Knative: a Secret).
    # ``secret_env_version`` changes whenever they do and reveals nothing about them.
    secret_env: dict[str, str] = field(default_factory=dict)
    secret_env_version: str = ""
    # The project's quota of instances of all its functions at once, on the local runtime (0: none). A
    # cluster bounds a namespace with its ResourceQuota instead (project_manifests.py).
    project_max_instances: int = 0


@dataclass(frozen=True)
class ServiceStatus:
    ready: bool
    url: str = ""
    internal_url: str = ""
    replicas: int = 0
    latest_ready_revision: str = ""
    message: str = ""
    exists: bool = True
    failed: bool = False  # the latest revision cannot become ready (crashes at start, bad image): give up


@dataclass(frozen=True)
class LogLine:
    timestamp: dt.datetime
    instance: str
    stream: str  # "stdout" | "stderr" | "system"
    text: str


@dataclass(frozen=True)
class ScheduleSpec:
    ref: FunctionRef
    name: str
    cron: str
    timezone: str
    method: str
    path: str
    headers: dict[str, str]
    body: str
    enabled: bool
    concurrency_policy: str
    starting_deadline_seconds: int | None
    target_url: str
    kind: str = "http"  # "cloudevents": the request is a binary-mode CloudEvent (ce-* headers)


@dataclass(frozen=True)
class OwnedFunction:
    ref: FunctionRef
    revision: str
    labels: dict[str, str] = field(default_factory=dict)
    # The backend's report, when listing gives it for free (the local runtime does); None = ask status().
    replicas: int | None = None
    latest_ready_revision: str = ""
    message: str | None = None  # the backend's status message, when listing gives it (None: not given)


@dataclass(frozen=True)
class SessionSpec:
    """An agent session to start (functions/agents/sessions.py): the agent inside it serves its API to the
    portal only, with ``token`` in ``X-HKS-Agent-Token``, and has no network of its own."""

    project: str
    namespace: str
    session_id: str  # [a-z0-9]{20}
    token: str
    timeout_seconds: int
    labels: dict[str, str] = field(default_factory=dict)
    resources: Resources = Resources(cpu_millicores=1000, memory_mb=1024)


@dataclass(frozen=True)
class SessionEndpoint:
    """Where a running session's agent API is reachable from the portal, and until when it may run."""

    session_id: str
    host: str
    port: int
    deadline: dt.datetime | None = None
    labels: dict[str, str] = field(default_factory=dict)


LogSink = Callable[[str], None]


class FunctionBackend(abc.ABC):
    """Where functions run. See the module docstring for the rules every method follows."""

    @classmethod
    def for_project(cls, project) -> FunctionBackend:
        """The instance serving a ``functions.models.Project``; backends with per-project
        credentials (a vCluster's kubeconfig) override this."""
        return cls()

    @abc.abstractmethod
    def build(self, spec: BuildSpec, on_log: LogSink | None = None) -> BuildResult:
        """Source archive -> runnable artifact; calls ``on_log`` with each build log line."""

    @abc.abstractmethod
    def apply(self, spec: ServiceSpec) -> None:
        """Create or update the running service so that it serves ``spec.revision``."""

    @abc.abstractmethod
    def status(self, ref: FunctionRef) -> ServiceStatus:
        """Readiness, URLs and replicas; ``exists=False`` when the backend has nothing."""

    def status_poll_seconds(self, waited: float) -> float:
        """How long a caller waiting for a revision to become ready sleeps between two ``status`` calls,
        ``waited`` seconds into the wait: every 50 ms for the first 3 s (a pre-warmed local instance is
        ready in tens of ms), then every half second."""
        return 0.05 if waited < 3 else 0.5

    @abc.abstractmethod
    def delete(self, ref: FunctionRef) -> float | None:
        """Remove everything that belongs to the function; a no-op when it is already gone. Returns the CPU
        seconds its instances used over its life when the backend measures it (the local runtime), else
        None (Knative: the cluster's metrics hold it, not read here)."""

    def delete_artifact(self, artifact: str) -> bool:
        """Free the storage of a built artifact no revision needs any more (the caller checked that).
        False when the backend still uses it (kept); True when it is gone. A backend whose artifacts live
        elsewhere (a registry with its own retention) keeps this default."""
        return True

    @abc.abstractmethod
    def logs(
        self,
        ref: FunctionRef,
        since: dt.datetime | None = None,
        tail: int | None = None,
        follow: bool = False,
    ) -> AsyncIterator[LogLine]:
        """Log lines of every instance, oldest first; with ``follow`` it goes on until cancelled."""

    @abc.abstractmethod
    def apply_schedule(self, spec: ScheduleSpec) -> None:
        """Create or update a cron trigger."""

    @abc.abstractmethod
    def delete_schedule(self, ref: FunctionRef, name: str) -> None:
        """Remove a cron trigger; a no-op when it is already gone."""

    @abc.abstractmethod
    def list_owned(self, project: str, namespace: str) -> list[OwnedFunction]:
        """Every function the backend holds for a project, for reconciliation and orphan cleanup."""

    def set_instance_quota(self, namespace: str, max_instances: int) -> None:
        """Bound the instances of all the namespace's functions at once (0: no bound) now, not only with
        the next spec (``ServiceSpec.project_max_instances``). A cluster keeps this default: the namespace's
        ResourceQuota bounds it there (project_manifests.py)."""
        return None

    def fires_schedules_itself(self) -> bool:
        """True when the backend runs cron triggers (CronJobs); False when the portal's beat does."""
        return False

    # Agent sessions ---------------------------------------------------------------------------------
    # The local runtime's sessions are driven by functions/agents/sessions.py through the runtime's own
    # control API; a cluster backend implements these four. Each is idempotent, like the rest.

    def session_create(self, spec: SessionSpec) -> SessionEndpoint:
        """Start the session and wait, for a bounded time, until its agent accepts connections; the
        endpoint's ``host`` is "" when it still starts (ask ``session_ready`` later). BackendError(permanent)
        when this backend or cluster cannot run sessions, or the session failed to start, saying why."""
        raise BackendError(f"{type(self).__name__} does not run agent sessions", permanent=True)

    def session_ready(self, namespace: str, session_id: str) -> SessionEndpoint | None:
        """A starting session's endpoint once its agent accepts connections, None while it still starts;
        BackendError(permanent) when it cannot start or is gone."""
        raise BackendError(f"{type(self).__name__} does not run agent sessions", permanent=True)

    def session_set_deadline(self, namespace: str, session_id: str, deadline: dt.datetime) -> bool:
        """Record a new deadline; False when the session is gone."""
        raise BackendError(f"{type(self).__name__} does not run agent sessions", permanent=True)

    def session_delete(self, namespace: str, session_id: str) -> bool:
        """Remove everything of the session; True when something was there."""
        raise BackendError(f"{type(self).__name__} does not run agent sessions", permanent=True)

    def session_list(self, project: str, namespace: str) -> list[SessionEndpoint]:
        """The sessions the backend holds for a project (for the reaper)."""
        raise BackendError(f"{type(self).__name__} does not run agent sessions", permanent=True)
