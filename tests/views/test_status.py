"""The shown status (functions/status.py) and where it comes from (functions/services_observe.py): the
list, the detail header, the API and ``hks-func describe`` say the same thing, and it is the backend's."""

from __future__ import annotations

import datetime as dt

import pytest
from django.urls import reverse
from django.utils import timezone

from functions.metrics import FunctionFigures
from functions.models import Function, FunctionStatus, Revision
from functions.services.observe import functions_observe
from functions.status import function_state
from hks_cli.func_commands import _state_text
from tests.support.factories import FunctionFactory
from tests.support.ports import free_port as _closed_port

NOW = dt.datetime(2026, 12, 1, 12, 0, tzinfo=dt.UTC)


def _ready(**fields) -> Function:
    return Function(name="hello", status=FunctionStatus.READY, **fields)


def test_ready_with_instances_is_ready_and_without_is_scaled_to_zero():
    assert function_state(_ready(replicas=2), now=NOW).key == "ready"
    assert function_state(_ready(replicas=0), now=NOW).label == "Scaled to zero"


def test_many_5xx_make_a_ready_function_degraded_and_say_why(settings):
    settings.HKS_DEGRADED_ERROR_PERCENT = 5
    state = function_state(_ready(replicas=1), FunctionFigures(error_rate=0.55), now=NOW)
    assert (state.key, state.css) == ("degraded", "warn")
    assert "55% of answers were 5xx" in state.reason


def test_4xx_alone_do_not_degrade_a_function():
    state = function_state(
        _ready(replicas=1), FunctionFigures(error_rate=0.0, client_error_rate=0.5), now=NOW
    )
    assert state.key == "ready"


def test_slow_p95_makes_a_function_degraded(settings):
    settings.HKS_DEGRADED_P95_MS = 2000
    state = function_state(_ready(replicas=1), FunctionFigures(p95_ms=3500.0), now=NOW)
    assert state.key == "degraded" and "3,500 ms" in state.reason


def test_a_backend_silent_for_too_long_makes_a_ready_function_unknown(settings):
    settings.HKS_STATUS_STALE_SECONDS = 30
    fresh = _ready(replicas=1, observed_at=NOW - dt.timedelta(seconds=10))
    stale = _ready(replicas=1, observed_at=NOW - dt.timedelta(seconds=31))
    assert function_state(fresh, now=NOW).key == "ready"
    state = function_state(stale, now=NOW)
    assert state.key == "unknown" and "11:59:29 UTC" in state.reason


def test_lifecycle_states_pass_through_with_the_failure_reason():
    failed = Function(name="x", status=FunctionStatus.FAILED, status_message="npm ERR! missing")
    assert function_state(failed).key == "failed" and function_state(failed).reason == "npm ERR! missing"
    assert function_state(Function(name="x", status=FunctionStatus.BUILDING)).label == "Building"


def test_describe_prints_the_state_the_api_gives():
    assert _state_text({"state": "scaled-to-zero", "state_reason": "", "status": "ready"}) == "scaled to zero"
    assert (
        _state_text({"state": "unknown", "state_reason": "no answer", "status": "ready"})
        == "unknown: no answer"
    )
    assert _state_text({"status": "ready"}) == "ready"  # an older portal without "state"


@pytest.fixture
def stale_hello(project, settings):
    settings.HKS_STATUS_STALE_SECONDS = 30
    return FunctionFactory(
        project=project,
        name="hello",
        status=FunctionStatus.READY,
        replicas=1,
        observed_at=timezone.now() - dt.timedelta(minutes=5),
    )


def test_list_header_and_api_agree_on_unknown(client_for, api_client_for, owner, stale_hello):
    listing = client_for(owner).get(reverse("function_list", kwargs={"project": "acme"})).content.decode()
    header = client_for(owner).get(reverse("function_status", kwargs={"project": "acme", "name": "hello"}))
    api = api_client_for(owner).get("/api/v1/projects/acme/functions/hello").json()
    listed = api_client_for(owner).get("/api/v1/projects/acme/functions").json()

    assert 'data-state="unknown"' in listing and ">Unknown<" in listing
    assert 'data-state="unknown"' in header.content.decode()
    assert api["state"] == "unknown" and "has not answered" in api["state_reason"]
    assert listed[0]["state"] == "unknown"


def test_an_unreachable_backend_leaves_observed_at_to_age(project, settings):
    settings.HKS_RUNTIME_URL = f"http://127.0.0.1:{_closed_port()}"
    before = timezone.now() - dt.timedelta(minutes=5)
    hello = FunctionFactory(project=project, name="hello", status=FunctionStatus.READY, observed_at=before)

    assert functions_observe() == 0

    hello.refresh_from_db()
    assert hello.observed_at == before


@pytest.mark.runtime
def test_observing_the_runtime_writes_replicas_down_to_zero_and_the_serving_revision(
    local_backend_settings, project, tmp_path, client_for, api_client_for, owner
):
    """A function on the real runtime goes idle (the test daemon scales down after 2 s): the observer
    writes 0 replicas, and the list, header and API say "scaled to zero"; after a request it is ready."""
    from functions.backends.local import LocalBackend
    from tests.support.daemon_helpers import build, call, deploy, service, wait_for

    backend = LocalBackend()
    artifact = build(backend, tmp_path, "observed", "node")
    deploy(backend, service("observed", "node", artifact, revision=1))
    function = FunctionFactory(project=project, name="observed", status=FunctionStatus.READY, replicas=1)
    revision = Revision.objects.create(function=function, number=1, artifact=artifact, content_hash="x")
    assert call(local_backend_settings.gateway_url, "observed").status_code == 200

    def observed(replicas: int):
        functions_observe()
        function.refresh_from_db()
        return function.replicas == replicas and function.observed_at is not None

    assert wait_for(lambda: observed(0), timeout=60, interval=0.5)
    assert function.current_revision_id == revision.pk  # the runtime's latest ready revision
    listing = client_for(owner).get(reverse("function_list", kwargs={"project": "acme"})).content.decode()
    header = client_for(owner).get(reverse("function_status", kwargs={"project": "acme", "name": "observed"}))
    api = api_client_for(owner).get("/api/v1/projects/acme/functions/observed").json()
    assert ">Scaled to zero<" in listing and ">Scaled to zero<" in header.content.decode()
    assert api["state"] == "scaled-to-zero" and api["replicas"] == 0

    assert call(local_backend_settings.gateway_url, "observed").status_code == 200
    assert wait_for(lambda: observed(1), timeout=30, interval=0.2)
    backend.delete(function_ref_of(function))


def function_ref_of(function):
    from functions.services.functions import function_ref

    return function_ref(function)
