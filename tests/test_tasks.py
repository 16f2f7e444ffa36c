"""Celery tasks are safe to run twice: on the real worker and the real Redis, each task run again - and
delivered twice at once, as at-least-once delivery allows - leaves the database and the backend exactly as
one run did.

The backend is Knative against the fake Kubernetes API server (the one fake allowed): what the tasks
created there is compared object by object.
"""

import copy
import datetime as dt
import json
import time

import pytest
from celery.worker import state as worker_state
from django.utils import timezone

from functions import services, tasks
from functions.archives import pack_files
from functions.models import AuditEvent, Build, Function, FunctionStatus, Revision, Schedule
from functions.services_projects import project_set_kubeconfig
from hks_portal.celery import app as celery_app

from .archive_samples import func_yaml
from .k8s_fake import KSVC

SOURCE = pack_files(
    {"func.yaml": func_yaml("hello", "node"), "index.js": b"module.exports = {handle: () => 'OK'};\n"}
)


@pytest.fixture
def knative(project, owner, fake_k8s, settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"
    project.backend = "knative"
    project.save()
    project_set_kubeconfig(project=project, kubeconfig_text=fake_k8s.kubeconfig, actor=owner)
    project.refresh_from_db()  # the namespace comes from the kubeconfig's context
    return project


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


def snapshot(fake_k8s) -> dict:
    """Everything the tasks may write: platform rows and the cluster's objects."""
    rows = {
        "functions": list(Function.objects.order_by("pk").values()),
        "revisions": list(Revision.objects.order_by("pk").values()),
        "builds": list(Build.objects.order_by("pk").values()),
        "schedules": list(Schedule.objects.order_by("pk").values()),
        "audit": list(AuditEvent.objects.order_by("pk").values("action", "function_name", "detail")),
    }
    for row in rows["functions"]:
        row.pop("updated_at")  # bookkeeping of the ORM's save(), not state
    return {
        "db": rows,
        "cluster": {key: _as_a_real_server_keeps_it(obj) for key, obj in fake_k8s.objects.items()},
    }


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
    keys = set(before["cluster"]) | set(after["cluster"])
    diffs += [
        (key, _paths(before["cluster"].get(key), after["cluster"].get(key)))
        for key in sorted(keys)
        if before["cluster"].get(key) != after["cluster"].get(key)
    ]
    assert after == before, diffs


def deployed(project, owner, fake_k8s, name="hello", **create) -> Function:
    function = services.function_create(project=project, name=name, runtime="node", user=owner, **create)
    services.function_deploy(function=function, archive=SOURCE, user=owner)  # enqueues build_revision
    settle()
    function.refresh_from_db()
    assert function.status == FunctionStatus.READY, function.status_message
    return function


def test_build_revision_delivered_twice_builds_once_and_a_rerun_changes_nothing(
    knative, owner, fake_k8s, celery_worker
):
    function = services.function_create(project=knative, name="hello", runtime="node", user=owner)
    revision = services.function_deploy(function=function, archive=SOURCE, user=owner)
    build = Build.objects.get(revision=revision)
    tasks.build_revision.delay(build.pk)  # the same message a second time, while the first may be running
    settle()
    function.refresh_from_db()
    assert function.status == FunctionStatus.READY and function.current_revision == revision
    assert len(fake_k8s.list("jobs.batch", knative.effective_namespace)) == 1
    assert fake_k8s.get(KSVC, knative.effective_namespace, "hello")["metadata"]["generation"] == 1
    once = snapshot(fake_k8s)

    tasks.build_revision.delay(build.pk)
    tasks.build_revision.delay(build.pk)
    settle()
    assert_same(snapshot(fake_k8s), once)


def test_deploy_revision_run_twice_leaves_the_same_state_as_once(knative, owner, fake_k8s, celery_worker):
    function = deployed(knative, owner, fake_k8s)
    once = snapshot(fake_k8s)
    tasks.deploy_revision.delay(function.current_revision_id)
    tasks.deploy_revision.delay(function.current_revision_id)
    settle()
    assert_same(snapshot(fake_k8s), once)


def test_delete_function_run_twice_leaves_the_same_state_as_once(knative, owner, fake_k8s, celery_worker):
    function = deployed(knative, owner, fake_k8s)
    services.function_delete(function=function, user=owner)  # enqueues delete_function
    tasks.delete_function.delay(function.pk)
    settle()
    function.refresh_from_db()
    assert function.status == FunctionStatus.DELETED
    assert fake_k8s.list(KSVC, knative.effective_namespace) == []
    assert AuditEvent.objects.filter(action="function.delete").count() == 1
    once = snapshot(fake_k8s)

    tasks.delete_function.delay(function.pk)
    tasks.delete_function.delay(function.pk)
    settle()
    assert_same(snapshot(fake_k8s), once)


def test_collect_expired_run_twice_deletes_once(knative, owner, fake_k8s, celery_worker):
    agent = deployed(knative, owner, fake_k8s, name="agent-fn", ephemeral=True, ttl_seconds=60)
    keeper = deployed(knative, owner, fake_k8s, name="keeper")
    Function.objects.filter(pk=agent.pk).update(expires_at=timezone.now() - dt.timedelta(seconds=1))
    tasks.collect_expired.delay()
    tasks.collect_expired.delay()
    settle()
    agent.refresh_from_db()
    keeper.refresh_from_db()
    assert (agent.status, keeper.status) == (FunctionStatus.DELETED, FunctionStatus.READY)
    assert list(
        AuditEvent.objects.filter(action="function.delete").values_list("function_name", flat=True)
    ) == ["agent-fn"]
    assert [o["metadata"]["name"] for o in fake_k8s.list(KSVC, knative.effective_namespace)] == ["keeper"]
    once = snapshot(fake_k8s)

    tasks.collect_expired.delay()
    tasks.collect_expired.delay()
    settle()
    assert_same(snapshot(fake_k8s), once)
