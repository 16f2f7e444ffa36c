"""Firing schedules on the local runtime: the dispatcher Celery beat calls, and the HTTP request.

``schedules_dispatch(now=...)`` runs every few seconds (possibly in two beat processes at once, or again
after a restart). For each enabled schedule whose ``next_run_at`` has come, it claims the most recent due
time by inserting its ``ScheduleRun``; the unique (schedule, scheduled_for) constraint lets exactly one
insert win, so a due time fires once. The winner then applies the schedule's rules:

- missed due times (the portal was down): only the most recent is considered; with
  ``starting_deadline_seconds`` it fires only if it is no older than the deadline, else it is recorded
  as ``missed`` (Kubernetes CronJob semantics); earlier ones are passed over, never replayed;
- ``Forbid``: recorded as ``skipped`` while an earlier run is pending or running;
- ``Replace``: earlier pending/running runs become ``replaced`` — a running request's connection is
  closed — and the new one starts;
- ``Allow``: runs overlap.

A pending run is sent by the ``fire_schedule_run`` task through ``run_execute``, which records status
code, duration and error. Every function takes ``now`` explicitly so tests control the clock.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time

import httpx
from django.db import IntegrityError, OperationalError, connection, transaction
from django.utils import timezone as dj_timezone

from functions import cron as cronlib
from functions.backends import BackendError, get_backend
from functions.models import ConcurrencyPolicy, Function, FunctionStatus, Schedule, ScheduleRun
from functions.services import enqueue
from functions.services.schedules import function_target_url

logger = logging.getLogger(__name__)


class Outcome:
    """Values of ``ScheduleRun.outcome``."""

    PENDING = "pending"  # claimed, request enqueued
    RUNNING = "running"
    SUCCEEDED = "succeeded"  # the function answered below 400
    FAILED = "failed"  # 4xx/5xx, timeout, connection error
    SKIPPED = "skipped"  # Forbid: the previous run was still going
    MISSED = "missed"  # older than starting_deadline_seconds when the dispatcher saw it
    REPLACED = "replaced"  # Replace: a newer run abandoned this one

    ACTIVE = (PENDING, RUNNING)


# A run still pending/running after the function's timeout plus this is treated as lost (worker died).
STALE_MARGIN = dt.timedelta(seconds=60)
CLAIM_ATTEMPTS = 5


# The dispatcher -----------------------------------------------------------------------------------


class _Stale(Exception):
    """The schedule changed (paused, edited) between reading it and claiming its due time."""


def schedules_dispatch(*, now: dt.datetime) -> list[ScheduleRun]:
    """Claim every due time that has come by ``now``; returns the runs this call claimed.

    Safe to run in any number of processes at once: each due time is claimed by inserting its
    ``ScheduleRun``, and the unique constraint lets one insert win.
    """
    _expire_lost_runs(now)
    due = (
        Schedule.objects.filter(enabled=True, next_run_at__lte=now)
        .exclude(function__status__in=[FunctionStatus.DELETING, FunctionStatus.DELETED])
        .select_related("function__project")
    )
    fires_itself: dict[int, bool] = {}
    claimed = []
    for schedule in due:
        project = schedule.function.project
        try:
            if project.pk not in fires_itself:
                fires_itself[project.pk] = _backend_fires_itself(project)
            if fires_itself[project.pk]:
                _advance(schedule, now)  # its CronJob fires it; keep next_run_at true for the dashboard
            elif run := schedule_fire_due(schedule=schedule, now=now):
                claimed.append(run)
        except Exception:  # one broken schedule must not stop the others
            logger.exception("dispatching schedule %s failed", schedule.pk)
    return claimed


def _backend_fires_itself(project) -> bool:
    try:
        return get_backend(project).fires_schedules_itself()
    except BackendError as exc:
        logger.error("project %s: backend unavailable, its schedules wait: %s", project.slug, exc.message)
        return True  # never fire locally what may belong to a cluster


def _advance(schedule: Schedule, now: dt.datetime) -> None:
    following = cronlib.next_run(schedule.cron, schedule.timezone, after=now)
    Schedule.objects.filter(pk=schedule.pk, next_run_at=schedule.next_run_at).update(next_run_at=following)


def schedule_fire_due(*, schedule: Schedule, now: dt.datetime) -> ScheduleRun | None:
    """Claim the most recent due time in ``[next_run_at, now]`` and decide what happens to it.

    Returns the claimed run (pending, skipped, missed), or None when nothing was due or another
    dispatcher claimed it first.
    """
    observed = schedule.next_run_at
    if not schedule.enabled or observed is None or observed > now:
        return None
    latest, passed_over = cronlib.latest_due(schedule.cron, schedule.timezone, since=observed, now=now)
    if latest is None:
        _advance(schedule, now)
        return None
    for attempt in range(1, CLAIM_ATTEMPTS + 1):
        try:
            return _claim(schedule, observed=observed, due=latest, now=now, passed_over=passed_over)
        except (IntegrityError, _Stale):
            return None  # another dispatcher claimed this due time, or the schedule changed
        except OperationalError as exc:
            # SQLite refuses a second writer with "database is locked" after its busy timeout (or at
            # once with a shared cache); try again shortly, PostgreSQL never gets here.
            if "locked" not in str(exc) or attempt == CLAIM_ATTEMPTS:
                raise
            time.sleep(0.05 * attempt)
    return None


@transaction.atomic
def _claim(schedule: Schedule, *, observed, due, now, passed_over: int) -> ScheduleRun:
    # The insert is the transaction's first statement: it is the claim, and on SQLite a transaction
    # that writes before it reads waits for the lock instead of failing with "database is locked".
    with transaction.atomic():
        run = ScheduleRun.objects.create(schedule_id=schedule.pk, scheduled_for=due, outcome=Outcome.PENDING)
    current = Schedule.objects.select_for_update().select_related("function").filter(pk=schedule.pk).first()
    if current is None or not current.enabled or current.next_run_at != observed:
        raise _Stale
    run.outcome, run.error = _decide(current, run, now=now, passed_over=passed_over)
    if run.outcome != Outcome.PENDING:
        run.finished_at = now
    run.save()
    Schedule.objects.filter(pk=current.pk).update(
        next_run_at=cronlib.next_run(current.cron, current.timezone, after=due), last_scheduled_at=due
    )
    if run.outcome == Outcome.PENDING:
        transaction.on_commit(lambda: _enqueue(run.pk))
    return run


def _enqueue(run_id: int) -> None:
    """Queue the run's request; if the broker is unreachable the run is closed as not sent, so the
    history says so (the due time is claimed and will not be fired again)."""
    tasks_schedules = enqueue.tasks().schedules

    try:
        tasks_schedules.fire_schedule_run.delay(run_id)
    except Exception as exc:  # kombu raises several kinds for a broker that is down
        logger.error("schedule run %s could not be queued: %s", run_id, exc)
        ScheduleRun.objects.filter(pk=run_id, outcome=Outcome.PENDING).update(
            outcome=Outcome.FAILED,
            finished_at=dj_timezone.now(),
            error=f"not sent: the task queue failed ({exc})",
        )


def _decide(schedule: Schedule, run: ScheduleRun, *, now, passed_over: int) -> tuple[str, str]:
    late = (now - run.scheduled_for).total_seconds()
    if passed_over:
        logger.warning(
            "schedule %s: %d earlier due times were not fired (scheduler down)", schedule.pk, passed_over
        )
    deadline = schedule.starting_deadline_seconds
    if deadline is not None and late > deadline:
        note = f"; {passed_over} earlier due times were passed over too" if passed_over else ""
        return Outcome.MISSED, f"seen {int(late)} s after its due time, past the {deadline} s deadline{note}"
    active = _active_runs(schedule, now).exclude(pk=run.pk)
    if schedule.concurrency_policy == ConcurrencyPolicy.FORBID and active.exists():
        previous = active.order_by("-scheduled_for").first()
        return Outcome.SKIPPED, f"the run due at {previous.scheduled_for:%Y-%m-%d %H:%M:%S}Z was still going"
    if schedule.concurrency_policy == ConcurrencyPolicy.REPLACE:
        active.update(
            outcome=Outcome.REPLACED,
            finished_at=now,
            error=f"replaced by the run due at {run.scheduled_for:%Y-%m-%d %H:%M:%S}Z",
        )
    return Outcome.PENDING, ""


def _active_runs(schedule: Schedule, now: dt.datetime):
    horizon = now - dt.timedelta(seconds=schedule.function.timeout_seconds) - STALE_MARGIN
    return schedule.runs.filter(outcome__in=Outcome.ACTIVE, scheduled_for__gte=horizon)


def _expire_lost_runs(now: dt.datetime) -> None:
    """Runs still pending/running long after their function's timeout lost their worker: close them."""
    candidates = ScheduleRun.objects.filter(outcome__in=Outcome.ACTIVE, scheduled_for__lt=now - STALE_MARGIN)
    for run in candidates.select_related("schedule__function")[:500]:
        limit = run.scheduled_for + dt.timedelta(seconds=run.schedule.function.timeout_seconds) + STALE_MARGIN
        if limit < now:
            ScheduleRun.objects.filter(pk=run.pk, outcome__in=Outcome.ACTIVE).update(
                outcome=Outcome.FAILED, finished_at=now, error="lost: no result before the function's timeout"
            )


