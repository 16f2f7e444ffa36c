"""Bounded history (services/retention.py): audit events, schedule runs and ended agent sessions past the
retention go, a schedule keeps its newest runs, and nothing still in use or recent is touched - whichever
project it belongs to. Beat's task runs it on the real worker: tests/tasks/test_run_twice.py names it."""

import datetime as dt

import pytest

from functions.models import AgentSession, AuditEvent, Schedule, ScheduleRun, SessionStatus
from functions.services import retention
from functions.services.schedule_runs import Outcome
from tests.support.factories import FunctionFactory

NOW = dt.datetime(2026, 6, 1, 12, 0, tzinfo=dt.UTC)
DAY = dt.timedelta(days=1)


@pytest.fixture(autouse=True)
def short_retention(settings):
    settings.HKS_HISTORY_RETENTION_DAYS = 30
    settings.HKS_SCHEDULE_RUNS_KEPT = 5


def _schedule(project, name="nightly") -> Schedule:
    function = FunctionFactory(project=project, name=f"fn-{name}")
    return Schedule.objects.create(function=function, name=name, cron="* * * * *")


def _runs(schedule, count: int, *, start: dt.datetime, outcome=Outcome.SUCCEEDED) -> list[ScheduleRun]:
    return [
        ScheduleRun.objects.create(
            schedule=schedule, scheduled_for=start + i * dt.timedelta(minutes=1), outcome=outcome
        )
        for i in range(count)
    ]


def test_audit_events_past_the_retention_go_and_recent_ones_stay(project, other_project):
    old = [
        AuditEvent.objects.create(project=p, action="agent.execute", created_at=NOW - 31 * DAY)
        for p in (project, other_project)
    ]
    recent = AuditEvent.objects.create(project=project, action="function.deploy", created_at=NOW - 29 * DAY)

    removed = retention.history_prune(now=NOW)

    assert removed["audit_events"] == 2
    assert list(AuditEvent.objects.values_list("pk", flat=True)) == [recent.pk]
    assert not AuditEvent.objects.filter(pk__in=[e.pk for e in old]).exists()


def test_a_schedule_keeps_its_newest_runs_and_never_an_active_one(project, other_project):
    busy, quiet = _schedule(project, "busy"), _schedule(other_project, "quiet")
    start = NOW - 2 * DAY
    done = _runs(busy, 8, start=start)
    stuck = _runs(busy, 1, start=start - dt.timedelta(hours=1), outcome=Outcome.RUNNING)[0]  # the oldest
    few = _runs(quiet, 3, start=start)

    removed = retention.history_prune(now=NOW)

    assert removed["schedule_runs"] == 3  # busy's 3 oldest finished runs: 5 newest kept
    kept = set(ScheduleRun.objects.filter(schedule=busy).values_list("pk", flat=True))
    assert kept == {r.pk for r in done[-5:]} | {stuck.pk}
    assert ScheduleRun.objects.filter(schedule=quiet).count() == len(few)
    assert retention.history_prune(now=NOW)["schedule_runs"] == 0  # nothing more to do: idempotent


def test_runs_past_the_retention_go_even_below_the_count(project):
    schedule = _schedule(project)
    old = _runs(schedule, 2, start=NOW - 40 * DAY)
    new = _runs(schedule, 2, start=NOW - DAY)
    retention.history_prune(now=NOW)
    assert set(ScheduleRun.objects.values_list("pk", flat=True)) == {r.pk for r in new}
    assert not ScheduleRun.objects.filter(pk__in=[r.pk for r in old]).exists()


def test_ended_sessions_past_the_retention_go_running_ones_never(project):
    def session(sandbox_id, status, ended):
        return AgentSession.objects.create(
            project=project,
            sandbox_id=sandbox_id,
            status=status,
            ended_at=ended,
            expires_at=NOW + DAY,
        )

    gone = session("oldkilled", SessionStatus.KILLED, NOW - 31 * DAY)
    session("recentexpired", SessionStatus.EXPIRED, NOW - 29 * DAY)
    session("stillrunning", SessionStatus.RUNNING, None)
    session("oddrunning", SessionStatus.RUNNING, NOW - 40 * DAY)  # running is never removed

    removed = retention.history_prune(now=NOW)

    assert removed["agent_sessions"] == 1
    assert not AgentSession.objects.filter(pk=gone.pk).exists()
    assert sorted(AgentSession.objects.values_list("sandbox_id", flat=True)) == [
        "oddrunning",
        "recentexpired",
        "stillrunning",
    ]


def test_one_run_removes_at_most_a_batch(project, monkeypatch):
    monkeypatch.setattr(retention, "BATCH", 3)
    for _ in range(7):
        AuditEvent.objects.create(project=project, action="agent.execute", created_at=NOW - 60 * DAY)
    assert [retention.history_prune(now=NOW)["audit_events"] for _ in range(4)] == [3, 3, 1, 0]
