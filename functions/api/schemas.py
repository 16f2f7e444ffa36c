"""Request and response bodies of the JSON API (they are what the OpenAPI document shows)."""

from __future__ import annotations

import datetime as dt

from ninja import Field, Schema
from pydantic import field_validator

from functions.models import Build, Function, FunctionKind, Revision, Role, Runtime
from functions.status import function_state
from functions.validators import check_env


class ErrorOut(Schema):
    detail: str


# Projects and members -----------------------------------------------------------------------------


class ProjectOut(Schema):
    slug: str
    name: str
    backend: str
    namespace: str
    role: str
    max_functions: int
    max_agent_functions: int
    max_cpu_millicores: int
    max_memory_mb: int
    created_at: dt.datetime


class UsageTotals(Schema):
    executions: int
    sessions: int
    cpu_seconds: float = Field(
        ..., description="CPU seconds of the executions and sessions that had a figure"
    )
    cpu_unmeasured: int = Field(
        ..., description="executions and sessions whose CPU time was not measured (not in cpu_seconds)"
    )


class UsageOut(Schema):
    """A project's agent and storage quotas beside their use (UTC days and months)."""

    project: str
    sessions_running: int
    max_sessions: int
    executions_this_minute: int
    max_executions_per_minute: int
    cpu_seconds_today: float
    max_cpu_seconds_per_day: int = Field(..., description="0: no daily CPU limit")
    storage_used_bytes: int = Field(
        ..., description="source archives of the stored revisions, plus each built artifact they record once"
    )
    max_storage_mb: int = Field(..., description="past it, a new revision's upload is refused (409)")
    instances_running: int = Field(
        ..., description="ready instances of the project's functions, as last observed (local runtime)"
    )
    max_instances: int = Field(
        ...,
        description="function instances running at once on the local runtime: starts past it wait; 0: none",
    )
    today: UsageTotals
    month: UsageTotals


class QuotasIn(Schema):
    max_sessions: int | None = Field(None, ge=0, le=1_000_000)
    max_executions_per_minute: int | None = Field(None, ge=0, le=1_000_000)
    max_cpu_seconds_per_day: int | None = Field(None, ge=0, le=1_000_000)
    max_instances: int | None = Field(None, ge=0, le=1_000_000)


class MemberOut(Schema):
    username: str
    email: str
    role: str
    created_at: dt.datetime


class MemberIn(Schema):
    role: Role


class InvitationOut(Schema):
    project: str
    username: str
    role: str
    invited_by: str
    created_at: dt.datetime
    status: str = Field("invited", description="Always 'invited': the user joins when they accept")


class KubeconfigOut(Schema):
    project: str
    namespace: str
    kubeconfig: str


class AuditEventOut(Schema):
    project: str
    function: str
    actor: str | None
    action: str
    detail: dict
    created_at: dt.datetime


# Functions ----------------------------------------------------------------------------------------


class ScaleSchema(Schema):
    min: int = Field(0, ge=0, le=1000)
    max: int = Field(10, ge=1, le=1000)
    target: int = Field(100, ge=1, le=10000, description="Target concurrent requests per instance")
    container_concurrency: int = Field(0, ge=0, le=10000, description="0 = unlimited")


class ResourcesSchema(Schema):
    cpu_millicores: int = Field(500, ge=1, le=64000)
    memory_mb: int = Field(256, ge=1, le=262144)


class FunctionOut(Schema):
    name: str
    project: str
    runtime: str
    kind: str
    status: str
    status_message: str
    state: str = Field(
        ...,
        description="What the dashboard shows: ready, scaled-to-zero, degraded, unknown (backend not "
        "answering), or the lifecycle status (building, deploying, pending, failed, deleting, deleted)",
    )
    state_reason: str
    url: str
    internal_url: str
    replicas: int
    current_revision: int | None
    env: dict[str, str]
    secrets: list[str] = Field(description="Names of the secret env variables; their values are write-only")
    scale: ScaleSchema
    resources: ResourcesSchema
    timeout_seconds: int
    sandbox_profile: str
    visibility: str
    ephemeral: bool
    expires_at: dt.datetime | None
    created_at: dt.datetime
    deployed_at: dt.datetime | None


