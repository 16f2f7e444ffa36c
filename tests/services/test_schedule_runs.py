"""The local dispatcher with a controlled clock, on the real database: due times, paused schedules,
missed runs, the three concurrency policies, no double firing with racing dispatchers, and the
request each run sends (to a real HTTP server) with what it records."""

import datetime as dt
import threading

import pytest
from django.db import connection

from functions.models import Schedule, ScheduleRun
from functions.services import schedule_runs as schedule_firing
from functions.services import schedules as services_schedules
from functions.services.schedule_runs import Outcome
from tests.support.schedules import T0, hello, make_schedule, target  # noqa: F401  (fixtures of the schedule tests)

pytestmark = pytest.mark.django_db

MIN = dt.timedelta(minutes=1)
SEC = dt.timedelta(seconds=1)


def fire(schedule, now):
    """One dispatcher pass over one schedule, reading it fresh as the dispatcher does."""
    return schedule_firing.schedule_fire_due(schedule=Schedule.objects.get(pk=schedule.pk), now=now)


def test_new_schedule_is_due_at_the_next_matching_time(make_schedule):
    schedule = make_schedule(cron="*/5 * * * *", now=T0 + 2 * MIN)
    assert schedule.next_run_at == T0 + 5 * MIN


def test_nothing_fires_before_the_due_time(make_schedule):
    schedule = make_schedule(now=T0)
    assert fire(schedule, T0 + 5 * MIN - SEC) is None
    assert not ScheduleRun.objects.exists()


def test_due_time_fires_once_and_advances_the_next_run(make_schedule):
    schedule = make_schedule(now=T0)
    run = fire(schedule, T0 + 5 * MIN + 3 * SEC)
    assert (run.scheduled_for, run.outcome) == (T0 + 5 * MIN, Outcome.PENDING)
    schedule.refresh_from_db()
    assert schedule.next_run_at == T0 + 10 * MIN
    assert schedule.last_scheduled_at == T0 + 5 * MIN


def test_a_restarted_dispatcher_with_stale_state_does_not_fire_the_same_due_time_again(make_schedule):
    schedule = make_schedule(now=T0)
    stale = Schedule.objects.get(pk=schedule.pk)  # read before the first pass, as after a restart
    assert fire(schedule, T0 + 5 * MIN) is not None
    assert schedule_firing.schedule_fire_due(schedule=stale, now=T0 + 5 * MIN + 5 * SEC) is None
    assert ScheduleRun.objects.filter(schedule=schedule).count() == 1


def test_a_paused_schedule_never_fires(make_schedule, owner):
    schedule = make_schedule(now=T0)
    services_schedules.schedule_pause(schedule=schedule, user=owner)
    for minutes in (5, 10, 60):
        assert fire(schedule, T0 + minutes * MIN) is None
    assert not ScheduleRun.objects.exists()
    assert Schedule.objects.get(pk=schedule.pk).next_run_at is None


def test_pausing_between_read_and_claim_wins(make_schedule, owner):
    schedule = make_schedule(now=T0)
    seen_by_dispatcher = Schedule.objects.get(pk=schedule.pk)
    services_schedules.schedule_pause(schedule=schedule, user=owner)
    assert schedule_firing.schedule_fire_due(schedule=seen_by_dispatcher, now=T0 + 5 * MIN) is None
    assert not ScheduleRun.objects.exists()


def test_resume_does_not_replay_the_paused_period(make_schedule, owner):
    schedule = make_schedule(now=T0)
    services_schedules.schedule_pause(schedule=schedule, user=owner)
    services_schedules.schedule_resume(schedule=schedule, user=owner, now=T0 + 62 * MIN)
    assert Schedule.objects.get(pk=schedule.pk).next_run_at == T0 + 65 * MIN
    assert fire(schedule, T0 + 64 * MIN) is None


def test_missed_runs_without_deadline_fire_only_the_most_recent(make_schedule):
    schedule = make_schedule(cron="*/10 * * * *", now=T0)
    run = fire(schedule, T0 + 3 * dt.timedelta(hours=1) + 7 * MIN)  # the portal was down for 3 hours
    assert run.scheduled_for == T0 + 3 * dt.timedelta(hours=1)
    assert run.outcome == Outcome.PENDING
    assert ScheduleRun.objects.count() == 1
    assert Schedule.objects.get(pk=schedule.pk).next_run_at == T0 + 3 * dt.timedelta(hours=1) + 10 * MIN


def test_missed_run_within_the_starting_deadline_fires(make_schedule):
    schedule = make_schedule(cron="*/10 * * * *", now=T0, starting_deadline_seconds=300)
    run = fire(schedule, T0 + 64 * MIN)  # latest due 10:00, seen 4 minutes late
    assert (run.scheduled_for, run.outcome) == (T0 + 60 * MIN, Outcome.PENDING)


