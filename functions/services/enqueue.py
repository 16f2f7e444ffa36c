"""Sending Celery tasks from services, and pushing a function's new status to its pages.

Tasks import services (a task loads a row by id and calls one), so services reach ``functions.tasks`` only
through :func:`tasks` here, imported lazily: the one documented exception to the layers in ``.importlinter``
(and to tests/repository/test_layout.py's no-cycle rule)."""

from __future__ import annotations

import logging

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from functions.errors import ServiceError
from functions.models import Function
from functions.realtime import push as live

log = logging.getLogger(__name__)


def tasks():
    """The ``functions.tasks`` package (its modules: functions, provision, schedules, sessions)."""
    import functions.tasks  # the lazy edge services -> tasks (see the module docstring)

    return functions.tasks


def push(function_id: int) -> None:
    """Tell the pages showing this function that it changed (functions/realtime/push.py); never raises."""
    live.function_changed(function_id=function_id)


def tasks_queue_check() -> None:
    """Refuse (503) work that would need a task while the task queue (Redis) does not answer - before
    anything is written, so the refused request leaves nothing half-made."""
    import redis

    try:
        queue_client().ping()
    except (redis.exceptions.RedisError, OSError) as exc:
        raise ServiceError(
            f"the task queue is unavailable ({type(exc).__name__}); nothing was changed, try again shortly",
            code=503,
        ) from exc


def queue_client():
    """A redis-py client of the task queue's Redis (one per process; build_slots.py keeps its slots there)."""
    import redis

    global _QUEUE_CLIENT
    url = settings.REDIS_URL  # the broker, spelled for redis-py
    if _QUEUE_CLIENT is None or _QUEUE_CLIENT[0] != url:
        _QUEUE_CLIENT = (url, redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=2))
    return _QUEUE_CLIENT[1]


_QUEUE_CLIENT = None


def enqueue(function_id: int, send) -> bool:
    """Send a function's task, starting its heartbeat clock. When the queue refuses it, the function says
    so and the reconciler (services/reconcile.py) sends it again later; returns whether it was sent."""
    Function.objects.filter(pk=function_id).update(task_heartbeat_at=timezone.now())
    try:
        send()
    except Exception as exc:  # noqa: BLE001 - kombu/redis connection errors of every kind
        log.warning("could not enqueue the task of function %s: %s", function_id, exc)
        Function.objects.filter(pk=function_id).update(
            status_message=f"waiting for the task queue ({type(exc).__name__}); it will be retried"
        )
        return False
    return True


def on_commit(function_id: int, send) -> None:
    """Once the transaction commits: push the function's new status to its pages, then enqueue its task."""

    def run():
        push(function_id)
        enqueue(function_id, send)

    transaction.on_commit(run)


def on_commit_send(send) -> None:
    """Once the transaction commits, send a task that moves no function (a project's, a schedule's)."""
    transaction.on_commit(send)
