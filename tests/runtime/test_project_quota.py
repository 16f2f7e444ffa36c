"""A project's instance quota on the runtime (hks_runtime/quotas.py): the instances of all its functions
at once stop at the cap its specs carry - min-scale is held at what fits, demand's scale-up stops there -
while another project starts its own; a held function gets its place when one of the project's instances
stops. Real daemon, real sandboxed Node functions. Debian package: bubblewrap.
"""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import dataclasses
import secrets
import time

import httpx
import pytest

from functions.backends.base import FunctionRef, Scale
from functions.backends.local import LocalBackend
from hks_runtime import sandbox
from tests.support.daemon import start_daemon, stop_daemon
from tests.support.daemon_helpers import build, deploy, service, wait_for
from tests.support.sample_functions import remove_dir, scratch_dir

pytestmark = pytest.mark.runtime


@pytest.fixture(scope="module")
def artifact(runtime_daemon, tmp_path_factory):
    backend = LocalBackend(runtime_daemon.control_url, runtime_daemon.token)
    return build(backend, tmp_path_factory.mktemp("quota"), "shared", "node")


@pytest.fixture
def backend(runtime_daemon):
    return LocalBackend(runtime_daemon.control_url, runtime_daemon.token)


def spec(namespace: str, name: str, artifact: str, cap: int, scale: Scale, revision: int = 1):
    base = service(name, "node", artifact, revision=revision, scale=scale, project_max_instances=cap)
    return dataclasses.replace(base, ref=FunctionRef(project=namespace, namespace=namespace, function=name))


def running(runtime_daemon, namespace: str) -> int:
    """The namespace's instances the runtime holds (starting, ready or draining), all functions together."""
    answer = httpx.get(
        f"{runtime_daemon.control_url}/v1/functions",
        params={"namespace": namespace},
        headers=runtime_daemon.headers,
    )
    total = 0
    for item in answer.json()["functions"]:
        status = httpx.get(
            f"{runtime_daemon.control_url}/v1/namespaces/{namespace}/functions/{item['name']}",
            headers=runtime_daemon.headers,
        ).json()
        total += sum(1 for i in status["instances"] if i["state"] in ("starting", "ready", "draining"))
    return total


def system_lines(backend: LocalBackend, ref: FunctionRef, text: str) -> list[str]:
    async def collect():
        return [
            line.text async for line in backend.logs(ref) if line.stream == "system" and text in line.text
        ]

    return asyncio.run(collect())


def test_min_scale_past_the_quota_is_held_and_another_project_starts_its_own(
    backend, artifact, runtime_daemon
):
    first, held = FunctionRef("quota-a", "quota-a", "first"), FunctionRef("quota-a", "quota-a", "held")
    deploy(backend, spec("quota-a", "first", artifact, 3, Scale(min=2, max=4)))
    deploy(backend, spec("quota-a", "held", artifact, 3, Scale(min=2, max=4)))
    # The outsider deploys while quota-a is full: its own quota, its own instances.
    other = FunctionRef("quota-b", "quota-b", "other")
    deploy(backend, spec("quota-b", "other", artifact, 2, Scale(min=2, max=4)))
    assert wait_for(lambda: backend.status(other).replicas == 2)

    assert wait_for(lambda: backend.status(held).replicas == 1)
    time.sleep(1.0)  # time for a start past the quota to show, if one were made
    assert running(runtime_daemon, "quota-a") == 3
    assert (backend.status(first).replicas, backend.status(held).replicas) == (2, 1)
    assert backend.status(held).message == "held at 1 instance: project quota of 3 instances reached"
    assert backend.status(first).message == ""
    listed = {o.ref.function: o.message for o in backend.list_owned("quota-a", "quota-a")}
    assert listed["held"] == "held at 1 instance: project quota of 3 instances reached"
    assert len(system_lines(backend, held, "project quota of 3 instances reached")) == 1

    # Scaled down (min 0, no requests: its instances go after the idle period): the held one gets its place.
    backend.apply(spec("quota-a", "first", artifact, 3, Scale(min=0, max=4)))
    assert wait_for(lambda: backend.status(held).replicas == 2, timeout=30)
    assert backend.status(held).message == ""
    assert running(runtime_daemon, "quota-a") <= 3
    for ref in (first, held, other):
        backend.delete(ref)


def test_places_freed_go_to_the_function_waiting_longest_first(backend, artifact, runtime_daemon):
    ns = "quota-c"
    refs = {name: FunctionRef(ns, ns, name) for name in ("big", "early", "late")}
    deploy(backend, spec(ns, "big", artifact, 3, Scale(min=2, max=2)))
    deploy(backend, spec(ns, "early", artifact, 3, Scale(min=2, max=2)))  # 1 of 2: held first
    assert wait_for(lambda: backend.status(refs["early"]).message.startswith("held at 1 instance"))
    backend.apply(spec(ns, "late", artifact, 3, Scale(min=1, max=1)))  # no place for its first
    assert wait_for(lambda: backend.status(refs["late"]).message.startswith("held at 0 instances"))
    assert running(runtime_daemon, ns) == 3

    backend.apply(spec(ns, "big", artifact, 3, Scale(min=1, max=2)))  # one place, after the idle period
    assert wait_for(lambda: backend.status(refs["early"]).replicas == 2, timeout=30)
    assert backend.status(refs["early"]).message == ""
    assert backend.status(refs["late"]).message.startswith("held at 0 instances")  # it came later
    assert running(runtime_daemon, ns) == 3

    backend.delete(refs["big"])  # its last place: late's first
    assert wait_for(lambda: backend.status(refs["late"]).ready, timeout=30)
    assert backend.status(refs["late"]).replicas == 1 and backend.status(refs["late"]).message == ""
    for ref in refs.values():
        backend.delete(ref)


