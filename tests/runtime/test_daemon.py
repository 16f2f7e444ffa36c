"""The runtime daemon end to end: real Node and Python functions built and deployed through LocalBackend,
called over HTTP through the gateway. Debian package: bubblewrap.
"""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import dataclasses
import json
import re
import threading
import time
from urllib.parse import urlsplit

import httpx
import pytest

from functions.backends.base import BackendError, FunctionRef, Resources, Scale
from functions.backends.local import LocalBackend
from tests.support.daemon import IDLE_SECONDS
from tests.support.daemon_helpers import (
    NS,
    as_json,
    build,
    build_fixture,
    call,
    deploy,
    metric_value,
    service,
    wait_for,
)
from tests.support.sample_functions import remove_dir, scratch_dir, scratch_fixture

pytestmark = pytest.mark.runtime

CE_HEADERS = {
    "content-type": "application/json",
    "ce-id": "evt-1",
    "ce-source": "/tests",
    "ce-type": "com.example.test",
    "ce-specversion": "1.0",
}


work = scratch_fixture("daemon-work-")


@pytest.fixture
def backend(local_backend_settings):
    return LocalBackend()


@pytest.fixture(scope="module")
def artifacts(runtime_daemon, work):
    """One build per runtime, shared: the daemon caches artifacts by content hash anyway."""
    backend = LocalBackend(runtime_daemon.control_url, runtime_daemon.token)
    return {runtime: build(backend, work, "shared", runtime) for runtime in ("node", "python")}


@pytest.mark.parametrize("runtime", ["node", "python"])
def test_http_function_answers_on_its_knative_url_and_path_form(backend, artifacts, runtime_daemon, runtime):
    name = f"hello-{runtime}"
    status = deploy(backend, service(name, runtime, artifacts[runtime]))
    port = runtime_daemon.gateway_url.rsplit(":", 1)[1]
    assert status.url == f"http://{name}.{NS}.localhost:{port}"
    by_host = call(runtime_daemon.gateway_url, name)
    by_path = httpx.get(f"{runtime_daemon.gateway_url}/{NS}/{name}/")
    assert by_host.status_code == by_path.status_code == 200
    assert as_json(by_host) == as_json(by_path) == {"revision": f"{name}-00001", "method": "GET"}


@pytest.mark.parametrize("runtime", ["node", "python"])
def test_function_sees_the_knative_runtime_contract_and_user_env(backend, artifacts, runtime_daemon, runtime):
    name = f"env-{runtime}"
    deploy(backend, service(name, runtime, artifacts[runtime], env={"GREETING": "hola"}))
    answer = as_json(call(runtime_daemon.gateway_url, name, "?env=1"))
    assert answer == {
        "K_SERVICE": name,
        "K_REVISION": f"{name}-00001",
        "K_CONFIGURATION": name,
        "GREETING": "hola",
    }


@pytest.mark.parametrize("runtime", ["node", "python"])
def test_cloudevents_function_answers_an_event_with_an_event(backend, runtime_daemon, work, runtime):
    artifact = build_fixture(backend, work, f"{runtime}-cloudevents", runtime)
    name = f"events-{runtime}"
    deploy(backend, service(name, runtime, artifact, kind="cloudevents"))
    response = call(runtime_daemon.gateway_url, name, method="POST", content=b'{"n": 42}', headers=CE_HEADERS)
    assert response.status_code == 200
    if response.headers["content-type"].startswith("application/cloudevents+json"):
        event = as_json(response)  # structured mode (func-python)
        data, event_type = event["data"], event["type"]
    else:
        data, event_type = as_json(response), response.headers["ce-type"]  # binary mode (faas-js-runtime)
    assert event_type == "function.response"
    assert data == {"message": "OK", "received": {"n": 42}}


