"""The reconciler: no function stays in a transient state forever, and its status follows its backend.

Run by beat every ``HKS_RECONCILE_INTERVAL_SECONDS`` (the ``reconcile`` task). Two passes:

* **Lost tasks.** A build, deploy or delete is enqueued with a heartbeat (``Function.task_heartbeat_at``)
  that the running task refreshes every ``HKS_TASK_HEARTBEAT_SECONDS``. A function still ``building``,
  ``deploying`` or ``deleting`` whose heartbeat is older than ``HKS_TASK_STALE_SECONDS`` has no live task:
  its worker was killed, or the message was lost (Redis restarted, or was down when it was enqueued). Its
  task is enqueued again (tasks are idempotent), up to ``HKS_TASK_MAX_RECOVERIES`` times; then the function
  is failed with a message saying so. A task that was only slow in the queue may so run twice; that
  changes nothing.
* **Backend health.** Each ``ready`` function's status is asked of its backend; one that does not answer
  makes the function ``unknown`` with "runtime unreachable: ..." until it answers again.

Time comes in as ``now`` so tests drive it with a controlled clock.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass

from django.conf import settings
from django.db.models import F, Q
from django.utils import timezone

from functions.backends import BackendError, function_ref, get_backend
from functions.models import Backend, Build, BuildStatus, Function, FunctionStatus
from functions.services import enqueue
from functions.services import functions as services

log = logging.getLogger(__name__)
TRANSIENT = (FunctionStatus.BUILDING, FunctionStatus.DEPLOYING, FunctionStatus.DELETING)
WHAT = {
    FunctionStatus.BUILDING: "build",
    FunctionStatus.DEPLOYING: "deploy",
    FunctionStatus.DELETING: "delete",
}


@dataclass
class Reconciled:
    resumed: int = 0
    failed: int = 0
    unreachable: int = 0
    recovered: int = 0


def functions_reconcile(*, now: dt.datetime | None = None) -> Reconciled:
    now = now or timezone.now()
    result = Reconciled()
    _resume_lost_tasks(now, result)
    _follow_backends(result)
    return result


def _resume_lost_tasks(now: dt.datetime, result: Reconciled) -> None:
    stale = now - dt.timedelta(seconds=settings.HKS_TASK_STALE_SECONDS)
    lost = Function.objects.filter(status__in=TRANSIENT).filter(
        Q(task_heartbeat_at__lt=stale) | Q(task_heartbeat_at=None, updated_at__lt=stale)
    )
    for function in lost.select_related("project", "desired_revision", "current_revision"):
        what = WHAT[function.status]
        if function.task_recoveries >= settings.HKS_TASK_MAX_RECOVERIES:
            _give_up(function, what)
            result.failed += 1
            continue
        # Only the reconciler that moves the heartbeat enqueues (two beats, or a slow pass, do not both).
        claimed = Function.objects.filter(
            pk=function.pk, status=function.status, task_heartbeat_at=function.task_heartbeat_at
        ).update(
            task_heartbeat_at=now,
            task_recoveries=F("task_recoveries") + 1,
            status_message=f"the {what} task was lost (worker stopped or task queue restarted); "
            f"retrying it (attempt {function.task_recoveries + 2})",
        )
        if claimed:
            log.warning("reconciler: %s has no live %s task; enqueueing it again", function, what)
            _enqueue(function)
            result.resumed += 1


def _latest_build(function: Function) -> Build | None:
    revision = function.desired_revision
    return revision.builds.order_by("-pk").first() if revision else None


def _enqueue(function: Function) -> None:
    tasks = enqueue.tasks().functions

    if function.status == FunctionStatus.DELETING:
        enqueue.enqueue(function.pk, lambda: tasks.delete_function.delay(function.pk))
        return
    revision = function.desired_revision or function.current_revision
    if revision is None:
        services.function_mark_failed(function=function, message="nothing to deploy: no revision was stored")
        return
    build = _latest_build(function)
    if function.status == FunctionStatus.BUILDING and build is not None and not revision.artifact:
        Build.objects.filter(pk=build.pk).exclude(status=BuildStatus.SUCCEEDED).update(
            status=BuildStatus.QUEUED
        )
        enqueue.enqueue(function.pk, lambda: tasks.build_revision.delay(build.pk))
    else:
        enqueue.enqueue(function.pk, lambda: tasks.deploy_revision.delay(revision.pk))


def _give_up(function: Function, what: str) -> None:
    message = (
        f"the {what} was interrupted {function.task_recoveries + 1} times (worker stopped or task queue "
        "unavailable) and was not resumed; deploy again"
    )
    build = _latest_build(function) if function.status == FunctionStatus.BUILDING else None
    if build is not None and not build.is_finished:
        services.build_fail(build=build, message=message)
    else:
        services.function_mark_failed(function=function, message=message)


def _follow_backends(result: Reconciled) -> None:
    watched = Function.objects.filter(
        status__in=[FunctionStatus.READY, FunctionStatus.UNKNOWN], project__backend=Backend.LOCAL
    ).select_related("project", "current_revision")
    down: dict[int, str] = {}  # project id -> why its backend did not answer
    for function in watched.order_by("project_id"):
        if function.project_id in down:
            reason = down[function.project_id]
        else:
            try:
                get_backend(function.project).status(function_ref(function))
                reason = ""
            except BackendError as exc:
                reason = down[function.project_id] = exc.message
        if reason and function.status == FunctionStatus.READY:
            changed = Function.objects.filter(pk=function.pk, status=FunctionStatus.READY).update(
                status=FunctionStatus.UNKNOWN, status_message=f"runtime unreachable: {reason}"[:4000]
            )
            result.unreachable += changed
        elif not reason and function.status == FunctionStatus.UNKNOWN:
            changed = Function.objects.filter(pk=function.pk, status=FunctionStatus.UNKNOWN).update(
                status=FunctionStatus.READY, status_message=""
            )
            result.recovered += changed
        else:
            continue
        if changed:
            enqueue.push(function.pk)
