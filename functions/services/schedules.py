"""Writes for schedules: create, update, pause, resume, delete, preview, and pushing them to a backend.

Every change is validated completely before anything is saved (a bad cron expression or zone is refused
with the reason). Who fires a schedule depends on the project's backend: when
``backend.fires_schedules_itself()`` (Knative: one CronJob per schedule, ``suspend`` while paused) each
change is pushed by the ``sync_schedule`` task; otherwise the portal's own dispatcher fires it (see
``functions.services.schedule_runs``). The next run is kept in ``next_run_at``, in the schedule's zone.
"""

from __future__ import annotations

import datetime as dt
import re

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone as dj_timezone

from functions import cron as cronlib
from functions.backends import function_ref, get_backend
from functions.backends.base import ScheduleSpec
from functions.errors import ServiceError
from functions.models import ConcurrencyPolicy, Function, Schedule
from functions.services import enqueue
from functions.services.audit import audit
from functions.services.invoke import function_base_url
from functions.validators import check_function_path, validate_dns_label

METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS")
FIELDS = (
    "cron",
    "timezone",
    "method",
    "path",
    "headers",
    "body",
    "enabled",
    "concurrency_policy",
    "starting_deadline_seconds",
)
MAX_BODY_BYTES = 64 * 1024  # it travels inside a CronJob manifest on Knative
MAX_HEADERS = 30
RESERVED_HEADERS = {
    "host",
    "content-length",
    "connection",
    "keep-alive",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "proxy-authorization",
    "proxy-connection",
    "forwarded",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-proto",
}
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
MAX_DEADLINE_SECONDS = 31 * 24 * 3600


# Validation ---------------------------------------------------------------------------------------


def _clean(values: dict) -> dict:
    """Checked and normalised schedule fields; raises ``ServiceError`` naming the first bad one."""
    out = dict(values)
    try:
        out["cron"] = cronlib.normalize_cron(values["cron"])
        cronlib.get_zone(values["timezone"])
    except cronlib.CronError as exc:
        raise ServiceError(str(exc)) from exc
    out["method"] = str(values["method"]).upper()
    if out["method"] not in METHODS:
        raise ServiceError(f"method must be one of {', '.join(METHODS)}")
    out["path"] = _clean_path(values["path"])
    out["headers"] = _clean_headers(values["headers"] or {})
    out["body"] = values["body"] or ""
    if len(out["body"].encode()) > MAX_BODY_BYTES:
        raise ServiceError(f"body is larger than {MAX_BODY_BYTES // 1024} KiB")
    if values["concurrency_policy"] not in ConcurrencyPolicy.values:
        raise ServiceError(f"concurrency_policy must be one of {', '.join(ConcurrencyPolicy.values)}")
    deadline = values["starting_deadline_seconds"]
    if deadline is not None and not (isinstance(deadline, int) and 1 <= deadline <= MAX_DEADLINE_SECONDS):
        raise ServiceError(
            f"starting_deadline_seconds must be between 1 and {MAX_DEADLINE_SECONDS}, or empty"
        )
    out["enabled"] = bool(values["enabled"])
    return out


def _clean_path(path: str) -> str:
    path = path or "/"
    if len(path) > 200:
        raise ServiceError("path must be at most 200 characters")
    try:
        return check_function_path(path)
    except ValueError as exc:
        raise ServiceError(str(exc)) from exc


def _clean_headers(headers) -> dict[str, str]:
    if not isinstance(headers, dict) or len(headers) > MAX_HEADERS:
        raise ServiceError(f"headers must be an object of at most {MAX_HEADERS} names and values")
    clean = {}
    for name, value in headers.items():
        if not isinstance(name, str) or not _HEADER_NAME.fullmatch(name):
            raise ServiceError(f"{name!r} is not a valid header name")
        if name.lower() in RESERVED_HEADERS:
            raise ServiceError(f"header {name} is set by the platform and cannot be scheduled")
        if not isinstance(value, str) or any(c in value for c in "\r\n\0") or len(value) > 4096:
            raise ServiceError(f"header {name} has an invalid value")
        clean[name] = value
    return clean


def _validate_name(name: str) -> None:
    try:
        validate_dns_label(name)
    except ValidationError as exc:
        raise ServiceError(f"schedule name: {exc.messages[0]}") from exc


def _next_run_at(schedule: Schedule, now: dt.datetime) -> dt.datetime | None:
    if not schedule.enabled:
        return None
    return cronlib.next_run(schedule.cron, schedule.timezone, after=now)


def _enqueue_sync(schedule: Schedule) -> None:
    tasks_schedules = enqueue.tasks().schedules

    schedule_id = schedule.pk
    _on_commit_queue(
        schedule.function, schedule.name, lambda: tasks_schedules.sync_schedule.delay(schedule_id)
    )


def _on_commit_queue(function: Function, name: str, send) -> None:
    """After commit, queue a backend sync; a broker that is down must not turn a saved change into an
    error answer, so the failure goes to the log and the audit trail instead."""

    def queue() -> None:
        try:
            send()
        except Exception as exc:  # kombu raises several kinds for a broker that is down
            audit(
                project=function.project,
                function=function,
                action="schedule.sync_failed",
                schedule=name,
                message=f"could not queue the backend sync: {exc}"[:500],
            )

    transaction.on_commit(queue)


# Create, update, pause, resume, delete ------------------------------------------------------------