def test_idle_function_scales_to_zero_and_the_next_request_cold_starts_it(backend, artifacts, runtime_daemon):
    name = "sleepy"
    deploy(backend, service(name, "python", artifacts["python"]))
    ref = FunctionRef(NS, NS, name)
    assert wait_for(lambda: backend.status(ref).replicas == 0), "never scaled to zero"
    before = metric_value(metrics_text(runtime_daemon), "hks_cold_starts_total", kn_service_name=name)
    assert call(runtime_daemon.gateway_url, name).status_code == 200
    assert backend.status(ref).replicas == 1
    after = metric_value(metrics_text(runtime_daemon), "hks_cold_starts_total", kn_service_name=name)
    assert after == before + 1


def test_cold_start_from_a_prewarmed_instance_gets_its_own_code_and_env(backend, artifacts, runtime_daemon):
    name = "pooled"
    ref = FunctionRef(NS, NS, name)
    deploy(backend, service(name, "python", artifacts["python"], env={"GREETING": "from-pool"}))
    assert wait_for(lambda: backend.status(ref).replicas == 0), "never scaled to zero"
    shape = "python/http/standard/256Mi/500m"
    assert wait_for(lambda: httpx.get(runtime_daemon.control_url + "/healthz").json()["prewarmed"].get(shape))
    answer = as_json(call(runtime_daemon.gateway_url, name, "?env=1"))
    assert answer == {
        "K_SERVICE": name,
        "K_REVISION": f"{name}-00001",
        "K_CONFIGURATION": name,
        "GREETING": "from-pool",
    }
    logs = asyncio.run(_collect(backend.logs(ref)))
    assert any(line.stream == "system" and "pre-warmed" in line.text for line in logs)


def test_a_shape_given_up_keeps_its_standby_for_the_next_throwaway_function(
    backend, artifacts, runtime_daemon
):
    """As an agent works: deploy, delete, deploy the next of the same shape - which finds a standby waiting.
    Only the two shapes given up last keep theirs."""

    def standbys() -> dict:
        return httpx.get(runtime_daemon.control_url + "/healthz").json()["prewarmed"]

    def shape(memory_mb: int) -> str:
        return f"python/http/standard/{memory_mb}Mi/500m"

    def throwaway(name: str, memory_mb: int) -> None:
        deploy(backend, service(name, "python", artifacts["python"], resources=Resources(500, memory_mb)))
        assert wait_for(lambda: standbys().get(shape(memory_mb))), "no standby for its shape"
        backend.delete(FunctionRef(NS, NS, name))

    throwaway("agent-one", 200)
    assert standbys().get(shape(200)) == 1  # kept, although no function has that shape now
    name = "agent-two"
    deploy(backend, service(name, "python", artifacts["python"], resources=Resources(500, 200)))
    logs = asyncio.run(_collect(backend.logs(FunctionRef(NS, NS, name))))
    assert any(line.stream == "system" and "pre-warmed" in line.text for line in logs)
    backend.delete(FunctionRef(NS, NS, name))

    throwaway("other-one", 210)
    throwaway("other-two", 220)
    kept = standbys()
    assert shape(200) not in kept  # two shapes were given up after it: its standby is gone
    assert kept.get(shape(210)) == 1 and kept.get(shape(220)) == 1


def test_min_scale_instances_stay_warm_past_the_idle_period(backend, artifacts, runtime_daemon):
    name = "warm"
    ref = FunctionRef(NS, NS, name)
    deploy(backend, service(name, "node", artifacts["node"], scale=Scale(min=2, max=3)))
    assert wait_for(lambda: backend.status(ref).replicas == 2)
    time.sleep(IDLE_SECONDS * 3)  # several idle periods with no request
    assert backend.status(ref).replicas == 2
    assert call(runtime_daemon.gateway_url, name).status_code == 200


