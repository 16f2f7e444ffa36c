"""Invoking a function through the API: one route on top of ``functions.services.invoke``."""

from __future__ import annotations

from dataclasses import asdict

from ninja import Router

from functions import selectors
from functions.api.schemas import ErrorOut, InvokeIn, InvokeOut
from functions.models import Role
from functions.services.invoke import function_invoke as invoke

router = Router(tags=["functions"])
BASE = "/projects/{slug}/functions/{name}"


@router.post(
    BASE + "/invoke",
    response={200: InvokeOut, **{code: ErrorOut for code in (400, 403, 404, 409, 502, 504)}},
)
def function_invoke(request, slug: str, name: str, payload: InvokeIn):
    """Send one HTTP request to the function and return its answer (status, headers, body, duration)."""
    function = selectors.function_get_for_user(
        user=request.auth, project_slug=slug, name=name, role=Role.DEVELOPER
    )
    result = invoke(
        function=function,
        method=payload.method,
        path=payload.path,
        headers=payload.headers,
        body=payload.body,
    )
    return asdict(result)