def test_missed_run_past_the_starting_deadline_is_recorded_missed_and_not_sent(make_schedule):
    schedule = make_schedule(cron="*/10 * * * *", now=T0, starting_deadline_seconds=120)
    run = fire(schedule, T0 + 67 * MIN)
    assert (run.scheduled_for, run.outcome) == (T0 + 60 * MIN, Outcome.MISSED)
    assert "past the 120 s deadline" in run.error
    assert "5 earlier due times" in run.error  # 9:10 .. 9:50 were passed over
    assert run.finished_at is not None
    schedule.refresh_from_db()
    assert schedule.next_run_at == T0 + 70 * MIN
    services_schedules_run = fire(schedule, T0 + 70 * MIN + 2 * SEC)  # back on time: fires again
    assert services_schedules_run.outcome == Outcome.PENDING


def _running(schedule, due):
    return ScheduleRun.objects.create(
        schedule=schedule, scheduled_for=due, outcome=Outcome.RUNNING, started_at=due
    )


def test_forbid_skips_while_the_previous_run_is_still_going(make_schedule):
    schedule = make_schedule(cron="* * * * *", now=T0, concurrency_policy="Forbid")
    previous = _running(schedule, T0)
    run = fire(schedule, T0 + MIN)
    assert run.outcome == Outcome.SKIPPED
    assert "was still going" in run.error
    previous.refresh_from_db()
    assert previous.outcome == Outcome.RUNNING


def test_forbid_fires_once_the_previous_run_finished(make_schedule):
    schedule = make_schedule(cron="* * * * *", now=T0, concurrency_policy="Forbid")
    ScheduleRun.objects.create(schedule=schedule, scheduled_for=T0, outcome=Outcome.SUCCEEDED)
    assert fire(schedule, T0 + MIN).outcome == Outcome.PENDING


def test_forbid_ignores_a_run_lost_long_after_its_timeout(make_schedule, hello):
    hello.timeout_seconds = 60
    hello.save()
    schedule = make_schedule(cron="*/10 * * * *", now=T0, concurrency_policy="Forbid")
    _running(schedule, T0)
    assert fire(schedule, T0 + 10 * MIN).outcome == Outcome.PENDING


def test_replace_abandons_the_previous_run_and_starts_the_new_one(make_schedule):
    schedule = make_schedule(cron="* * * * *", now=T0, concurrency_policy="Replace")
    previous = _running(schedule, T0)
    run = fire(schedule, T0 + MIN)
    assert run.outcome == Outcome.PENDING
    previous.refresh_from_db()
    assert previous.outcome == Outcome.REPLACED
    assert "replaced by the run due at" in previous.error


def test_allow_overlaps_runs(make_schedule):
    schedule = make_schedule(cron="* * * * *", now=T0, concurrency_policy="Allow")
    previous = _running(schedule, T0)
    assert fire(schedule, T0 + MIN).outcome == Outcome.PENDING
    previous.refresh_from_db()
    assert previous.outcome == Outcome.RUNNING


def test_lost_runs_are_closed_by_the_dispatcher(make_schedule, hello):
    schedule = make_schedule(cron="* * * * *", now=T0)
    lost = _running(schedule, T0)
    schedule_firing._expire_lost_runs(T0 + dt.timedelta(seconds=hello.timeout_seconds + 30))
    lost.refresh_from_db()
    assert lost.outcome == Outcome.RUNNING  # still within timeout + margin
    schedule_firing._expire_lost_runs(T0 + dt.timedelta(seconds=hello.timeout_seconds + 61))
    lost.refresh_from_db()
    assert lost.outcome == Outcome.FAILED and lost.error.startswith("lost")


