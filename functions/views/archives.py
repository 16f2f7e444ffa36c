"""The download a cluster's build Job fetches its source archive from (``functions.sources.archive_links``
makes and checks the links)."""

from __future__ import annotations

from django.http import FileResponse
from django.views.decorators.http import require_GET

from functions.sources.archive_links import revision_for_token


@require_GET
def archive_download(request, token: str):
    revision = revision_for_token(token)
    return FileResponse(
        revision.archive.open("rb"),
        content_type="application/gzip",
        as_attachment=True,
        filename=f"{revision.name}.tar.gz",
    )
