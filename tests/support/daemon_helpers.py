"""Functions and calls for the daemon tests: real Node and Python code deployed through LocalBackend."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from functions.backends.base import BuildSpec, FunctionRef, ServiceSpec, ServiceStatus
from functions.backends.local import LocalBackend
from tests.support.sample_functions import archive_from_files, fixture_files

NS = "acme"

# Behaviour picked by the query: ?sleep=ms, ?spin=ms (busy loop; Python: ms of CPU time), ?crash=1,
# ?log=text, ?env=1.
NODE_INDEX = """
const handle = async (context, body) => {
  const q = context.query || {};
  if (q.crash) { process.exit(3); }
  if (q.sleep) { await new Promise((resolve) => setTimeout(resolve, Number(q.sleep))); }
  if (q.spin) { const end = Date.now() + Number(q.spin); while (Date.now() < end) { /* busy */ } }
  if (q.log) { console.log(q.log); console.error('err:' + q.log); }
  if (q.env) {
    const e = process.env;
    return { K_SERVICE: e.K_SERVICE, K_REVISION: e.K_REVISION, K_CONFIGURATION: e.K_CONFIGURATION,
             GREETING: e.GREETING };
  }
  return { revision: process.env.K_REVISION, method: context.method };
};
module.exports = { handle };
"""
NODE_PACKAGE = '{"name": "daemon-test", "version": "0.1.0", "main": "index.js", "dependencies": {}}\n'

PYTHON_FUNC = """
import asyncio
import json
import os
import sys
import time
from urllib.parse import parse_qs


def new():
    return Function()


class Function:
    async def handle(self, scope, receive, send):
        q = {k: v[0] for k, v in parse_qs(scope.get("query_string", b"").decode()).items()}
        if "crash" in q:
            os._exit(3)
        if "sleep" in q:
            await asyncio.sleep(int(q["sleep"]) / 1000)
        if "spin" in q:  # busy for that much CPU time, by the process's own clock
            started = time.process_time()
            while time.process_time() - started < int(q["spin"]) / 1000:
                pass
        if "log" in q:
            print(q["log"], flush=True)
            print("err:" + q["log"], file=sys.stderr, flush=True)
        if "env" in q:
            keys = ("K_SERVICE", "K_REVISION", "K_CONFIGURATION", "GREETING")
            data = {k: os.environ.get(k) for k in keys}
        else:
            data = {"revision": os.environ.get("K_REVISION"), "method": scope["method"]}
        body = json.dumps(data).encode()
        await send({"type": "http.response.start", "status": 200,
                    "headers": [[b"content-type", b"application/json"]]})
        await send({"type": "http.response.body", "body": body})

    def alive(self):
        return True, "Alive"

    def ready(self):
        return True, "Ready"
"""

SOURCES = {
    "node": {"index.js": NODE_INDEX, "package.json": NODE_PACKAGE},
    "python": {"function/__init__.py": "from .func import new\n", "function/func.py": PYTHON_FUNC},
}


def func_yaml(name: str, runtime: str) -> str:
    return f"specVersion: 0.36.0\nname: {name}\nruntime: {runtime}\ncreated: 2026-11-25T00:00:00Z\n"


def build(backend: LocalBackend, work: Path, name: str, runtime: str, files: dict | None = None) -> str:
    files = {**(files or SOURCES[runtime]), "func.yaml": func_yaml("fn", runtime)}
    archive, content_hash = archive_from_files(files, work / f"{runtime}-{len(files)}-{name}.tar.gz")
    ref = FunctionRef(project=NS, namespace=NS, function=name)
    spec = BuildSpec(
        ref=ref,
        revision=f"{name}-00001",
        runtime=runtime,
        archive_path=str(archive),
        content_hash=content_hash,
    )
    return backend.build(spec).artifact


def build_fixture(backend: LocalBackend, work: Path, fixture: str, runtime: str) -> str:
    return build(backend, work, fixture, runtime, files=fixture_files(fixture))


def service(name: str, runtime: str, artifact: str, *, revision: int = 1, **fields) -> ServiceSpec:
    return ServiceSpec(
        ref=FunctionRef(project=NS, namespace=NS, function=name),
        revision=f"{name}-{revision:05d}",
        runtime=runtime,
        kind=fields.pop("kind", "http"),
        artifact=artifact,
        **fields,
    )


def wait_for(check: Callable[[], object], timeout: float = 90.0, interval: float = 0.1):
    """Poll until ``check()`` is truthy; return its value (a deadline for waiting, not a timing assertion)."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval)


def wait_until(check: Callable[[], object], timeout: float, what: str):
    """Poll ``check()`` every 0.2 s until it is truthy and return its value; fail the test, naming ``what``,
    when ``timeout`` seconds pass first (a deadline for waiting, not a timing assertion)."""
    deadline = time.monotonic() + timeout
    while not (value := check()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)
    return value


def deploy(backend: LocalBackend, spec: ServiceSpec) -> ServiceStatus:
    backend.apply(spec)
    status = wait_for(lambda: _ready(backend, spec))
    assert status, f"{spec.revision} not ready: {backend.status(spec.ref)}"
    return status


def _ready(backend: LocalBackend, spec: ServiceSpec) -> ServiceStatus | None:
    status = backend.status(spec.ref)
    return status if status.ready and status.latest_ready_revision == spec.revision else None


def call(
    gateway_url: str, name: str, query: str = "", *, method: str = "GET", timeout: float = 60, **kwargs
) -> httpx.Response:
    """A request through the gateway in Knative's URL shape (by Host header: *.localhost needs no DNS)."""
    port = gateway_url.rsplit(":", 1)[1]
    headers = {"Host": f"{name}.{NS}.localhost:{port}", **kwargs.pop("headers", {})}
    return httpx.request(method, f"{gateway_url}/{query}", headers=headers, timeout=timeout, **kwargs)


def metric_value(text: str, name: str, **labels: str) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels`` (prometheus_client's own parser)."""
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items())
    )


def as_json(response: httpx.Response) -> dict:
    return json.loads(response.text)
