"""The dispatcher as beat runs it, with the real Celery worker on the real Redis: a due schedule is claimed,
its request task runs on the worker and reaches a real HTTP server, and the run is recorded; two
dispatchers racing over all schedules — two threads, or two separate processes as two beats would be —
claim each due time once."""

import datetime as dt
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import redis
from django.conf import settings
from django.db import connection

from functions.models import AuditEvent, Schedule, ScheduleRun
from functions.services import schedule_runs as schedule_firing
from functions.services.schedule_runs import Outcome
from tests.support.schedules import T0, hello, make_schedule, target  # noqa: F401  (fixtures of the schedule tests)

MIN = dt.timedelta(minutes=1)
ROOT = Path(__file__).resolve().parents[2]


def wait_for(predicate, timeout=60.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


@pytest.fixture
def pointed(hello, target):
    hello.internal_url = target.url
    hello.save()
    return hello


def test_dispatch_enqueues_and_the_worker_sends_and_records(celery_worker, pointed, target, make_schedule):
    schedule = make_schedule(cron="* * * * *", now=T0, path="/status/201", body="ping")
    [run] = schedule_firing.schedules_dispatch(now=T0 + MIN + dt.timedelta(seconds=2))
    wait_for(lambda: ScheduleRun.objects.get(pk=run.pk).outcome not in Outcome.ACTIVE)
    run.refresh_from_db()
    assert (run.outcome, run.status_code, run.scheduled_for) == (Outcome.SUCCEEDED, 201, T0 + MIN)
    assert [r["body"] for r in target.requests] == ["ping"]
    assert target.requests[0]["headers"]["X-HKS-Schedule"] == schedule.name


def test_dispatch_skips_paused_schedules(transactional_db, pointed, make_schedule, owner):
    from functions.services import schedules as services_schedules

    schedule = make_schedule(cron="* * * * *", now=T0)
    services_schedules.schedule_pause(schedule=schedule, user=owner)
    assert schedule_firing.schedules_dispatch(now=T0 + 5 * MIN) == []
    assert not ScheduleRun.objects.exists()


def test_two_dispatchers_racing_over_all_schedules_fire_each_due_time_once(
    transactional_db, pointed, make_schedule
):
    for n in range(3):
        make_schedule(name=f"s{n}", cron="* * * * *", now=T0)
    now = T0 + MIN + dt.timedelta(seconds=1)
    barrier = threading.Barrier(2)
    claimed, errors = [], []

    def beat():
        try:
            barrier.wait()
            claimed.extend(schedule_firing.schedules_dispatch(now=now))
        except Exception as exc:  # surfaced below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=beat) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(claimed) == 3
    assert ScheduleRun.objects.count() == 3
    assert set(ScheduleRun.objects.values_list("scheduled_for", flat=True)) == {T0 + MIN}


def _database_url() -> str:
    """The test database as a ``DATABASE_URL`` another process can open (SQLite file or PostgreSQL)."""
    db = connection.settings_dict
    if db["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{db['NAME']}"
    auth = f"{db['USER']}:{db['PASSWORD']}@" if db["PASSWORD"] else f"{db['USER']}@" if db["USER"] else ""
    return f"postgres://{auth}{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


DISPATCH = """
import datetime as dt, os, time
import django
django.setup()
from functions.services.schedule_runs import schedules_dispatch
time.sleep(max(0.0, float(os.environ["START_AT"]) - time.time()))
print(len(schedules_dispatch(now=dt.datetime.fromisoformat(os.environ["NOW"]))))
"""


def test_two_beat_processes_fire_each_due_time_once(transactional_db, pointed, make_schedule, tmp_path):
    for n in range(4):
        make_schedule(name=f"s{n}", cron="* * * * *", now=T0)
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "hks_portal.settings",
        "DATABASE_URL": _database_url(),
        "HKS_CELERY_QUEUE": f"hks-test-discard-{os.getpid()}",  # their request tasks go nowhere (dropped)
        "NOW": (T0 + MIN + dt.timedelta(seconds=3)).isoformat(),
        "START_AT": str(time.time() + 4),  # both start dispatching at the same instant
    }
    queue = env["HKS_CELERY_QUEUE"]
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", DISPATCH],
            env=env,
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    try:
        outputs = [proc.communicate(timeout=120) for proc in procs]
    finally:
        redis.Redis.from_url(settings.REDIS_URL).delete(queue)
    assert [proc.returncode for proc in procs] == [0, 0], outputs
    claimed = sorted(int(out.strip().splitlines()[-1]) for out, _ in outputs)
    assert sum(claimed) == 4, outputs
    assert ScheduleRun.objects.count() == 4
    assert set(ScheduleRun.objects.values_list("scheduled_for", flat=True)) == {T0 + MIN}


@pytest.fixture
def broker_down():
    """The Celery app pointed at a port where nothing listens, without publish retries."""
    from hks_portal.celery import app

    saved = {k: app.conf[k] for k in ("broker_url", "task_publish_retry", "broker_connection_timeout")}
    _drop_connections(app)
    app.conf.update(broker_url="redis://127.0.0.1:9/0", task_publish_retry=False, broker_connection_timeout=1)
    yield
    _drop_connections(app)
    app.conf.update(saved)


def _drop_connections(app) -> None:
    """Forget the app's pool (kombu keeps one per broker URL), so the next publish uses the configured one."""
    app._pool = None
    app.amqp._producer_pool = None


def test_a_run_that_cannot_be_queued_is_recorded_as_not_sent(
    transactional_db, pointed, make_schedule, broker_down, target
):
    schedule = make_schedule(cron="* * * * *", now=T0)  # saved even though its sync cannot be queued
    assert AuditEvent.objects.filter(action="schedule.sync_failed", detail__schedule=schedule.name).exists()
    run = schedule_firing.schedule_fire_due(schedule=schedule, now=T0 + MIN)
    run.refresh_from_db()
    assert run.outcome == Outcome.FAILED and run.error.startswith("not sent: the task queue failed")
    assert target.requests == []
    assert (
        schedule_firing.schedule_fire_due(schedule=Schedule.objects.get(pk=schedule.pk), now=T0 + MIN) is None
    )
