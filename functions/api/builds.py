"""Builds of a function's revisions: status, message and log (whole, or from an offset for followers)."""

from __future__ import annotations

from ninja import Router

from functions import selectors
from functions.api.schemas import BuildDetailOut, BuildLogOut, BuildOut, ErrorOut, build_out

router = Router(tags=["builds"])
ERRORS = {403: ErrorOut, 404: ErrorOut}
BASE = "/projects/{slug}/functions/{name}/builds"


def _function(request, slug: str, name: str):
    return selectors.function_get_for_user(user=request.auth, project_slug=slug, name=name)


@router.get(BASE, response={200: list[BuildOut], **ERRORS})
def build_list(request, slug: str, name: str, limit: int = 50):
    builds = selectors.builds_for_function(function=_function(request, slug, name))
    return [build_out(b) for b in builds.order_by("-created_at", "-pk")[: max(1, min(limit, 500))]]


@router.get(BASE + "/{build_id}", response={200: BuildDetailOut, **ERRORS})
def build_detail(request, slug: str, name: str, build_id: int):
    build = selectors.build_get(function=_function(request, slug, name), build_id=build_id)
    return build_out(build, with_log=True)


@router.get(BASE + "/{build_id}/log", response={200: BuildLogOut, **ERRORS})
def build_log(request, slug: str, name: str, build_id: int, offset: int = 0):
    """The log from character ``offset`` on. Poll with the returned ``next_offset`` until ``finished``.

    An ``offset`` past the end means the build restarted (a retry clears its log): the answer then starts
    again from 0.
    """
    build = selectors.build_get(function=_function(request, slug, name), build_id=build_id)
    log = build.log
    offset = offset if 0 <= offset <= len(log) else 0
    return {
        "build": build.pk,
        "status": build.status,
        "finished": build.is_finished,
        "offset": offset,
        "next_offset": len(log),
        "text": log[offset:],
    }
