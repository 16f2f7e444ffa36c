"""Logs on the real runtime: a request to a function that prints nothing leaves its platform line (method,
path without query, status, duration, revision, instance); the log search finds, by time range, a line
older than the newest 200 the live view starts from, and pages to older lines. Debian: bubblewrap."""

from __future__ import annotations

import datetime as dt
import time

import pytest
from asgiref.sync import async_to_sync
from django.urls import reverse

from functions.backends.local import LocalBackend
from functions.models import FunctionStatus
from functions.services.functions import function_ref
from tests.support.daemon_helpers import build, call, deploy, service, wait_for
from tests.support.factories import FunctionFactory

pytestmark = [pytest.mark.runtime]


async def _lines(backend, ref, **kwargs):
    return [line async for line in backend.logs(ref, **kwargs)]


@pytest.fixture
def quiet(local_backend_settings, project, tmp_path):
    backend = LocalBackend()
    artifact = build(backend, tmp_path, "quiet", "node")
    deploy(backend, service("quiet", "node", artifact, revision=1))
    function = FunctionFactory(project=project, name="quiet", status=FunctionStatus.READY, replicas=1)
    yield backend, function
    backend.delete(function_ref(function))


def test_a_request_to_a_silent_function_leaves_its_request_line(quiet, local_backend_settings):
    backend, function = quiet
    answer = call(local_backend_settings.gateway_url, "quiet", "orders?token=s3cret")
    status = answer.status_code  # the function's own answer for that path (faas-js-runtime's)

    def request_lines():
        lines = async_to_sync(_lines)(backend, function_ref(function), tail=50)
        return [x for x in lines if x.stream == "request" and "/orders" in x.text]

    lines = wait_for(request_lines, timeout=30, interval=0.2)
    assert lines, "no request line in the function's log"
    text = lines[-1].text
    assert text.startswith(f"GET /orders {status} ")
    assert " ms revision=quiet-00001 instance=quiet-00001-deployment-" in text
    assert "s3cret" not in text and "token" not in text  # no query string: it may carry secrets
    assert lines[-1].instance.startswith("quiet-00001-deployment-")


def test_a_time_range_search_finds_a_line_older_than_the_newest_200(
    quiet, local_backend_settings, client_for, owner
):
    backend, function = quiet
    gateway = local_backend_settings.gateway_url
    call(gateway, "quiet", "first-one")
    ref = function_ref(function)
    wait_for(lambda: any("/first-one" in x.text for x in async_to_sync(_lines)(backend, ref)), timeout=30)
    time.sleep(0.05)
    boundary = dt.datetime.now(dt.UTC)
    time.sleep(0.05)
    for n in range(210):
        call(gateway, "quiet", f"later-{n}")
    wait_for(lambda: any("/later-209" in x.text for x in async_to_sync(_lines)(backend, ref)), timeout=30)
    newest = async_to_sync(_lines)(backend, ref, tail=200)
    assert not any("/first-one" in x.text for x in newest)  # the live view would not show it

    url = reverse("function_logs_search", kwargs={"project": "acme", "name": "quiet"})
    end = boundary.strftime("%Y-%m-%dT%H:%M:%S.%f")
    page = client_for(owner).get(url, {"end": end, "stream": "request"}).content.decode()
    found = client_for(owner).get(url, {"end": end, "stream": "request", "format": "json"}).json()
    texts = client_for(owner).get(url, {"q": "LATER-", "stream": "request", "format": "json"}).json()

    assert "GET /first-one " in page and "/later-" not in page
    assert [x["text"].split()[1] for x in found["lines"]] == ["/first-one"]
    assert len(texts["lines"]) == 200 and texts["more"] is True  # the newest 200 of 210, and more
    older = (
        client_for(owner)
        .get(url, {"q": "later-", "format": "json", "before": texts["lines"][0]["ts"]})
        .json()
    )
    assert len(older["lines"]) == 10 and older["more"] is False


def test_search_is_404_for_outsiders(quiet, client_for, outsider):
    url = reverse("function_logs_search", kwargs={"project": "acme", "name": "quiet"})
    assert client_for(outsider).get(url).status_code == 404
