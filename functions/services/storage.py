"""Reclaiming storage: what deleted functions leave behind, the revisions past a function's history, and the
project storage quota that bounds what a tenant keeps meanwhile.

A deleted function keeps them for ``HKS_DELETED_RETENTION_SECONDS`` (its history stays readable for a
while); an agent's (ephemeral) function has no history worth keeping and is reclaimed as soon as its
deletion is done. Beat runs ``functions_reclaim_due`` to catch up on everything due, so a reclaim that
failed (runtime down) is simply tried again. The audit log keeps the function's name (``function_name``);
its row goes.

An artifact is freed only when no revision of another function records it (the local runtime shares one
artifact between identical sources) and the backend does not use it any more (``delete_artifact``: the
local runtime refuses while a function serves it or a build reused it a moment ago; then the artifact waits
for the next function that records it to be reclaimed).

A live function keeps its newest ``HKS_REVISION_HISTORY`` revisions, the one it serves (a rollback may
serve an old one) and the one it is moving to; older ones are pruned after each deploy that made a revision
serve, and by beat's catch-up (a lowered setting, a prune the runtime refused). Pruning follows the reclaim:
an artifact is freed only when no other revision records it and the backend agrees; when the backend
refuses, the revisions recording it stay whole (row, archive) so the next prune tries again. A revision
whose build has not finished is never pruned. New revisions may reuse only an artifact that pruning keeps
(``functions._reusable_revision``), so no prune frees an artifact a deploy is about to record.

``storage_quota_check`` refuses a new revision whose archive would take the project past ``max_storage_mb``
(``selectors.storage_used``: archives plus each distinct artifact once).
"""

from __future__ import annotations

import datetime as dt
import logging

from django.conf import settings
from django.db import transaction
from django.db.models import Exists, IntegerField, OuterRef, Subquery, Value
from django.db.models.functions import Coalesce
from django.utils import timezone

from functions import selectors
from functions.backends import get_backend
from functions.errors import ServiceError
from functions.models import BuildStatus, Function, FunctionStatus, Project, Revision
from functions.services.audit import audit

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


PRUNE_BATCH = 200  # revisions one prune removes at most; the rest go on the next one (a big history)
PRUNE_DUE_BATCH = 100  # functions one catch-up run prunes at most


UNFINISHED = [BuildStatus.QUEUED, BuildStatus.RUNNING]


def _prunable(function: Function) -> list[Revision]:
    """The function's revisions past its history that nothing needs: oldest first."""
    keep = settings.HKS_REVISION_HISTORY
    newest = list(function.revisions.order_by("-number").values_list("pk", flat=True)[:keep])
    serving = Function.objects.filter(pk=function.pk).values_list("current_revision", "desired_revision")
    protected = [pk for pair in serving for pk in pair if pk is not None]
    candidates = function.revisions.exclude(pk__in=newest + protected).exclude(builds__status__in=UNFINISHED)
    return list(candidates.order_by("number")[:PRUNE_BATCH])


def revisions_prune(*, function: Function) -> list[int]:
    """Remove the function's revisions past ``HKS_REVISION_HISTORY`` (see the module docstring); returns the
    numbers removed. Raises ``BackendError`` when the backend cannot be asked (the catch-up retries).

    The function's row stays locked from the choice to the deletion, as ``revision_rollback`` locks it: a
    rollback either comes first (its revision is then kept) or finds its revision gone (409), never an
    artifact freed under the revision it asked for."""
    if not function.is_alive:
        return []  # a deleted function is reclaimed whole (function_storage_reclaim)
    with transaction.atomic():
        Function.objects.select_for_update(no_key=True).filter(pk=function.pk).first()
        victims = _prunable(function)
        ids = [r.pk for r in victims]
        artifacts = {r.artifact for r in victims if r.artifact}
        recorded = Revision.objects.filter(artifact__in=artifacts).exclude(pk__in=ids)
        unshared = artifacts - set(recorded.values_list("artifact", flat=True))
        backend = get_backend(function.project)
        refused = set()
        for artifact in sorted(unshared):
            if not backend.delete_artifact(artifact):
                log.info("artifact %s of %s is in use; its revisions are kept for now", artifact, function)
                refused.add(artifact)
        pruned = [r for r in victims if r.artifact not in refused]
        if not pruned:
            return []
        Revision.objects.filter(pk__in=[r.pk for r in pruned]).delete()  # their builds cascade
        audit(
            project=function.project,
            function=function,
            action="function.revisions_pruned",
            revisions=[r.number for r in pruned],
            history=settings.HKS_REVISION_HISTORY,
            artifacts_freed=len(unshared - refused),
        )
    for revision in pruned:  # once the rows are gone: a row without its file would break a rebuild
        if revision.archive:
            revision.archive.delete(save=False)
    return [r.number for r in pruned]


def functions_prune_due() -> list[int]:
    """Ids of live functions with a revision to prune (as ``_prunable`` decides, in one query): beat's
    catch-up. A function whose extra revisions are all protected (the one a rollback serves) is not one, so
    it never takes a place in the batch from those that have one."""
    keep = settings.HKS_REVISION_HISTORY
    nth_newest = (
        Revision.objects.filter(function=OuterRef(OuterRef("pk"))).order_by("-number").values("number")
    )[keep - 1 : keep]
    none = Value(0, output_field=IntegerField())  # no revision has pk 0: "not the serving one" when none
    old = (
        Revision.objects.filter(function=OuterRef("pk"), number__lt=Subquery(nth_newest))
        .exclude(pk=Coalesce(OuterRef("current_revision"), none))
        .exclude(pk=Coalesce(OuterRef("desired_revision"), none))
        .exclude(builds__status__in=UNFINISHED)
    )
    due = Function.objects.alive().exclude(status=FunctionStatus.DELETING).filter(Exists(old))
    return list(due.order_by("pk").values_list("pk", flat=True)[:PRUNE_DUE_BATCH])


def _mib(size: int) -> str:
    return f"{size / (1 << 20):.1f}"


def _duration(seconds: int) -> str:
    for unit, length in (("days", 86400), ("hours", 3600), ("minutes", 60)):
        if seconds >= length and seconds % length == 0:
            return f"{seconds // length} {unit}"
    return f"{seconds} seconds"


def storage_quota_check(*, project: Project, adding: int) -> None:
    """ServiceError 409 when ``adding`` bytes (a new revision's archive) would take the project past its
    ``max_storage_mb``. The caller holds the project's row lock, so concurrent uploads check in turn."""
    limit = project.max_storage_mb << 20
    used = selectors.project_storage_used(project=project)
    if used + adding <= limit:
        return
    raise ServiceError(
        f"project {project.slug} has used {_mib(used)} MiB of its storage quota of {project.max_storage_mb} "
        f"MiB (source archives and built artifacts of its revisions) and this archive needs "
        f"{_mib(adding)} MiB more. Free space by deleting functions you no longer need (their storage is "
        f"freed {_duration(settings.HKS_DELETED_RETENTION_SECONDS)} after the deletion); each function "
        f"keeps its newest {settings.HKS_REVISION_HISTORY} revisions (HKS_REVISION_HISTORY, an operator "
        "setting), and an operator can raise the project's max_storage_mb.",
        code=409,
    )