class FunctionCreateIn(Schema):
    name: str = Field(
        ..., description="A DNS-1035 label (DNS-1123, starting with a letter), unique in the project"
    )
    runtime: Runtime
    kind: FunctionKind = FunctionKind.HTTP


class ScalePatch(Schema):
    min: int | None = Field(None, ge=0, le=1000)
    max: int | None = Field(None, ge=1, le=1000)
    target: int | None = Field(None, ge=1, le=10000)
    container_concurrency: int | None = Field(None, ge=0, le=10000)


class ResourcesPatch(Schema):
    cpu_millicores: int | None = Field(None, ge=1, le=64000)
    memory_mb: int | None = Field(None, ge=1, le=262144)


class FunctionSettingsIn(Schema):
    """Only the fields given change; ``env`` replaces the whole plain environment, ``secrets`` sets (a
    value) or removes (``null``) the secrets it names and leaves the others."""

    env: dict[str, str] | None = None
    secrets: dict[str, str | None] | None = Field(
        None, description="Write-only env values: never shown again, encrypted at rest, masked in logs"
    )
    scale: ScalePatch | None = None
    resources: ResourcesPatch | None = None
    timeout_seconds: int | None = Field(None, ge=1, le=3600)

    @field_validator("env", "secrets")
    @classmethod
    def _env_rules(cls, env: dict | None) -> dict | None:
        if env is not None:  # the env rules; a secret's None means "remove it"
            check_env({key: value for key, value in env.items() if value is not None})
        return env


# Revisions and builds -----------------------------------------------------------------------------


class BuildOut(Schema):
    id: int
    revision: int
    status: str
    message: str
    created_at: dt.datetime
    started_at: dt.datetime | None
    finished_at: dt.datetime | None


class BuildDetailOut(BuildOut):
    log: str


class BuildLogOut(Schema):
    """A slice of a build log: pass ``next_offset`` as ``offset`` to get what came after."""

    build: int
    status: str
    finished: bool
    offset: int
    next_offset: int
    text: str


class RevisionOut(Schema):
    number: int
    name: str
    content_hash: str
    size_bytes: int
    config: dict
    artifact: str
    current: bool
    created_by: str | None
    created_at: dt.datetime
    build: BuildOut | None


class DeployOut(Schema):
    function: FunctionOut
    revision: RevisionOut
    created_function: bool


# Invoke and logs ----------------------------------------------------------------------------------


class InvokeIn(Schema):
    method: str = Field("POST", pattern=r"^(GET|POST|PUT|PATCH|DELETE|HEAD|OPTIONS)$")
    path: str = Field("/", max_length=2000, description="Path and query on the function, e.g. /items?x=1")
    headers: dict[str, str] = Field(default_factory=dict)
    body: str = Field("", max_length=1_000_000)


class InvokeOut(Schema):
    status: int
    headers: dict[str, str]
    body: str
    body_encoding: str = Field(description="'utf-8', or 'base64' when the body is not text")
    truncated: bool
    duration_ms: float


class LogLineOut(Schema):
    timestamp: dt.datetime
    instance: str
    stream: str
    text: str


# Model -> body ------------------------------------------------------------------------------------


def function_out(function: Function, figures=None) -> dict:
    """``figures`` (metrics.FunctionFigures) let ``state`` say "degraded", as the dashboard does."""
    current = function.current_revision
    state = function_state(function, figures)
    return {
        **{key: getattr(function, key) for key in _FUNCTION_FIELDS},
        "state": state.key,
        "state_reason": state.reason,
        "project": function.project.slug,
        "current_revision": current.number if current else None,
        "env": {str(k): str(v) for k, v in (function.env or {}).items() if k not in function.secret_env},
        "secrets": sorted(function.secret_env or {}),
        "scale": {
            "min": function.min_scale,
            "max": function.max_scale,
            "target": function.target_concurrency,
            "container_concurrency": function.container_concurrency,
        },
        "resources": {"cpu_millicores": function.cpu_millicores, "memory_mb": function.memory_mb},
    }


