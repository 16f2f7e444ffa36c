"""Requests per minute per caller on the JSON APIs, so that no tenant's script takes the portal from the rest.

The portal is one shared service: a tenant calling ``/api/v1`` in a loop, or its agents ``/internal/v1``,
would take its CPU and database from every other tenant's dashboard, CLI and agents. django-ninja runs
``throttle`` classes after authentication and answers 429 with ``Retry-After`` (RFC 9110 delta-seconds);
this one counts in fixed one-minute windows with one atomic Redis round trip (``incr_window``,
hks_portal/cache.py) - ninja's own ``SimpleRateThrottle`` reads and rewrites a list of timestamps, two
round trips, and lets concurrent requests overwrite each other's.

Who is counted is who the platform bills, so a caller cannot multiply its share by minting credentials: a
user on ``/api/v1`` (however many API tokens or sessions it uses), a project on ``/internal/v1`` (however
many agent credentials it has, and E2B's control plane, ``/e2b/sandboxes``, spends the same project's
budget: functions/agents/e2b_api.py). ``HKS_API_REQUESTS_PER_MINUTE`` (0: no limit) is the budget of each.
When Redis cannot be reached the request goes through: the throttle protects the portal, it must not be
what takes it down.
"""

from __future__ import annotations

import logging
import math
import time

from django.conf import settings
from django.core.cache import cache
from django.http import HttpResponse
from ninja.throttling import BaseThrottle

log = logging.getLogger(__name__)

WINDOW_SECONDS = 60
clock = time.time  # (tests hold it still, so no window ends in the middle of one)


def caller_key(auth) -> str:
    """Whose budget a request spends: the user, or an agent's project."""
    project = getattr(auth, "project", None)
    if project is not None and hasattr(auth, "credential"):
        return f"project:{project.pk}"
    return f"user:{getattr(auth, 'pk', auth)}"


def spend(scope: str, caller: str) -> float | None:
    """Count one request of ``caller`` (``caller_key``) in ``scope``; the seconds until its budget is back
    when it is spent (refuse the request), else None."""
    limit = settings.HKS_API_REQUESTS_PER_MINUTE
    if not limit:
        return None
    now = clock()
    window = int(now // WINDOW_SECONDS)
    try:
        count = cache.incr_window(f"throttle:{scope}:{caller}:{window}", timeout=WINDOW_SECONDS + 1)
    except Exception as exc:  # noqa: BLE001 - any cache failure: let the request through
        log.warning("API throttle skipped (the cache cannot be reached): %s", exc)
        return None
    return WINDOW_SECONDS - now % WINDOW_SECONDS if count > limit else None


class CallerRateThrottle(BaseThrottle):
    """django-ninja's hook: after authentication, before the view."""

    def __init__(self, scope: str):
        self.scope = scope
        self.retry_after: float | None = None

    def allow_request(self, request) -> bool:
        auth = getattr(request, "auth", None)
        if auth is None:
            return True
        self.retry_after = spend(self.scope, caller_key(auth))
        return self.retry_after is None

    def wait(self) -> float | None:
        return self.retry_after


class DashboardThrottleMiddleware:
    """The same budget for a signed-in user's dashboard and admin pages (scope "dashboard", as many requests
    as the API's): a script polling the pages in a loop is answered 429 with Retry-After like one calling
    the API. The APIs count themselves (above); static files, the health check and E2B's routes are not
    counted. A page's own live refreshes (one every 3-15 s per open tab) stay far below it."""

    SKIP = ("/static/", "/api/", "/internal/", "/e2b", "/healthz")

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        user = getattr(request, "user", None)
        if user is not None and user.is_authenticated and not request.path.startswith(self.SKIP):
            retry_after = spend("dashboard", f"user:{user.pk}")
            if retry_after is not None:
                response = HttpResponse(
                    "Too many requests: wait a moment and reload.\n", status=429, content_type="text/plain"
                )
                response["Retry-After"] = str(math.ceil(retry_after))
                return response
        return self.get_response(request)
