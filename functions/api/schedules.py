"""Schedules of a function: create, read, change, pause, resume, delete, run history, and a preview of
the next run times of a cron expression in a zone.

The cron dialect is Kubernetes CronJob's: five fields or a macro (``@hourly``, ``@daily``/``@midnight``,
``@weekly``, ``@monthly``, ``@yearly``/``@annually``), evaluated in the schedule's IANA time zone.
"""

from __future__ import annotations

from django.db.models import Prefetch
from ninja import Query, Router, Status

from functions import selectors
from functions.api.schemas import (
    ErrorOut,
    PreviewIn,
    PreviewOut,
    RunOut,
    RunsQuery,
    ScheduleIn,
    ScheduleOut,
    SchedulePatch,
)
from functions.cron import explain
from functions.errors import ServiceError
from functions.models import Role, Schedule, ScheduleRun
from functions.services import schedules as services_schedules

router = Router(tags=["schedules"])
ERRORS = {400: ErrorOut, 403: ErrorOut, 404: ErrorOut, 409: ErrorOut}
BASE = "/projects/{slug}/functions/{name}/schedules"


def _function(request, slug: str, name: str, role: str = Role.VIEWER):
    return selectors.function_get_for_user(user=request.auth, project_slug=slug, name=name, role=role)


def _schedule(request, slug: str, name: str, sched: str, role: str = Role.VIEWER) -> Schedule:
    return selectors.schedule_get(function=_function(request, slug, name, role), name=sched)


def run_out(run: ScheduleRun) -> dict:
    fields = ("scheduled_for", "started_at", "finished_at", "outcome", "status_code", "duration_ms", "error")
    return {key: getattr(run, key) for key in fields}


def schedule_out(schedule: Schedule, last_run: ScheduleRun | None = None) -> dict:
    fields = (
        "name cron timezone method path headers body enabled concurrency_policy starting_deadline_seconds "
        "next_run_at last_scheduled_at created_at updated_at"
    ).split()
    return {
        **{key: getattr(schedule, key) for key in fields},
        "function": schedule.function.name,
        "explanation": explain(schedule.cron),
        "last_run": run_out(last_run) if last_run else None,
    }


def _latest_run(schedule: Schedule) -> ScheduleRun | None:
    return schedule.runs.order_by("-scheduled_for").first()


@router.get(BASE, response={200: list[ScheduleOut], **ERRORS})
def schedule_list(request, slug: str, name: str):
    recent = Prefetch("runs", queryset=ScheduleRun.objects.order_by("-scheduled_for")[:1], to_attr="recent")
    schedules = selectors.schedules_for_function(function=_function(request, slug, name)).prefetch_related(
        recent
    )
    return [schedule_out(s, s.recent[0] if s.recent else None) for s in schedules]


@router.post(BASE, response={201: ScheduleOut, **ERRORS})
def schedule_create(request, slug: str, name: str, payload: ScheduleIn):
    """Create a schedule; an invalid cron expression or zone is refused with the reason."""
    function = _function(request, slug, name, Role.DEVELOPER)
    schedule = services_schedules.schedule_create(function=function, user=request.auth, **payload.dict())
    return Status(201, schedule_out(schedule))


@router.get(BASE + "/{sched}", response={200: ScheduleOut, **ERRORS})
def schedule_detail(request, slug: str, name: str, sched: str):
    schedule = _schedule(request, slug, name, sched)
    return schedule_out(schedule, _latest_run(schedule))


@router.patch(BASE + "/{sched}", response={200: ScheduleOut, **ERRORS})
def schedule_update(request, slug: str, name: str, sched: str, payload: SchedulePatch):
    schedule = _schedule(request, slug, name, sched, Role.DEVELOPER)
    # null means "not given", except for the deadline where it removes the deadline
    changes = {
        key: value
        for key, value in payload.dict(exclude_unset=True).items()
        if value is not None or key == "starting_deadline_seconds"
    }
    if not changes:
        raise ServiceError("nothing to change")
    schedule = services_schedules.schedule_update(schedule=schedule, user=request.auth, **changes)
    return schedule_out(schedule, _latest_run(schedule))


@router.delete(BASE + "/{sched}", response={204: None, **ERRORS})
def schedule_delete(request, slug: str, name: str, sched: str):
    services_schedules.schedule_delete(
        schedule=_schedule(request, slug, name, sched, Role.DEVELOPER), user=request.auth
    )
    return Status(204, None)


@router.post(BASE + "/{sched}/pause", response={200: ScheduleOut, **ERRORS})
def schedule_pause(request, slug: str, name: str, sched: str):
    schedule = _schedule(request, slug, name, sched, Role.DEVELOPER)
    schedule = services_schedules.schedule_pause(schedule=schedule, user=request.auth)
    return schedule_out(schedule, _latest_run(schedule))


@router.post(BASE + "/{sched}/resume", response={200: ScheduleOut, **ERRORS})
def schedule_resume(request, slug: str, name: str, sched: str):
    schedule = _schedule(request, slug, name, sched, Role.DEVELOPER)
    schedule = services_schedules.schedule_resume(schedule=schedule, user=request.auth)
    return schedule_out(schedule, _latest_run(schedule))


@router.get(BASE + "/{sched}/runs", response={200: list[RunOut], **ERRORS})
def schedule_runs(request, slug: str, name: str, sched: str, query: Query[RunsQuery]):
    """Run history, newest first."""
    schedule = _schedule(request, slug, name, sched)
    return [run_out(run) for run in schedule.runs.order_by("-scheduled_for")[: query.limit]]


@router.post("/projects/{slug}/schedules/preview", response={200: PreviewOut, **ERRORS})
def schedule_preview(request, slug: str, payload: PreviewIn):
    """The next five run times of ``cron`` in ``timezone``, or why the expression or zone is refused."""
    selectors.project_get_for_user(user=request.auth, slug=slug)
    return services_schedules.schedule_preview(cron_expression=payload.cron, zone=payload.timezone)
