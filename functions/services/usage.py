"""Agent quotas and accounting per project: what executions and sessions used, and the refusals at a quota.

Usage is kept in ``AgentUsage`` rows, one per project per hour (UTC), added to with ``F()`` so concurrent
portals never lose a count. The executions-per-minute quota counts in the shared cache (Redis), one key
per project per minute, so it costs no database write on the fast path. Quotas:

- ``max_sessions``: running sessions at once (agents/sessions.py checks it under a row lock);
- ``max_executions_per_minute``: executions started in the current minute (fast path and deployed code);
- ``max_cpu_seconds_per_day``: CPU seconds of the day (UTC) so far; 0 means no limit. Once spent, new
  executions and sessions are refused until midnight UTC; running sessions are not stopped.

``max_instances`` (function instances running at once on the local runtime) is not checked here: every
spec carries it and the runtime holds back the starts past it (hks_runtime/quotas.py); it is changed here
with the others.

Every refusal is a ``ServiceError`` 429 with ``retry_after`` (seconds).
"""

from __future__ import annotations

import datetime as dt

from django.core.cache import cache
from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from functions.backends import get_backend
from functions.errors import ServiceError
from functions.models import AgentUsage, Backend, Project
from functions.selectors import cpu_seconds_today, execution_minute_key, hour_of
from functions.services import enqueue
from functions.services.audit import audit


def usage_record(
    *,
    project: Project,
    executions: int = 0,
    sessions: int = 0,
    cpu_seconds: float | None = None,
    unmeasured: int = 0,
    now: dt.datetime | None = None,
) -> None:
    """Add to the project's usage of the current hour. ``unmeasured``: how many executions or sessions
    ended without a CPU figure (the usage says "not measured" for them rather than counting 0)."""
    cpu = max(0.0, float(cpu_seconds or 0.0))
    if not (executions or sessions or cpu or unmeasured):
        return
    hour = hour_of(now or timezone.now())
    changes = {"executions": F("executions") + executions, "sessions": F("sessions") + sessions}
    changes["cpu_seconds"] = F("cpu_seconds") + cpu
    changes["cpu_unmeasured"] = F("cpu_unmeasured") + unmeasured
    if AgentUsage.objects.filter(project=project, hour=hour).update(**changes):
        return
    try:
        with transaction.atomic():
            AgentUsage.objects.create(
                project=project,
                hour=hour,
                executions=executions,
                sessions=sessions,
                cpu_seconds=cpu,
                cpu_unmeasured=unmeasured,
            )
    except IntegrityError:  # another portal made the hour's row first
        AgentUsage.objects.filter(project=project, hour=hour).update(**changes)


def _seconds_to_midnight(now: dt.datetime) -> int:
    now = now.astimezone(dt.UTC)
    tomorrow = (now + dt.timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    return max(1, int((tomorrow - now).total_seconds()))


def cpu_quota_check(*, project: Project, now: dt.datetime | None = None) -> None:
    """ServiceError 429 when the project has spent its CPU seconds of the day."""
    limit = project.max_cpu_seconds_per_day
    if not limit:
        return
    now = now or timezone.now()
    used = cpu_seconds_today(project=project, now=now)
    if used >= limit:
        raise ServiceError(
            f"project {project.slug} has used its {limit} CPU seconds of agent time for today "
            f"({used:.1f} s, UTC); new executions and sessions are refused until midnight UTC",
            code=429,
            retry_after=_seconds_to_midnight(now),
        )


def execution_admit(*, project: Project, now: dt.datetime | None = None) -> str:
    """Count one execution against the project's quotas, or refuse it (ServiceError 429, ``retry_after``).

    A refused execution is not counted; an admitted one is counted in this minute whatever its outcome,
    unless the runtime then refuses it too (``execution_release`` with the key this returns)."""
    now = now or timezone.now()
    cpu_quota_check(project=project, now=now)
    limit = project.max_executions_per_minute
    key = execution_minute_key(project, now)
    count = cache.incr_window(key, timeout=120)  # one round trip (hks_portal/cache.py)
    if count > limit:
        cache.decr(key)
        raise ServiceError(
            f"project {project.slug} has started {limit} executions this minute (quota {limit} per minute)",
            code=429,
            retry_after=max(1, 60 - now.second),
        )
    return key


def execution_release(key: str) -> None:
    """Give back an admitted execution the runtime refused (its concurrency limit, or it was down)."""
    try:
        cache.decr(key)
    except ValueError:  # that minute's counter has expired
        pass


def execution_finished(*, project: Project, cpu_seconds: float | None) -> None:
    usage_record(project=project, executions=1, cpu_seconds=cpu_seconds, unmeasured=int(cpu_seconds is None))


def cpu_finished(*, project: Project, cpu_seconds: float | None) -> None:
    """What an ended sandbox used (a session, an agent function's instances): its figure, or one more
    "not measured" when there is none."""
    usage_record(project=project, cpu_seconds=cpu_seconds, unmeasured=int(cpu_seconds is None))


def project_quotas_update(
    *,
    project: Project,
    user,
    max_sessions: int | None = None,
    max_executions_per_minute: int | None = None,
    max_cpu_seconds_per_day: int | None = None,
    max_instances: int | None = None,
) -> Project:
    """Change a project's agent quotas and its instance quota on the local runtime, and audit it.
    Operators (staff) set them; an owner (the caller checks the role) may only lower them - to guard the
    project's own budget - since a tenant that could raise its quotas would have none.
    ``max_cpu_seconds_per_day`` 0 means no limit, so an owner cannot set 0; ``max_instances`` 0 too."""
    given = {
        "max_sessions": max_sessions,
        "max_executions_per_minute": max_executions_per_minute,
        "max_cpu_seconds_per_day": max_cpu_seconds_per_day,
        "max_instances": max_instances,
    }
    changed = {}
    for field, value in given.items():
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 1_000_000:
            raise ServiceError(f"{field} must be a whole number between 0 and 1000000")
        current = getattr(project, field)
        if not user.is_staff and _raises(field, current, value):
            raise ServiceError(
                f"only an operator can raise {field} (now {current}); owners may lower it", code=403
            )
        if current != value:
            changed[field] = [current, value]
            setattr(project, field, value)
    if changed:
        project.save(update_fields=list(changed))
        audit(project=project, action="project.quotas", actor=user, changes=changed)
    if "max_instances" in changed:
        project_instance_quota_push(project=project)
    return project


def _raises(field: str, current: int, value: int) -> bool:
    if field in ("max_cpu_seconds_per_day", "max_instances"):  # 0: no limit, the highest there is
        return value == 0 and current != 0 or current != 0 and value > current
    return value > current


def project_instance_quota_push(*, project: Project) -> None:
    """Tell the local runtime the project's changed ``max_instances`` once the current transaction
    commits (every spec carries it too, so a push that is lost is made good by the next deploy)."""
    if project.backend != Backend.LOCAL:
        return  # a cluster: the namespace's ResourceQuota
    tasks_provision = enqueue.tasks().provision

    transaction.on_commit(lambda: tasks_provision.push_instance_quota.delay(project.pk))


def project_instance_quota_run(*, project: Project) -> None:
    get_backend(project).set_instance_quota(project.effective_namespace, project.max_instances)