# The HTTP request ---------------------------------------------------------------------------------

REPLACE_POLL_SECONDS = 0.5
MAX_ERROR_BODY = 500


class _Replaced(Exception):
    pass


def request_headers(schedule: Schedule, run: ScheduleRun) -> dict[str, str]:
    """What every fired request carries, then the schedule's own headers (which may override)."""
    function = schedule.function
    headers = {
        "User-Agent": "hks-scheduler/1",
        "X-HKS-Schedule": schedule.name,
        "X-HKS-Scheduled-For": run.scheduled_for.astimezone(dt.UTC).isoformat().replace("+00:00", "Z"),
    }
    if function.kind == "cloudevents":  # a CloudEvent in binary mode, as Knative's PingSource sends
        headers.update(
            {
                "ce-specversion": "1.0",
                "ce-type": "dev.hks.schedule",
                "ce-source": f"/projects/{function.project.slug}/functions/{function.name}"
                f"/schedules/{schedule.name}",
                "ce-id": f"schedule-run-{run.pk}",
                "ce-time": headers["X-HKS-Scheduled-For"],
            }
        )
    return {**headers, **schedule.headers}


def run_execute(*, run: ScheduleRun) -> None:
    """Send the run's request once and record status, duration and error.

    Only a pending run is sent (pending -> running is a conditional update), so a task delivered twice,
    or a run replaced or skipped meanwhile, never sends a second request.
    """
    started = dj_timezone.now()
    if not ScheduleRun.objects.filter(pk=run.pk, outcome=Outcome.PENDING).update(
        outcome=Outcome.RUNNING, started_at=started
    ):
        return
    schedule = run.schedule
    function = Function.objects.select_related("project").get(pk=schedule.function_id)
    if not function.is_alive:
        return _finish(run, outcome=Outcome.FAILED, error="the function was deleted")
    url = function_target_url(function) + schedule.path
    clock = time.monotonic()
    try:
        status, text = asyncio.run(
            _send_until_replaced(
                run.pk,
                schedule.method,
                url,
                request_headers(schedule, run),
                schedule.body,
                timeout=function.timeout_seconds + 30,
            )
        )
    except _Replaced:
        return  # the newer run already recorded this one as replaced
    except httpx.TimeoutException:
        return _finish(
            run,
            outcome=Outcome.FAILED,
            duration=time.monotonic() - clock,
            error=f"timed out after {function.timeout_seconds + 30} s",
        )
    except httpx.HTTPError as exc:
        return _finish(
            run,
            outcome=Outcome.FAILED,
            duration=time.monotonic() - clock,
            error=f"request to {url} failed: {exc or type(exc).__name__}",
        )
    failed = status >= 400
    _finish(
        run,
        outcome=Outcome.FAILED if failed else Outcome.SUCCEEDED,
        status_code=status,
        duration=time.monotonic() - clock,
        error=f"HTTP {status}: {text}" if failed else "",
    )


