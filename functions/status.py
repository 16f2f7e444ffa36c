"""The status a person is shown: derived, in one place, from what is stored and what the backend reports.

The stored ``Function.status`` is the lifecycle (pending → building → deploying → ready | failed); the
backend's own report (replicas, serving revision) is written by ``services.observe`` every few seconds with
the time it arrived (``observed_at``). On top of that the shown state says:

- ``scaled-to-zero``: ready with no instance;
- ``degraded``: ready, but over the last 5 minutes more than ``HKS_DEGRADED_ERROR_PERCENT`` % of the answers
  were 5xx, or p95 was over ``HKS_DEGRADED_P95_MS``;
- ``unknown``: ready as far as the database knows, but the backend has not reported for
  ``HKS_STATUS_STALE_SECONDS`` (runtime or cluster unreachable): we do not know, so we do not say "ready".

The list, the detail header, the API (``state``) and ``hks-func describe`` all use ``function_state``.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from django.conf import settings
from django.utils import timezone

from functions.models import FunctionStatus

LIFECYCLE = {
    FunctionStatus.BUILDING: ("Building", "busy"),
    FunctionStatus.DEPLOYING: ("Deploying", "busy"),
    FunctionStatus.PENDING: ("Pending", "busy"),
    FunctionStatus.FAILED: ("Failed", "bad"),
    FunctionStatus.DELETING: ("Deleting", "muted"),
    FunctionStatus.DELETED: ("Deleted", "muted"),
}
STATES = ("ready", "scaled-to-zero", "degraded", "unknown", *LIFECYCLE)


@dataclass(frozen=True)
class State:
    key: str  # one of STATES
    label: str
    css: str  # badge colour: ok, idle, warn, bad, busy, muted
    reason: str = ""


def _stale(function, now: dt.datetime) -> bool:
    observed = getattr(function, "observed_at", None)
    if observed is None:  # never observed (no beat running): the deploy's own report stands
        return False
    return (now - observed).total_seconds() > settings.HKS_STATUS_STALE_SECONDS


def _degraded_reason(figures) -> str:
    if figures is None:
        return ""
    errors, p95 = getattr(figures, "error_rate", None), getattr(figures, "p95_ms", None)
    if errors is not None and errors * 100 > settings.HKS_DEGRADED_ERROR_PERCENT:
        return f"{errors * 100:.0f}% of answers were 5xx in the last 5 minutes"
    if p95 is not None and p95 > settings.HKS_DEGRADED_P95_MS:
        return f"p95 latency {p95:,.0f} ms in the last 5 minutes"
    return ""


def function_state(function, figures=None, *, now: dt.datetime | None = None) -> State:
    """What to show for ``function``; ``figures`` (metrics.FunctionFigures) decide "degraded"."""
    now = now or timezone.now()
    if function.status != FunctionStatus.READY:
        label, css = LIFECYCLE.get(function.status, (str(function.status).title(), "muted"))
        reason = (
            function.status_message
            if function.status in (FunctionStatus.FAILED, FunctionStatus.UNKNOWN)
            else ""
        )
        return State(str(function.status), label, css, reason)
    if _stale(function, now):
        since = timezone.localtime(function.observed_at, dt.UTC).strftime("%H:%M:%S UTC")
        return State("unknown", "Unknown", "muted", f"the backend has not answered since {since}")
    degraded = _degraded_reason(figures)
    if degraded:
        return State("degraded", "Degraded", "warn", degraded)
    if function.replicas == 0:
        return State("scaled-to-zero", "Scaled to zero", "idle")
    return State("ready", "Ready", "ok")
