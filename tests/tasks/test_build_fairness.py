"""Fair builds: one project's builds cannot hold up another's. At most HKS_BUILDS_PER_PROJECT builds of a
project run at once (services/build_slots.py, slots in the real Redis); a build over that waits off the
worker, so the real Celery worker builds and deploys the other project's function meanwhile."""

import time

import pytest

from functions.backends import function_ref, get_backend
from functions.models import Build, Function, FunctionStatus
from functions.services import build_slots
from functions.services import functions as services
from functions.sources.archives import pack_files
from tests.support.archive_samples import func_yaml
from tests.support.factories import MembershipFactory
from tests.tasks.test_run_twice import settle


def _source(name: str) -> bytes:
    return pack_files(
        {"func.yaml": func_yaml(name, "node"), "index.js": b"module.exports = {handle: () => 'OK'};\n"}
    )


def test_a_projects_slots_are_its_own_and_come_back(project, other_project, settings):
    settings.HKS_BUILDS_PER_PROJECT = 2
    for holder in build_slots.holders(project.pk) + build_slots.holders(other_project.pk):
        build_slots.give_back(project.pk, holder)
        build_slots.give_back(other_project.pk, holder)
    assert build_slots.take(project.pk, "a1") and build_slots.take(project.pk, "a2")
    assert not build_slots.take(project.pk, "a3")  # both of acme's slots are taken
    assert build_slots.take(project.pk, "a1")  # a holder keeps (refreshes) its own
    assert build_slots.take(other_project.pk, "g1")  # globex is not held up by acme
    build_slots.give_back(project.pk, "a1")
    assert build_slots.take(project.pk, "a3")
    assert sorted(build_slots.holders(project.pk)) == ["a2", "a3"]
    for holder in ("a2", "a3"):
        build_slots.give_back(project.pk, holder)
    build_slots.give_back(other_project.pk, "g1")


def test_a_dead_holders_slot_expires(project, settings, monkeypatch):
    """A worker killed mid-build stops refreshing: its slot is free again after SLOT_TTL."""
    settings.HKS_BUILDS_PER_PROJECT = 1
    monkeypatch.setattr(build_slots, "SLOT_TTL", 1.0)
    assert build_slots.take(project.pk, "killed-worker")
    assert not build_slots.take(project.pk, "next")
    time.sleep(1.5)
    assert build_slots.take(project.pk, "next")
    build_slots.give_back(project.pk, "next")


def test_a_held_slot_is_refreshed_while_the_build_runs(project, settings, monkeypatch):
    settings.HKS_BUILDS_PER_PROJECT = 1
    monkeypatch.setattr(build_slots, "SLOT_TTL", 1.0)
    monkeypatch.setattr(build_slots, "_REFRESH", 0.2)
    with build_slots.held(project.pk, "long-build") as running:
        assert running
        time.sleep(2.0)  # twice the TTL: without the refreshes it would have expired
        assert build_slots.holders(project.pk) == ["long-build"]
        with build_slots.held(project.pk, "second") as second:
            assert second is False
    assert build_slots.holders(project.pk) == []


@pytest.mark.runtime
def test_a_project_with_its_builds_running_does_not_hold_up_another_projects_build(
    project, other_project, owner, local_backend_settings, celery_worker, settings, tmp_path
):
    settings.MEDIA_ROOT = tmp_path / "media"
    settings.HKS_BUILDS_PER_PROJECT = 1
    settings.HKS_BUILD_SLOT_WAIT_SECONDS = 1
    MembershipFactory(project=other_project, user=owner, role="owner")
    busy = services.function_create(project=project, name="busy", runtime="node", user=owner)
    other = services.function_create(project=other_project, name="other", runtime="node", user=owner)
    build_slots.take(project.pk, "a-long-build-of-acme")  # acme's one slot: held as a running build holds it
    try:
        services.function_deploy(function=busy, archive=_source("busy"), user=owner)
        services.function_deploy(function=other, archive=_source("other"), user=owner)
        deadline = time.monotonic() + 300
        while Function.objects.get(pk=other.pk).status != FunctionStatus.READY:
            assert time.monotonic() < deadline, Function.objects.get(pk=other.pk).status_message
            time.sleep(0.2)
        waiting = Build.objects.get(revision__function=busy)
        assert waiting.status == "queued" and waiting.log.startswith("waiting: 1 build of this project")
        assert Function.objects.get(pk=busy.pk).status != FunctionStatus.READY
    finally:
        build_slots.give_back(project.pk, "a-long-build-of-acme")
    deadline = time.monotonic() + 300
    while Function.objects.get(pk=busy.pk).status != FunctionStatus.READY:  # its turn, once the slot is back
        assert time.monotonic() < deadline, Function.objects.get(pk=busy.pk).status_message
        time.sleep(0.2)
    settle()
    assert build_slots.holders(project.pk) == [] and build_slots.holders(other_project.pk) == []
    for project_, function in ((project, busy), (other_project, other)):
        get_backend(project_).delete(function_ref(function))