def test_scale_up_for_demand_stops_at_the_quota_and_the_requests_queue(backend, artifact, runtime_daemon):
    ns, name = "quota-d", "busy"
    ref = FunctionRef(ns, ns, name)
    deploy(backend, spec(ns, name, artifact, 2, Scale(min=0, max=6, target_concurrency=1)))
    url = f"{runtime_daemon.gateway_url}/{ns}/{name}/?sleep=1500"
    seen: list[int] = []
    with cf.ThreadPoolExecutor(6) as pool:
        futures = [pool.submit(httpx.get, url, timeout=60) for _ in range(6)]
        while not all(f.done() for f in futures):
            seen.append(running(runtime_daemon, ns))
            time.sleep(0.05)
        codes = [f.result().status_code for f in futures]
    assert codes == [200] * 6  # they waited for the two instances, none failed
    assert max(seen) == 2
    held = system_lines(backend, ref, "project quota of 2 instances reached")
    assert len(held) == 1  # said once, not once per request that wanted an instance
    backend.delete(ref)


def test_a_spec_without_a_quota_runs_as_before(backend, artifact, runtime_daemon):
    """0 (or no field: an older portal) is no cap: min-scale is started in full."""
    ns = "quota-e"
    ref = FunctionRef(ns, ns, "plain")
    deploy(backend, spec(ns, "plain", artifact, 0, Scale(min=3, max=3)))
    assert wait_for(lambda: backend.status(ref).replicas == 3)
    assert backend.status(ref).message == ""
    backend.delete(ref)


def test_a_quota_raised_through_the_control_api_starts_the_held_and_lowered_stops_none(
    backend, artifact, runtime_daemon
):
    ns = "quota-f"
    ref = FunctionRef(ns, ns, "grows")
    deploy(backend, spec(ns, "grows", artifact, 1, Scale(min=2, max=2)))
    assert wait_for(lambda: backend.status(ref).message.startswith("held at 1 instance"))
    backend.set_instance_quota(ns, 3)
    assert wait_for(lambda: backend.status(ref).replicas == 2, timeout=30)
    assert backend.status(ref).message == ""
    backend.set_instance_quota(ns, 1)  # as a ResourceQuota: what runs keeps running
    time.sleep(1.0)
    assert backend.status(ref).replicas == 2 and running(runtime_daemon, ns) == 2
    refused = httpx.put(
        f"{runtime_daemon.control_url}/v1/namespaces/{ns}/quota",
        json={"max_instances": -1},
        headers=runtime_daemon.headers,
    )
    assert refused.status_code == 400 and refused.json()["permanent"] is True
    backend.delete(ref)


def test_a_projects_instances_and_standbys_run_in_its_cgroup(backend, artifact, runtime_daemon, fresh_probes):
    layout = sandbox._cgroups()
    if layout.mode == "rlimit":
        pytest.skip("no writable cgroups on this machine")
    ns = "quota-g"
    ref = FunctionRef(ns, ns, "grouped")
    deploy(backend, spec(ns, "grouped", artifact, 0, Scale(min=2, max=2)))
    assert wait_for(lambda: backend.status(ref).replicas == 2)
    key = "unified" if layout.mode == "cgroup-v2" else "memory"
    group = layout.parents[key] / f"project-{ns}"  # the test daemon's parent is this process's
    limit = (group / ("memory.max" if key == "unified" else "memory.limit_in_bytes")).read_text()
    assert int(limit) == (sandbox.host_memory_mb() // 2) << 20  # HKS_RUNTIME_PROJECT_MEMORY_MB's default
    # its two instances, and the standby kept for its shape (which serves this project only)
    assert wait_for(lambda: len([d for d in group.iterdir() if d.is_dir()]) >= 3, timeout=30)
    backend.delete(ref)


def test_a_quota_the_portal_changed_survives_a_daemon_restart(tmp_path):
    """The Python data path here: a held function's requests wait in the activator for the one instance."""
    data_dir = scratch_dir("quota-restart-")
    token = secrets.token_urlsafe(8)
    ns, ref = "quota-h", FunctionRef("quota-h", "quota-h", "kept")
    try:
        daemon = start_daemon(data_dir, token, "--data-path", "python")
        try:
            backend = LocalBackend(daemon.control_url, token)
            artifact = build(backend, tmp_path, "kept", "node")
            deploy(backend, spec(ns, "kept", artifact, 1, Scale(min=3, max=3)))
            assert wait_for(lambda: backend.status(ref).message.startswith("held at 1 instance"))
            url = f"{daemon.gateway_url}/{ns}/kept/?sleep=300"
            with cf.ThreadPoolExecutor(4) as pool:
                codes = [f.status_code for f in pool.map(lambda _: httpx.get(url, timeout=60), range(4))]
            assert codes == [200] * 4 and running(daemon, ns) == 1
            backend.set_instance_quota(ns, 2)
            assert wait_for(lambda: backend.status(ref).replicas == 2, timeout=30)
        finally:
            stop_daemon(daemon)
        daemon = start_daemon(data_dir, token, "--data-path", "python")
        try:
            backend = LocalBackend(daemon.control_url, token)
            assert wait_for(lambda: backend.status(ref).replicas == 2, timeout=60)  # min-scale 3, quota 2
            time.sleep(1.0)
            assert running(daemon, ns) == 2
            assert backend.status(ref).message == "held at 2 instances: project quota of 2 instances reached"
        finally:
            stop_daemon(daemon)
    finally:
        remove_dir(data_dir)