def _finish(run: ScheduleRun, *, outcome: str, error: str = "", status_code=None, duration=None) -> None:
    ScheduleRun.objects.filter(pk=run.pk, outcome=Outcome.RUNNING).update(
        outcome=outcome,
        error=error[:4000],
        status_code=status_code,
        finished_at=dj_timezone.now(),
        duration_ms=round(duration * 1000) if duration is not None else None,
    )


async def _send_until_replaced(run_id, method, url, headers, body, *, timeout) -> tuple[int, str]:
    async with httpx.AsyncClient(timeout=timeout, follow_redirects=False, trust_env=False) as client:
        request = asyncio.ensure_future(_send(client, method, url, headers, body))
        watcher = asyncio.ensure_future(_until_replaced(run_id))
        try:
            await asyncio.wait({request, watcher}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (request, watcher):
                task.cancel()  # Replace: cancelling closes the connection to the function
            await asyncio.gather(request, watcher, return_exceptions=True)
        if request.done() and not request.cancelled():
            return request.result()
        if watcher.done() and not watcher.cancelled() and watcher.exception() is None:
            raise _Replaced
        return request.result()


async def _send(client: httpx.AsyncClient, method, url, headers, body) -> tuple[int, str]:
    response = await client.send(
        client.build_request(method, url, headers=headers, content=body.encode()), stream=True
    )
    try:
        head = b""
        async for chunk in response.aiter_bytes():
            head += chunk
            if len(head) >= MAX_ERROR_BODY:
                break
        return response.status_code, head[:MAX_ERROR_BODY].decode(errors="replace")
    finally:
        await response.aclose()


async def _until_replaced(run_id: int) -> None:
    while True:
        await asyncio.sleep(REPLACE_POLL_SECONDS)
        if await asyncio.to_thread(_is_replaced, run_id):
            return


def _is_replaced(run_id: int) -> bool:
    try:
        return ScheduleRun.objects.filter(pk=run_id, outcome=Outcome.REPLACED).exists()
    finally:
        connection.close()  # this pool thread's own connection
