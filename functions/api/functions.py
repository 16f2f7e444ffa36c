"""Functions of a project: list, create, read, change settings, delete."""

from __future__ import annotations

from ninja import Router, Status

from functions import metrics, selectors
from functions.api.schemas import ErrorOut, FunctionCreateIn, FunctionOut, FunctionSettingsIn, function_out
from functions.errors import ServiceError
from functions.models import Role
from functions.services import functions as services

router = Router(tags=["functions"])
ERRORS = {400: ErrorOut, 403: ErrorOut, 404: ErrorOut, 409: ErrorOut, 429: ErrorOut}
BASE = "/projects/{slug}/functions"

# API field -> model field, for PATCH.
SCALE_FIELDS = {
    "min": "min_scale",
    "max": "max_scale",
    "target": "target_concurrency",
    "container_concurrency": "container_concurrency",
}


@router.get(BASE, response={200: list[FunctionOut], **ERRORS})
def function_list(request, slug: str):
    functions = list(selectors.functions_for_user(user=request.auth, project_slug=slug))
    figures = metrics.project_list_metrics(project=functions[0].project) if functions else None
    return [function_out(f, figures.for_function(f.name) if figures else None) for f in functions]


@router.post(BASE, response={201: FunctionOut, **ERRORS})
def function_create(request, slug: str, payload: FunctionCreateIn):
    """Create a function with no code yet (status ``pending``); deploy code by uploading a revision."""
    project = selectors.project_get_for_user(user=request.auth, slug=slug, role=Role.DEVELOPER)
    function = services.function_create(
        project=project, name=payload.name, runtime=payload.runtime, kind=payload.kind, user=request.auth
    )
    return Status(201, function_out(function))


@router.get(BASE + "/{name}", response={200: FunctionOut, **ERRORS})
def function_detail(request, slug: str, name: str):
    function = selectors.function_get_for_user(user=request.auth, project_slug=slug, name=name)
    return function_out(function, metrics.function_figures(function=function))


@router.patch(BASE + "/{name}", response={200: FunctionOut, **ERRORS})
def function_settings(request, slug: str, name: str, payload: FunctionSettingsIn):
    """Change env, scale, resources or the request timeout; a deployed function is redeployed."""
    function = selectors.function_get_for_user(
        user=request.auth, project_slug=slug, name=name, role=Role.DEVELOPER
    )
    changes = {}
    if payload.env is not None:
        changes["env"] = payload.env
    for key, value in (payload.scale.model_dump(exclude_none=True) if payload.scale else {}).items():
        changes[SCALE_FIELDS[key]] = value
    if payload.resources:
        changes.update(payload.resources.model_dump(exclude_none=True))
    if payload.timeout_seconds is not None:
        changes["timeout_seconds"] = payload.timeout_seconds
    if not changes and not payload.secrets:
        raise ServiceError("nothing to change: give env, secrets, scale, resources or timeout_seconds")
    function = services.function_update_settings(
        function=function, user=request.auth, secrets=payload.secrets, **changes
    )
    return function_out(function)


@router.delete(BASE + "/{name}", response={202: FunctionOut, **ERRORS})
def function_delete(request, slug: str, name: str):
    """Start deleting the function (status ``deleting``, then ``deleted`` once the backend is clean)."""
    function = selectors.function_get_for_user(
        user=request.auth, project_slug=slug, name=name, role=Role.DEVELOPER
    )
    services.function_delete(function=function, user=request.auth)
    function.refresh_from_db()
    return Status(202, function_out(function))
