"""Revisions: upload a source archive (deploy), list them, roll back to one."""

from __future__ import annotations

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.http import Http404
from ninja import Router, Status

from functions import selectors
from functions.api.schemas import DeployOut, ErrorOut, FunctionOut, RevisionOut, function_out, revision_out
from functions.errors import ServiceError
from functions.models import Role, Runtime
from functions.services import functions as services

router = Router(tags=["revisions"])
ERRORS = {400: ErrorOut, 403: ErrorOut, 404: ErrorOut, 409: ErrorOut}
BASE = "/projects/{slug}/functions/{name}/revisions"
GZIP_TYPES = {"application/gzip", "application/x-gzip", "application/octet-stream"}
MULTIPART_SLACK = 64 * 1024  # room for multipart boundaries and headers around the file
UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "description": "A .tar.gz of the function directory, with func.yaml at its root.",
        "content": {
            "application/gzip": {"schema": {"type": "string", "format": "binary"}},
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {"archive": {"type": "string", "format": "binary"}},
                    "required": ["archive"],
                }
            },
        },
    }
}


def _too_big(size: int, limit: int) -> ServiceError:
    return ServiceError(f"archive is {size} bytes; the limit is {limit} bytes", code=413)


def _read_archive(request) -> bytes:
    """The uploaded archive's bytes, refusing oversize uploads before reading them where possible."""
    limit = settings.HKS_MAX_ARCHIVE_BYTES
    declared = int(request.META.get("CONTENT_LENGTH") or 0)
    content_type = request.content_type or ""
    if content_type == "multipart/form-data":
        if declared > limit + MULTIPART_SLACK:
            raise _too_big(declared, limit)
        upload = request.FILES.get("archive")
        if upload is None:
            raise ServiceError("the multipart upload has no file field named 'archive'")
        if upload.size > limit:
            raise _too_big(upload.size, limit)
        return upload.read()
    if content_type not in GZIP_TYPES:
        raise ServiceError(
            "send the archive as the request body with Content-Type application/gzip, "
            "or as the multipart/form-data file field 'archive'",
            code=415,
        )
    if declared > limit:
        raise _too_big(declared, limit)
    try:
        data = request.body
    except RequestDataTooBig:
        raise _too_big(declared, limit) from None
    if len(data) > limit:
        raise _too_big(len(data), limit)
    return data


@router.post(
    BASE,
    response={201: DeployOut, **ERRORS, 413: ErrorOut, 415: ErrorOut, 429: ErrorOut},
    openapi_extra=UPLOAD_BODY,
)
def revision_upload(request, slug: str, name: str, create: bool = False, runtime: Runtime | None = None):
    """Deploy: store the archive as a new revision and start its build.

    With ``create=true`` and a ``runtime``, a function that does not exist yet is created first (what
    ``hks-func deploy`` does). A refused archive leaves nothing behind, not even the new function.
    """
    project = selectors.project_get_for_user(user=request.auth, slug=slug, role=Role.DEVELOPER)
    function = selectors.functions_for_project(project=project).filter(name=name).first()
    if function is None and not create:
        raise Http404("No such function (pass create=true and a runtime to create it).")
    if function is None and runtime is None:
        raise ServiceError("creating a function needs its runtime (node or python)")
    data = _read_archive(request)
    created = function is None
    function, revision = services.function_deploy_or_create(
        project=project, function=function, name=name, runtime=runtime, archive=data, user=request.auth
    )
    return Status(
        201,
        {
            "function": function_out(function),
            "revision": revision_out(revision, current_id=function.current_revision_id),
            "created_function": created,
        },
    )


@router.get(BASE, response={200: list[RevisionOut], **ERRORS})
def revision_list(request, slug: str, name: str):
    function = selectors.function_get_for_user(user=request.auth, project_slug=slug, name=name)
    revisions = function.revisions.select_related("created_by").prefetch_related("builds")
    return [revision_out(r, current_id=function.current_revision_id) for r in revisions]


@router.get(BASE + "/{number}", response={200: RevisionOut, **ERRORS})
def revision_detail(request, slug: str, name: str, number: int):
    function = selectors.function_get_for_user(user=request.auth, project_slug=slug, name=name)
    revision = selectors.revision_get(function=function, number=number)
    return revision_out(revision, current_id=function.current_revision_id)


@router.post(BASE + "/{number}/rollback", response={202: FunctionOut, **ERRORS})
def revision_rollback(request, slug: str, name: str, number: int):
    """Send traffic to an older (built) revision again."""
    function = selectors.function_get_for_user(
        user=request.auth, project_slug=slug, name=name, role=Role.DEVELOPER
    )
    revision = selectors.revision_get(function=function, number=number)
    services.revision_rollback(function=function, revision=revision, user=request.auth)
    function.refresh_from_db()
    return Status(202, function_out(function))
