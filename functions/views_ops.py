"""The operators' overview: every project, function counts, failing functions, runtime and queue health.

Staff only. Health probes have short timeouts: a dead runtime or broker is what this page is for, so it
must render when they are down.
"""

from __future__ import annotations

from dataclasses import dataclass

import httpx
from django.conf import settings
from django.contrib.admin.views.decorators import staff_member_required
from django.db.models import Count, Q
from django.http import JsonResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from . import health, metrics
from .models import Function, FunctionStatus, Project

PROBE_TIMEOUT = 2.0


@dataclass(frozen=True)
class Health:
    name: str
    ok: bool
    detail: str


def runtime_health() -> Health:
    url = settings.HKS_RUNTIME_URL.rstrip("/") + "/healthz"
    try:
        response = httpx.get(url, timeout=PROBE_TIMEOUT, trust_env=False)
    except httpx.HTTPError as exc:
        return Health("Local runtime", False, f"{url}: {type(exc).__name__}")
    return Health("Local runtime", response.is_success, f"{url}: HTTP {response.status_code}")


def queue_health() -> Health:
    """Broker reachable, queue length, and whether any worker answers a ping."""
    from hks_portal.celery import app

    queue = app.conf.task_default_queue
    try:
        with app.connection_for_write() as conn:
            length = conn.default_channel.client.llen(queue)
        replies = app.control.inspect(timeout=1.0).ping() or {}
    except Exception as exc:  # noqa: BLE001 - any broker failure is a health state to show
        return Health("Task queue", False, f"broker unreachable: {type(exc).__name__}: {exc}")
    workers = len(replies)
    return Health(
        "Task queue", workers > 0, f"queue {queue!r}: {length} waiting; {workers} worker(s) answering"
    )


def knative_prerequisites() -> dict | None:
    """The preflight against the platform's cluster, when there is one to check (knative_preflight)."""
    from .backends.knative_preflight import preflight
    from .backends.knative_provision import platform_kubeconfig
    from .models import Backend

    if not platform_kubeconfig() and not Project.objects.filter(backend=Backend.KNATIVE).exists():
        return None
    where, checks = preflight()
    return {"where": where, "checks": checks}


def prometheus_health() -> Health:
    ok = metrics.prometheus_healthy()
    return Health("Prometheus", ok, settings.HKS_PROMETHEUS_URL)


@staff_member_required
def operators_overview(request):
    projects = Project.objects.annotate(
        functions_alive=Count(
            "functions", filter=~Q(functions__status=FunctionStatus.DELETED), distinct=True
        ),
        functions_ready=Count("functions", filter=Q(functions__status=FunctionStatus.READY), distinct=True),
        functions_failed=Count("functions", filter=Q(functions__status=FunctionStatus.FAILED), distinct=True),
        functions_agent=Count(
            "functions",
            filter=Q(functions__ephemeral=True) & ~Q(functions__status=FunctionStatus.DELETED),
            distinct=True,
        ),
        members=Count("memberships", distinct=True),
    ).order_by("slug")
    failing = (
        Function.objects.filter(status=FunctionStatus.FAILED)
        .select_related("project")
        .order_by("-updated_at")[:50]
    )
    probes = [runtime_health(), queue_health(), prometheus_health()]
    return render(
        request,
        "functions/operators_overview.html",
        {
            "projects": projects,
            "failing": failing,
            "health": probes,
            "missing": health.missing_parts(),
            "knative": knative_prerequisites(),
        },
    )


@require_GET
def healthz(request):
    """Which parts the platform runs without and what each costs; 503 when functions cannot run at all.
    ``?live=1`` says only that the process answers (a liveness probe must not restart every replica
    because the database is down)."""
    if request.GET.get("live"):
        return JsonResponse({"ok": True})
    body = health.healthz_body(health.missing_parts())
    return JsonResponse(body, status=200 if body["ok"] else 503)
