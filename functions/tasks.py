"""Celery tasks: take ids, fetch, return early when the row is gone, call one service.

All are safe to run twice. A transient ``BackendError`` is retried with backoff; a permanent one, or the
last retry, is recorded on the function with the backend's message.
"""

from celery import shared_task

from . import services
from .backends import BackendError
from .models import Build, Function, Revision

RETRY = {"max_retries": 5, "retry_backoff": 2, "retry_backoff_max": 60}


def _give_up(task, exc: BackendError) -> bool:
    return exc.permanent or task.request.retries >= task.max_retries


@shared_task(bind=True, acks_late=True, **RETRY)
def build_revision(self, build_id: int) -> None:
    build = Build.objects.select_related("revision__function__project").filter(pk=build_id).first()
    if build is None:
        return
    try:
        built = services.build_run(build=build)
    except BackendError as exc:
        if _give_up(self, exc):
            return services.build_fail(build=build, message=exc.message)
        raise self.retry(exc=exc, countdown=2**self.request.retries) from exc
    if built:
        deploy_revision.delay(build.revision_id)


@shared_task(bind=True, acks_late=True, **RETRY)
def deploy_revision(self, revision_id: int) -> None:
    revision = Revision.objects.select_related("function__project").filter(pk=revision_id).first()
    if revision is None:
        return
    try:
        services.revision_deploy_run(revision=revision)
    except BackendError as exc:
        if _give_up(self, exc):
            return services.function_mark_failed(function=revision.function, message=exc.message)
        raise self.retry(exc=exc, countdown=2**self.request.retries) from exc


@shared_task(bind=True, acks_late=True, **RETRY)
def delete_function(self, function_id: int) -> None:
    function = Function.objects.select_related("project").filter(pk=function_id).first()
    if function is None or function.status == "deleted":
        return
    try:
        services.function_delete_run(function=function)
    except BackendError as exc:
        if _give_up(self, exc):
            return services.function_mark_failed(function=function, message=f"delete failed: {exc.message}")
        raise self.retry(exc=exc, countdown=2**self.request.retries) from exc


@shared_task
def collect_expired() -> int:
    return services.functions_collect_expired()


from . import tasks_schedules  # noqa: E402,F401  (registers the schedule tasks)