_FUNCTION_FIELDS = (
    "name runtime kind status status_message url internal_url replicas timeout_seconds sandbox_profile "
    "visibility ephemeral expires_at created_at deployed_at"
).split()


def build_out(build: Build, *, with_log: bool = False) -> dict:
    body = {
        "id": build.pk,
        "revision": build.revision.number,
        "status": build.status,
        "message": build.message,
        "created_at": build.created_at,
        "started_at": build.started_at,
        "finished_at": build.finished_at,
    }
    if with_log:
        body["log"] = build.log
    return body


def revision_out(revision: Revision, *, current_id: int | None) -> dict:
    builds = sorted(revision.builds.all(), key=lambda b: (b.created_at, b.pk))
    return {
        "number": revision.number,
        "name": revision.name,
        "content_hash": revision.content_hash,
        "size_bytes": revision.size_bytes,
        "config": revision.config,
        "artifact": revision.artifact,
        "current": revision.pk == current_id,
        "created_by": revision.created_by.username if revision.created_by else None,
        "created_at": revision.created_at,
        "build": build_out(builds[-1]) if builds else None,
    }


# Schedules ----------------------------------------------------------------------------------------

CRON_HELP = (
    "Five fields (minute hour day-of-month month day-of-week) or @hourly, @daily, @midnight, @weekly, "
    "@monthly, @yearly, @annually"
)


class ScheduleIn(Schema):
    name: str = Field(
        ..., description="A DNS-1035 label (DNS-1123, starting with a letter), unique per function"
    )
    cron: str = Field(..., description=CRON_HELP)
    timezone: str = Field("UTC", description="An IANA time zone, e.g. Europe/Berlin")
    method: str = "POST"
    path: str = Field("/", description="Path and query on the function")
    headers: dict[str, str] = Field(default_factory=dict)
    body: str = ""
    enabled: bool = True
    concurrency_policy: str = Field("Allow", description="Allow, Forbid or Replace")
    starting_deadline_seconds: int | None = Field(
        None, description="Fire a missed run only if it is at most this late; empty = always the latest"
    )


class SchedulePatch(Schema):
    """Only the fields given change (``starting_deadline_seconds: null`` removes the deadline)."""

    cron: str | None = Field(None, description=CRON_HELP)
    timezone: str | None = None
    method: str | None = None
    path: str | None = None
    headers: dict[str, str] | None = None
    body: str | None = None
    enabled: bool | None = None
    concurrency_policy: str | None = None
    starting_deadline_seconds: int | None = None


class RunOut(Schema):
    scheduled_for: dt.datetime
    started_at: dt.datetime | None
    finished_at: dt.datetime | None
    outcome: str = Field(description="pending, running, succeeded, failed, skipped, missed or replaced")
    status_code: int | None
    duration_ms: int | None
    error: str


class ScheduleOut(Schema):
    name: str
    function: str
    cron: str
    explanation: str
    timezone: str
    method: str
    path: str
    headers: dict[str, str]
    body: str
    enabled: bool
    concurrency_policy: str
    starting_deadline_seconds: int | None
    next_run_at: dt.datetime | None
    last_scheduled_at: dt.datetime | None
    last_run: RunOut | None
    created_at: dt.datetime
    updated_at: dt.datetime


class PreviewIn(Schema):
    cron: str = Field(..., description=CRON_HELP)
    timezone: str = "UTC"


class PreviewOut(Schema):
    valid: bool
    error: str = Field(description="Why the expression or zone is refused (empty when valid)")
    cron: str = Field(description="The expression as five fields (macros expanded) when valid")
    timezone: str
    explanation: str
    next_runs: list[dt.datetime] = Field(description="The next five run times, in the given zone")


class RunsQuery(Schema):
    limit: int = Field(50, ge=1, le=500)


# CLI login ----------------------------------------------------------------------------------------


class LoginStartIn(Schema):
    client_name: str = ""


class LoginPollIn(Schema):
    device_code: str


class PasswordIn(Schema):
    username: str
    password: str
    client_name: str = ""