@pytest.mark.parametrize(
    "scale",
    [Scale(min=0, max=3, target_concurrency=1), Scale(min=0, max=3, container_concurrency=1)],
    ids=["target-concurrency", "container-concurrency"],
)
def test_concurrent_load_scales_out_beyond_one_instance(backend, artifacts, runtime_daemon, scale):
    name = f"busy-{scale.target_concurrency}-{scale.container_concurrency}"
    ref = FunctionRef(NS, NS, name)
    deploy(backend, service(name, "node", artifacts["node"], scale=scale))
    seen, codes = [0], []
    with cf.ThreadPoolExecutor(6) as pool:
        # Rounds of 6 slow requests until the extra instances are up (a loaded machine starts them slowly).
        for _ in range(20):
            futures = [pool.submit(call, runtime_daemon.gateway_url, name, "?sleep=2000") for _ in range(6)]
            while not all(f.done() for f in futures):
                seen.append(backend.status(ref).replicas)
            codes += [f.result().status_code for f in futures]
            if max(seen) > 1:
                break
    assert set(codes) == {200}
    assert 1 < max(seen) <= 3


def test_extra_instances_go_once_a_steady_trickle_fits_in_fewer(backend, artifacts, runtime_daemon):
    name = "trickle"
    ref = FunctionRef(NS, NS, name)
    deploy(backend, service(name, "node", artifacts["node"], scale=Scale(min=0, max=3, target_concurrency=1)))
    with cf.ThreadPoolExecutor(4) as pool:
        for _ in range(20):
            futures = [pool.submit(call, runtime_daemon.gateway_url, name, "?sleep=2000") for _ in range(4)]
            assert [f.result().status_code for f in futures] == [200] * 4
            if backend.status(ref).replicas > 1:
                break
    assert backend.status(ref).replicas > 1
    codes = []
    # One request at a time, without pause: no instance is ever idle for long, yet one is enough.
    # (At least a few: under load the extra instances can go before the first of them is sent.)
    while (backend.status(ref).replicas > 1 or len(codes) < 3) and len(codes) < 5000:
        codes.append(call(runtime_daemon.gateway_url, name).status_code)
    assert backend.status(ref).replicas == 1
    assert set(codes) == {200}


def test_redeploys_under_load_fail_no_request_and_switch_at_once(backend, artifacts, runtime_daemon):
    """Four clients keep calling through three redeploys: every request answers 200, and once a revision has
    answered, no request sent after that answer reaches an older one."""
    name = "rolling"
    deploy(backend, service(name, "node", artifacts["node"]))
    stop = threading.Event()

    def hammer() -> list[tuple[float, float, int, int]]:
        """(sent, answered, status, revision number) of each request."""
        seen = []
        with httpx.Client(timeout=60) as client:
            port = runtime_daemon.gateway_url.rsplit(":", 1)[1]
            while not stop.is_set():
                sent = time.monotonic()
                response = client.get(
                    runtime_daemon.gateway_url + "/", headers={"Host": f"{name}.{NS}.localhost:{port}"}
                )
                number = (
                    int(as_json(response)["revision"].rsplit("-", 1)[1]) if response.status_code == 200 else 0
                )
                seen.append((sent, time.monotonic(), response.status_code, number))
        return seen

    with cf.ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(hammer) for _ in range(4)]
        for revision in (2, 3, 4):
            deploy(
                backend, service(name, "node", artifacts["node"], revision=revision, env={"V": str(revision)})
            )
            wanted = f"{name}-0000{revision}"
            wait_for(lambda want=wanted: as_json(call(runtime_daemon.gateway_url, name))["revision"] == want)
        stop.set()
        seen = [item for f in futures for item in f.result()]
    assert len(seen) > 20
    assert {status for _, _, status, _ in seen} == {200}
    first_answer = {}
    for _, answered, _, number in seen:
        first_answer[number] = min(first_answer.get(number, answered), answered)
    late = [
        (number, newer)
        for sent, _, _, number in seen
        for newer, answered in first_answer.items()
        if newer > number and sent > answered
    ]
    assert late == []
    assert set(first_answer) == {1, 2, 3, 4}


def test_revision_that_cannot_start_is_reported_failed_and_the_old_one_keeps_serving(
    backend, artifacts, runtime_daemon, work
):
    name = "steady"
    ref = FunctionRef(NS, NS, name)
    deploy(backend, service(name, "python", artifacts["python"]))
    broken = build(
        backend,
        work,
        "broken",
        "python",
        files={
            "function/__init__.py": "from .func import new\n",
            "function/func.py": "raise RuntimeError('boom-at-import')\n",
        },
    )
    backend.apply(service(name, "python", broken, revision=2))
    status = wait_for(lambda: (s := backend.status(ref)).failed and s)
    assert status.latest_ready_revision == f"{name}-00001"
    assert "boom-at-import" in status.message
    assert as_json(call(runtime_daemon.gateway_url, name))["revision"] == f"{name}-00001"


