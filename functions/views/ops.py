"""The operators' overview: every project, function counts, failing functions, runtime and queue health.

Staff only. Health probes have short timeouts: a dead runtime or broker is what this page is for, so it
must render when they are down.
"""

from __future__ import annotations

from dataclasses import dataclass

import httpx
from django.conf import settings
from django.contrib.admin.views.decorators import staff_member_required
from django.db.models import Count, Q, Sum
from django.http import JsonResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from functions import health, metrics, selectors
from functions.backends.k8s_api import platform_kubeconfig
from functions.backends.knative_preflight import preflight
from functions.models import Backend, Function, FunctionStatus, Membership, Project
from hks_portal.celery import app

PROBE_TIMEOUT = 2.0
PING_TIMEOUT = 0.5


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
    queue = app.conf.task_default_queue
    try:
        with app.connection_for_write() as conn:
            length = conn.default_channel.client.llen(queue)
        # The first answer is enough to say "a worker is alive"; waiting for all would cost the timeout.
        replies = app.control.ping(timeout=PING_TIMEOUT, limit=1) or []
    except Exception as exc:  # noqa: BLE001 - any broker failure is a health state to show
        return Health("Task queue", False, f"broker unreachable: {type(exc).__name__}: {exc}")
    workers = len(replies)
    return Health(
        "Task queue", workers > 0, f"queue {queue!r}: {length} waiting; {workers} worker(s) answering"
    )


def knative_prerequisites() -> dict | None:
    """The preflight against the platform's cluster, when there is one to check (knative_preflight)."""
    if not platform_kubeconfig() and not Project.objects.filter(backend=Backend.KNATIVE).exists():
        return None
    where, checks = preflight()
    return {"where": where, "checks": checks}


def prometheus_health() -> Health:
    ok = metrics.prometheus_healthy()
    return Health("Prometheus", ok, settings.HKS_PROMETHEUS_URL)


def project_rows() -> list[Project]:
    """Every project with its function and member counts and its agent usage (``usage_*``, annotated on
    the projects' query): five queries, whatever the number of rows (one join of functions and memberships
    would multiply them)."""
    alive = ~Q(status=FunctionStatus.DELETED)
    counts = {
        row["project_id"]: row
        for row in Function.objects.values("project_id").annotate(
            alive=Count("pk", filter=alive),
            ready=Count("pk", filter=Q(status=FunctionStatus.READY)),
            failed=Count("pk", filter=Q(status=FunctionStatus.FAILED)),
            agent=Count("pk", filter=Q(ephemeral=True) & alive),
            instances=Sum("replicas", filter=alive),
        )
    }
    members = {
        row["project_id"]: row["n"] for row in Membership.objects.values("project_id").annotate(n=Count("pk"))
    }
    projects = list(selectors.projects_with_agent_usage(queryset=Project.objects.order_by("slug")))
    storage = selectors.storage_used(project_ids=[p.pk for p in projects])
    for p in projects:
        p.storage_used_mb = storage[p.pk] / (1 << 20)
        row = counts.get(p.pk, {})
        p.functions_alive, p.functions_ready = row.get("alive", 0), row.get("ready", 0)
        p.functions_failed, p.functions_agent = row.get("failed", 0), row.get("agent", 0)
        p.members = members.get(p.pk, 0)
        p.instances_running = row.get("instances") or 0
    return projects


@staff_member_required
def operators_overview(request):
    """Projects link to the tenants' own pages, which operators open read-only (selectors.operators_read)."""
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
            "projects": project_rows(),
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
