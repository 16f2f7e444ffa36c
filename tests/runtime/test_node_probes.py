"""The platform's probes of a Node function write nothing into the function's own log.

faas-js-runtime 4.0.1 answers /health/readiness and /health/liveness through overload-protection, which it
hands Fastify's reply where a Node response is expected: while the event loop lags (every instance start,
a CPU-bound request) the probe's 503 came from a TypeError, and the line "res.setHeader is not a function"
went into the tenant's stdout. The Node launcher (hks_runtime/launchers/node_launcher.js) adapts the reply;
the 503 itself, overload-protection's verdict, stays. Debian package: bubblewrap.
"""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import os
import select
import threading
import time
import urllib.error
import urllib.request

import pytest

from functions.backends.base import FunctionRef, Scale
from functions.backends.local import LocalBackend
from tests.support.daemon_helpers import NS, SOURCES, build, call, deploy, service, wait_for
from tests.support.sample_functions import (
    build_files,
    scratch_fixture,
    serving,
    wait_ready,
)

pytestmark = pytest.mark.runtime

# A module that keeps the event loop busy while it loads, as a function with real dependencies does.
SLOW_TO_LOAD = "{ const end = Date.now() + 150; while (Date.now() < end) { /* loading */ } }\n"
TYPE_ERROR = "res.setHeader is not a function"


work = scratch_fixture("node-probes-")


@pytest.fixture(scope="module")
def artifact(runtime_daemon, work):
    backend = LocalBackend(runtime_daemon.control_url, runtime_daemon.token)
    files = {**SOURCES["node"], "index.js": SLOW_TO_LOAD + SOURCES["node"]["index.js"]}
    return build(backend, work, "probed", "node", files=files)


@pytest.fixture
def backend(local_backend_settings):
    return LocalBackend()


def _logs(backend: LocalBackend, name: str) -> list:
    async def collect():
        return [line async for line in backend.logs(FunctionRef(NS, NS, name))]

    return asyncio.run(collect())


def _written_by_probes(logs: list) -> list[str]:
    """The function's own streams' lines that a probe caused (the runtime's ``system`` lines are ours)."""
    return [
        line.text
        for line in logs
        if line.stream != "system" and (TYPE_ERROR in line.text or "/health/" in line.text)
    ]


def test_the_liveness_probe_after_a_timeout_writes_nothing_into_the_function_log(
    backend, artifact, runtime_daemon
):
    """The request outlives its timeout; the liveness probe that follows waits behind its busy loop and is
    answered just after it, with the loop's lag measured: 503, and the instance is replaced."""
    name = "probed-timeout"
    deploy(backend, service(name, "node", artifact, timeout_seconds=1))
    assert call(runtime_daemon.gateway_url, name, "?spin=2500").status_code == 504
    replaced = wait_for(
        lambda: any("liveness probe failed" in line.text for line in _logs(backend, name)), timeout=60
    )
    assert replaced, "the lagging instance was not replaced"
    assert _written_by_probes(_logs(backend, name)) == []


def test_cold_starts_and_scale_up_under_load_write_nothing_into_the_function_log(
    backend, artifact, runtime_daemon
):
    name = "probed-burst"
    ref = FunctionRef(NS, NS, name)
    deploy(backend, service(name, "node", artifact, scale=Scale(min=0, max=3, target_concurrency=1)))
    assert wait_for(lambda: backend.status(ref).replicas == 0), "never scaled to zero"
    with cf.ThreadPoolExecutor(12) as pool:
        answers = list(pool.map(lambda _: call(runtime_daemon.gateway_url, name, "?spin=50"), range(24)))
    assert [a.status_code for a in answers] == [200] * 24
    logs = _logs(backend, name)
    starts = [line for line in logs if line.stream == "system" and "instance ready" in line.text]
    assert len(starts) >= 2  # the deploy's instance, then the burst's cold start (and any scale-up)
    assert _written_by_probes(logs) == []


def _read_until(fd: int, marker: bytes, timeout: float = 60.0) -> bytes:
    """Read a pipe until ``marker`` appears (a deadline for waiting, not a timing assertion)."""
    seen, deadline = b"", time.monotonic() + timeout
    while marker not in seen and time.monotonic() < deadline:
        if select.select([fd], [], [], 0.5)[0]:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            seen += chunk
    return seen


def _probe_behind_a_busy_request(url: str, proc, out: list[bytes]) -> urllib.error.HTTPError | None:
    """Send a readiness probe while a request keeps the loop busy; its 503, or None if it came too late
    (this test process was not scheduled before the busy loop ended) and was answered 200. What the
    instance writes on stdout meanwhile goes into ``out``."""
    busy = threading.Thread(target=lambda: urllib.request.urlopen(url + "/", timeout=60).read())
    busy.start()
    out.append(_read_until(proc.stdout.fileno(), b"spinning\n"))
    assert b"spinning\n" in out[-1], out
    try:
        urllib.request.urlopen(url + "/health/readiness", timeout=60).read()
        return None
    except urllib.error.HTTPError as exc:
        exc.body = exc.read()
        return exc
    finally:
        busy.join()


def test_a_lagging_node_instance_still_answers_its_probe_503_with_retry_after(work):
    """overload-protection's own answer (the probe is told to come back), not the TypeError's; and ready
    again once the loop is free."""
    index = (
        "module.exports = { handle: async () => {\n"
        "  console.log('spinning');\n"  # synchronous on a pipe: out before the loop blocks
        "  const end = Date.now() + 1000; while (Date.now() < end) { /* busy */ }\n"
        "  return 'done';\n"
        "} };\n"
    )
    files = {"index.js": index, "package.json": SOURCES["node"]["package.json"]}
    artifact = build_files(files, "node", work, name="lagging")
    with serving("node", "http", artifact) as (url, proc):
        wait_ready(url, proc)
        out: list[bytes] = []
        for _ in range(5):
            probe = _probe_behind_a_busy_request(url, proc, out)
            if probe is not None:
                break
        assert probe is not None, "no probe was answered while the loop lagged"
        assert probe.code == 503
        assert probe.headers["Retry-After"] == "1"
        assert probe.headers["Content-Type"].startswith("text/plain")
        assert TYPE_ERROR not in probe.body.decode()
        wait_ready(url, proc)
        proc.terminate(grace=2)
        out.append(proc.stdout.read())
    assert TYPE_ERROR.encode() not in b"".join(out)
