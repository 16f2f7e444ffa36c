"""Reads. The one place that decides who may see what: every view, API endpoint and websocket asks here.

A caller outside a project gets ``Http404`` for everything in it (existence is not revealed); a member
whose role is too low for an action gets ``PermissionDenied``.
"""

from __future__ import annotations

import datetime as dt

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.cache import cache
from django.core.exceptions import PermissionDenied
from django.db.models import Count, Max, OuterRef, Q, QuerySet, Subquery, Sum
from django.http import Http404
from django.utils import timezone

from functions.crypto import decrypt_text
from functions.models import (
    AgentSession,
    AgentUsage,
    AuditEvent,
    Build,
    Function,
    FunctionStatus,
    Invitation,
    Membership,
    Project,
    Revision,
    Role,
    Schedule,
    SessionStatus,
)


def projects_for_user(*, user) -> QuerySet[Project]:
    if not user.is_authenticated:
        return Project.objects.none()
    return Project.objects.filter(memberships__user=user).distinct()


def membership_get(*, user, project: Project) -> Membership | None:
    if not user.is_authenticated:
        return None
    return Membership.objects.filter(user=user, project=project).first()


def _operator_reads(user, role: str, operators_read: bool) -> bool:
    """Operators (staff) may open any tenant's dashboard pages, read-only: only where the caller says so
    (dashboard pages and their websockets, never the API), and only for what a viewer may do."""
    return operators_read and role == Role.VIEWER and user.is_authenticated and user.is_staff


def project_get_for_user(
    *, user, slug: str, role: str = Role.VIEWER, operators_read: bool = False
) -> Project:
    if _operator_reads(user, role, operators_read):
        project = Project.objects.filter(slug=slug).first()
        if project is None:
            raise Http404("No such project.")
        project.membership = membership_get(user=user, project=project)  # type: ignore[attr-defined]
        return project
    project = projects_for_user(user=user).filter(slug=slug).first()
    if project is None:
        raise Http404("No such project.")
    membership = membership_get(user=user, project=project)
    if membership is None:
        raise Http404("No such project.")
    if not membership.allows(role):
        raise PermissionDenied(f"This needs the {role} role in project {slug}.")
    project.membership = membership  # type: ignore[attr-defined]
    return project


def functions_for_project(*, project: Project) -> QuerySet[Function]:
    return Function.objects.alive().filter(project=project).select_related("current_revision", "project")


def functions_for_user(*, user, project_slug: str) -> QuerySet[Function]:
    project = project_get_for_user(user=user, slug=project_slug)
    return functions_for_project(project=project)


def function_get_for_user(
    *, user, project_slug: str, name: str, role: str = Role.VIEWER, operators_read: bool = False
) -> Function:
    project = project_get_for_user(user=user, slug=project_slug, role=role, operators_read=operators_read)
    function = functions_for_project(project=project).filter(name=name).first()
    if function is None:
        raise Http404("No such function.")
    function.membership = project.membership  # type: ignore[attr-defined]  # the reader's; None: an operator
    return function


def revision_get(*, function: Function, number: int) -> Revision:
    revision = function.revisions.filter(number=number).first()
    if revision is None:
        latest = function.revisions.order_by("-number").values_list("number", flat=True).first()
        if latest is not None and 0 < number < latest:  # it existed: pruned (services/storage.py)
            raise Http404(
                f"Revision {number} is no longer stored: a function keeps its newest "
                f"{settings.HKS_REVISION_HISTORY} revisions and the one it serves."
            )
        raise Http404("No such revision.")
    return revision


def storage_used(*, project_ids: list[int]) -> dict[int, int]:
    """Bytes each project's stored revisions take: their source archives, plus each artifact they record
    once (identical sources in a project share one; an artifact never crosses projects, the runtime names
    it after its project). A deleted function's revisions count until they are reclaimed: their files are
    still on disk. Two queries, whatever the number of projects."""
    used = dict.fromkeys(project_ids, 0)
    revisions = Revision.objects.filter(function__project_id__in=project_ids)
    for row in revisions.values("function__project_id").annotate(n=Sum("size_bytes")):
        used[row["function__project_id"]] += row["n"] or 0
    artifacts = revisions.exclude(artifact="").values("function__project_id", "artifact")
    for row in artifacts.annotate(n=Max("artifact_bytes")):
        used[row["function__project_id"]] += row["n"] or 0
    return used


def project_storage_used(*, project: Project) -> int:
    return storage_used(project_ids=[project.pk])[project.pk]


def builds_for_function(*, function: Function) -> QuerySet[Build]:
    return Build.objects.filter(revision__function=function).select_related("revision__function")


def build_get(*, function: Function, build_id: int) -> Build:
    """A build of ``function`` only: build ids are global, so the function scopes them."""
    build = builds_for_function(function=function).filter(pk=build_id).first()
    if build is None:
        raise Http404("No such build.")
    return build


def schedules_for_function(*, function: Function) -> QuerySet[Schedule]:
    return Schedule.objects.filter(function=function).select_related("function__project")


def schedule_get(*, function: Function, name: str) -> Schedule:
    """A schedule of ``function`` (already checked with ``function_get_for_user``)."""
    schedule = schedules_for_function(function=function).filter(name=name).first()
    if schedule is None:
        raise Http404("No such schedule.")
    return schedule


def project_kubeconfig(*, project: Project) -> str:
    """The decrypted kubeconfig, or "" when none is stored. The caller checks the reader's role."""
    return decrypt_text(project.kubeconfig_encrypted) if project.kubeconfig_encrypted else ""


# Members, invitations and the audit trail (the callers check the reader's role first) ------------------


