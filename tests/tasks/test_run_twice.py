"""Celery tasks are safe to run twice: on the real worker and the real Redis, each task run again - and
delivered twice at once, as at-least-once delivery allows - leaves the database and the backend exactly as
one run did.

Each test runs on both backends: Knative against the fake Kubernetes API server (the one fake allowed),
where every object the tasks created is compared, and the real local runtime daemon (sandboxed function
processes; Debian package: bubblewrap), where what it holds and reports is compared.
"""

import copy
import dataclasses
import datetime as dt
import json
import time
from collections.abc import Callable

import pytest
from celery.worker import state as worker_state
from django.utils import timezone

from functions.backends import get_backend
from functions.models import AuditEvent, Build, Function, FunctionStatus, Project, Revision, Schedule
from functions.services import functions as services
from functions.services.projects import project_set_kubeconfig
from functions.sources.archives import pack_files
from functions.tasks import functions as tasks
from hks_portal.celery import app as celery_app
from tests.support.archive_samples import func_yaml
from tests.support.k8s_fake import KSVC

SOURCE = pack_files(
    {"func.yaml": func_yaml("hello", "node"), "index.js": b"module.exports = {handle: () => 'OK'};\n"}
)


@dataclasses.dataclass
class Platform:
    project: Project
    backend_state: Callable[[], dict]  # what the backend holds, for comparing
    fake_k8s: object | None = None  # the fake cluster, on Knative