@pytest.mark.parametrize("runtime", ["node", "python"])
def test_crashed_instance_gives_502_then_function_serves_again(backend, artifacts, runtime_daemon, runtime):
    name = f"crashy-{runtime}"
    deploy(backend, service(name, runtime, artifacts[runtime]))
    assert call(runtime_daemon.gateway_url, name, "?crash=1").status_code == 502
    assert call(runtime_daemon.gateway_url, name).status_code == 200
    logs = asyncio.run(_collect(backend.logs(FunctionRef(NS, NS, name))))
    assert any(line.stream == "system" and "exited with code 3" in line.text for line in logs)


def test_request_over_the_timeout_gets_504(backend, artifacts, runtime_daemon):
    name = "slow"
    deploy(backend, service(name, "node", artifacts["node"], timeout_seconds=1))
    assert call(runtime_daemon.gateway_url, name, "?sleep=3000").status_code == 504
    assert call(runtime_daemon.gateway_url, name).status_code == 200


def test_busy_loop_gets_504_and_the_unresponsive_instance_is_replaced(backend, artifacts, runtime_daemon):
    name = "spinner"
    ref = FunctionRef(NS, NS, name)
    deploy(backend, service(name, "node", artifacts["node"], timeout_seconds=1))
    assert call(runtime_daemon.gateway_url, name, "?spin=600000").status_code == 504
    assert wait_for(lambda: call(runtime_daemon.gateway_url, name).status_code == 200, timeout=60)
    logs = asyncio.run(_collect(backend.logs(ref)))
    assert any(line.stream == "system" and "liveness probe failed" in line.text for line in logs)


def test_body_over_the_limit_gets_413_and_never_reaches_the_function(backend, artifacts, runtime_daemon):
    name = "small"
    deploy(backend, service(name, "node", artifacts["node"]))
    big = b"x" * (11 * 1024 * 1024)  # the daemon's default limit is 10 MB
    response = call(runtime_daemon.gateway_url, name, method="POST", content=big)
    assert response.status_code == 413
    assert call(runtime_daemon.gateway_url, name, method="POST", content=b"{}").status_code == 200


def test_chunked_body_over_the_limit_gets_413_too(backend, artifacts, runtime_daemon):
    """No Content-Length to check up front: the body is counted as it arrives."""
    name = "small-chunked"
    deploy(backend, service(name, "python", artifacts["python"]))  # func-python sets no limit of its own

    def chunks(count: int, piece: bytes = b"x" * (1024 * 1024)):
        yield from [piece] * count

    response = call(runtime_daemon.gateway_url, name, method="POST", content=chunks(11))
    assert response.request.headers["transfer-encoding"] == "chunked"
    assert response.status_code == 413
    assert "request body larger than" in response.text  # the gateway's answer, not the function's
    small = call(runtime_daemon.gateway_url, name, method="POST", content=iter([b"{", b"}"]))
    assert small.status_code == 200
    assert as_json(small) == {"revision": f"{name}-00001", "method": "POST"}


def test_unknown_function_gets_404_in_both_url_forms(runtime_daemon):
    assert call(runtime_daemon.gateway_url, "no-such-function").status_code == 404
    assert httpx.get(f"{runtime_daemon.gateway_url}/{NS}/no-such-function/").status_code == 404


async def _collect(lines):
    return [line async for line in lines]


