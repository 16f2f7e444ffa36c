"""The whole Knative path on a real cluster, when one is configured; skipped otherwise (no cluster runs
here). Deploy, invoke through the public URL, logs, a schedule that fires, rollback, delete.

Run it against a cluster that has what docs/operations.md ("What the cluster must have") lists:

    HKS_TEST_KUBECONFIG=~/.kube/k3s.yaml HKS_TEST_PUBLIC_URL=http://192.168.1.5:8765 \\
    HKS_REGISTRY=registry.example.lan/hks HKS_REGISTRY_SECRET=push \\
    bash scripts/test tests/backends/test_real_cluster.py --liveserver 0.0.0.0:8765

``HKS_TEST_PUBLIC_URL`` is where the cluster's build pods reach this test's portal (pytest-django's live
server, bound by ``--liveserver``) to fetch the source. The kubeconfig's namespace is used and emptied of
the test function at the end.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import httpx
import pytest

from functions.backends import get_backend
from functions.models import FunctionStatus
from functions.services import functions as services
from functions.services.functions import function_ref
from functions.services.projects import project_set_kubeconfig
from functions.services.schedules import schedule_create
from functions.sources.archives import pack_files

KUBECONFIG = os.environ.get("HKS_TEST_KUBECONFIG", "")
PUBLIC_URL = os.environ.get("HKS_TEST_PUBLIC_URL", "")
pytestmark = pytest.mark.skipif(
    not (KUBECONFIG and PUBLIC_URL),
    reason="no real cluster: set HKS_TEST_KUBECONFIG (and HKS_TEST_PUBLIC_URL, where the cluster reaches "
    "this test's live server) to run the Knative backend against one",
)


def source(answer: str) -> dict[str, bytes]:
    return {
        "func.yaml": b"specVersion: 0.36.0\nname: hks-e2e\nruntime: node\ncreated: 2026-11-25T00:00:00Z\n",
        "index.js": f"module.exports = {{ handle: async (context) => {{ console.log('called'); "
        f"return '{answer}'; }} }};\n".encode(),
    }


def wait(predicate, what: str, timeout: float = 900.0):
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(2)
    return value


def ready_on(function, revision):
    function.refresh_from_db()
    assert function.status != FunctionStatus.FAILED, function.status_message
    return function.status == FunctionStatus.READY and function.current_revision_id == revision.pk


def test_deploy_invoke_logs_schedule_rollback_delete_on_a_real_cluster(
    project, owner, celery_worker, live_server, settings
):
    settings.HKS_PUBLIC_URL = PUBLIC_URL
    project.backend = "knative"
    project.save()
    project_set_kubeconfig(
        project=project, kubeconfig_text=Path(KUBECONFIG).expanduser().read_text(), actor=owner
    )
    function = services.function_create(project=project, name="hks-e2e", runtime="node", user=owner)
    try:
        first = services.function_deploy(function=function, archive=pack_files(source("one")), user=owner)
        wait(lambda: ready_on(function, first), "the first revision")
        assert httpx.get(function.url, timeout=30).text == "one"  # the public URL, from outside

        async def lines():
            return [line async for line in get_backend(project).logs(function_ref(function))]

        assert any("called" in line.text for line in asyncio.run(lines()))

        # a CronJob in the cluster fires it (the Knative backend fires schedules itself)
        schedule_create(function=function, user=owner, name="minutely", cron="* * * * *")
        backend = get_backend(project)
        core = backend.core
        wait(
            lambda: [
                pod
                for pod in core.list_namespaced_pod(
                    function_ref(function).namespace, label_selector="hks.dev/component=schedule"
                ).items
                if pod.status.phase == "Succeeded"
            ],
            "a schedule run",
            timeout=180,
        )

        second = services.function_deploy(function=function, archive=pack_files(source("two")), user=owner)
        wait(lambda: ready_on(function, second), "the second revision")
        assert httpx.get(function.url, timeout=30).text == "two"
        first.refresh_from_db()
        assert "@sha256:" in first.artifact  # pinned by digest
        services.revision_rollback(function=function, revision=first, user=owner)
        wait(lambda: ready_on(function, first), "the rollback")
        assert httpx.get(function.url, timeout=30).text == "one"
    finally:
        services.function_delete(function=function, user=owner)
        wait(
            lambda: (function.refresh_from_db(), function.status == FunctionStatus.DELETED)[1],
            "the delete",
            300,
        )
    assert get_backend(project).status(function_ref(function)).exists is False
