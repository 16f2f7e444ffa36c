"""Bounded history: the rows that every tenant's activity keeps adding are kept for a while, not forever.

An agent running code writes an audit event per execution (up to ``max_executions_per_minute``), a minutely
schedule a run a minute, an agent a session row per sandbox: left alone, one tenant's busy agent or
schedule grows the shared database without end. Beat's ``prune_history`` removes, in bounded batches:

- audit events older than ``HKS_HISTORY_RETENTION_DAYS`` (what an owner's audit log and the admin show);
- schedule runs older than that, and past each schedule's newest ``HKS_SCHEDULE_RUNS_KEPT`` (a run still
  pending or running is never removed; its due time is long claimed - ``next_run_at`` moved past it - so
  nothing fires again);
- agent sessions that ended more than that long ago (their CPU and counts live on in ``AgentUsage``).

Each kind is cut to at most ``BATCH`` rows per run, oldest first, so one run stays short; the next run
takes the rest.
"""

from __future__ import annotations

import datetime as dt

from django.conf import settings
from django.db.models import Count
from django.utils import timezone

from functions.models import AgentSession, AuditEvent, Schedule, ScheduleRun, SessionStatus
from functions.services.schedule_runs import Outcome

BATCH = 5000  # rows of one kind one run removes at most
SCHEDULES_PER_RUN = 200  # schedules one run trims to their newest runs


def _delete_oldest(queryset, order: str) -> int:
    ids = list(queryset.order_by(order).values_list("pk", flat=True)[:BATCH])
    if not ids:
        return 0
    return queryset.model.objects.filter(pk__in=ids).delete()[1].get(queryset.model._meta.label, 0)


def history_prune(*, now: dt.datetime | None = None) -> dict[str, int]:
    """Remove what is past its retention (see the module docstring); returns how many rows of each kind."""
    now = now or timezone.now()
    cutoff = now - dt.timedelta(days=settings.HKS_HISTORY_RETENTION_DAYS)
    removed = {
        "audit_events": _delete_oldest(AuditEvent.objects.filter(created_at__lt=cutoff), "created_at"),
        "schedule_runs": _delete_oldest(
            ScheduleRun.objects.filter(scheduled_for__lt=cutoff).exclude(outcome__in=Outcome.ACTIVE),
            "scheduled_for",
        ),
        "agent_sessions": _delete_oldest(
            AgentSession.objects.exclude(status=SessionStatus.RUNNING).filter(ended_at__lt=cutoff),
            "ended_at",
        ),
    }
    kept = settings.HKS_SCHEDULE_RUNS_KEPT
    crowded = (
        Schedule.objects.annotate(runs_count=Count("runs"))
        .filter(runs_count__gt=kept)
        .values_list("pk", flat=True)[:SCHEDULES_PER_RUN]
    )
    for schedule_id in crowded:
        newest = ScheduleRun.objects.filter(schedule_id=schedule_id).order_by("-scheduled_for")
        oldest_kept = newest.values_list("scheduled_for", flat=True)[kept - 1 : kept].first()
        if oldest_kept is None:
            continue
        older = ScheduleRun.objects.filter(schedule_id=schedule_id, scheduled_for__lt=oldest_kept).exclude(
            outcome__in=Outcome.ACTIVE
        )
        removed["schedule_runs"] += _delete_oldest(older, "scheduled_for")
    return removed
