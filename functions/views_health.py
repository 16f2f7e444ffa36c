"""``/healthz``: the portal's probe for load balancers and the kubelet (no sign-in).

It answers 200 when the portal can reach its database and Redis (sessions, sign-in limits, the task queue
and live pushes need both), 503 naming what failed otherwise. ``?live=1`` only says the process answers:
a liveness probe must not restart every replica because the database is down.
"""

from __future__ import annotations

from django.core.cache import cache
from django.db import connection
from django.http import JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET


def _check(probe) -> str:
    try:
        probe()
    except Exception as exc:  # noqa: BLE001 - any failure is the state to report
        return f"{type(exc).__name__}: {exc}"[:200]
    return "ok"


def _database() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")


def _redis() -> None:
    cache.get("healthz")


@never_cache
@require_GET
def healthz(request):
    if request.GET.get("live"):
        return JsonResponse({"status": "ok"})
    checks = {"database": _check(_database), "redis": _check(_redis)}
    healthy = all(value == "ok" for value in checks.values())
    return JsonResponse({"status": "ok" if healthy else "failing", **checks}, status=200 if healthy else 503)