def memberships_of_user(*, user) -> list[Membership]:
    """The user's memberships, with their projects, by project slug."""
    memberships = Membership.objects.filter(project__in=projects_for_user(user=user), user=user)
    return sorted(memberships.select_related("project"), key=lambda m: m.project.slug)


def projects_owned_by(*, user) -> QuerySet[Project]:
    return projects_for_user(user=user).filter(memberships__user=user, memberships__role=Role.OWNER)


def members_of_project(*, project: Project) -> QuerySet[Membership]:
    return project.memberships.select_related("user").order_by("user__username")


def member_get(*, project: Project, username: str) -> Membership:
    membership = members_of_project(project=project).filter(user__username=username).first()
    if membership is None:
        raise Http404(f"{username} is not a member of {project.slug}.")
    return membership


def active_user_named(*, username: str):
    return get_user_model().objects.filter(username=username, is_active=True).first()


def invitations_of_project(*, project: Project) -> QuerySet[Invitation]:
    return project.invitations.select_related("project", "invited_by")


def invitations_for_user(*, user) -> QuerySet[Invitation]:
    """The invitations waiting for the user's answer (by user name)."""
    return Invitation.objects.select_related("project", "invited_by").filter(username=user.get_username())


def audit_events_for_projects(*, projects) -> QuerySet[AuditEvent]:
    """What happened in ``projects``, newest first."""
    return (
        AuditEvent.objects.filter(project__in=projects)
        .select_related("project", "actor")
        .order_by("-created_at", "-pk")
    )


# --- agent usage and quotas (written by services/usage.py) --------------------------------------------------


def hour_of(moment: dt.datetime) -> dt.datetime:
    return moment.astimezone(dt.UTC).replace(minute=0, second=0, microsecond=0)


def _day_start(moment: dt.datetime) -> dt.datetime:
    return hour_of(moment).replace(hour=0)


def execution_minute_key(project: Project, now: dt.datetime) -> str:
    """The shared cache's counter of the executions a project started in ``now``'s minute."""
    return f"agent-executions:{project.pk}:{int(now.timestamp()) // 60}"


def executions_this_minute(*, project: Project, now: dt.datetime | None = None) -> int:
    return int(cache.get(execution_minute_key(project, now or timezone.now())) or 0)


def cpu_seconds_today(*, project: Project, now: dt.datetime | None = None) -> float:
    start = _day_start(now or timezone.now())
    total = AgentUsage.objects.filter(project=project, hour__gte=start).aggregate(s=Sum("cpu_seconds"))["s"]
    return float(total or 0.0)


def _totals(rows) -> dict:
    totals = rows.aggregate(
        executions=Sum("executions"),
        sessions=Sum("sessions"),
        cpu=Sum("cpu_seconds"),
        unmeasured=Sum("cpu_unmeasured"),
    )
    return {
        "executions": totals["executions"] or 0,
        "sessions": totals["sessions"] or 0,
        "cpu_seconds": round(float(totals["cpu"] or 0.0), 3),
        "cpu_unmeasured": totals["unmeasured"] or 0,
    }


def project_instances_running(*, project: Project) -> int:
    """Ready instances of the project's functions as last observed (``Function.replicas``), beside its
    ``max_instances``: the runtime's own count also has the starting and draining ones."""
    alive = Function.objects.filter(project=project).exclude(status=FunctionStatus.DELETED)
    return alive.aggregate(n=Sum("replicas"))["n"] or 0


def project_agent_usage(*, project: Project, now: dt.datetime | None = None) -> dict:
    """A project's agent quotas beside what is used of them, and its usage today and this month (UTC).

    The caller has already decided the reader may see the project (``project_get_for_user``)."""
    now = now or timezone.now()
    day = _day_start(now)
    month = day.replace(day=1)
    rows = AgentUsage.objects.filter(project=project)
    today = _totals(rows.filter(hour__gte=day))
    return {
        "sessions_running": AgentSession.objects.filter(
            project=project, status=SessionStatus.RUNNING
        ).count(),
        "max_sessions": project.max_sessions,
        "executions_this_minute": executions_this_minute(project=project, now=now),
        "max_executions_per_minute": project.max_executions_per_minute,
        "cpu_seconds_today": today["cpu_seconds"],
        "max_cpu_seconds_per_day": project.max_cpu_seconds_per_day,
        "storage_used_bytes": project_storage_used(project=project),
        "max_storage_mb": project.max_storage_mb,
        "instances_running": project_instances_running(project=project),
        "max_instances": project.max_instances,
        "today": today,
        "month": _totals(rows.filter(hour__gte=month)),
    }


def _usage_sum(field: str, since: dt.datetime):
    rows = (
        AgentUsage.objects.filter(project=OuterRef("pk"), hour__gte=since)
        .values("project")
        .annotate(total=Sum(field))
        .values("total")[:1]
    )
    return Subquery(rows)


def projects_with_agent_usage(*, queryset: QuerySet[Project], now: dt.datetime | None = None):
    """Operators' list: each project with ``usage_*`` figures (sessions running, executions and CPU seconds
    today - and how many of today's had no CPU figure - CPU seconds this month), in the one query."""
    day = _day_start(now or timezone.now())
    return queryset.annotate(
        usage_sessions_running=Count(
            "agent_sessions", filter=Q(agent_sessions__status=SessionStatus.RUNNING)
        ),
        usage_executions_today=_usage_sum("executions", day),
        usage_cpu_today=_usage_sum("cpu_seconds", day),
        usage_unmeasured_today=_usage_sum("cpu_unmeasured", day),
        usage_cpu_month=_usage_sum("cpu_seconds", day.replace(day=1)),
    )
