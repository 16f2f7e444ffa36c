"""The JSON API under /api/v1 (OpenAPI document at /api/v1/openapi.json, docs at /api/v1/docs).

Each area has its own router module, registered below; all check access through ``functions.selectors``.
"""

from django.core.exceptions import PermissionDenied
from django.http import Http404

from functions.api import builds, cli_auth, functions, invoke, logs, projects, revisions, schedules
from functions.api.throttling import CallerRateThrottle
from functions.auth.tokens import SessionAuth, TokenAuth
from functions.errors import ServiceError
from functions.operation_ids import StableIdsAPI

api = StableIdsAPI(
    title="HKS Functions API",
    version="1",
    auth=[TokenAuth(), SessionAuth()],
    urls_namespace="api",
    throttle=CallerRateThrottle("api"),
)


@api.exception_handler(ServiceError)
def _service_error(request, exc: ServiceError):
    return api.create_response(request, {"detail": exc.message}, status=exc.code)


@api.exception_handler(PermissionDenied)
def _forbidden(request, exc):
    return api.create_response(request, {"detail": str(exc) or "Permission denied."}, status=403)


@api.exception_handler(Http404)
def _not_found(request, exc):
    return api.create_response(request, {"detail": str(exc) or "Not found."}, status=404)


@api.get("/whoami", tags=["account"])
def whoami(request):
    user = request.auth
    return {"username": user.username, "email": user.email}


# Each area's routes, in this order (the OpenAPI document lists them so).
for _router in (
    builds.router,
    cli_auth.router,
    functions.router,
    invoke.router,
    logs.router,
    projects.router,
    revisions.router,
    schedules.router,
):
    api.add_router("/", _router)
