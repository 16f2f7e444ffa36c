"""Services: the writes behind the API, each leaving a consistent state or refusing with a reason."""

import datetime as dt

import pytest
from django.utils import timezone

from functions.models import AuditEvent, Build, BuildStatus, Function, FunctionStatus, Revision, Role
from functions.services import functions as services
from functions.sources.archives import pack_files
from functions.tasks import functions as tasks
from tests.support.archive_samples import node_archive
from tests.support.factories import FunctionFactory


@pytest.fixture(autouse=True)
def media_root(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"
    return settings.MEDIA_ROOT


def test_deploy_stores_a_numbered_revision_and_queues_one_build(
    project, owner, django_capture_on_commit_callbacks
):
    function = services.function_create(project=project, name="hello", runtime="node", user=owner)
    with django_capture_on_commit_callbacks() as queued:
        first = services.function_deploy(function=function, archive=node_archive(), user=owner)
    second = services.function_deploy(function=function, archive=node_archive(body=b"//v2"), user=owner)
    assert (first.number, second.number) == (1, 2)
    assert first.archive.read() == node_archive()
    assert Build.objects.get(revision=first).status == BuildStatus.QUEUED
    assert Function.objects.get(pk=function.pk).status == FunctionStatus.BUILDING
    assert len(queued) == 1


def test_a_refused_archive_stores_nothing(project, owner, media_root):
    function = services.function_create(project=project, name="hello", runtime="node", user=owner)
    with pytest.raises(services.ServiceError, match="func.yaml is missing"):
        services.function_deploy(function=function, archive=pack_files({"index.js": b"//"}), user=owner)
    assert not Revision.objects.exists()
    assert not [p for p in media_root.rglob("*") if p.is_file()]
    assert Function.objects.get(pk=function.pk).status == FunctionStatus.PENDING


def test_unchanged_source_reuses_the_artifact_without_building(project, owner):
    function = services.function_create(project=project, name="hello", runtime="node", user=owner)
    first = services.function_deploy(function=function, archive=node_archive(), user=owner)
    Revision.objects.filter(pk=first.pk).update(artifact="/artifacts/one")
    second = services.function_deploy(function=function, archive=node_archive(), user=owner)
    assert second.artifact == "/artifacts/one"
    assert Build.objects.get(revision=second).status == BuildStatus.SUCCEEDED
    assert Function.objects.get(pk=function.pk).status == FunctionStatus.DEPLOYING


def test_agent_functions_are_restricted_ephemeral_and_have_their_own_quota(project, owner):
    project.max_agent_functions = 1
    project.save()
    agent = services.function_create(
        project=project, name="agent-1", runtime="python", user=owner, ephemeral=True, ttl_seconds=60
    )
    assert (agent.sandbox_profile, agent.visibility) == ("restricted", "cluster-local")
    assert timezone.now() < agent.expires_at <= timezone.now() + dt.timedelta(seconds=60)
    with pytest.raises(services.ServiceError) as refused:
        services.function_create(
            project=project, name="agent-2", runtime="python", user=owner, ephemeral=True
        )
    assert refused.value.code == 429
    services.function_create(project=project, name="regular", runtime="node", user=owner)  # a separate quota


@pytest.mark.parametrize("how", ["demote", "remove"])
def test_the_last_owner_stays(how, project, owner):
    with pytest.raises(services.ServiceError, match="at least one owner") as refused:
        if how == "demote":
            services.membership_set(project=project, user=owner, role=Role.VIEWER, actor=owner)
        else:
            services.membership_remove(project=project, user=owner, actor=owner)
    assert refused.value.code == 409
    assert project.memberships.get(user=owner).role == Role.OWNER


def test_an_owner_may_step_down_when_another_owner_remains(project, owner, developer):
    services.membership_set(project=project, user=developer, role=Role.OWNER, actor=owner)
    services.membership_set(project=project, user=owner, role=Role.VIEWER, actor=owner)
    assert project.memberships.get(user=owner).role == Role.VIEWER


def test_deleting_twice_is_recorded_once_and_enqueued_each_time(
    project, owner, django_capture_on_commit_callbacks
):
    function = FunctionFactory(project=project, name="hello", status=FunctionStatus.READY)
    with django_capture_on_commit_callbacks() as queued:
        services.function_delete(function=function, user=owner)
        services.function_delete(function=Function.objects.get(pk=function.pk), user=owner)
    assert Function.objects.get(pk=function.pk).status == FunctionStatus.DELETING
    assert AuditEvent.objects.filter(action="function.delete").count() == 1
    assert len(queued) == 2  # asking again retries a deletion that got stuck


def test_a_late_failure_report_does_not_undo_a_successful_build(project, owner):
    function = FunctionFactory(project=project, name="hello", status=FunctionStatus.READY)
    revision = Revision.objects.create(function=function, number=1, archive="x", artifact="/a")
    build = Build.objects.create(revision=revision, status=BuildStatus.SUCCEEDED, log="ok\n")
    services.build_fail(build=build, message="internal error: OperationalError")
    build.refresh_from_db()
    assert (build.status, build.log) == (BuildStatus.SUCCEEDED, "ok\n")
    assert Function.objects.get(pk=function.pk).status == FunctionStatus.READY


def test_a_build_failure_is_recorded_on_the_build_and_the_function(project, owner):
    function = FunctionFactory(project=project, name="hello", status=FunctionStatus.BUILDING)
    build = Build.objects.create(revision=Revision.objects.create(function=function, number=1, archive="x"))
    services.build_fail(build=build, message="npm ERR! 404")
    build.refresh_from_db()
    function.refresh_from_db()
    assert (build.status, build.message) == (BuildStatus.FAILED, "npm ERR! 404")
    assert (function.status, function.status_message) == (FunctionStatus.FAILED, "build failed: npm ERR! 404")


def test_collect_expired_takes_only_expired_agent_functions_once(project, owner):
    past, future = timezone.now() - dt.timedelta(minutes=1), timezone.now() + dt.timedelta(minutes=1)
    FunctionFactory(project=project, name="expired", ephemeral=True, expires_at=past, status="ready")
    FunctionFactory(project=project, name="fresh", ephemeral=True, expires_at=future, status="ready")
    FunctionFactory(project=project, name="regular", status="ready")
    assert services.functions_collect_expired() == 1
    assert services.functions_collect_expired() == 0
    statuses = dict(Function.objects.values_list("name", "status"))
    assert statuses == {"expired": "deleting", "fresh": "ready", "regular": "ready"}


def test_unknown_settings_are_refused(project, owner):
    function = FunctionFactory(project=project, name="hello")
    with pytest.raises(services.ServiceError, match="unknown settings: runtime"):
        services.function_update_settings(function=function, user=owner, runtime="python")


def test_settings_of_a_deployed_function_redeploy_it(project, owner, django_capture_on_commit_callbacks):
    function = FunctionFactory(project=project, name="hello", status=FunctionStatus.READY)
    function.current_revision = Revision.objects.create(
        function=function, number=1, archive="x", artifact="/a"
    )
    function.save()
    with django_capture_on_commit_callbacks() as queued:
        services.function_update_settings(function=function, user=owner, env={"A": "1"})
    assert len(queued) == 1
    assert Function.objects.get(pk=function.pk).env == {"A": "1"}


def _serving(project, *, revisions: int) -> tuple[Function, list[Revision]]:
    """A ready function with built revisions 1..n, the last one serving and wanted."""
    function = FunctionFactory(project=project, name="hello", status=FunctionStatus.READY)
    made = [
        Revision.objects.create(function=function, number=n, archive="x", artifact=f"/a{n}")
        for n in range(1, revisions + 1)
    ]
    Function.objects.filter(pk=function.pk).update(current_revision=made[-1], desired_revision=made[-1])
    function.refresh_from_db()
    return function, made


def test_deploy_and_rollback_record_the_revision_asked_for(project, owner):
    function = services.function_create(project=project, name="hello", runtime="node", user=owner)
    first = services.function_deploy(function=function, archive=node_archive(), user=owner)
    assert Function.objects.get(pk=function.pk).desired_revision == first
    second = services.function_deploy(function=function, archive=node_archive(body=b"//v2"), user=owner)
    assert Function.objects.get(pk=function.pk).desired_revision == second
    Revision.objects.filter(pk=first.pk).update(artifact="/a1")
    first.refresh_from_db()
    services.revision_rollback(function=function, revision=first, user=owner)
    assert Function.objects.get(pk=function.pk).desired_revision == first


def test_a_late_deploy_of_a_revision_no_longer_wanted_changes_nothing(project, owner):
    function, (older, newer) = _serving(project, revisions=2)
    before = Function.objects.filter(pk=function.pk).values().get()
    services.revision_deploy_run(revision=older)  # e.g. its slow build finished after the newer deploy
    assert Function.objects.filter(pk=function.pk).values().get() == before


def test_an_older_build_failing_late_leaves_the_serving_function_alone(project, owner):
    function, (older, newer) = _serving(project, revisions=2)
    build = Build.objects.create(revision=older)
    services.build_fail(build=build, message="npm ERR! 404")
    build.refresh_from_db()
    function.refresh_from_db()
    assert (build.status, build.message) == (BuildStatus.FAILED, "npm ERR! 404")
    assert (function.status, function.current_revision, function.desired_revision) == (
        FunctionStatus.READY,
        newer,
        newer,
    )


def test_a_failed_build_of_the_wanted_revision_falls_back_to_what_serves(project, owner):
    function, (serving,) = _serving(project, revisions=1)
    broken = services.function_deploy(function=function, archive=node_archive(body=b"//v2"), user=owner)
    services.build_fail(build=Build.objects.get(revision=broken), message="npm ERR! 404")
    function.refresh_from_db()
    assert function.status == FunctionStatus.FAILED
    assert (function.current_revision, function.desired_revision) == (serving, serving)


def test_settings_while_a_newer_revision_builds_wait_for_its_deploy(
    project, owner, django_capture_on_commit_callbacks
):
    function, _ = _serving(project, revisions=1)
    services.function_deploy(function=function, archive=node_archive(body=b"//v2"), user=owner)
    with django_capture_on_commit_callbacks() as queued:
        services.function_update_settings(function=function, user=owner, env={"A": "1"})
    assert queued == []  # the build's own deploy applies them
    assert Function.objects.get(pk=function.pk).env == {"A": "1"}


def test_settings_redeploy_the_wanted_revision_even_when_it_failed_to_start(
    project, owner, django_capture_on_commit_callbacks, monkeypatch
):
    """As on Knative, new settings go with the latest revision: an env var it lacked may be the fix."""
    function, (serving, crashed) = _serving(project, revisions=2)
    Function.objects.filter(pk=function.pk).update(current_revision=serving, status=FunctionStatus.FAILED)
    function.refresh_from_db()
    sent = []
    monkeypatch.setattr(tasks.deploy_revision, "delay", sent.append)
    with django_capture_on_commit_callbacks(execute=True):
        services.function_update_settings(function=function, user=owner, env={"API_KEY": "x"})
    assert sent == [crashed.pk]


def test_a_knative_function_cannot_ask_for_a_timeout_the_cluster_refuses(project, owner, settings):
    project.backend = "knative"
    project.save()
    function = FunctionFactory(project=project, name="hello", timeout_seconds=300)
    with pytest.raises(services.ServiceError, match="over this cluster's limit of 600 s"):
        services.function_update_settings(function=function, user=owner, timeout_seconds=601)
    assert Function.objects.get(pk=function.pk).timeout_seconds == 300
    services.function_update_settings(function=function, user=owner, timeout_seconds=600)
    settings.HKS_KNATIVE_MAX_TIMEOUT_SECONDS = 1800  # a cluster that raised max-revision-timeout-seconds
    services.function_update_settings(function=function, user=owner, timeout_seconds=1800)
    assert Function.objects.get(pk=function.pk).timeout_seconds == 1800


def test_a_local_function_may_wait_up_to_an_hour(project, owner):
    function = FunctionFactory(project=project, name="hello")
    services.function_update_settings(function=function, user=owner, timeout_seconds=3600)
    assert Function.objects.get(pk=function.pk).timeout_seconds == 3600