@pytest.fixture(params=["knative", pytest.param("local", marks=pytest.mark.runtime)])
def platform(request, project, owner, settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"
    if request.param == "knative":
        fake = request.getfixturevalue("fake_k8s")
        project.backend = "knative"
        project.save()
        project_set_kubeconfig(project=project, kubeconfig_text=fake.kubeconfig, actor=owner)
        project.refresh_from_db()  # the namespace comes from the kubeconfig's context
        objects = lambda: {key: _as_a_real_server_keeps_it(obj) for key, obj in fake.objects.items()}  # noqa: E731
        yield Platform(project, objects, fake)
        return
    request.getfixturevalue("local_backend_settings")
    _runtime_clear(project)  # the daemon lives for the session: start from, and leave, no functions of ours
    yield Platform(project, lambda: _runtime_state(project))
    _runtime_clear(project)


def _runtime_clear(project) -> None:
    backend = get_backend(project)
    for owned in backend.list_owned(project.slug, project.effective_namespace):
        backend.delete(owned.ref)


def _runtime_state(project) -> dict:
    """The functions the local runtime holds and what it reports about them (minus the replica count,
    which follows load and scale-to-zero, not the tasks)."""
    backend = get_backend(project)
    state = {}
    for owned in backend.list_owned(project.slug, project.effective_namespace):
        status = dataclasses.replace(backend.status(owned.ref), replicas=0)
        state[owned.ref.function] = {"revision": owned.revision, "labels": owned.labels, "status": status}
    return state


def held(platform: Platform) -> list[str]:
    """Names of the functions the backend holds for the project."""
    project = platform.project
    return sorted(
        o.ref.function for o in get_backend(project).list_owned(project.slug, project.effective_namespace)
    )


def _unacked_for_our_queue(client, queue: str) -> int:
    count = 0
    for raw in client.hvals("unacked"):
        try:
            routing_key = json.loads(raw)[2]
        except (ValueError, IndexError, TypeError):
            continue
        count += routing_key == queue
    return count


def settle(timeout: float = 90.0) -> None:
    """Wait until our queue is empty and the worker holds no task (running, reserved or unacked)."""
    queue = celery_app.conf.task_default_queue
    deadline = time.monotonic() + timeout
    quiet = 0
    with celery_app.connection_for_write() as conn:
        client = conn.default_channel.client
        while quiet < 5:
            busy = (
                client.llen(queue)
                or worker_state.active_requests
                or worker_state.reserved_requests
                or _unacked_for_our_queue(client, queue)
            )
            quiet = 0 if busy else quiet + 1
            assert time.monotonic() < deadline, "the worker did not settle"
            time.sleep(0.05)


def snapshot(platform: Platform) -> dict:
    """Everything the tasks may write: platform rows and the backend's state."""
    rows = {
        "functions": list(Function.objects.order_by("pk").values()),
        "revisions": list(Revision.objects.order_by("pk").values()),
        "builds": list(Build.objects.order_by("pk").values()),
        "schedules": list(Schedule.objects.order_by("pk").values()),
        "audit": list(AuditEvent.objects.order_by("pk").values("action", "function_name", "detail")),
    }
    for row in rows["functions"]:
        row.pop("updated_at")  # bookkeeping of the ORM's save(), not state
        row.pop("task_heartbeat_at")  # bookkeeping of the reconciler: when a task last showed it is alive
        row.pop("replicas")  # an observation of load at deploy time, not something the task decides
    return {"db": rows, "backend": platform.backend_state()}


def _as_a_real_server_keeps_it(obj: dict) -> dict:
    # A real API server keeps resourceVersion on an update that changes nothing (it skips the write),
    # and omits empty labels/annotations maps (omitempty); the fake bumps the one and stores the other.
    # Everything else of each object is compared.
    obj = copy.deepcopy(obj)
    metadata = obj.get("metadata", {})
    metadata.pop("resourceVersion", None)
    for key in ("labels", "annotations"):
        if metadata.get(key) == {}:
            metadata.pop(key)
    return obj


def _paths(a, b, where=""):
    """Where two JSON-ish values differ, as dotted paths."""
    if isinstance(a, dict) and isinstance(b, dict):
        return [p for k in sorted(set(a) | set(b)) for p in _paths(a.get(k), b.get(k), f"{where}.{k}")]
    return [] if a == b else [f"{where}: {a!r} -> {b!r}"[:200]]


def assert_same(after: dict, before: dict) -> None:
    """Equal snapshots, or a readable list of what differs."""
    diffs = [f"db.{table}" for table in before["db"] if after["db"][table] != before["db"][table]]
    keys = set(before["backend"]) | set(after["backend"])
    diffs += [
        (key, _paths(before["backend"].get(key), after["backend"].get(key)))
        for key in sorted(keys, key=str)
        if before["backend"].get(key) != after["backend"].get(key)
    ]
    assert after == before, diffs


def deployed(project, owner, name="hello", **create) -> Function:
    function = services.function_create(project=project, name=name, runtime="node", user=owner, **create)
    services.function_deploy(function=function, archive=SOURCE, user=owner)  # enqueues build_revision
    settle(timeout=600)
    function.refresh_from_db()
    assert function.status == FunctionStatus.READY, function.status_message
    return function


def test_build_revision_delivered_twice_builds_once_and_a_rerun_changes_nothing(
    platform, owner, celery_worker
):
    function = services.function_create(project=platform.project, name="hello", runtime="node", user=owner)
    revision = services.function_deploy(function=function, archive=SOURCE, user=owner)
    build = Build.objects.get(revision=revision)
    tasks.build_revision.delay(build.pk)  # the same message a second time, while the first may be running
    settle(timeout=600)
    function.refresh_from_db()
    assert function.status == FunctionStatus.READY and function.current_revision == revision
    assert held(platform) == ["hello"]
    if platform.fake_k8s:
        namespace = platform.project.effective_namespace
        assert len(platform.fake_k8s.list("jobs.batch", namespace)) == 1
        assert platform.fake_k8s.get(KSVC, namespace, "hello")["metadata"]["generation"] == 1
    once = snapshot(platform)

    tasks.build_revision.delay(build.pk)
    tasks.build_revision.delay(build.pk)
    settle()
    assert_same(snapshot(platform), once)


def test_deploy_revision_run_twice_leaves_the_same_state_as_once(platform, owner, celery_worker):
    function = deployed(platform.project, owner)
    once = snapshot(platform)
    tasks.deploy_revision.delay(function.current_revision_id)
    tasks.deploy_revision.delay(function.current_revision_id)
    settle()
    assert_same(snapshot(platform), once)


def test_a_deploy_delivered_late_for_a_replaced_revision_changes_nothing(platform, owner, celery_worker):
    function = deployed(platform.project, owner)
    first = function.current_revision
    newer = pack_files(
        {"func.yaml": func_yaml("hello", "node"), "index.js": b"module.exports = {handle: () => 'v2'};\n"}
    )
    services.function_deploy(function=function, archive=newer, user=owner)
    settle(timeout=600)
    function.refresh_from_db()
    assert (function.status, function.current_revision.number) == (FunctionStatus.READY, 2)
    once = snapshot(platform)

    tasks.deploy_revision.delay(first.pk)  # e.g. revision 1's slow build finishing after revision 2's deploy
    settle()
    assert_same(snapshot(platform), once)


def test_delete_function_run_twice_leaves_the_same_state_as_once(platform, owner, celery_worker):
    function = deployed(platform.project, owner)
    services.function_delete(function=function, user=owner)  # enqueues delete_function
    tasks.delete_function.delay(function.pk)
    settle()
    function.refresh_from_db()
    assert function.status == FunctionStatus.DELETED
    assert held(platform) == []
    assert AuditEvent.objects.filter(action="function.delete").count() == 1
    once = snapshot(platform)

    tasks.delete_function.delay(function.pk)
    tasks.delete_function.delay(function.pk)
    settle()
    assert_same(snapshot(platform), once)


def test_collect_expired_run_twice_deletes_once(platform, owner, celery_worker):
    agent = deployed(platform.project, owner, name="agent-fn", ephemeral=True, ttl_seconds=60)
    keeper = deployed(platform.project, owner, name="keeper")
    Function.objects.filter(pk=agent.pk).update(expires_at=timezone.now() - dt.timedelta(seconds=1))
    tasks.collect_expired.delay()
    tasks.collect_expired.delay()
    settle()
    keeper.refresh_from_db()
    assert keeper.status == FunctionStatus.READY
    assert not Function.objects.filter(pk=agent.pk).exists()  # an agent's function is reclaimed at once
    deletions = AuditEvent.objects.filter(action="function.delete").values_list("function_name", flat=True)
    assert list(deletions) == ["agent-fn"]
    assert held(platform) == ["keeper"]
    once = snapshot(platform)

    tasks.collect_expired.delay()
    tasks.collect_expired.delay()
    settle()
    assert_same(snapshot(platform), once)


def test_a_delete_the_cluster_refuses_says_why_and_asking_again_finishes_it(
    fake_k8s, project, owner, settings, tmp_path, celery_worker
):
    settings.MEDIA_ROOT = tmp_path / "media"
    project.backend = "knative"
    project.save()
    project_set_kubeconfig(project=project, kubeconfig_text=fake_k8s.kubeconfig, actor=owner)
    function = deployed(project, owner)
    fake_k8s.fail_next_request("DELETE", "/services/hello", status=403, message="services is forbidden")
    services.function_delete(function=function, user=owner)
    settle()
    function.refresh_from_db()
    assert function.status == FunctionStatus.DELETING  # it must not serve again
    assert "forbidden" in function.status_message
    services.function_delete(function=function, user=owner)  # the API's DELETE, again
    settle()
    function.refresh_from_db()
    assert function.status == FunctionStatus.DELETED
    assert fake_k8s.list(KSVC, function.project.effective_namespace) == []


def test_registered_task_names_never_change():
    """The names are in the Redis queue and the beat schedule: moving a task module must not rename it."""
    from hks_portal.celery import app

    app.loader.import_default_modules()
    assert sorted(n for n in app.tasks if not n.startswith("celery.")) == [
        "functions.tasks.build_revision",
        "functions.tasks.collect_expired",
        "functions.tasks.collect_orphans",
        "functions.tasks.delete_function",
        "functions.tasks.deploy_revision",
        "functions.tasks.observe_functions",
        "functions.tasks.prune_history",
        "functions.tasks.prune_revisions",
        "functions.tasks.reclaim_due",
        "functions.tasks.reclaim_storage",
        "functions.tasks.reconcile",
        "functions.tasks_provision.provision_project",
        "functions.tasks_provision.push_instance_quota",
        "functions.tasks_provision.reconcile_projects",
        "functions.tasks_provision.teardown_project",
        "functions.tasks_schedules.dispatch_schedules",
        "functions.tasks_schedules.fire_schedule_run",
        "functions.tasks_schedules.remove_schedule",
        "functions.tasks_schedules.sync_schedule",
        "functions.tasks_sessions.collect_expired_sessions",
    ]
    from django.conf import settings

    for entry in settings.CELERY_BEAT_SCHEDULE.values():
        assert entry["task"] in app.tasks
