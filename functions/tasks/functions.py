"""Celery tasks: take ids, fetch, return early when the row is gone, call one service.

All are safe to run twice. A transient ``BackendError`` is retried with backoff; a permanent one, or the
last retry, is recorded on the function with the backend's message.
"""

import logging

from celery import shared_task
from django.conf import settings

from functions.backends import BackendError
from functions.models import Build, BuildStatus, Function, Revision
from functions.services import build_slots, enqueue
from functions.services import functions as services
from functions.services import storage as services_storage
from functions.services.observe import functions_observe
from functions.services.orphans import orphans_collect
from functions.services.reconcile import functions_reconcile
from functions.services.retention import history_prune
from functions.tasks.retry import RETRY, drive

log = logging.getLogger(__name__)


@shared_task(name="functions.tasks.build_revision", bind=True, acks_late=True, **RETRY)
def build_revision(self, build_id: int) -> None:
    build = Build.objects.select_related("revision__function__project").filter(pk=build_id).first()
    if build is None:
        return
    function_id = build.revision.function_id
    holder = f"{build_id}:{self.request.id}"
    finished = build.status in (BuildStatus.SUCCEEDED, BuildStatus.FAILED)
    settled = finished or not build.revision.function.is_alive  # nothing to build: no slot needed
    wait = settings.HKS_BUILD_SLOT_WAIT_SECONDS
    with build_slots.held(build.revision.function.project_id, holder) as running:
        if not running and not settled:
            # the project's builds are all running: wait off the worker, other projects' go meanwhile
            services.build_wait(build=build)
            enqueue.enqueue(function_id, lambda: build_revision.apply_async((build_id,), countdown=wait))
            return
        built = drive(
            self,
            lambda: services.build_run(build=build),
            lambda msg: services.build_fail(build=build, message=msg),
            function_id=function_id,
        )
    if built:
        function_id = build.revision.function_id
        enqueue.enqueue(function_id, lambda: deploy_revision.delay(build.revision_id))


@shared_task(name="functions.tasks.deploy_revision", bind=True, acks_late=True, **RETRY)
def deploy_revision(self, revision_id: int) -> None:
    revision = Revision.objects.select_related("function__project").filter(pk=revision_id).first()
    if revision is None:
        return
    served = drive(
        self,
        lambda: services.revision_deploy_run(revision=revision),
        lambda msg: services.function_mark_failed(function=revision.function, message=msg),
        function_id=revision.function_id,
    )
    if served:  # a new revision serves: the function's oldest ones may go now
        prune_revisions.delay(revision.function_id)


@shared_task(name="functions.tasks.delete_function", bind=True, acks_late=True, **RETRY)
def delete_function(self, function_id: int) -> None:
    function = Function.objects.select_related("project").filter(pk=function_id).first()
    if function is None or function.status == "deleted":
        return
    drive(
        self,
        lambda: services.function_delete_run(function=function),
        lambda msg: services.function_mark_failed(function=function, message=f"delete failed: {msg}"),
        function_id=function.pk,
    )
    if function.ephemeral and Function.objects.filter(pk=function_id, status="deleted").exists():
        reclaim_storage.delay(function_id)  # an agent's function leaves nothing behind


@shared_task(name="functions.tasks.reclaim_storage", bind=True, acks_late=True, **RETRY)
def reclaim_storage(self, function_id: int) -> None:
    """Free a deleted function's archives, artifacts and rows; beat's ``reclaim_due`` retries later."""
    function = Function.objects.select_related("project").filter(pk=function_id).first()
    if function is None:
        return
    try:
        services_storage.function_storage_reclaim(function=function)
    except BackendError as exc:
        if exc.permanent or self.request.retries >= self.max_retries:
            log.warning("reclaiming %s failed: %s", function, exc.message)
            return
        raise self.retry(exc=exc, countdown=2**self.request.retries) from exc


@shared_task(name="functions.tasks.prune_revisions", bind=True, acks_late=True, **RETRY)
def prune_revisions(self, function_id: int) -> None:
    """Remove a function's revisions past its history; beat's ``reclaim_due`` catches up on any left."""
    function = Function.objects.select_related("project").filter(pk=function_id).first()
    if function is None:
        return
    drive(
        self,
        lambda: services_storage.revisions_prune(function=function),
        lambda msg: log.warning("pruning the revisions of %s failed: %s", function, msg),
    )


@shared_task(name="functions.tasks.reclaim_due")
def reclaim_due() -> int:
    """Reclaim the deleted functions that are due, and prune the histories that grew past their limit."""
    due = services_storage.functions_reclaim_due()
    for function_id in due:
        reclaim_storage.delay(function_id)
    over = services_storage.functions_prune_due()
    for function_id in over:
        prune_revisions.delay(function_id)
    return len(due) + len(over)


@shared_task(name="functions.tasks.prune_history")
def prune_history() -> dict:
    """Audit events, schedule runs and ended sessions past their retention (services/retention.py)."""
    return history_prune()


@shared_task(name="functions.tasks.collect_expired")
def collect_expired() -> int:
    return services.functions_collect_expired()


@shared_task(name="functions.tasks.reconcile")
def reconcile() -> dict:
    """Resume builds/deploys/deletes whose task was lost; follow the backends' health (services.reconcile)."""
    return vars(functions_reconcile())


@shared_task(name="functions.tasks.collect_orphans")
def collect_orphans() -> int:
    return orphans_collect()


@shared_task(name="functions.tasks.observe_functions", ignore_result=True)
def observe_functions() -> int:
    """Replicas and serving revisions as the backends report them (see services/observe.py)."""
    return functions_observe()
