"""Reclaiming what deleted functions leave behind: source archives, built artifacts and database rows.

A deleted function keeps them for ``HKS_DELETED_RETENTION_SECONDS`` (its history stays readable for a
while); an agent's (ephemeral) function has no history worth keeping and is reclaimed as soon as its
deletion is done. Beat runs ``functions_reclaim_due`` to catch up on everything due, so a reclaim that
failed (runtime down) is simply tried again. The audit log keeps the function's name (``function_name``);
its row goes.

An artifact is freed only when no revision of another function records it (the local runtime shares one
artifact between identical sources) and the backend does not use it any more (``delete_artifact``: the
local runtime refuses while a function serves it or a build reused it a moment ago; then the artifact waits
for the next function that records it to be reclaimed).
"""

from __future__ import annotations

import datetime as dt
import logging

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from functions.backends import get_backend
from functions.models import Function, FunctionStatus, Revision

log = logging.getLogger(__name__)


def function_storage_reclaim(*, function: Function) -> bool:
    """Free a deleted function's artifacts and archives and delete its rows. Returns False when it is
    not deleted (nothing done). Raises ``BackendError`` when the backend cannot be asked (retry later)."""
    if function.status != FunctionStatus.DELETED:
        return False
    revisions = list(Revision.objects.filter(function=function))
    artifacts = {r.artifact for r in revisions if r.artifact}
    shared = set(
        Revision.objects.filter(artifact__in=artifacts)
        .exclude(function=function)
        .values_list("artifact", flat=True)
    )
    backend = get_backend(function.project)
    for artifact in sorted(artifacts - shared):
        if not backend.delete_artifact(artifact):
            log.info("artifact %s of %s is still in use; kept", artifact, function)
    for revision in revisions:
        if revision.archive:
            revision.archive.delete(save=False)
    with transaction.atomic():
        Function.objects.filter(pk=function.pk, status=FunctionStatus.DELETED).delete()
    return True


def functions_reclaim_due(*, now: dt.datetime | None = None) -> list[int]:
    """Ids of the deleted functions whose storage is due: agents' at once, others after the retention."""
    now = now or timezone.now()
    cutoff = now - dt.timedelta(seconds=settings.HKS_DELETED_RETENTION_SECONDS)
    deleted = Function.objects.filter(status=FunctionStatus.DELETED)
    due = deleted.filter(ephemeral=True) | deleted.filter(deleted_at__lte=cutoff)
    return list(due.order_by("deleted_at").values_list("pk", flat=True)[:500])
