"""LocalBackend's error contract (its happy paths run on a real daemon in tests/runtime/test_daemon.py)."""

from __future__ import annotations

import pytest

from functions.backends import get_backend
from functions.backends.base import BackendError, FunctionRef, ServiceSpec
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
