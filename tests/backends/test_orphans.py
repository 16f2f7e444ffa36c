"""The orphan collector (beat task ``collect-orphans``) asks each Knative project's cluster what it holds
(``list_owned``) and deletes what the portal no longer knows."""

import dataclasses

from django.conf import settings

from functions.backends import get_backend
from functions.backends.base import Resources, Scale, ServiceSpec
from functions.services.functions import function_ref
from functions.services.orphans import orphans_collect
from functions.tasks import functions as tasks
from tests.support.factories import FunctionFactory
from tests.support.k8s_fake import KSVC

IMAGE = "registry.local/hks/acme/x@sha256:" + "c" * 64


def _apply(backend, ref):
    backend.apply(
        ServiceSpec(
            ref=ref,
            revision=f"{ref.function}-00001",
            runtime="node",
            kind="http",
            artifact=IMAGE,
            scale=Scale(0, 1, 10, 0),
            resources=Resources(100, 128),
            labels={"hks.dev/project": ref.project, "hks.dev/function": ref.function},
        )
    )


def test_cluster_objects_without_a_live_function_are_collected(knative_project, fake_k8s):
    hello = FunctionFactory(project=knative_project, name="hello", status="ready")
    gone = FunctionFactory(project=knative_project, name="gone", status="deleted")
    leaving = FunctionFactory(project=knative_project, name="leaving", status="deleting")
    backend = get_backend(knative_project)
    ref = function_ref(hello)
    for name in ("hello", "gone", "leaving", "ghost"):
        _apply(backend, dataclasses.replace(ref, function=name))
    assert gone and leaving

    assert orphans_collect() == 2
    remaining = sorted(obj["metadata"]["name"] for obj in fake_k8s.list(KSVC, ref.namespace))
    assert remaining == ["hello", "leaving"]  # "leaving" is its own delete task's business
    assert fake_k8s.list("networkpolicies.networking.k8s.io", ref.namespace, "hks.dev/function=ghost") == []


def test_a_cluster_that_fails_is_tried_next_time(knative_project, fake_k8s):
    fake_k8s.fail_next_request("GET", "/services", 403, "forbidden")
    assert orphans_collect() == 0


def test_beat_runs_the_collector():
    entry = next(e for e in settings.CELERY_BEAT_SCHEDULE.values() if e["task"].endswith("collect_orphans"))
    assert entry["task"] == tasks.collect_orphans.name