def race(schedule, now, dispatchers: int) -> tuple[list, list]:
    """``dispatchers`` threads, each with its own connection and its own read of the schedule, released
    together to claim the same due time; returns their results and errors."""
    barrier = threading.Barrier(dispatchers)
    results, errors = [], []

    def dispatcher():
        try:
            seen = Schedule.objects.get(pk=schedule.pk)
            barrier.wait()
            results.append(schedule_firing.schedule_fire_due(schedule=seen, now=now))
        except Exception as exc:  # surfaced by the caller
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=dispatcher) for _ in range(dispatchers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results, errors


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("dispatchers", [2, 6])
def test_racing_dispatchers_claim_each_due_time_exactly_once(make_schedule, dispatchers):
    schedule = make_schedule(cron="* * * * *", now=T0)
    for minute in (1, 2, 3):
        results, errors = race(schedule, T0 + minute * MIN + 2 * SEC, dispatchers)
        assert errors == []
        assert len([r for r in results if r is not None]) == 1
    due_times = list(ScheduleRun.objects.filter(schedule=schedule).values_list("scheduled_for", flat=True))
    assert sorted(due_times) == [T0 + MIN, T0 + 2 * MIN, T0 + 3 * MIN]


# The request ----------------------------------------------------------------------------------------


@pytest.fixture
def pointed(hello, target):
    hello.internal_url = target.url + "/"
    hello.save()
    return hello


def _pending_run(make_schedule, **fields):
    schedule = make_schedule(cron="* * * * *", now=T0, **fields)
    return fire(schedule, T0 + MIN)


def test_run_sends_method_path_headers_and_body_and_records_success(make_schedule, pointed, target):
    run = _pending_run(make_schedule, method="PUT", path="/jobs?x=1", headers={"X-Token": "abc"}, body="{}")
    schedule_firing.run_execute(run=run)
    run.refresh_from_db()
    assert (run.outcome, run.status_code, run.error) == (Outcome.SUCCEEDED, 200, "")
    assert run.duration_ms is not None and run.started_at and run.finished_at
    [request] = target.requests
    assert (request["method"], request["path"], request["body"]) == ("PUT", "/jobs?x=1", "{}")
    assert request["headers"]["X-Token"] == "abc"
    assert request["headers"]["X-HKS-Schedule"] == "tick"
    assert request["headers"]["X-HKS-Scheduled-For"] == "2026-03-02T09:01:00Z"


def test_an_error_status_is_recorded_as_failed_with_the_answer(make_schedule, pointed):
    run = _pending_run(make_schedule, path="/status/503")
    schedule_firing.run_execute(run=run)
    run.refresh_from_db()
    assert (run.outcome, run.status_code, run.error) == (Outcome.FAILED, 503, "HTTP 503: boom")


def test_an_unreachable_function_is_recorded_as_failed(make_schedule, hello):
    hello.internal_url = "http://127.0.0.1:9/"  # discard port: nothing listens
    hello.save()
    run = _pending_run(make_schedule)
    schedule_firing.run_execute(run=run)
    run.refresh_from_db()
    assert run.outcome == Outcome.FAILED and run.status_code is None
    assert "request to http://127.0.0.1:9/ failed" in run.error


def test_a_run_is_sent_at_most_once_even_if_its_task_runs_twice(make_schedule, pointed, target):
    run = _pending_run(make_schedule)
    schedule_firing.run_execute(run=run)
    schedule_firing.run_execute(run=run)
    assert len(target.requests) == 1


def test_a_cloudevents_function_gets_a_binary_mode_cloudevent(make_schedule, pointed, target):
    pointed.kind = "cloudevents"
    pointed.save()
    run = _pending_run(make_schedule)
    schedule_firing.run_execute(run=run)
    headers = target.requests[0]["headers"]
    assert headers["ce-specversion"] == "1.0" and headers["ce-type"] == "dev.hks.schedule"
    assert headers["ce-id"] == f"schedule-run-{run.pk}"


@pytest.mark.django_db(transaction=True)
def test_replace_closes_the_running_request(make_schedule, pointed, target):
    schedule = make_schedule(cron="* * * * *", now=T0, concurrency_policy="Replace", path="/slow")
    first = fire(schedule, T0 + MIN)

    def execute():
        try:
            schedule_firing.run_execute(run=first)
        finally:
            connection.close()

    worker = threading.Thread(target=execute)
    worker.start()
    target.wait_for_requests(1)
    second = fire(schedule, T0 + 2 * MIN)
    assert target.disconnected.wait(30), "the replaced request's connection stayed open"
    worker.join(30)
    assert not worker.is_alive()
    first.refresh_from_db()
    assert first.outcome == Outcome.REPLACED
    assert second.outcome == Outcome.PENDING


def test_a_broken_schedule_does_not_stop_the_others(make_schedule):
    broken = make_schedule(name="broken", cron="* * * * *", now=T0)
    healthy = make_schedule(name="healthy", cron="* * * * *", now=T0)
    Schedule.objects.filter(pk=broken.pk).update(cron="not a cron")  # e.g. edited around the services
    claimed = schedule_firing.schedules_dispatch(now=T0 + MIN)
    assert [run.schedule_id for run in claimed] == [healthy.pk]


def beat(schedule, start, end, every=30 * SEC):
    """Call the dispatcher as beat would, on a controlled clock stepping from ``start`` to ``end``."""
    now = start
    while now <= end:
        fire(schedule, now)
        now += every


@pytest.mark.parametrize(
    ("start", "fires_at"),
    [
        # 2026-03-29, spring forward in Berlin: 02:30 does not exist; it runs at 03:00 CEST = 01:00 UTC.
        (dt.datetime(2026, 3, 28, 23, 50, tzinfo=dt.UTC), dt.datetime(2026, 3, 29, 1, 0, tzinfo=dt.UTC)),
        # 2026-10-25, fall back: 02:30 happens twice (00:30 and 01:30 UTC); it runs at the first only.
        (dt.datetime(2026, 10, 24, 23, 50, tzinfo=dt.UTC), dt.datetime(2026, 10, 25, 0, 30, tzinfo=dt.UTC)),
    ],
)
def test_dispatcher_fires_0230_berlin_once_on_dst_change_days(make_schedule, start, fires_at):
    schedule = make_schedule(cron="30 2 * * *", timezone="Europe/Berlin", now=start)
    beat(schedule, start, start + dt.timedelta(hours=3))
    assert list(ScheduleRun.objects.values_list("scheduled_for", flat=True)) == [fires_at]
