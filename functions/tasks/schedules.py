"""Celery tasks for schedules. Registered by the import at the bottom of ``functions.tasks``.

``dispatch_schedules`` is driven by Celery beat every few seconds (``CELERY_BEAT_SCHEDULE``); it and
``fire_schedule_run`` are safe to run in several processes at once (see ``functions.services.schedule_runs``).
``sync_schedule`` / ``remove_schedule`` push schedules to backends that fire them themselves (Knative
CronJobs), retried with backoff on transient errors; a permanent failure is recorded in the audit log.
"""

from celery import shared_task
from django.utils import timezone

from functions.models import Function, Schedule, ScheduleRun
from functions.services import schedule_runs as schedule_firing
from functions.services import schedules as services_schedules
from functions.services.audit import audit
from functions.tasks.retry import RETRY, drive


@shared_task(name="functions.tasks_schedules.dispatch_schedules", ignore_result=True)
def dispatch_schedules() -> int:
    return len(schedule_firing.schedules_dispatch(now=timezone.now()))


@shared_task(name="functions.tasks_schedules.fire_schedule_run", acks_late=True, ignore_result=True)
def fire_schedule_run(run_id: int) -> None:
    run = ScheduleRun.objects.select_related("schedule").filter(pk=run_id).first()
    if run is not None:
        schedule_firing.run_execute(run=run)


@shared_task(name="functions.tasks_schedules.sync_schedule", bind=True, acks_late=True, **RETRY)
def sync_schedule(self, schedule_id: int) -> None:
    schedule = Schedule.objects.select_related("function__project").filter(pk=schedule_id).first()
    if schedule is None:
        return  # deleted meanwhile; remove_schedule takes care of the backend
    drive(
        self,
        lambda: services_schedules.schedule_sync_run(schedule=schedule),
        lambda msg: _record_failure(schedule.function, schedule.name, msg),
    )


@shared_task(name="functions.tasks_schedules.remove_schedule", bind=True, acks_late=True, **RETRY)
def remove_schedule(self, function_id: int, name: str) -> None:
    function = Function.objects.select_related("project").filter(pk=function_id).first()
    if function is None:
        return
    drive(
        self,
        lambda: services_schedules.schedule_remove_run(function=function, name=name),
        lambda msg: _record_failure(function, name, msg),
    )


def _record_failure(function: Function, name: str, message: str) -> None:
    audit(
        project=function.project,
        function=function,
        action="schedule.sync_failed",
        schedule=name,
        message=message[:500],
    )