def test_logs_snapshot_and_follow_carry_stream_and_instance(backend, artifacts, runtime_daemon):
    name = "chatty"
    ref = FunctionRef(NS, NS, name)
    deploy(backend, service(name, "python", artifacts["python"]))
    assert call(runtime_daemon.gateway_url, name, "?log=first-marker").status_code == 200
    snapshot = wait_for(
        lambda: [
            line for line in asyncio.run(_collect(backend.logs(ref, tail=100))) if "first-marker" in line.text
        ]
    )
    assert {(line.stream, line.text) for line in snapshot} == {
        ("stdout", "first-marker"),
        ("stderr", "err:first-marker"),
    }
    assert all(line.instance.startswith(f"{name}-00001-") for line in snapshot)

    async def follow_until_marker() -> list:
        seen = []
        async for line in backend.logs(ref, tail=0, follow=True):
            seen.append(line)
            if line.text == "second-marker":
                return seen
        return seen

    async def scenario():
        task = asyncio.create_task(asyncio.wait_for(follow_until_marker(), 60))
        await asyncio.sleep(0.5)
        await asyncio.to_thread(call, runtime_daemon.gateway_url, name, "?log=second-marker")
        return await task

    followed = asyncio.run(scenario())
    assert followed[-1].text == "second-marker" and followed[-1].stream == "stdout"
    assert not any("first-marker" in line.text for line in followed)


def test_metrics_count_requests_per_revision_and_status_and_report_usage(backend, artifacts, runtime_daemon):
    name = "counted"
    deploy(backend, service(name, "node", artifacts["node"]))
    for _ in range(3):
        call(runtime_daemon.gateway_url, name)
    text = metrics_text(runtime_daemon)
    labels = {"kn_service_name": name, "kn_revision_name": f"{name}-00001", "k8s_namespace_name": NS}
    assert (
        metric_value(
            text, "kn_serving_invocation_duration_seconds_count", http_response_status_code="200", **labels
        )
        == 3
    )
    assert metric_value(text, "kn_revision_pods_count", **labels) == 1
    assert metric_value(text, "container_memory_working_set_bytes", kn_service_name=name) > 0
    assert 'container="user-container"' in text