@transaction.atomic
def schedule_create(
    *,
    function: Function,
    user,
    name: str,
    cron: str,
    timezone: str = "UTC",
    method: str = "POST",
    path: str = "/",
    headers: dict | None = None,
    body: str = "",
    enabled: bool = True,
    concurrency_policy: str = ConcurrencyPolicy.ALLOW,
    starting_deadline_seconds: int | None = None,
    now: dt.datetime | None = None,
) -> Schedule:
    """Validate everything, then save; a refused schedule leaves nothing behind."""
    if not function.is_alive:
        raise ServiceError(f"function {function.name} is being deleted", code=409)
    _validate_name(name)
    values = _clean(
        dict(
            cron=cron,
            timezone=timezone,
            method=method,
            path=path,
            headers=headers,
            body=body,
            enabled=enabled,
            concurrency_policy=concurrency_policy,
            starting_deadline_seconds=starting_deadline_seconds,
        )
    )
    if function.schedules.filter(name=name).exists():
        raise ServiceError(f"function {function.name} already has a schedule named {name!r}", code=409)
    schedule = Schedule(function=function, name=name, **values)
    schedule.next_run_at = _next_run_at(schedule, now or _now())
    try:
        with transaction.atomic():
            schedule.save()
    except IntegrityError as exc:
        raise ServiceError(
            f"function {function.name} already has a schedule named {name!r}", code=409
        ) from exc
    audit(
        project=function.project,
        function=function,
        action="schedule.create",
        actor=user,
        schedule=name,
        cron=schedule.cron,
        timezone=schedule.timezone,
    )
    _enqueue_sync(schedule)
    return schedule


@transaction.atomic
def schedule_update(*, schedule: Schedule, user, now: dt.datetime | None = None, **changes) -> Schedule:
    """Change any of ``FIELDS``; a new cron, zone or re-enabling recomputes the next run from now."""
    if not schedule.function.is_alive:
        raise ServiceError(f"function {schedule.function.name} is being deleted", code=409)
    unknown = set(changes) - set(FIELDS)
    if unknown:
        raise ServiceError(f"unknown schedule fields: {', '.join(sorted(unknown))}")
    values = _clean({field: changes.get(field, getattr(schedule, field)) for field in FIELDS})
    timing_changed = any(values[f] != getattr(schedule, f) for f in ("cron", "timezone", "enabled"))
    for field, value in values.items():
        setattr(schedule, field, value)
    if timing_changed:
        schedule.next_run_at = _next_run_at(schedule, now or _now())
    schedule.save()
    audit(
        project=schedule.function.project,
        function=schedule.function,
        action="schedule.update",
        actor=user,
        schedule=schedule.name,
        changed=sorted(changes),
    )
    _enqueue_sync(schedule)
    return schedule


def schedule_pause(*, schedule: Schedule, user) -> Schedule:
    """Stop firing (a suspended CronJob on Knative). Idempotent."""
    return schedule_update(schedule=schedule, user=user, enabled=False)


def schedule_resume(*, schedule: Schedule, user, now: dt.datetime | None = None) -> Schedule:
    """Fire again from the next due time after now; due times that passed while paused are not replayed."""
    return schedule_update(schedule=schedule, user=user, now=now, enabled=True)


@transaction.atomic
def schedule_delete(*, schedule: Schedule, user) -> None:
    tasks_schedules = enqueue.tasks().schedules

    function = schedule.function
    audit(
        project=function.project,
        function=function,
        action="schedule.delete",
        actor=user,
        schedule=schedule.name,
    )
    schedule.delete()
    function_id, name = function.pk, schedule.name
    _on_commit_queue(function, name, lambda: tasks_schedules.remove_schedule.delay(function_id, name))


def schedule_preview(*, cron_expression: str, zone: str, now: dt.datetime | None = None) -> dict:
    """What the dashboard and API show before saving: the next five due times in the zone, or why not."""
    try:
        normalized = cronlib.normalize_cron(cron_expression)
        tz = cronlib.get_zone(zone)
    except cronlib.CronError as exc:
        return {
            "valid": False,
            "error": str(exc),
            "cron": cron_expression,
            "timezone": zone,
            "explanation": "",
            "next_runs": [],
        }
    runs = cronlib.next_runs(normalized, zone, after=now or _now())
    return {
        "valid": True,
        "error": "",
        "cron": normalized,
        "timezone": zone,
        "explanation": cronlib.explain(normalized),
        "next_runs": [r.astimezone(tz) for r in runs],
    }


def _now() -> dt.datetime:
    return dj_timezone.now()


# Backends that fire schedules themselves (Knative CronJobs) ---------------------------------------


def function_target_url(function: Function) -> str:
    """The function's base URL as a schedule reaches it, from inside the cluster ("" while it has none)."""
    try:
        return function_base_url(function, in_cluster=True)
    except ServiceError:
        return ""


def schedule_spec(schedule: Schedule) -> ScheduleSpec:
    function = schedule.function
    return ScheduleSpec(
        ref=function_ref(function),
        name=schedule.name,
        cron=schedule.cron,
        timezone=schedule.timezone,
        method=schedule.method,
        path=schedule.path,
        headers=dict(schedule.headers),
        body=schedule.body,
        enabled=schedule.enabled,
        concurrency_policy=schedule.concurrency_policy,
        starting_deadline_seconds=schedule.starting_deadline_seconds,
        target_url=function_target_url(function) + schedule.path,
        kind=function.kind,
    )


def schedule_sync_run(*, schedule: Schedule) -> None:
    """Push a schedule to a backend that fires it (create/update, ``suspend`` when paused)."""
    backend = get_backend(schedule.function.project)
    if backend.fires_schedules_itself() and schedule.function.is_alive:
        backend.apply_schedule(schedule_spec(schedule))


def schedule_remove_run(*, function: Function, name: str) -> None:
    backend = get_backend(function.project)
    if backend.fires_schedules_itself():
        backend.delete_schedule(function_ref(function), name)
