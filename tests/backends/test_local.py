"""LocalBackend's error contract and what it makes of an older runtime's answers (its happy paths run on a
real daemon in tests/runtime/test_daemon.py)."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from functions.backends import get_backend
from functions.backends.base import BackendError, BuildSpec, FunctionRef, ServiceSpec
from functions.backends.local import LocalBackend, spec_payload
from tests.support.ports import free_port as _closed_port


def test_unreachable_runtime_is_a_transient_error(settings):
    settings.HKS_RUNTIME_URL = f"http://127.0.0.1:{_closed_port()}"
    with pytest.raises(BackendError) as failure:
        LocalBackend().status(FunctionRef("acme", "acme", "hello"))
    assert failure.value.permanent is False
    assert "unreachable" in failure.value.message


def test_the_registry_gives_local_projects_the_local_backend(project):
    assert isinstance(get_backend(project), LocalBackend)
    assert get_backend(project).fires_schedules_itself() is False


def test_spec_payload_carries_every_field_the_daemon_reads():
    spec = ServiceSpec(
        ref=FunctionRef("acme", "acme", "hello"),
        revision="hello-00002",
        runtime="node",
        kind="cloudevents",
        artifact="/srv/a",
        env={"A": "1"},
        timeout_seconds=30,
        sandbox_profile="restricted",
        labels={"hks.dev/ephemeral": "true"},
    )
    payload = spec_payload(spec)
    assert payload["scale"] == {"min": 0, "max": 10, "target_concurrency": 100, "container_concurrency": 0}
    assert payload["resources"] == {"cpu_millicores": 500, "memory_mb": 256}
    assert (payload["profile"], payload["kind"], payload["timeout_seconds"]) == (
        "restricted",
        "cloudevents",
        30,
    )
    assert payload["labels"] == {"hks.dev/ephemeral": "true"} and payload["env"] == {"A": "1"}
    assert payload["project_max_instances"] == 0  # no quota unless the portal gives one


def test_every_spec_carries_the_projects_instance_quota(project):
    from functions.services.functions import service_spec
    from tests.support.factories import FunctionFactory

    project.max_instances = 7
    project.save()
    function = FunctionFactory(project=project, name="hello")
    revision = function.revisions.create(number=1, artifact="/srv/a", content_hash="x")
    assert spec_payload(service_spec(function, revision))["project_max_instances"] == 7


class _OlderRuntime(BaseHTTPRequestHandler):
    """A runtime from before the storage quota: its build answer has the artifact but no size."""

    answer = {"artifact": "/srv/artifacts/abc-acme"}

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        body = (json.dumps({"log": "built"}) + "\n" + json.dumps(self.answer) + "\n").encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/x-ndjson")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


class _CurrentRuntime(_OlderRuntime):
    answer = {"artifact": "/srv/artifacts/abc-acme", "bytes": 4096}


@pytest.mark.parametrize(("runtime", "size"), [(_OlderRuntime, 0), (_CurrentRuntime, 4096)])
def test_a_build_answer_without_a_size_counts_the_artifact_as_unknown(settings, tmp_path, runtime, size):
    server = ThreadingHTTPServer(("127.0.0.1", 0), runtime)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    settings.HKS_RUNTIME_URL = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        spec = BuildSpec(FunctionRef("acme", "acme", "hello"), "hello-00001", "node", str(tmp_path / "a.tgz"))
        result = LocalBackend().build(spec)
    finally:
        server.shutdown()
    assert (result.artifact, result.artifact_bytes) == ("/srv/artifacts/abc-acme", size)