def test_every_request_of_a_burst_is_counted_and_logged(backend, artifacts, runtime_daemon):
    """The daemon learns of each request HAProxy serves from HAProxy's log, under load too. Sent as one
    datagram per request, lines were lost whenever the daemon fell behind (the kernel queues 10 datagrams
    on a unix socket): 3,407 of 8,326 at concurrency 32. Streamed from HAProxy's ring now, none is lost."""
    name = "burst"
    deploy(backend, service(name, "node", artifacts["node"], scale=Scale(min=1)))
    total, address = 3000, urlsplit(runtime_daemon.gateway_url)
    request = f"GET / HTTP/1.1\r\nHost: {name}.{NS}.localhost\r\n\r\n".encode()

    async def client(count: int) -> list[bytes]:
        """Keep-alive requests one after the other (httpx is too slow to make a burst on a busy machine)."""
        reader, writer = await asyncio.open_connection(address.hostname, address.port)
        statuses = []
        for _ in range(count):
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            statuses.append(head.split(b" ", 2)[1])
            length = re.search(rb"(?im)^content-length: *(\d+)", head)
            await reader.readexactly(int(length.group(1)))
        writer.close()
        return statuses

    async def burst() -> list[bytes]:
        answers = await asyncio.gather(*(client(total // 30) for _ in range(30)))
        return [status for statuses in answers for status in statuses]

    assert asyncio.run(burst()) == [b"200"] * total
    labels = {"kn_service_name": name, "kn_revision_name": f"{name}-00001", "k8s_namespace_name": NS}

    def counted() -> float:
        text = metrics_text(runtime_daemon)
        return metric_value(
            text, "kn_serving_invocation_duration_seconds_count", http_response_status_code="200", **labels
        )

    assert wait_for(lambda: counted() >= total, timeout=10) and counted() == total
    lines = httpx.get(
        f"{runtime_daemon.control_url}/v1/namespaces/{NS}/functions/{name}/logs",
        headers=runtime_daemon.headers,
    ).text.splitlines()
    # every one of them up to the log's burst allowance (2,000 lines), then its rate (500 a second)
    assert sum(json.loads(line)["stream"] == "request" for line in lines if line) >= 2000


def test_delete_removes_the_function_and_is_idempotent(backend, artifacts, runtime_daemon):
    name = "doomed"
    ref = FunctionRef(NS, NS, name)
    deploy(backend, service(name, "node", artifacts["node"]))
    assert name in [owned.ref.function for owned in backend.list_owned(NS, NS)]
    assert call(runtime_daemon.gateway_url, name, "?spin=200").status_code == 200
    cpu = backend.delete(ref)  # what its instance used (agent functions' CPU accounting)
    assert cpu is not None and cpu > 0
    assert backend.delete(ref) is None  # already gone: no figure twice
    assert backend.status(ref).exists is False
    assert name not in [owned.ref.function for owned in backend.list_owned(NS, NS)]
    assert call(runtime_daemon.gateway_url, name).status_code == 404


def test_invalid_spec_is_a_permanent_error_and_creates_nothing(backend, runtime_daemon):
    name = "broken"
    with pytest.raises(BackendError) as failure:
        backend.apply(service(name, "node", "/nonexistent/artifact"))
    assert failure.value.permanent
    assert "artifact" in failure.value.message
    assert backend.status(FunctionRef(NS, NS, name)).exists is False


@pytest.mark.parametrize("namespace, name", [(NS, "1hello"), ("9acme", "hello")])
def test_a_name_with_a_leading_digit_is_refused_as_the_portal_refuses_it(
    backend, artifacts, runtime_daemon, namespace, name
):
    spec = dataclasses.replace(service(name, "node", artifacts["node"]), ref=FunctionRef(NS, namespace, name))
    with pytest.raises(BackendError) as failure:
        backend.apply(spec)
    assert failure.value.permanent
    assert "DNS-1035" in failure.value.message
    assert name not in [owned.ref.function for owned in backend.list_owned(NS, namespace)]


def test_control_api_refuses_a_wrong_token_and_changes_nothing(artifacts, runtime_daemon):
    intruder = LocalBackend(runtime_daemon.control_url, "not-the-token")
    with pytest.raises(BackendError) as failure:
        intruder.apply(service("sneaky", "node", artifacts["node"]))
    assert failure.value.permanent
    owner = LocalBackend(runtime_daemon.control_url, runtime_daemon.token)
    assert owner.status(FunctionRef(NS, NS, "sneaky")).exists is False


def test_failed_build_reports_the_tools_error_as_permanent(backend, work):
    files = {
        "index.js": "module.exports = {handle: () => 'x'};\n",
        "package.json": '{"name": "x", "version": "1.0.0", "dependencies": {"cloudevents": "^999.0.0"}}',
    }
    with pytest.raises(BackendError) as failure:
        build(backend, work, "bad-deps", "node", files=files)
    assert failure.value.permanent
    assert "cloudevents" in failure.value.message


def metrics_text(runtime_daemon) -> str:
    return httpx.get(runtime_daemon.control_url + "/metrics", headers=runtime_daemon.headers).text


def test_under_the_rlimit_fallback_a_deleted_functions_cpu_is_still_measured(fresh_probes, monkeypatch, work):
    """No cgroup to read: the runtime reads its instances' process trees before it stops them. (Python: Node
    does not start under the fallback's address-space limit.)"""
    from tests.support.daemon import start_daemon, stop_daemon

    monkeypatch.setenv("HKS_SANDBOX_LIMITS", "rlimit")
    data_dir = scratch_dir("daemon-rlimit-")
    daemon = start_daemon(data_dir, "rlimit-token-0123456789")
    try:
        backend = LocalBackend(daemon.control_url, daemon.token)
        artifact = build(backend, work, "rlimit", "python")
        deploy(backend, service("burner", "python", artifact))
        assert call(daemon.gateway_url, "burner", "?spin=300").status_code == 200  # 0.3 s of CPU time
        cpu = backend.delete(FunctionRef(NS, NS, "burner"))
        assert cpu is not None and cpu >= 0.3
    finally:
        stop_daemon(daemon)
        remove_dir(data_dir)
