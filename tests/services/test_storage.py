"""Which functions beat's catch-up prunes, and which of their revisions: only revisions past the history that
nothing needs (not the serving one, not one being built), so functions that rolled back never crowd the
batch; a rollback racing a prune. The pruning itself, on a real runtime: tests/api/test_storage_limits.py."""

import pytest

from functions.errors import ServiceError
from functions.models import Build, BuildStatus, FunctionStatus, Revision
from functions.services import functions as services_functions
from functions.services import storage as services_storage
from tests.support.factories import FunctionFactory


@pytest.fixture(autouse=True)
def short_history(settings):
    settings.HKS_REVISION_HISTORY = 2


def _revisions(function, count: int, build: str = BuildStatus.SUCCEEDED) -> list[Revision]:
    made = []
    for number in range(1, count + 1):
        revision = Revision.objects.create(function=function, number=number, content_hash=f"h{number}")
        Build.objects.create(revision=revision, status=build)
        made.append(revision)
    return made


def _prunable(function) -> list[int]:
    return [r.number for r in services_storage._prunable(function)]


def test_only_functions_with_a_revision_past_their_history_are_due(project):
    within = FunctionFactory(project=project)
    _revisions(within, 2)
    over = FunctionFactory(project=project)
    _revisions(over, 3)
    assert services_storage.functions_prune_due() == [over.pk]
    assert _prunable(over) == [1] and _prunable(within) == []


def test_the_revision_a_rollback_serves_keeps_its_function_out_of_the_batch(project):
    function = FunctionFactory(project=project, status=FunctionStatus.READY)
    first, *_ = _revisions(function, 3)
    function.current_revision = function.desired_revision = first
    function.save()
    assert services_storage.functions_prune_due() == [] and _prunable(function) == []
    Revision.objects.create(function=function, number=4, content_hash="h4")  # its build row is not made yet
    assert services_storage.functions_prune_due() == [function.pk] and _prunable(function) == [2]


def test_a_revision_still_building_is_never_pruned(project):
    function = FunctionFactory(project=project)
    _revisions(function, 3, build=BuildStatus.RUNNING)
    assert services_storage.functions_prune_due() == [] and _prunable(function) == []
    Build.objects.filter(revision__number=1).update(status=BuildStatus.FAILED)
    assert services_storage.functions_prune_due() == [function.pk] and _prunable(function) == [1]


def test_deleted_functions_are_reclaimed_whole_not_pruned(project):
    function = FunctionFactory(project=project, status=FunctionStatus.DELETED)
    _revisions(function, 3)
    assert services_storage.functions_prune_due() == []
    assert services_storage.revisions_prune(function=function) == []


def test_a_rollback_to_a_revision_pruned_meanwhile_is_a_409(project, developer):
    function = FunctionFactory(project=project, status=FunctionStatus.READY)
    first, *_ = _revisions(function, 3)
    Revision.objects.filter(pk=first.pk).update(artifact="/srv/artifacts/a")
    first.refresh_from_db()  # what the API's selector read, before the prune removed it
    Revision.objects.filter(pk=first.pk).delete()
    with pytest.raises(ServiceError) as refused:
        services_functions.revision_rollback(function=function, revision=first, user=developer)
    assert refused.value.code == 409 and "no longer stored" in refused.value.message
    function.refresh_from_db()
    assert function.desired_revision is None and function.status == FunctionStatus.READY
