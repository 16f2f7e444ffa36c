"""How every task runs its work: a heartbeat while it runs, transient backend errors retried with backoff,
everything else recorded on the row (``drive``); ``RETRY`` is the tasks' shared retry policy."""

from __future__ import annotations

import threading
from collections.abc import Callable
from contextlib import contextmanager

from django.conf import settings
from django.db import close_old_connections
from django.utils import timezone

from functions.backends import BackendError
from functions.models import Function

RETRY = {"max_retries": 5, "retry_backoff": 2, "retry_backoff_max": 60}


@contextmanager
def _heartbeat(function_id: int):
    """While the body runs, tell the reconciler every few seconds that this function's task is alive."""
    stop = threading.Event()

    def beat() -> None:
        try:
            while not stop.wait(settings.HKS_TASK_HEARTBEAT_SECONDS):
                Function.objects.filter(pk=function_id).update(task_heartbeat_at=timezone.now())
        finally:
            close_old_connections()

    Function.objects.filter(pk=function_id).update(task_heartbeat_at=timezone.now())
    thread = threading.Thread(target=beat, name=f"heartbeat-{function_id}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=5)


def drive(
    task, work: Callable[[], object], give_up: Callable[[str], None], function_id: int | None = None
) -> object:
    """Run ``work`` with a heartbeat; retry transient backend errors with backoff, record everything else
    on the function.

    An unexpected exception (a bug) is recorded too, then re-raised for the worker's log, so a function
    never stays "building" forever. A worker that dies mid-task stops the heartbeat: the reconciler
    (functions/services/reconcile.py) then enqueues the task again.
    """
    try:
        if function_id is None:
            return work()
        with _heartbeat(function_id):
            return work()
    except BackendError as exc:
        if exc.permanent or task.request.retries >= task.max_retries:
            give_up(exc.message)
            return None
        raise task.retry(exc=exc, countdown=2**task.request.retries) from exc
    except Exception as exc:
        give_up(f"internal error: {type(exc).__name__}: {exc}")
        raise
