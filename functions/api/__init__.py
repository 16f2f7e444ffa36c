"""The JSON API under /api/v1 (OpenAPI document at /api/v1/openapi.json, docs at /api/v1/docs).

Each area has its own router module; all go through ``functions.selectors`` for access checks.
"""

from django.core.exceptions import PermissionDenied
from django.http import Http404
from ninja import NinjaAPI

from functions.auth.tokens import SessionAuth, TokenAuth
from functions.services.functions import ServiceError

api = NinjaAPI(
    title="HKS Functions API",
    version="1",
    auth=[TokenAuth(), SessionAuth()],
    urls_namespace="api",
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


def _register_routers() -> None:
    # Routers live in their own modules (functions/api/<area>.py), each exporting ``router``.
    import importlib
    import pkgutil

    for module in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if module.name.startswith("_"):
            continue
        router = getattr(importlib.import_module(f"{__name__}.{module.name}"), "router", None)
        if router is not None:
            api.add_router("/", router)


_register_routers()
