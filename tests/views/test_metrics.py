"""functions/metrics.py against a real Prometheus scraping a real exposition (prometheus_client).

Needs Debian's `prometheus` (skipped locally without it, a failure in CI).
"""

import socket
import threading

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from functions import metrics
from functions.forms import METRIC_SORTS
from functions.models import Project
from tests.support.factories import FunctionFactory
from tests.support.ports import free_port
from tests.support.prom import running_prometheus, wait_for

pytestmark = pytest.mark.prometheus

LABELS = ["k8s_namespace_name", "kn_service_name", "kn_revision_name", "http_response_status_code"]


class Exposition:
    """Series named as the local runtime names them, served over HTTP like its /metrics."""

    def __init__(self):
        self.registry = CollectorRegistry()
        self.invocations = Histogram(
            "kn_serving_invocation_duration_seconds", "invocations", LABELS, registry=self.registry
        )
        # cAdvisor's labels plus the function's, as hks_runtime/metrics.py exposes them
        container = ["namespace", "pod", "container", "kn_service_name", "kn_revision_name"]
        self.memory = Gauge("container_memory_working_set_bytes", "memory", container, registry=self.registry)
        self.cpu = Counter("container_cpu_usage_seconds", "cpu", container, registry=self.registry)
        revision = ["k8s_namespace_name", "kn_service_name", "kn_revision_name"]
        self.cold_starts = Counter("hks_cold_starts", "cold starts", revision, registry=self.registry)
        self.port = free_port()
        self.server, self.thread = start_http_server(self.port, addr="127.0.0.1", registry=self.registry)

    def series(self, project, function, code="200"):
        return self.invocations.labels(project, function, f"{function}-00001", code)

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def exposition():
    exp = Exposition()
    yield exp
    exp.close()


@pytest.fixture
def prometheus(tmp_path, exposition, settings):
    with running_prometheus(tmp_path, [f"127.0.0.1:{exposition.port}"]) as url:
        settings.HKS_PROMETHEUS_URL = url
        yield url


def _scraped(url: str, query: str):
    import requests

    result = requests.get(f"{url}/api/v1/query", params={"query": query}, timeout=5).json()["data"]["result"]
    return result


@pytest.fixture
def hello(project):
    return FunctionFactory(project=project, name="hello", status="ready")


def test_function_metrics_counts_the_requests_prometheus_scraped(prometheus, exposition, hello):
    ok, failed = exposition.series("acme", "hello"), exposition.series("acme", "hello", "500")
    wait_for(lambda: _scraped(prometheus, "kn_serving_invocation_duration_seconds_count"))
    for _ in range(3):
        ok.observe(0.02)
    failed.observe(0.4)

    result = wait_for(
        lambda: (m := metrics.function_metrics(function=hello, window="15m")).requests_in_window == 4 and m
    )

    assert result.available
    assert {c.key for c in result.charts} == {
        "requests",
        "latency",
        "errors",
        "replicas",
        "cold_starts",
        "cpu",
        "memory",
    }


def test_request_chart_splits_by_status_class(prometheus, exposition, hello):
    ok, failed = exposition.series("acme", "hello"), exposition.series("acme", "hello", "503")
    wait_for(lambda: len(_scraped(prometheus, "kn_serving_invocation_duration_seconds_count")) == 2)
    ok.observe(0.01)
    failed.observe(0.01)

    def classes():
        chart = next(
            c for c in metrics.function_metrics(function=hello, window="15m").charts if c.key == "requests"
        )
        labels = {s.label for s in chart.series if any(v > 0 for _, v in s.points)}
        return labels if labels == {"2xx", "5xx"} else None

    assert wait_for(classes) == {"2xx", "5xx"}


def test_4xx_and_5xx_are_counted_apart_in_the_list_the_error_chart_and_the_summary(
    prometheus, exposition, hello, project
):
    ok = exposition.series("acme", "hello")
    missing, broken = exposition.series("acme", "hello", "404"), exposition.series("acme", "hello", "502")
    wait_for(lambda: len(_scraped(prometheus, "kn_serving_invocation_duration_seconds_count")) == 3)
    for _ in range(2):
        ok.observe(0.01)
        missing.observe(0.01)
    broken.observe(0.01)

    figures = wait_for(
        lambda: (f := metrics.project_list_metrics(project=project).for_function("hello")).rpm and f
    )
    summary = wait_for(lambda: (s := metrics.function_summary(function=hello)).requests == 5 and s)

    assert figures.client_error_rate == pytest.approx(0.4, abs=0.01)  # 2 of 5 were 404s
    assert figures.error_rate == pytest.approx(0.2, abs=0.01)  # 1 of 5 was a 502
    assert (summary.client_errors, summary.server_errors) == (2, 1)
    chart = wait_for(
        lambda: (
            (c := _chart(hello, "errors")) and {s.label for s in c.series if s.points} == {"4xx", "5xx"} and c
        )
    )
    assert max(v for s in chart.series if s.label == "4xx" for _, v in s.points) > 0


