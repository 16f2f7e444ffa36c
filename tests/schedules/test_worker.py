"""The dispatcher as beat runs it, with the real Celery worker on the real Redis: a due schedule is claimed,
its request task runs on the worker and reaches a real HTTP server, and the run is recorded; two
dispatchers racing over all schedules claim each due time once."""

import datetime as dt
import threading
import time

import pytest
from django.db import connection

from functions import schedule_firing
from functions.models import ScheduleRun
from functions.schedule_firing import Outcome

from .conftest import T0

MIN = dt.timedelta(minutes=1)


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
    from functions import services_schedules

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