def _chart(function, key: str):
    return next(c for c in metrics.function_metrics(function=function, window="15m").charts if c.key == key)


def test_a_first_cold_start_shows_in_the_chart_and_the_summary(prometheus, exposition, hello):
    """A counter born at 1 has no increase rate() can see: the chart counts per step, as for requests."""
    wait_for(lambda: _scraped(prometheus, "up"))
    exposition.cold_starts.labels("acme", "hello", "hello-00001").inc()

    chart = wait_for(
        lambda: (
            (c := _chart(hello, "cold_starts")) and any(v >= 1 for s in c.series for _, v in s.points) and c
        )
    )
    summary = wait_for(lambda: (s := metrics.function_summary(function=hello)).cold_starts and s)

    assert chart.unit.startswith("per ")
    assert summary.cold_starts == 1


def test_a_custom_range_gives_about_sixty_points(prometheus, exposition, hello):
    ok = exposition.series("acme", "hello")
    wait_for(lambda: _scraped(prometheus, "kn_serving_invocation_duration_seconds_count"))
    ok.observe(0.01)
    import datetime as dt

    end = dt.datetime.now(dt.UTC)
    result = metrics.function_metrics(function=hello, start=end - dt.timedelta(days=3), end=end)

    assert result.available and result.window == "custom"
    assert result.step == 3 * 24 * 3600 // 60


def test_list_metrics_come_per_function_in_one_query_per_figure(prometheus, exposition, project, monkeypatch):
    FunctionFactory(project=project, name="hello")
    FunctionFactory(project=project, name="world")
    hello_ok, hello_err = exposition.series("acme", "hello"), exposition.series("acme", "hello", "500")
    world_ok = exposition.series("acme", "world")
    exposition.series("globex", "hello").observe(1)  # another tenant's namespace must not leak in
    exposition.memory.labels("acme", "hello-1", "user-container", "hello", "hello-00001").set(
        64 * 1024 * 1024
    )
    exposition.memory.labels("globex", "hello-1", "user-container", "hello", "hello-00001").set(1)
    wait_for(lambda: len(_scraped(prometheus, "kn_serving_invocation_duration_seconds_count")) == 4)
    for _ in range(3):
        hello_ok.observe(0.05)
    hello_err.observe(0.05)
    world_ok.observe(0.05)

    queries = []
    original = metrics.PrometheusConnect.custom_query
    monkeypatch.setattr(
        metrics.PrometheusConnect,
        "custom_query",
        lambda self, q, **kw: queries.append(q) or original(self, q, **kw),
    )
    result = wait_for(
        lambda: (m := metrics.project_list_metrics(project=project)).for_function("world").rpm and m
    )

    assert result.available
    assert set(result.by_function) == {"hello", "world"}
    assert result.for_function("hello").error_rate == pytest.approx(0.25, abs=0.01)
    assert result.for_function("world").error_rate == 0
    assert result.for_function("hello").memory_bytes == 64 * 1024 * 1024
    assert result.for_function("hello").rpm > 0
    assert len(queries) % len(metrics.LIST_FIGURES) == 0
    assert len(queries[-len(metrics.LIST_FIGURES) :]) == len(set(queries[-len(metrics.LIST_FIGURES) :]))


def test_prometheus_down_is_a_state_not_an_error(settings, project):
    settings.HKS_PROMETHEUS_URL = f"http://127.0.0.1:{free_port()}"

    result = metrics.project_list_metrics(project=project)

    assert not result.available
    assert "unavailable" in result.reason


def test_prometheus_that_never_answers_times_out_into_unavailable(settings, project):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    settings.HKS_PROMETHEUS_URL = f"http://127.0.0.1:{listener.getsockname()[1]}"
    settings.HKS_PROMETHEUS_TIMEOUT = 0.3
    try:
        result = metrics.function_metrics(function=FunctionFactory(project=project), window="1h")
    finally:
        listener.close()

    assert not result.available


def test_after_a_failure_the_next_call_does_not_wait_again(settings, project):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    settings.HKS_PROMETHEUS_URL = f"http://127.0.0.1:{listener.getsockname()[1]}"
    settings.HKS_PROMETHEUS_TIMEOUT = 0.3
    accepted = []
    threading.Thread(target=lambda: accepted.append(listener.accept()), daemon=True).start()
    try:
        metrics.project_list_metrics(project=project)
        second = metrics.project_list_metrics(project=project)
    finally:
        listener.close()

    assert not second.available
    assert "a moment ago" in second.reason
    assert Project.objects.count() == 1


def test_a_first_request_shows_in_the_request_chart(prometheus, exposition, hello):
    # The series is born at 1, as the runtime's is on a revision's first request: rate() would show 0.
    exposition.series("acme", "hello").observe(0.01)

    def drawn():
        metrics_ = metrics.function_metrics(function=hello, window="15m")
        chart = next(c for c in metrics_.charts if c.key == "requests")
        return [v for s in chart.series if s.label == "2xx" for _, v in s.points if v > 0]

    assert wait_for(drawn)[0] == 1


def test_pages_show_the_figures_prometheus_has(prometheus, exposition, hello, viewer, client_for):
    exposition.memory.labels("acme", "hello-1", "user-container", "hello", "hello-00001").set(
        64 * 1024 * 1024
    )
    exposition.series("acme", "hello").observe(0.01)
    client = client_for(viewer)

    listed = wait_for(lambda: "64.0 MiB" in (html := client.get("/p/acme/").content.decode()) and html)
    # The total (an instant query) can see a scrape before the chart's range query has a step after it.
    charts = wait_for(
        lambda: (
            'id="requests-in-window">1<'
            in (html := client.get("/p/acme/f/hello/metrics/?window=15m").content.decode())
            and "<polyline" in html
            and html
        )
    )

    assert 'id="metrics-unavailable"' not in listed
    assert 'id="chart-requests"' in charts and "<polyline" in charts and "2xx" in charts


@pytest.mark.parametrize("sort", ["-memory", "-rpm"])
def test_the_list_sorts_by_a_live_figure_highest_first(
    prometheus, exposition, project, viewer, client_for, sort
):
    for name in ("idle", "small", "big"):
        FunctionFactory(project=project, name=name, status="ready")
    series = {name: exposition.series("acme", name) for name in ("small", "big")}
    wait_for(lambda: len(_scraped(prometheus, "kn_serving_invocation_duration_seconds_count")) == 2)
    for name, mib, requests in (("small", 16, 1), ("big", 64, 3)):
        exposition.memory.labels("acme", f"{name}-1", "user-container", name, f"{name}-00001").set(mib << 20)
        for _ in range(requests):
            series[name].observe(0.01)
    client = client_for(viewer)

    figure = METRIC_SORTS[sort]

    def order():
        figures = metrics.project_list_metrics(project=project)
        if not all(getattr(figures.for_function(name), figure) for name in ("small", "big")):
            return None  # not in Prometheus yet
        html = client.get("/p/acme/", {"sort": sort}).content.decode()
        return sorted(("idle", "small", "big"), key=lambda name: html.index(f">{name}<"))

    # highest first; a function with no figure at all is listed last
    assert wait_for(order) == ["big", "small", "idle"]


def test_a_sort_by_a_live_figure_runs_across_pages(
    prometheus, exposition, project, viewer, client_for, monkeypatch
):
    """The whole project is ordered by the figure, then cut into pages: page 2 goes on where page 1 ended."""
    from functions.views import listing

    monkeypatch.setattr(listing, "PAGE_SIZE", 2)
    names = ("idle", "small", "mid", "big")
    for name in names:
        FunctionFactory(project=project, name=name, status="ready")
    for name, mib in (("small", 16), ("mid", 32), ("big", 64)):
        exposition.memory.labels("acme", f"{name}-1", "user-container", name, f"{name}-00001").set(mib << 20)
    client = client_for(viewer)

    def listed(page: int) -> list[str]:
        html = client.get("/p/acme/", {"sort": "-memory", "page": page}).content.decode()
        return sorted((n for n in names if f">{n}<" in html), key=lambda n: html.index(f">{n}<"))

    def pages():
        figures = metrics.project_list_metrics(project=project)
        if not all(figures.for_function(name).memory_bytes for name in ("small", "mid", "big")):
            return None  # not in Prometheus yet
        return [listed(1), listed(2)]

    # highest first across both pages; the function without a figure last
    assert wait_for(pages) == [["big", "mid"], ["small", "idle"]]
